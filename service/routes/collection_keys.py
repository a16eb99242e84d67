"""A collection's own read key (state/collection_keys.py makes and hashes it; service/auth.py
says what it opens): an admin makes or replaces it, and removes it."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from service.auth import Admin
from service.collection_schemas import CollectionKey
from service.deps import CollectionsDep, SettingsDep, StoreDep
from service.errors import ProblemError, not_found, problems
from service.routes.collections import COLLECTION_PATH, PREFIX
from state.collection_keys import digest, new_key

router = APIRouter(tags=["collections"])


@router.put(PREFIX + "/key", response_model=CollectionKey, dependencies=[Admin],
            responses=problems(401, 403, 404, 409, 422),
            summary="Make a new read key for this collection (replacing any old one); the "
            "answer is the only place it is shown")
async def put_collection_key(response: Response, settings: SettingsDep, store: StoreDep,
                             collections: CollectionsDep,
                             collection: str = COLLECTION_PATH) -> CollectionKey:
    name = collections.resolve(collection)
    assert name is not None
    if settings.read_api_key is None:
        # Reads are open to anyone: a key would protect nothing, and saying so beats an
        # admin believing the collection is closed.
        raise ProblemError(409, "Conflict", "read routes are open (READ_API_KEY is not set): "
                           "a collection key would protect nothing")
    # Made here, never taken from the client: a random 256-bit key is what makes its
    # unsalted SHA-256 digest safe to store (state/collection_keys.py).
    key = new_key()
    await run_in_threadpool(store.put_key_digest, name, digest(key))
    response.headers["Cache-Control"] = "no-store"
    return CollectionKey(collection=name, key=key)


@router.delete(PREFIX + "/key", status_code=204, response_class=Response,
               dependencies=[Admin], responses=problems(401, 403, 404, 422),
               summary="Remove this collection's read key: it stops working at once")
async def delete_collection_key(store: StoreDep, collections: CollectionsDep,
                                collection: str = COLLECTION_PATH) -> Response:
    name = collections.resolve(collection)
    assert name is not None
    if not await run_in_threadpool(store.delete_key_digest, name):
        raise not_found(f"collection {name!r} has no key")
    return Response(status_code=204)
