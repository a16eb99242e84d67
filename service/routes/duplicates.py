"""Near-duplicate pairs of a model's collection (live/duplicates.py), found once per version and
change-log position and kept (service/comparisons.py runs it off the event loop, one at a time).

The pairs are found at the lowest threshold a request may ask for (DUPLICATE_THRESHOLD_MIN) and
kept; each request cuts them at its own threshold. A change to the collection (an add, a delete)
moves the log position, so the next request finds the pairs again, adds and deletes included.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response

from live.duplicates import Pairs, find_pairs
from service.auth import Reader
from service.comparisons import Comparisons
from service.deps import RegistryDep, SettingsDep, served_model, stamp
from service.errors import problems
from service.limits import DUPLICATE_PAIRS_MAX, DUPLICATE_THRESHOLD_MIN
from service.registry import Served
from service.routes.collections import image_link
from service.routes.models import VERSION_PATH
from service.schemas_duplicates import DuplicatePair, DuplicatePairs, PairItem

router = APIRouter(tags=["models"])
KEPT = 4  # pair lists kept (versions, or positions of one version), least recently used first


def _kept(request: Request) -> Comparisons:
    found = getattr(request.app.state, "duplicate_pairs", None)
    if found is None:
        found = request.app.state.duplicate_pairs = Comparisons(cached=KEPT)
    return found


def _find(served: Served) -> tuple[dict[str, Any], bool]:
    return {"pairs": find_pairs(served.live.index, DUPLICATE_THRESHOLD_MIN)}, True


def _item(request: Request, served: Served, item: str) -> PairItem:
    index = served.live.index
    label = index.label(item)
    return PairItem(id=item, label=index.classes[label] if label is not None and label >= 0
                    else None,
                    image=image_link(request, served.version, item))


@router.get("/models/{version}/duplicates", response_model=DuplicatePairs,
            dependencies=[Reader], responses=problems(401, 403, 404, 422, 503),
            summary="Pairs of near-duplicate items (cosine at or above a threshold), most "
            "similar first",
            description="Found through the index: each live item (added ones included, deleted "
            "ones never) is searched for its nearest others, so a million items take minutes, "
            "not the hours of every pair; an item with more near-duplicates than `neighbours` "
            "may miss some (counted in `crowded`). Found once per version and change-log "
            "position, then kept: the first request after a change waits for the search.")
async def duplicates(request: Request, response: Response, settings: SettingsDep,
                     registry: RegistryDep, version: str = VERSION_PATH,
                     threshold: float | None = Query(
                         None, ge=DUPLICATE_THRESHOLD_MIN, le=1.0,
                         description="Cosine at or above which two items are a pair "
                         "(default DUPLICATE_THRESHOLD)."),
                     limit: int = Query(100, ge=1, le=DUPLICATE_PAIRS_MAX),
                     offset: int = Query(0, ge=0, le=10_000_000)) -> DuplicatePairs:
    served = await served_model(registry, version)
    cut = settings.duplicate_threshold if threshold is None else threshold
    cut = max(cut, DUPLICATE_THRESHOLD_MIN)
    seq = served.live.applied
    answer = await _kept(request).get((served.version, str(seq)), lambda: _find(served))
    pairs: Pairs = answer["pairs"]
    total = pairs.above(cut)
    shown = range(offset, min(total, offset + limit))
    stamp(response, served)
    return DuplicatePairs(
        model_version=served.version, seq=seq, threshold=cut, items=pairs.items, total=total,
        offset=offset, neighbours=pairs.neighbours, crowded=pairs.crowded,
        pairs=[DuplicatePair(a=_item(request, served, pairs.ids[int(pairs.a[i])]),
                             b=_item(request, served, pairs.ids[int(pairs.b[i])]),
                             cosine=float(pairs.cosine[i])) for i in shown])
