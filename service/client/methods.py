"""Plans (core.py) as methods of Client and AsyncClient. One wrapper serves both: it hands the
plan to the client's `_run` (or a stream to its `_iterate`), which is blocking in one and
awaitable in the other; the four functions differ only in the types they declare, so that each
method is checked and shown with its plan's own parameters."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

from service.client.core import Core, Plan, Stream

P = ParamSpec("P")
T = TypeVar("T")


def _method(operation: Callable[..., Any], driver: str, shown: str) -> Any:
    @functools.wraps(operation)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, driver)(operation(self._core, *args, **kwargs))

    # Shown as the client's method: `self` in the place of the plan's Core, and what the
    # client returns (`shown`, {} standing for the plan's answer) in the place of the plan.
    signature = inspect.signature(operation)
    own = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    answer = re.sub(r"^(?:Plan|Stream)\[(.*)\]$", r"\1", str(signature.return_annotation))
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[own, *list(signature.parameters.values())[1:]],
        return_annotation=shown.format(answer))
    return method


def blocking(plan: Callable[Concatenate[Core, P], Plan[T]]) -> Callable[Concatenate[Any, P], T]:
    return _method(plan, "_run", "{}")


def awaitable(plan: Callable[Concatenate[Core, P], Plan[T]]
              ) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, T]]:
    return _method(plan, "_run", "Coroutine[Any, Any, {}]")


def iterator(stream: Callable[Concatenate[Core, P], Stream[T]]
             ) -> Callable[Concatenate[Any, P], Iterator[T]]:
    return _method(stream, "_iterate", "Iterator[{}]")


def async_iterator(stream: Callable[Concatenate[Core, P], Stream[T]]
                   ) -> Callable[Concatenate[Any, P], AsyncIterator[T]]:
    return _method(stream, "_iterate", "AsyncIterator[{}]")
