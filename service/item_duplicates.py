"""The existing items an added image duplicates (POST /items), and refusing the request for
them when the client asks (`if_duplicate=refuse`).

A refusal refuses the whole request, like every other reason POST /items has to refuse: an add
is all or nothing, so a client that sends a batch knows that either all of it is in or none.
The 409 names each image that has duplicates and what they are; the client drops those and sends
the rest again. Items of the request itself are never counted (a replayed request, or one that
replaces items with upsert, finds its own ids in the index).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from live.duplicates import matches
from live.index import LiveIndex
from service.errors import MAX_ERRORS, ProblemError
from service.limits import DUPLICATES_SHOWN
from service.schemas_duplicates import DuplicateMatch, ItemDuplicates

IfDuplicate = Literal["add", "refuse"]


@dataclass
class DuplicateCheck:
    threshold: float
    refuse: bool = False
    found: list[ItemDuplicates] = field(default_factory=list)

    def run(self, index: LiveIndex, ids: list[str], vectors: np.ndarray) -> None:
        """Blocking: finds each image's duplicates, raises 409 when refusing and there are
        any."""
        per_image = matches(index, vectors, self.threshold, DUPLICATES_SHOWN, skip=ids)
        self.found = [ItemDuplicates(id=item, duplicates=[DuplicateMatch(id=m.id,
                                                                         cosine=m.cosine)
                                                          for m in found])
                      for item, found in zip(ids, per_image, strict=True) if found]
        if self.refuse and self.found:
            raise refused(self.found, self.threshold)


def refused(found: list[ItemDuplicates], threshold: float) -> ProblemError:
    named = "; ".join(f"{f.id!r} ({', '.join(repr(d.id) for d in f.duplicates[:3])})"
                      for f in found[:3])
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    return ProblemError(
        409, "Duplicate Images",
        f"{len(found)} image(s) duplicate existing items (cosine >= {threshold:g}): {named}"
        f"{more}; nothing was added (leave them out and send the others again, or send "
        "if_duplicate=add)",
        errors=[{"loc": ["item", f.id], "msg": "duplicates existing items",
                 "duplicates": [d.model_dump() for d in f.duplicates]} for f in found[:MAX_ERRORS]],
        error_count=len(found))
