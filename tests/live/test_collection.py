"""A collection with added and deleted items on top of a dataset's own files."""

import numpy as np
from PIL import Image

from live.collection import AddedItem, with_changes
from trainer.data import open_collection


def test_added_and_deleted_items_change_the_collection(cifar_dir, tmp_path):
    base = open_collection(cifar_dir)
    red = tmp_path / "red.png"
    Image.new("RGB", (40, 20), (255, 0, 0)).save(red)
    blue = tmp_path / "blue.png"
    Image.new("RGB", (8, 8), (0, 0, 255)).save(blue)
    changed = with_changes(base, [
        AddedItem("added/red.png", str(red), "cat"),
        AddedItem("added/blue.png", str(blue), "boat"),  # a class the dataset did not have
        AddedItem("train/cat/0000.jpg", str(red), "cat"),  # replaces a dataset image
    ], deleted=["train/ship/0001.jpg"])
    assert len(changed) == len(base) + 1  # +3 added, -1 replaced, -1 deleted
    assert "train/ship/0001.jpg" not in changed.ids
    assert changed.ids[-3:] == ["added/red.png", "added/blue.png", "train/cat/0000.jpg"]
    assert changed.classes == [*base.classes, "boat"]
    assert [changed.classes[i] for i in changed.labels[-3:]] == ["cat", "boat", "cat"]
    assert not changed.is_eval[-3:].any()
    assert changed.eval_indices.size == base.eval_indices.size
    # Rows load their own images: added files, and the dataset's untouched ones.
    red_pixels = changed.load(len(changed) - 3, 16)
    assert red_pixels.shape == (16, 16, 3) and (red_pixels[..., 0] == 255).all()
    assert (changed.load(len(changed) - 2, 16)[..., 2] == 255).all()
    row = changed.ids.index("train/ship/0000.jpg")
    assert np.array_equal(changed.load(row, 32), base.load(base.ids.index(
        "train/ship/0000.jpg"), 32))
    # A subset (as unreadable images are dropped) keeps rows pointing at the right files.
    sub = changed.subset(np.arange(1, len(changed)))
    assert (sub.load(len(sub) - 3, 16)[..., 0] == 255).all()
    assert with_changes(base, [], []) is base
