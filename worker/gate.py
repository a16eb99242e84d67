"""The promotion gate: a finished job's model becomes current only on a measured gain.

The incumbent is the current model when it serves the same dataset, else raw pixels (the first
model of a dataset must beat doing nothing). Both are measured on the same items:
- with a labelled evaluation split (or labelled items, each left out in turn): weighted kNN
  top-1, paired per query against a model, with the standard error of the difference as the
  noise (trainer/judge.py);
- without labels: the label-free score (trainer/label_free.py) against raw pixels' on the same
  items and views, or against the current model's, measured again on this run's sample and
  views (`rescore`: its own run scored other items once the collection changed), with the
  margin its measured noise sets (GATE_MARGIN), or the item-by-item noise of the two scores
  where that is more (trainer/judge.label_free_margin; a small sample). Where it cannot be
  measured again, its own figure stands in; one of an earlier measure of the score, or none,
  cannot be compared with: the new model is judged against raw pixels, and the verdict says
  so;
- with labels that give nothing to compare on (only items the current version never held
  carry them, or no labelled query against raw pixels): as without labels, never a free pass.

`promote` on the job chooses what the verdict does: `gate` follows it, `always` and `never`
record it and ignore it. The verdict is written into the bundle's manifest and the job record
either way, so a user sees why a model is or is not current.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from state.jobs import PROMOTE_ALWAYS, PROMOTE_GATE, Job
from trainer.bundle import current_version, read_manifest
from trainer.errors import BundleError
from trainer.evaluation import headline
from trainer.judge import Verdict, correct, label_free_margin, paired, unpaired, with_margin
from trainer.label_free import MEASURE, LabelFreeScore, measure_of
from trainer.label_free_baselines import LABEL_FREE_TERMS

log = logging.getLogger(__name__)
Rescore = Callable[[str], LabelFreeScore | None]


def judge(job: Job, run_dir: Path, models_root: Path,
          rescore: Rescore | None = None) -> dict[str, Any]:
    """The verdict on the run's model, as the record that the manifest and the job keep:
    the verdict's figures, `policy` (the job's promote) and `promoted` (what will happen).
    Measured on the items of the run's own snapshot that the current version also holds.
    `rescore(version)`: that version's label-free score on the run's own sample and views
    (trainer/label_free_reference.py), or None where it cannot be measured."""
    verdict = _verdict(job, run_dir, models_root, rescore)
    promoted = job.promote == PROMOTE_ALWAYS or (job.promote == PROMOTE_GATE and
                                                verdict.promote)
    return verdict.to_dict() | {"policy": job.promote, "promoted": promoted}


def _verdict(job: Job, run_dir: Path, models_root: Path, rescore: Rescore | None) -> Verdict:
    config = json.loads((run_dir / "config.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    k, sigma = int(config.get("knn_k", 200)), float(config.get("knn_sigma", 0.1))
    with np.load(run_dir / "embeddings.npz") as saved:
        vectors = np.asarray(saved["vectors"], dtype=np.float32)
        ids = [str(i) for i in saved["ids"]]
        labels = saved["labels"].astype(np.int64)
        is_eval = saved["is_eval"].astype(bool) if "is_eval" in saved else np.zeros(len(ids), bool)
        n_classes = len(saved["classes"])
    incumbent = _incumbent(models_root, job.dataset)
    if not (labels >= 0).any() or n_classes < 2:
        return _label_free(run_dir, metrics, models_root, incumbent, rescore)
    if incumbent is None:
        top1, _ = headline(metrics)
        pixels = metrics.get("pixel_knn_top1")
        queries = int(metrics.get("knn_queries") or 0)
        if top1 is None or pixels is None or queries == 0:
            return _label_free(run_dir, metrics, models_root, None, rescore,
                               "no labelled query to compare with raw pixels")
        return unpaired(float(top1), float(pixels), queries, "raw pixels")
    version, theirs = incumbent
    rows = np.array([i for i, item in enumerate(ids) if item in theirs], dtype=np.int64)
    their_rows = np.array([theirs[ids[i]] for i in rows], dtype=np.int64)
    their_vectors = np.load(models_root / version / "embeddings.npy", mmap_mode="r")
    mine = correct(vectors[rows], labels[rows], is_eval[rows], n_classes, k, sigma)
    if not len(mine):
        # E.g. the labels came with items added since version's training: it never saw them.
        return _label_free(run_dir, metrics, models_root, incumbent, rescore,
                           f"no labelled item in common with version {version}")
    current = correct(np.asarray(their_vectors[their_rows]), labels[rows], is_eval[rows],
                      n_classes, k, sigma)
    return paired(mine, current, f"version {version}")


def _label_free(run_dir: Path, metrics: dict[str, Any], models_root: Path,
                incumbent: tuple[str, dict[str, int]] | None, rescore: Rescore | None,
                why: str = "") -> Verdict:
    """The label-free comparison; `why`: the reason the labelled one could not be made."""
    verdict = _label_free_verdict(run_dir, metrics, models_root, incumbent, rescore)
    if why:
        return replace(verdict, reason=f"{why}: judged without labels. {verdict.reason}")
    return verdict


def _label_free_verdict(run_dir: Path, metrics: dict[str, Any], models_root: Path,
                        incumbent: tuple[str, dict[str, int]] | None,
                        rescore: Rescore | None) -> Verdict:
    mine, n = metrics.get("label_free"), int(metrics.get("label_free_items") or 0)
    if mine is None:
        return Verdict(True, "none", None, None, "raw pixels", 0.0, 0,
                       "no label-free score either: the model is not compared")
    terms = _terms(run_dir, n)

    def against(theirs: float, name: str, their_terms: np.ndarray | None = None) -> Verdict:
        margin = label_free_margin(terms["model"] if terms is not None else None, their_terms)
        return with_margin(float(mine), theirs, margin, n, name, "label_free")

    pixel_terms = terms["pixels"] if terms is not None else None
    if incumbent is None:
        return against(float(metrics["pixel_label_free"]), "raw pixels", pixel_terms)
    version = incumbent[0]
    same_items = _rescored(rescore, version) if measure_of(metrics) == MEASURE else None
    if same_items is not None and same_items.items == n:
        # Both on this run's sample and views: what the current model scored in its own run
        # was on its own items, another sample once the collection changed.
        return against(same_items.score, f"version {version}", same_items.per_item)
    figures = read_manifest(models_root, version).get("metrics") or {}
    theirs = figures.get("label_free")
    if theirs is not None and measure_of(figures) == measure_of(metrics):
        return against(float(theirs), f"version {version}")
    unusable = (f"version {version} has no label-free score, so this model" if theirs is None
                else f"version {version}'s label-free score measures {measure_of(figures)}, "
                f"this model's {measure_of(metrics)}: they do not compare, so it")
    verdict = against(float(metrics["pixel_label_free"]), "raw pixels", pixel_terms)
    return replace(verdict, reason=f"{unusable} is judged against raw pixels. {verdict.reason}")


def _terms(run_dir: Path, n: int) -> dict[str, np.ndarray] | None:
    """The run's per-item terms of its model's and raw pixels' scores (n each), or None for a
    run that kept none (the fixed margin alone then)."""
    try:
        with np.load(run_dir / LABEL_FREE_TERMS) as saved:
            terms = {key: np.asarray(saved[key], dtype=np.float64) for key in ("model", "pixels")}
    except (OSError, KeyError, ValueError):
        return None
    return terms if all(len(t) == n for t in terms.values()) else None


def _rescored(rescore: Rescore | None, version: str) -> LabelFreeScore | None:
    """The current version scored on the run's items; None where that fails, whatever the
    reason (its encoder file damaged, say): the job's model is published either way."""
    if rescore is None:
        return None
    try:
        return rescore(version)
    except Exception:
        log.exception("version %s could not be scored on the new run's items: its own "
                      "figure stands in", version)
        return None


def _incumbent(models_root: Path, dataset: str) -> tuple[str, dict[str, int]] | None:
    """The current version when it serves `dataset`, with its item rows (None: there is no
    current model of this dataset, so this is its first)."""
    version = current_version(models_root, dataset)
    if version is None:
        return None
    try:
        manifest = read_manifest(models_root, version)
        if manifest.get("dataset") != dataset:
            return None
        items = json.loads((models_root / version / "items.json").read_text())
    except (BundleError, OSError, ValueError) as exc:
        log.warning("the current model %s cannot be read (%s): judged against raw pixels",
                    version, exc)
        return None
    return version, {str(item): row for row, item in enumerate(items["ids"])}
