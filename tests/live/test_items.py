"""A change-log entry's image path is read only inside its dataset."""

from __future__ import annotations

import numpy as np

from live.items import added_image, confined
from live.publish import apply_to_embeddings
from state.changes import ADD, Change


def test_an_entry_naming_a_file_outside_the_dataset_is_never_read(tmp_path):
    root = tmp_path / "ds"
    (root / ".items").mkdir(parents=True)
    (root / ".items" / "in.png").write_bytes(b"inside")
    (tmp_path / "secret.png").write_bytes(b"outside")
    (root / ".items" / "link.png").symlink_to(tmp_path / "secret.png")
    assert added_image(root, ".items/in.png") == (root / ".items" / "in.png").resolve()
    for path in ("../secret.png", str(tmp_path / "secret.png"), ".items/link.png", "", None):
        assert added_image(root, path) is None, path
    assert confined(root, ".items/gone.png") is not None  # inside, merely missing

    seen: list[list[str]] = []

    def embed(paths):
        seen.append([p.name for p in paths])
        return np.ones((len(paths), 2), dtype=np.float32) / np.sqrt(2)

    saved = {"vectors": np.zeros((0, 2), np.float32), "ids": np.array([], dtype=str),
             "labels": np.array([], dtype=np.int64), "classes": np.array([], dtype=str),
             "is_eval": np.array([], dtype=bool)}
    entries = [Change(ADD, "a", path=".items/in.png", seq=1),
               Change(ADD, "b", path="../secret.png", seq=2),
               Change(ADD, "c", path=".items/link.png", seq=3)]
    out = apply_to_embeddings(saved, entries, embed, root)
    assert seen == [["in.png"]] and [str(i) for i in out["ids"]] == ["a"]
