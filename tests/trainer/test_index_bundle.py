import json
import shutil

import numpy as np
import pytest

from trainer import index as faiss_index
from trainer.bundle import (
    Bundle,
    current_version,
    list_versions,
    set_current,
    validate,
    write_bundle,
)
from trainer.errors import BundleError


def _embedding_like(n, d=32, rank=8, seed=0):
    """Low-rank unit vectors with clusters, like real embeddings (i.i.d. noise is a worst case)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, rank))
    x = centres[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, rank))
    x = x @ rng.normal(size=(rank, d)) + 0.05 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_flat_index_is_exact_cosine():
    x = _embedding_like(500)
    built = faiss_index.build(x, "flat")
    scores, rows = built.search(x[:3], 5)
    assert rows[:, 0].tolist() == [0, 1, 2]
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
    assert built.describe()["recall_at_10"] == 1.0
    assert faiss_index.choose_kind(10) == "flat"
    assert faiss_index.choose_kind(10**6) == "hnsw"


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_reach_the_recall_target(kind):
    x = _embedding_like(20_000)
    built = faiss_index.build(x, kind)
    assert built.recall_at_10 >= faiss_index.TARGET_RECALL
    assert faiss_index.recall_at_10(built, x) == pytest.approx(built.recall_at_10, abs=0.02)
    key = "efSearch" if kind == "hnsw" else "nprobe"
    assert key in built.describe()["params"]



def test_bundle_is_written_validated_and_made_current(finished_run, tmp_path):
    models = tmp_path / "models"
    path = write_bundle(finished_run, models, dataset="cifar-slice", extra={"job_id": "j1"})
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["item_count"] == 120 and manifest["dim"] == 128
    assert manifest["backbone"] == "small_cnn" and manifest["dataset"] == "cifar-slice"
    assert manifest["index"]["type"] == "flat" and manifest["index"]["recall_at_10"] == 1.0
    assert "knn_top1" in manifest["metrics"] and manifest["job_id"] == "j1"
    assert current_version(models) is None  # written, not yet current
    set_current(models, path.name)
    assert current_version(models) == path.name and list_versions(models) == [path.name]
    bundle = Bundle.load(models, path.name, device="cpu")
    assert bundle.labelled and bundle.classes == ["airplane", "cat", "ship", "truck"]
    row = bundle.row_of["train/cat/0000.jpg"]
    _, rows = bundle.index.search(bundle.vectors[row:row + 1], 2)
    assert rows[0, 0] == row


def test_served_embedding_matches_indexed_one(finished_run, tmp_path, cifar_dir):
    models = tmp_path / "models"
    path = write_bundle(finished_run, models, dataset="d")
    bundle = Bundle.load(models, path.name, device="cpu", precision="fp32")
    raw = (cifar_dir / "test" / "ship" / "0002.jpg").read_bytes()
    vec = bundle.model.embed_files([raw])[0]
    indexed = bundle.vectors[bundle.row_of["test/ship/0002.jpg"]]
    assert float(vec @ indexed) > 0.99  # fp32 here vs bf16 at training time


def test_invalid_bundles_never_become_current(finished_run, tmp_path):
    models = tmp_path / "models"
    path = write_bundle(finished_run, models, dataset="d")
    broken = models / "broken"
    shutil.copytree(path, broken)
    (broken / "index.faiss").unlink()
    with pytest.raises(BundleError):
        validate(broken)
    np.save(broken / "embeddings.npy", np.zeros((3, 128), dtype=np.float32))
    with pytest.raises(BundleError):
        validate(broken)
    # Published before the embedding pass wrote every row: a zero row is refused (a promote
    # or rollback to it fails), naming the item.
    shutil.copy2(path / "index.faiss", broken / "index.faiss")
    vectors = np.load(path / "embeddings.npy")
    vectors[1] = 0
    np.save(broken / "embeddings.npy", vectors)
    first_ids = json.loads((path / "items.json").read_text())["ids"]
    with pytest.raises(BundleError, match=rf"1 vector is not of length 1: {first_ids[1]} "
                                          r"\(norm 0\)"):
        validate(broken)
    with pytest.raises(BundleError):
        set_current(models, "no-such-version")
    # A build that fails part way (its embeddings unreadable) leaves no partial folder behind;
    # a run missing one of its files is refused before anything is written, naming it.
    saved = (finished_run / "embeddings.npz").read_bytes()
    (finished_run / "embeddings.npz").write_bytes(b"not an npz file")
    try:
        with pytest.raises(ValueError):
            write_bundle(finished_run, models, dataset="d", version="v-fail")
    finally:
        (finished_run / "embeddings.npz").write_bytes(saved)
    (finished_run / "embeddings.npz").rename(finished_run / "hidden.npz")
    try:
        with pytest.raises(BundleError, match=r"not a finished training run \(no embeddings"):
            write_bundle(finished_run, models, dataset="d", version="v-fail")
    finally:
        (finished_run / "hidden.npz").rename(finished_run / "embeddings.npz")
    assert not (models / "v-fail").exists()
    assert not [p for p in models.iterdir() if p.name.startswith(".tmp")]


def test_embeddings_that_are_not_unit_vectors_are_never_published(finished_run, tmp_path):
    """A vector of another length would stand first in every search: the bundle is refused,
    naming the item, and nothing is left behind."""
    models = tmp_path / "models"
    with np.load(finished_run / "embeddings.npz") as saved:
        arrays = dict(saved)
    arrays["vectors"][3] *= 1.9e14
    bad_id = str(arrays["ids"][3])
    np.savez(tmp_path / "bad.npz", **arrays)
    refused = rf"1 vector is not of length 1: {bad_id} \(norm 1.9e\+14"
    with pytest.raises(BundleError, match=refused):
        write_bundle(finished_run, models, dataset="d", version="v-bad",
                     embeddings=tmp_path / "bad.npz")
    arrays["vectors"][3] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    with pytest.raises(BundleError, match=rf"{bad_id} \(norm nan"):
        write_bundle(finished_run, models, dataset="d", version="v-bad",
                     embeddings=tmp_path / "nan.npz")
    assert not (models / "v-bad").exists()
    assert not [p for p in models.iterdir() if p.name.startswith(".tmp")]


@pytest.mark.parametrize("damage", [b"", b"not an encoder", b"PK\x03\x04cut short"],
                         ids=["empty", "text", "truncated-zip"])
def test_a_damaged_encoder_file_is_an_invalid_bundle(finished_run, tmp_path, damage):
    """Every way torch.load fails on a damaged file is the bundle's error (an API answers it
    as a problem), never an exception of torch's own."""
    path = write_bundle(finished_run, tmp_path / "models", dataset="d")
    (path / "encoder.pt").write_bytes(damage)
    with pytest.raises(BundleError, match="cannot load encoder"):
        validate(path)
