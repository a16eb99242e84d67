"""Which model version answers a request, said on its error answers as on its successes.

A query route resolves its version once (`service.deps.served_model`); a problem raised after
that (an unknown item, an image that does not decode, a full queue) still came from that
version, and a client comparing answers across a hot swap needs to know which. The version is
noted in a context variable: each request runs in a task of its own, so the note lives exactly
as long as the request, and the problem handlers (service/errors.py) read it without every
route passing it along."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.registry import Served

_served: ContextVar[Served | None] = ContextVar("answered_by", default=None)


def note(served: Served) -> None:
    _served.set(served)


def headers_of(served: Served) -> dict[str, str]:
    """The model version, and the change-log position its collection had reached (an older
    version catches up on demand: service/catch_up.py)."""
    return {"X-Model-Version": served.version, "X-Changes-Seq": str(served.live.applied)}


def headers() -> dict[str, str]:
    """What `headers_of` says of the version noted for this request; nothing when none was."""
    served = _served.get()
    return headers_of(served) if served is not None else {}
