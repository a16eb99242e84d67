"""One current version per collection (trainer/current.py), on real bundles: a version moves
its own dataset's pointer only, and a models folder with the single CURRENT and PREVIOUS that
earlier versions wrote is migrated without losing either."""

import pytest

from trainer.bundle import list_versions, read_manifest, write_bundle
from trainer.current import (
    collections,
    current_version,
    migrate,
    previous_version,
    rollback,
    set_current,
)
from trainer.errors import BundleError
from trainer.files import atomic_write_text


@pytest.fixture(scope="module")
def bundles(finished_run, tmp_path_factory):
    """Versions a1, a2 of dataset `a` and b1 of `b` (copied per test)."""
    root = tmp_path_factory.mktemp("bundles")
    for version, dataset in (("a1", "a"), ("a2", "a"), ("b1", "b")):
        write_bundle(finished_run, root, dataset=dataset, version=version)
    return root


@pytest.fixture()
def models(bundles, tmp_path):
    import shutil

    return shutil.copytree(bundles, tmp_path / "models")


def old_layout(models, current, previous=None):
    """The pointers as the single-CURRENT code wrote them: the version's name and a newline,
    replaced atomically, PREVIOUS beside CURRENT."""
    if previous is not None:
        atomic_write_text(models / "PREVIOUS", previous + "\n")
    atomic_write_text(models / "CURRENT", current + "\n")


def test_a_version_moves_its_own_collection_only(models):
    assert set_current(models, "a1") == "a"
    assert set_current(models, "b1") == "b"
    set_current(models, "a2")
    assert collections(models) == ["a", "b"]
    assert (current_version(models, "a"), previous_version(models, "a")) == ("a2", "a1")
    assert (current_version(models, "b"), previous_version(models, "b")) == ("b1", None)
    assert rollback(models, "a") == "a1"
    assert current_version(models, "a") == "a1" and current_version(models, "b") == "b1"
    with pytest.raises(BundleError, match="previous"):
        rollback(models, "b")
    # With several collections, a caller that names none is told to name one.
    with pytest.raises(BundleError, match="several collections"):
        current_version(models)
    assert current_version(models, "c") is None and current_version(models, "../a") is None


def test_the_only_collection_needs_no_name(models):
    set_current(models, "a1")
    set_current(models, "a2")
    assert current_version(models) == "a2" and previous_version(models) == "a1"
    assert rollback(models) == "a1"


def test_an_old_current_and_previous_of_one_dataset_stay_current_and_previous(models):
    old_layout(models, "a2", "a1")
    assert migrate(models) == ["a/PREVIOUS=a1", "a/CURRENT=a2"]
    assert not (models / "CURRENT").exists() and not (models / "PREVIOUS").exists()
    assert collections(models) == ["a"]
    assert (current_version(models, "a"), previous_version(models, "a")) == ("a2", "a1")
    assert list_versions(models) == ["a1", "a2", "b1"]  # every bundle kept, untouched
    assert read_manifest(models, "b1")["dataset"] == "b"
    assert migrate(models) == []  # once only
    assert rollback(models, "a") == "a1"


def test_an_old_previous_of_another_dataset_becomes_that_dataset_s_current(models):
    # Training b replaced a's model for every client: a's collection gets it back.
    old_layout(models, "b1", "a2")
    assert migrate(models) == ["b/CURRENT=b1", "a/CURRENT=a2"]
    assert current_version(models, "b") == "b1" and current_version(models, "a") == "a2"
    assert previous_version(models, "a") is None and previous_version(models, "b") is None


def test_any_reader_migrates_first(models):
    old_layout(models, "a1")
    assert current_version(models) == "a1"
    assert (models / "collections" / "a" / "CURRENT").read_text() == "a1\n"
    assert not (models / "CURRENT").exists()


def test_a_migration_never_overwrites_a_pointer_written_meanwhile(models):
    """Another process migrated and a publish moved the pointer before this one ran."""
    set_current(models, "a2")
    old_layout(models, "a1")
    assert migrate(models) == []
    assert current_version(models, "a") == "a2" and not (models / "CURRENT").exists()


def test_an_old_current_naming_a_missing_version_keeps_the_rollback(models):
    old_layout(models, "gone", "a1")
    assert migrate(models) == ["a/PREVIOUS=a1"]
    assert collections(models) == [] and not (models / "CURRENT").exists()
    assert rollback(models, "a") == "a1" and collections(models) == ["a"]
