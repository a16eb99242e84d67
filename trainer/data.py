"""Opening a user's own images as a Collection: folders, zip/tar archives and .npz arrays, with
stable ids and labels.

Layouts understood (after unwrapping a single top folder, as archives usually have):
  root/<split>/<class>/*   labelled, with splits (train; test/val are evaluation-only)
  root/<split>/*           unlabelled, with splits
  root/<class>/*           labelled
  root/*  (or any nesting) unlabelled
An item's id is its path relative to that root, e.g. `train/cat/0001.jpg`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from trainer.archives import open_tar, open_zip
from trainer.collection import EVAL_SPLITS, TRAIN_SPLIT, Collection, split_of
from trainer.errors import DatasetError
from trainer.images import is_clutter, is_image_name, no_images
from trainer.sources import ArraySource, FolderSource, PathSource


def open_collection(path: str | os.PathLike[str], name: str | None = None,
                    work_dir: str | None = None) -> Collection:
    """Open a folder, a .zip, a .tar(.gz|.bz2|.xz) or a .npz as a Collection."""
    p = Path(path)
    name = name or p.name
    if not p.exists():
        raise DatasetError(f"dataset path {str(p)!r} does not exist")
    if p.is_dir():
        files = [
            f.relative_to(p).as_posix()
            for f in sorted(p.rglob("*"))
            if f.is_file() and not f.is_symlink()
        ]
        return _from_paths(name, files, FolderSource(str(p)))
    suffixes = "".join(p.suffixes[-2:]).lower()
    if p.suffix.lower() == ".zip":
        return _from_paths(name, *open_zip(p))
    if p.suffix.lower() == ".npz":
        return _open_npz(p, name)
    if ".tar" in suffixes or p.suffix.lower() in (".tgz", ".tbz2", ".txz"):
        return _from_paths(name, *open_tar(p, work_dir))
    raise DatasetError(
        f"{p.name}: unsupported dataset format; use a folder, .zip, .tar(.gz) or .npz"
    )


def _open_npz(path: Path, name: str) -> Collection:
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path.name}: not a readable .npz file ({exc})") from exc

    def pick(*keys: str) -> np.ndarray | None:
        for k in keys:
            if k in arrays:
                return arrays[k]
        return None

    x = pick("x_train", "X_train", "x", "X", "images", "data", "train_images")
    if x is None:
        raise DatasetError(
            f"{path.name}: no image array; name it x, images or x_train (found "
            f"{', '.join(arrays) or 'nothing'})"
        )
    y = pick("y_train", "Y_train", "y", "Y", "labels", "targets", "train_labels")
    x_test = pick("x_test", "X_test", "test_images")
    y_test = pick("y_test", "Y_test", "test_labels")
    class_names = pick("classes", "class_names")
    if x.ndim not in (3, 4) or len(x) == 0:
        raise DatasetError(f"{path.name}: image array has shape {x.shape}; expected N x H x W(xC)")
    parts = [("train", x, y)] + ([("test", x_test, y_test)] if x_test is not None else [])
    ids: list[str] = []
    labels: list[int] = []
    is_eval: list[bool] = []
    images: list[np.ndarray] = []
    raw_labels = [lab for _, _, lab in parts if lab is not None]
    label_values = np.unique(np.concatenate([np.asarray(r).ravel() for r in raw_labels])) if (
        raw_labels) else np.array([])
    if class_names is not None:
        classes = [str(c) for c in class_names]
    else:
        classes = [str(v) for v in label_values]
    lookup = {v: i for i, v in enumerate(label_values.tolist())}
    for split, xs, ys in parts:
        if ys is not None and len(ys) != len(xs):
            raise DatasetError(f"{path.name}: {len(xs)} {split} images but {len(ys)} labels")
        width = max(5, len(str(len(xs) - 1)))
        for i in range(len(xs)):
            ids.append(f"{split}/{i:0{width}d}" if len(parts) > 1 else f"{i:0{width}d}")
            if ys is None:
                labels.append(-1)
            elif class_names is not None:
                labels.append(int(ys[i]))
            else:
                labels.append(lookup[np.asarray(ys[i]).item()])
            is_eval.append(split != "train")
        images.append(xs)
    collection = Collection(
        name=name, ids=ids, labels=np.asarray(labels, dtype=np.int64), classes=classes,
        is_eval=np.asarray(is_eval, dtype=bool), source=ArraySource(images),
    )
    _refuse_single_class(collection)
    return collection


def _from_paths(name: str, paths: list[str], source: PathSource) -> Collection:
    paths = [p for p in paths if not is_clutter(p)]
    images = [p for p in paths if is_image_name(p)]
    ignored = [p for p in paths if not is_image_name(p)]
    if not images:
        raise DatasetError(no_images(f"dataset {name!r}", ignored))
    # Unwrap single top folders: "cifar10/train/cat/x.jpg" is read as "train/cat/x.jpg".
    prefix = ""
    parts = [p.split("/") for p in images]
    while all(len(p) > 1 for p in parts) and len({p[0] for p in parts}) == 1:
        prefix += parts[0][0] + "/"
        parts = [p[1:] for p in parts]
    rel = ["/".join(p) for p in parts]

    tops = {p[0] for p in parts if len(p) > 1}
    has_splits = all(len(p) > 1 for p in parts) and all(split_of(t) for t in tops)
    splits = [(split_of(p[0]) or TRAIN_SPLIT) if has_splits else TRAIN_SPLIT for p in parts]
    inner = [p[1:] if has_splits else p for p in parts]
    # Labelled when, within every split, every image sits in a class folder.
    labelled_splits = {
        s for s in set(splits)
        if all(len(q) > 1 for q, sp in zip(inner, splits, strict=True) if sp == s)
    }
    class_of = [q[0] if sp in labelled_splits else None
                for q, sp in zip(inner, splits, strict=True)]
    classes = sorted({c for c in class_of if c is not None})
    index = {c: i for i, c in enumerate(classes)}
    note = _unlabelled_folders(rel, inner, splits, labelled_splits, has_splits)
    collection = Collection(
        name=name,
        ids=rel,
        labels=np.asarray([index[c] if c is not None else -1 for c in class_of], dtype=np.int64),
        classes=classes,
        is_eval=np.asarray([s in EVAL_SPLITS for s in splits], dtype=bool),
        source=source.rooted(prefix, rel),
        ignored=ignored,
        layout_note=note,
    )
    if not (~collection.is_eval).any():
        raise DatasetError(
            f"dataset {name!r} has only evaluation splits ({', '.join(sorted(set(splits)))}); "
            "add a train split or put the images in class folders"
        )
    _refuse_single_class(collection)
    return collection


def _unlabelled_folders(rel: list[str], inner: list[list[str]], splits: list[str],
                        labelled_splits: set[str], has_splits: bool) -> str | None:
    """The layout note for splits read as unlabelled although some of their images sit in
    folders: which images are loose, so a user can move them into class folders."""
    rows = [(r, q) for r, q, sp in zip(rel, inner, splits, strict=True)
            if sp not in labelled_splits]
    loose = [r for r, q in rows if len(q) == 1]
    folders = sorted({q[0] for _, q in rows if len(q) > 1})
    if not loose or not folders:
        return None
    named = ", ".join(repr(f) for f in folders[:3]) + (", ..." if len(folders) > 3 else "")
    where = ("" if not has_splits else "the split(s) " + ", ".join(
        sorted({sp for sp in splits if sp not in labelled_splits})) + " ")
    return (f"{where}read as unlabelled: {len(loose)} image(s) lie outside any folder (e.g. "
            f"{loose[0]!r}) beside the folders {named}; class folders give labels only when "
            "every image of a split sits in one")


def _refuse_single_class(collection: Collection) -> None:
    if collection.has_labels and len(collection.classes) == 1:
        raise DatasetError(
            f"dataset {collection.name!r} has class folders but only one class "
            f"({collection.classes[0]!r}); use a flat folder for unlabelled images or add classes"
        )
