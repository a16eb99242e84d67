"""The submission gate names each refusal by its kind, in the order a user fixes them, and a job
the queue did not take is recorded failed, not left waiting."""

import pytest

from state.jobs import FAILED
from state.settings import Settings
from state.stores import open_store
from tests.imagenet_weights import stand_in, wrong_file
from trainer.errors import ConfigError, DatasetError
from worker.submit import (
    NoSuchDataset,
    NotQueued,
    NoWorkerCanRun,
    UnfitConfig,
    UnusableDataset,
    WeightsNotInPlace,
    check_job,
    submit,
)

CONFIG = {"backbone": "small_cnn", "rounds": 2, "epochs_per_round": 1, "batch_size": 32,
          "num_workers": 0}


@pytest.fixture()
def gate(cifar_dir, tmp_path):
    settings = Settings(data_root=cifar_dir.parent, models_root=tmp_path / "models",
                        state_root=tmp_path / "state")
    (cifar_dir.parent / "empty").mkdir()
    return open_store(settings), settings


def test_each_refusal_has_its_kind(gate):
    store, settings = gate
    with pytest.raises(ConfigError, match="'lr'") as bad:
        check_job(store, settings, "nope", CONFIG | {"lr": -1})  # the config comes first
    assert type(bad.value) is ConfigError
    with pytest.raises(ConfigError, match="'nesterov'"):
        check_job(store, settings, "cifar10", CONFIG | {"nesterov": "true"}, strict=True)
    for name in ("nope", "../cifar10", ""):
        with pytest.raises(NoSuchDataset, match="does not exist"):
            check_job(store, settings, name, CONFIG)
    with pytest.raises(NoWorkerCanRun, match="gpus=2 but the largest live worker owns 0"):
        check_job(store, settings, "cifar10", CONFIG | {"gpus": 2})
    with pytest.raises(NoWorkerCanRun, match="torchrun"):
        check_job(store, settings, "cifar10", CONFIG | {"nodes": 2})
    with pytest.raises(UnfitConfig, match=r"neighbours.*\(96\)"):  # 96 training images
        check_job(store, settings, "cifar10", CONFIG | {"neighbours": 96})
    with pytest.raises(UnfitConfig, match="init_from"):
        check_job(store, settings, "cifar10", CONFIG | {"init_from": "v-none"})
    with pytest.raises(UnusableDataset):
        check_job(store, settings, "empty", CONFIG)
    assert issubclass(UnusableDataset, DatasetError) and issubclass(NoSuchDataset, DatasetError)
    passed = check_job(store, settings, "cifar10", CONFIG | {"neighbours": 95})
    assert passed.train_config.neighbours == 95 and passed.path == settings.data_root / "cifar10"
    assert store.list()[1] == 0  # checking records nothing


def test_a_job_the_queue_refused_is_recorded_failed(gate):
    store, settings = gate
    sent = []
    job = submit(store, settings, sent.append, "cifar10", CONFIG)
    assert sent == [job.id] and store.require(job.id).status == "queued"

    def unreachable(job_id):
        raise ConnectionError("broker down")

    with pytest.raises(NotQueued, match="broker down"):
        submit(store, settings, unreachable, "cifar10", CONFIG)
    jobs, count = store.list()
    assert count == 2
    failed = next(j for j in jobs if j.id != job.id)
    assert failed.status == FAILED and "could not be queued: broker down" in failed.error


def test_imagenet_weights_are_put_in_place_at_submission_or_refused_at_once(
        cifar_dir, tmp_path, monkeypatch):
    """init_from=imagenet: the file under the data root, from the torch hub cache or
    downloaded; otherwise the job is refused, naming the file and where it goes."""
    offline = Settings(data_root=cifar_dir.parent, models_root=tmp_path / "models",
                       state_root=tmp_path / "state", pretrained_download=False)
    weights = stand_in(tmp_path, monkeypatch, cifar_dir.parent)
    store = open_store(offline)
    config = CONFIG | {"backbone": "resnet18", "image_size": 32, "init_from": "imagenet"}
    with pytest.raises(WeightsNotInPlace) as missing:
        check_job(store, offline, "cifar10", config, strict=True)
    assert f"place it at DATA_ROOT/.pretrained/{weights.spec.file_name}" in missing.value.message
    assert "downloads are off" in missing.value.message
    assert not weights.placed.exists()
    # In the hub cache only: copied where every worker reads it.
    weights.place(weights.cache)
    check_job(store, offline, "cifar10", config)
    assert weights.placed.read_bytes() == weights.file.read_bytes()
    # Downloads allowed and nothing in place: torch.hub fetches it under the data root.
    weights.placed.unlink()
    weights.cache.unlink()
    online = offline.model_copy(update={"pretrained_download": True})
    check_job(store, online, "cifar10", config)
    assert weights.placed.read_bytes() == weights.file.read_bytes()
    wrong_file(weights.placed)
    with pytest.raises(UnfitConfig, match="is not torchvision ResNet18_Weights") as wrong:
        check_job(store, online, "cifar10", config)
    assert not isinstance(wrong.value, WeightsNotInPlace)
    with pytest.raises(UnfitConfig, match=r"backbone=resnet18 \(this run uses small_cnn\)"):
        check_job(store, online, "cifar10", CONFIG | {"init_from": "imagenet"})
