"""What the one-command run (deploy/local_stack.py) prints: dataset names, progress, notes
and hints, figures. Plain functions of the API's answers, tested on cases written by hand."""

from __future__ import annotations

import re
import shlex
import unicodedata
from pathlib import Path
from typing import Any

FEW_ITEMS = 1_000  # below this, more images is the first thing to try


def changed_note(src: Path, uploaded: int) -> str | None:
    """Whether `src` now holds another number of images than its upload of before (counted as
    the API counts them): a rerun trains on that upload, not on what was added since. Folders
    and zips only: they are listed without being read, where opening a compressed tar would
    extract it beside the user's file."""
    from trainer.data import open_collection
    from trainer.errors import DatasetError

    if not (src.is_dir() or src.suffix.lower() == ".zip"):
        return None
    try:
        now = len(open_collection(src))
    except (DatasetError, OSError):  # only a note: the upload of before still trains
        return None
    if now == uploaded:
        return None
    return (f"  note: {src} holds {now} images now, {uploaded} when it was uploaded: this "
            "trains on that upload. To train on it as it is now, upload it under a new name "
            "(--name), or add the new images to the collection (python -m service.client add)")


def dataset_name(file_name: str) -> str:
    """A dataset name the API accepts, from a folder's or an archive's name: "Mes photos
    (été 2024).zip" -> "Mes-photos-ete-2024". The rule itself is the API's (service.schemas)."""
    from service.schemas import is_dataset_name

    stem = file_name.split(".")[0] or file_name
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_stem).strip("._-")[:64].rstrip("._-")
    return name if is_dataset_name(name) else "dataset"


def progress_line(status: str, p: dict[str, Any]) -> str:
    if status != "running" or "epoch" not in p:
        return f"{status} ({p.get('phase', 'waiting')})"
    parts = [f"round {p['round']}/{p['rounds'] - 1}", f"epoch {p['epoch']}/{p['epochs']}",
             f"loss {p['loss']:.3f}", f"{p['images_per_s']:.0f} img/s",
             f"eta {p['eta_s']:.0f}s"]
    if p.get("neighbourhood_quality") is not None:
        parts.append(f"neighbourhood quality {p['neighbourhood_quality']:.2f}")
    if p.get("knn_top1") is not None:
        parts.append(f"kNN top-1 {p['knn_top1']:.3f}")
    return ", ".join(parts)


def skipped_note(metrics: dict[str, Any], shown: int = 3) -> str | None:
    """The files the run could not read (the count and the first few, with why): without it a
    user sees only fewer items indexed than images uploaded."""
    count, skipped = metrics.get("skipped_items") or 0, metrics.get("skipped") or []
    if not count:
        return None
    named = "; ".join(f"{s['id']} ({s['reason']})" for s in skipped[:shown])
    more = f"; and {count - min(shown, len(skipped))} more" if count > shown else ""
    return (f"{count} file(s) could not be read as images and were left out: {named}{more} "
            "(all of them: GET /models/<version>, metrics.skipped; skipped.json in the bundle)")


def kept_out_hint(gate: dict[str, Any], items: int) -> str | None:
    """What to try when the gate kept the first model out because raw pixels did better: the
    usual causes are few images (of `items`) and a short schedule, and a pretrained start often
    helps on photos."""
    if gate.get("promote", True) or gate.get("incumbent_name") != "raw pixels":
        return None
    more = "More images, a" if items < FEW_ITEMS else "A"
    return (f"The model did not beat raw pixels by the gate's margin here. {more} longer "
            "schedule (--set epochs_per_round=60) or a start from ImageNet's weights "
            "(--set backbone=resnet18 init_from=imagenet: a larger network at 224 pixels, "
            "much slower on a CPU; README, \"Pretrained start\") may change that.")


def file_field(path: Path) -> str:
    """curl's -F files=@PATH for a shell: curl itself reads ';' and ',' in PATH as its own
    syntax unless the path is in double quotes."""
    quoted = str(path).replace("\\", "\\\\").replace('"', '\\"')
    return shlex.quote(f'files=@"{quoted}"')


def figures_line(metrics: dict[str, Any]) -> str:
    """The model against raw pixels: kNN accuracy where the dataset has labels, else the
    label-free score, which needs none."""
    from trainer.evaluation import headline

    top1, _ = headline(metrics)
    if top1 is None and metrics.get("label_free") is not None:
        return (f"Label-free score (no labels; 1 = every augmented copy finds its own image "
                f"first): model {metrics['label_free']:.3f}, raw pixels "
                f"{score_text(metrics.get('pixel_label_free'))}, the network untrained "
                f"{score_text(metrics.get('untrained_label_free'))}")
    pixels = metrics.get("pixel_knn_top1")
    over = ("the labelled test images" if metrics.get("knn_protocol") == "test"
            else "the labelled images, each left out in turn")
    return (f"Weighted kNN top-1 on {over}: model {share_text(top1)}, raw pixels "
            f"{share_text(pixels)} (the same kNN on the downscaled images themselves)")


def score_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def share_text(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"
