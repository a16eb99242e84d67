"""The operations on the service, datasets, jobs and models, and the queries (embed, search,
classify, neighbours), each written once as a plan (core.py) that Client and AsyncClient run.
The live collection's operations are in collection.py. Each function's first argument is the
client's Core; the clients take the rest."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from service.client.core import (
    Call,
    Core,
    Emit,
    Plan,
    Sleep,
    Stream,
    Upload,
    archived,
    batches,
    params,
    part,
    path,
    uploads,
)
from service.client.results import (
    Classification,
    Collections,
    Dataset,
    Embeddings,
    Health,
    Job,
    JobProgress,
    JobStatus,
    Models,
    ModelSummary,
    Neighbours,
    Promote,
    Search,
)


class Rows(Protocol):
    """Vectors as a numpy array (or anything with tolist())."""

    def tolist(self) -> Any: ...


Vectors = Sequence[Sequence[float]] | Rows


# --- the service ----------------------------------------------------------------------------

def health(core: Core) -> Plan[Health]:
    """Liveness: the API process answers (GET /healthz)."""
    return Health.of((yield from core.json(Call("GET", "/healthz", replayable=True))))


def ready(core: Core) -> Plan[Health]:
    """Readiness (GET /readyz): a model is served and the job store and broker answer. Asked
    once (a probe, not retried): ApiError with status 503 when the API is not ready."""
    call = Call("GET", "/readyz", replayable=True, retry=False)
    return Health.of((yield from core.json(call)))


# --- datasets -------------------------------------------------------------------------------

def datasets(core: Core) -> Plan[list[Dataset]]:
    """The datasets under the data root."""
    answer = yield from core.json(Call("GET", "/datasets", replayable=True))
    return [Dataset.of(d) for d in answer["data"]]


def dataset(core: Core, name: str) -> Plan[Dataset]:
    """A dataset's item count, classes and split sizes."""
    return Dataset.of((yield from core.json(Call("GET", path("datasets", name),
                                                 replayable=True))))


def upload_dataset(core: Core, name: str, archive: Upload) -> Plan[Dataset]:
    """Upload images as dataset `name`: an archive (zip or tar; a path or its bytes), or a
    folder, sent as a zip of its files (its class folders, if any, become classes)."""
    call = Call("POST", "/datasets", data={"name": name},
                files=[part("file", archived(archive), f"{name}.zip")], admin=True)
    return Dataset.of((yield from core.json(call)))


def register_dataset(core: Core, name: str, folder: str | None = None) -> Plan[Dataset]:
    """Name a folder or archive already under the data root (`folder`, relative to it; by
    default the one called `name`) as a dataset."""
    body = {"name": name} | ({"path": folder} if folder is not None else {})
    return Dataset.of((yield from core.json(Call("POST", "/datasets", json=body, admin=True))))


# --- jobs -----------------------------------------------------------------------------------

def train(core: Core, dataset: str, config: dict[str, Any] | None = None,
          promote: Promote = "gate") -> Plan[Job]:
    """Start a training job on `dataset` with these trainer config overrides; `promote`: what
    its model becomes (gate: current only on a measured gain; always; never)."""
    call = Call("POST", "/train", json={"dataset": dataset, "config": config or {},
                                        "promote": promote}, admin=True)
    return Job.of((yield from core.json(call)))


def job(core: Core, job_id: str) -> Plan[Job]:
    """A job's status, progress and result."""
    return Job.of((yield from core.json(Call("GET", path("jobs", job_id), replayable=True))))


def job_progress(core: Core, job_id: str) -> Plan[JobProgress]:
    """Every epoch record of a job so far."""
    call = Call("GET", path("jobs", job_id, "progress"), replayable=True)
    return JobProgress.of((yield from core.json(call)))


def jobs(core: Core, status: JobStatus | None = None, page_size: int = 100) -> Stream[Job]:
    """Every job (or those with this status), newest first, fetched `page_size` at a time
    (at most 500): an iterator."""
    return Stream(pages(core, "/jobs", Job.of, page_size, status=status))


def cancel_job(core: Core, job_id: str) -> Plan[Job]:
    """Cancel a job: a queued one at once, a running one after its current batch."""
    return Job.of((yield from core.json(Call("DELETE", path("jobs", job_id), admin=True))))


def wait_for_job(core: Core, job_id: str, timeout_s: float | None = None,
                 poll_s: float = 2.0) -> Plan[Job]:
    """The job once it has ended (succeeded, failed or canceled: see `status`), asking every
    `poll_s`; TimeoutError when it has not after `timeout_s`."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        found = yield from job(core, job_id)
        if found.ended:
            return found
        if deadline is not None and time.monotonic() + poll_s > deadline:
            raise TimeoutError(f"job {job_id} is still {found.status} after {timeout_s} s")
        yield Sleep(poll_s)


# --- models ---------------------------------------------------------------------------------

def collections(core: Core) -> Plan[Collections]:
    """The collections this API serves, each with its current model (GET /collections)."""
    return Collections.of((yield from core.json(Call("GET", "/collections", replayable=True))))


def models(core: Core) -> Plan[Models]:
    """Published model versions, newest first, and which one is current."""
    return Models.of((yield from core.json(Call("GET", "/models", replayable=True))))


def model(core: Core, version: str) -> Plan[dict[str, Any]]:
    """A model's manifest (metrics, index, config, training time) as the API gives it."""
    answer: dict[str, Any] = yield from core.json(Call("GET", path("models", version),
                                                       replayable=True))
    return answer


def promote(core: Core, version: str) -> Plan[ModelSummary]:
    """Make a version the current one."""
    call = Call("POST", path("models", version, "promote"), admin=True)
    return ModelSummary.of((yield from core.json(call)))


def rollback(core: Core) -> Plan[ModelSummary]:
    """Make the previous current version current again (a second rollback undoes it)."""
    call = Call("POST", "/models/current/rollback", admin=True)
    return ModelSummary.of((yield from core.json(call)))


def current_version(core: Core, version: str | None) -> Plan[str]:
    """`version`, or the current one when it is None (LookupError when there is none)."""
    if version is not None:
        return version
    current = (yield from models(core)).current
    if current is None:
        raise LookupError("no model version is current: publish or promote one")
    return current


def pages(core: Core, url: str, parse: Callable[[dict[str, Any]], Any], page_size: int,
           **filters: str | None) -> Plan[None]:
    """Every row of a listing, a page at a time, following its offset until `count`."""
    offset = 0
    while True:
        call = Call("GET", url, params=params(offset=offset, limit=page_size, **filters),
                    replayable=True)
        page = yield from core.json(call)
        for row in page["data"]:
            yield Emit(parse(row))
        offset += len(page["data"])
        if not page["data"] or offset >= page["count"]:
            return


# --- queries --------------------------------------------------------------------------------

def _filter(labels: Sequence[str] | None, prefix: str | None) -> dict[str, Any]:
    """Only items of one of `labels` whose id starts with `prefix`: as query parameters or
    form fields (`labels` repeated); see `_filter_body` for a JSON body."""
    if isinstance(labels, str):
        labels = [labels]  # one label, not a sequence of characters
    return ({} if labels is None else {"labels": list(labels)}) | (
        {} if prefix is None else {"prefix": prefix})


def _filter_body(labels: Sequence[str] | None, prefix: str | None) -> dict[str, Any]:
    given = _filter(labels, prefix)
    return {"filter": given} if given else {}


def _batched(core: Core, count: int, model_version: str | None,
             make: Callable[[range, str | None], Call]) -> Plan[list[dict[str, Any]]]:
    """The answers to `count` images or vectors sent `core.batch` at a time; the batches after
    the first pinned to the model version that answered it."""
    answers = []
    for batch in batches(count, core.batch):
        answers.append((yield from core.json(make(batch, model_version))))
        model_version = answers[-1]["model_version"]
    return answers


def embed(core: Core, images: Upload | Sequence[Upload],
          model_version: str | None = None) -> Plan[Embeddings]:
    """Embed images (paths or bytes), one vector each; `.array()` gives them as numpy."""
    files = uploads(images)
    answers = yield from _batched(core, len(files), model_version, lambda batch, version: Call(
        "POST", "/embed", params=params(model_version=version),
        files=[part("files", files[i]) for i in batch], replayable=True))
    return Embeddings(answers[-1]["model_version"], answers[-1]["dim"],
                      [v for a in answers for v in a["embeddings"]])


def neighbours(core: Core, item_id: str, k: int | None = None,
               model_version: str | None = None, labels: Sequence[str] | None = None,
               prefix: str | None = None) -> Plan[Neighbours]:
    """The k nearest indexed items of an indexed item (itself left out); with `labels` and/or
    `prefix`, only items of one of those classes and whose id starts with it."""
    call = Call("GET", path("neighbours", item_id),
                params=params(k=k, model_version=model_version) | _filter(labels, prefix),
                replayable=True)
    return Neighbours.of((yield from core.json(call)))


def search(core: Core, images: Upload | Sequence[Upload], k: int | None = None,
           model_version: str | None = None, labels: Sequence[str] | None = None,
           prefix: str | None = None) -> Plan[Search]:
    """The k nearest indexed items of each image (paths or bytes), of those matching `labels`
    and `prefix` when given."""
    files = uploads(images)
    fields = params(k=k) | _filter(labels, prefix)
    answers = yield from _batched(core, len(files), model_version, lambda batch, version: Call(
        "POST", "/search", params=params(model_version=version), data=fields or None,
        files=[part("files", files[i]) for i in batch], replayable=True))
    return Search.of({"model_version": answers[-1]["model_version"],
                      "results": [r for a in answers for r in a["results"]]})


def search_vectors(core: Core, vectors: Vectors, k: int | None = None,
                   model_version: str | None = None, labels: Sequence[str] | None = None,
                   prefix: str | None = None) -> Plan[Search]:
    """The k nearest indexed items of each query vector (lists of floats, or a numpy array
    with a row per query) by cosine similarity, of those matching `labels` and `prefix`."""
    rows = [list(v) for v in vectors] if isinstance(vectors, Sequence) else vectors.tolist()
    extra = ({"k": k} if k is not None else {}) | _filter_body(labels, prefix)
    answers = yield from _batched(core, len(rows), model_version, lambda batch, version: Call(
        "POST", "/search", params=params(model_version=version),
        json={"vectors": rows[batch.start:batch.stop]} | extra,
        replayable=True))
    return Search.of({"model_version": answers[-1]["model_version"],
                      "results": [r for a in answers for r in a["results"]]})


def classify(core: Core, images: Upload | Sequence[Upload], k: int | None = None,
             sigma: float | None = None, model_version: str | None = None,
             labels: Sequence[str] | None = None, prefix: str | None = None
             ) -> Plan[Classification]:
    """The weighted-kNN label of each image (paths or bytes), with per-class scores; only
    items matching `labels` and `prefix` vote when given."""
    files = uploads(images)
    fields = params(k=k, sigma=sigma) | _filter(labels, prefix)
    answers = yield from _batched(core, len(files), model_version, lambda batch, version: Call(
        "POST", "/classify", params=params(model_version=version), data=fields or None,
        files=[part("files", files[i]) for i in batch], replayable=True))
    return _votes(answers)


def classify_items(core: Core, ids: Sequence[str], k: int | None = None,
                   sigma: float | None = None, model_version: str | None = None,
                   labels: Sequence[str] | None = None, prefix: str | None = None
                   ) -> Plan[Classification]:
    """The weighted-kNN label of indexed items (each one's own label left out); only items
    matching `labels` and `prefix` vote when given."""
    items = list(ids)
    extra: dict[str, Any] = {"k": k} if k is not None else {}
    extra |= ({"sigma": sigma} if sigma is not None else {}) | _filter_body(labels, prefix)
    answers = yield from _batched(core, len(items), model_version, lambda batch, version: Call(
        "POST", "/classify", params=params(model_version=version),
        json={"ids": items[batch.start:batch.stop]} | extra, replayable=True))
    return _votes(answers)


def _votes(answers: list[dict[str, Any]]) -> Classification:
    last = answers[-1]
    return Classification.of({"model_version": last["model_version"], "k": last["k"],
                              "sigma": last["sigma"],
                              "predictions": [p for a in answers for p in a["predictions"]]})
