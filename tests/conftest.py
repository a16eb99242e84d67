"""Shared fixtures: real image files (scikit-learn's digits, a CIFAR-10 slice) on disk."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
CIFAR_SLICE = DATA / "cifar_slice.zip"


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,797 greyscale PNGs in train/<digit>/ and test/<digit>/ (read-only: copy to modify)."""
    from trainer.sample_data import write_digits

    return write_digits(tmp_path_factory.mktemp("digits") / "digits")


@pytest.fixture(scope="session")
def cifar_zip() -> Path:
    """96 train + 24 test CIFAR-10 JPEGs of 4 classes under one top folder, as a zip."""
    return CIFAR_SLICE


@pytest.fixture()
def cifar_dir(tmp_path: Path) -> Path:
    with zipfile.ZipFile(CIFAR_SLICE) as z:
        z.extractall(tmp_path)
    return tmp_path / "cifar10"


@pytest.fixture()
def copy_tree(tmp_path: Path):
    def copy(src: Path, name: str = "copy") -> Path:
        dst = tmp_path / name
        shutil.copytree(src, dst)
        return dst

    return copy


# The versions the service tests publish from the two runs of `trained_runs`.
V1, V2 = "20260101-000000-first", "20260102-000000-second"


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory) -> dict[str, Path]:
    """Two real training runs on the CIFAR slice (seeds 0 and 1), by the version the service
    tests publish from each: what a worker publishes from (the service and console tests)."""
    from trainer.config import TrainConfig
    from trainer.data import open_collection
    from trainer.engine import Trainer

    runs = {}
    for seed, version in ((0, V1), (1, V2)):
        run = tmp_path_factory.mktemp(f"run{seed}")
        config = TrainConfig.from_dict({"backbone": "small_cnn", "rounds": 1,
                                        "epochs_per_round": 1, "batch_size": 32, "knn_k": 10,
                                        "num_workers": 0, "seed": seed})
        Trainer(config, open_collection(CIFAR_SLICE), run).run()
        runs[version] = run
    return runs


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A redis-server of our own on a free port (never the machine's shared one)."""
    from tests.processes import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(params=["redis", "sqlite"])
def store(request, tmp_path):
    """A job store of each kind, with a key prefix of its own on the session's Redis."""
    import uuid

    from state.store_redis import RedisJobStore
    from state.store_sqlite import SqliteJobStore

    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
        return RedisJobStore(url, prefix=f"test-{uuid.uuid4().hex[:8]}:")
    return SqliteJobStore(tmp_path / "jobs.sqlite3")
