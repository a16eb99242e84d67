"""The one rule for changing a collection, on cases small enough to check by hand, and the
embed-files helper's chunks and left-out files."""

import numpy as np
import pytest
import torch

from live import embed
from live.embed import embed_files
from live.merge import merge, net_changes
from state.changes import ADD, DELETE, Change
from trainer.images import InvalidImage


def test_net_changes_follow_the_order_of_the_log():
    entries = [Change(ADD, "a", path="1"), Change(ADD, "b", path="2"), Change(DELETE, "a"),
               Change(ADD, "b", path="3"), Change(DELETE, "c"), Change(ADD, "c", path="4")]
    added, deleted = net_changes(entries)
    assert {i: c.path for i, c in added.items()} == {"b": "3", "c": "4"}
    assert deleted == {"a"}


def test_removed_ids_leave_new_ones_are_appended_and_new_labels_become_classes():
    ids = ["a", "b", "c", "d"]
    plan = merge(["cat"], [("e", "dog"), ("b", "cat"), ("f", None), ("g", "dog"),
                           ("h", "bird")], deleted=["c", "x"])
    # b is replaced (it leaves and joins at the end), c is deleted, x was never there.
    assert plan.kept(ids).tolist() == [0, 3]
    assert plan.ids == ["e", "b", "f", "g", "h"]
    assert plan.classes == ["cat", "dog", "bird"]
    assert plan.labels.tolist() == [1, 0, -1, 1, 2]
    assert plan.picked == [0, 1, 2, 3, 4]


def test_an_id_added_twice_joins_once_where_it_first_appears_with_its_last_label():
    plan = merge([], [("a", "x"), ("b", None), ("a", "y")], deleted=[])
    assert plan.ids == ["a", "b"] and plan.picked == [2, 1]
    assert plan.classes == ["y"] and plan.labels.tolist() == [0, -1]
    assert plan.kept(["a", "c"]).tolist() == [1]


class _Shade:
    """A stand-in encoder: an image's vector is its first byte; records its batch sizes."""

    class meta:
        dim = 1

    def __init__(self) -> None:
        self.batches: list[int] = []

    def decode(self, data: bytes) -> torch.Tensor:
        if not data:
            raise InvalidImage("empty")
        return torch.full((3, 2, 2), data[0], dtype=torch.uint8)

    def embed_uint8(self, images: torch.Tensor) -> np.ndarray:
        self.batches.append(len(images))
        return images[:, 0, 0, :1].float().numpy()


def test_files_are_embedded_a_chunk_at_a_time_and_unusable_ones_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(embed, "CHUNK", 2)
    paths = []
    for i, data in enumerate([b"\x01", b"", b"\x03", None, b"\x05"]):
        path = tmp_path / f"{i}.bin"
        if data is not None:
            path.write_bytes(data)
        paths.append(path)
    model = _Shade()
    left_out: list[int] = []
    vectors, used = embed_files(model, paths,  # type: ignore[arg-type]
                                lambda pos, exc: left_out.append(pos))
    assert used == [0, 2, 4] and left_out == [1, 3]
    assert vectors[:, 0].tolist() == [1, 3, 5]
    assert model.batches == [1, 1, 1]  # chunks of 2 files, one of each unusable
    with pytest.raises(InvalidImage):
        embed_files(model, paths)  # type: ignore[arg-type]
    assert embed_files(model, [])[0].shape == (0, 1)  # type: ignore[arg-type]
