"""Command line: train, evaluate, publish and export AND models.

    python -m trainer train --data PATH --out DIR [--set key=value ...]
    python -m trainer train ... --set gpus=2    # 2 processes (GPUs, or Gloo on CPU)
    python -m trainer evaluate --model DIR --data PATH [--no-labels]
    python -m trainer publish --run DIR --models MODELS_DIR
    python -m trainer export --model DIR --out DIR  # the encoder as ONNX (encoder.onnx)
    python -m trainer config                    # every key, its default and what it does
    python -m trainer sample-data DIR [--photo-patches | --scattered]  # demo image folders

Running `train` again with the same --out resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

from trainer.embedding_map import MAX_POINTS
from trainer.errors import TrainerError, TrainingStopped
from trainer.files import atomic_write_json

DATA_RECORD = "data.json"  # in a run folder: the dataset it was trained on (see _publish)
log = logging.getLogger("trainer")


def count(text: str) -> int:
    """A number of things, 0 or more (argparse names it in its message: "invalid count")."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an encoder (resumes when --out holds a checkpoint)")
    t.add_argument("--data", required=True, help="image folder, .zip, .tar(.gz) or .npz")
    t.add_argument("--out", required=True, help="output folder (checkpoints, model, metrics)")
    t.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend",
                   default=[], help="config overrides, e.g. --set backbone=small_cnn rounds=3")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--models", default=None,
                   help="models folder, to start from a published version with "
                   "--set init_from=<version>")

    e = sub.add_parser("evaluate", help="weighted-kNN accuracy of a trained encoder on a "
                       "dataset, and its label-free score beside raw pixels' and the untrained "
                       "network's")
    e.add_argument("--model", required=True, help="training output folder or model bundle")
    e.add_argument("--data", required=True)
    e.add_argument("--no-labels", action="store_true",
                   help="the label-free scores only: no label is read (any folder of images)")
    e.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend",
                   default=[], help="knn_k, knn_sigma, device, num_workers")

    b = sub.add_parser("publish", help="turn a finished run into a versioned bundle")
    b.add_argument("--run", required=True, help="training output folder")
    b.add_argument("--models", required=True,
                   help="models folder (bundles, and each collection's current version)")
    b.add_argument("--dataset", default=None,
                   help="the dataset, and so the collection, the model serves (default: the "
                   "one the run was trained on, as `train` recorded it)")
    b.add_argument("--index", default=None, choices=["auto", "flat", "ivf", "hnsw"])
    b.add_argument("--no-current", action="store_true", help="do not make it the current one")
    b.add_argument("--map-points", type=count, default=MAX_POINTS, metavar="N",
                   help="most items of its 2-D map, a random sample of larger collections "
                   f"(default {MAX_POINTS:,}; 0: no map)")

    x = sub.add_parser("export", help="write the encoder as an ONNX graph (encoder.onnx: uint8 "
                       "RGB images [N, S, S, 3] -> unit vectors) and what it takes and gives "
                       "(encoder.onnx.json)")
    x.add_argument("--model", required=True, help="training output folder or model bundle")
    x.add_argument("--out", required=True, help="folder to write the two files into")

    sub.add_parser("config", help="list every config key with its default")
    s = sub.add_parser("sample-data", help="write a small labelled image folder (scikit-learn's "
                       "digits by default) with train/ and test/ splits")
    s.add_argument("dir")
    kind = s.add_mutually_exclusive_group()
    kind.add_argument("--photo-patches", action="store_true",
                      help="patches of 8 regions of scikit-learn's two sample photos at random "
                      "scales, flips and lighting (the demo of `deploy/local.sh up`: raw pixels "
                      "confuse them, a model trained for 3 minutes does not)")
    kind.add_argument("--scattered", action="store_true",
                      help="draw each digit at a random size, place and pair of colours on a "
                      "32x32 canvas (raw pixels score near chance on these)")
    s.add_argument("--seed", type=int, default=0, help="seed of the random split and drawing")
    s.add_argument("--per-class", type=_positive_int, default=250,
                   help="photo patches: images per class, a fifth of them in test/")
    return p


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # With a progress bar, only warnings (e.g. unreadable images) interrupt it.
    quiet_bar = args.command == "train" and not args.quiet
    logging.basicConfig(level=logging.WARNING if quiet_bar else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return {"train": _train, "evaluate": _evaluate, "publish": _publish,
                "export": _export, "config": _config,
                "sample-data": _sample_data}[args.command](args)
    except TrainingStopped as exc:
        print(f"stopped ({exc.reason}); run the same command again to resume", file=sys.stderr)
        return 130
    except TrainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from trainer import warm_start
    from trainer.config import TrainConfig
    from trainer.data import open_collection
    from trainer.launcher import run_training

    config = TrainConfig.from_strings(args.overrides)
    weights = warm_start.resolve(config.init_from, args.models,
                                 backbone=config.backbone) if config.init_from else None
    Path(args.out).mkdir(parents=True, exist_ok=True)
    collection = open_collection(args.data, work_dir=args.out)
    print(f"dataset {collection.name}: {_describe(collection.summary())}")
    # What the run was trained on, so that publishing it names the right collection.
    atomic_write_json(Path(args.out) / DATA_RECORD, {
        "dataset": collection.name, "path": str(Path(args.data).resolve())})
    # Under torchrun every process runs this command; rank 0 alone reports.
    other_rank = os.environ.get("RANK", "0") != "0"
    bar = None if args.quiet or other_rank else tqdm(total=config.total_epochs, unit="epoch",
                                                     dynamic_ncols=True)

    def on_epoch(r: dict[str, Any]) -> None:
        if bar is None:
            return
        bar.n = r["global_epoch"]
        postfix = {"round": f"{r['round']}/{r['rounds'] - 1}", "loss": f"{r['loss']:.3f}",
                   "lr": f"{r['lr']:.2g}", "img/s": f"{r['images_per_s']:.0f}"}
        if r["neighbourhood_quality"] is not None:
            postfix["nq"] = f"{r['neighbourhood_quality']:.3f}"
        if r["knn_top1"] is not None:
            postfix["knn"] = f"{r['knn_top1']:.3f}"
        bar.set_postfix(postfix, refresh=False)
        bar.refresh()

    def on_status(phase: str, info: dict[str, Any]) -> None:
        if phase == "discovery" and bar is not None:
            bar.write(f"round {info['round']}: discovering {info['anchors']} anchor "
                      "neighbourhoods")

    stop = _StopOnSignal()
    try:
        # gpus=k: k processes on this machine (this one is rank 0); under torchrun, the rank
        # torchrun gave this process.
        result = run_training(config, collection, args.out, on_epoch=on_epoch,
                              on_status=on_status, should_stop=stop, init_weights=weights)
    finally:
        stop.restore()
        if bar is not None:
            bar.close()
    print(json.dumps(result.metrics, indent=2))
    print(f"model, metrics and curves in {result.out_dir}")
    return 0


class _StopOnSignal:
    """First Ctrl-C (or SIGTERM) stops after the current batch with a checkpoint; a second
    one interrupts at once."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT,
                                                                       signal.SIGTERM)}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.reason:
            raise KeyboardInterrupt
        self.reason = "interrupted"
        print("\nstopping after this batch (press Ctrl-C again to abort)", file=sys.stderr)

    def __call__(self) -> str | None:
        return self.reason

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _evaluate(args: argparse.Namespace) -> int:
    import dataclasses

    import numpy as np

    from trainer import baseline
    from trainer.config import TrainConfig
    from trainer.data import open_collection
    from trainer.encoder_file import EmbeddingModel
    from trainer.evaluation import knn_evaluation
    from trainer.label_free_baselines import score_with_baselines
    from trainer.loader import BatchReader, embed_all, prepare

    model_dir = Path(args.model)
    saved = json.loads((model_dir / "config.json").read_text()) if (
        model_dir / "config.json").exists() else {}
    config = TrainConfig.from_strings(args.overrides, saved)
    model = EmbeddingModel.load(model_dir / "encoder.pt", config.device, config.precision)
    collection = open_collection(args.data)
    if args.no_labels:  # whatever the folders say: no label, no split
        n = len(collection)
        collection = dataclasses.replace(collection, labels=np.full(n, -1, dtype=np.int64),
                                         classes=[], is_eval=np.zeros(n, dtype=bool))
    size = model.meta.image_size
    prepared = prepare(collection, size, cache=config.cache_images,
                       cache_max_gb=config.cache_max_gb, num_workers=config.num_workers)
    if args.no_labels:
        print(json.dumps(score_with_baselines(prepared, model, init_seed=config.seed),
                         indent=2))
        return 0
    coll = prepared.collection
    if not coll.has_labels:  # said before the embedding pass, not after it
        return _no_labels(coll.layout_note)
    reader = BatchReader(prepared, size, config.num_workers, pin_memory=model.runtime.cuda)
    vectors = embed_all(reader, len(coll), model.meta.dim, model.embed_uint8)
    metrics = knn_evaluation(vectors, coll.labels, coll.is_eval, len(coll.classes),
                             config.knn_k, config.knn_sigma)
    if metrics is None:
        return _no_labels(coll.layout_note)
    metrics.update(baseline.measure(prepared, config.knn_k, config.knn_sigma) or {})
    metrics.update(score_with_baselines(prepared, model, vectors, init_seed=config.seed))
    print(json.dumps(metrics, indent=2))
    return 0


def _publish(args: argparse.Namespace) -> int:
    from trainer.bundle import require_finished_run, set_current, write_bundle

    run = Path(args.run)
    require_finished_run(run)
    dataset = args.dataset or _recorded_dataset(run)
    if dataset is None:
        print(f"error: {run} does not record the data it was trained on (a run of an older "
              "version): name its dataset with --dataset", file=sys.stderr)
        return 2
    path = write_bundle(run, args.models, dataset=dataset, index_kind=args.index,
                        map_points=args.map_points)
    if not args.no_current:
        set_current(args.models, path.name)
    print(f"published {path} into collection {dataset!r}"
          + ("" if args.no_current else " (current)"))
    return 0


def _recorded_dataset(run: Path) -> str | None:
    try:
        return str(json.loads((run / DATA_RECORD).read_text())["dataset"]) or None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _export(args: argparse.Namespace) -> int:
    from trainer.export import SPEC_FILE, export

    path = export(args.model, args.out)
    spec = json.loads((path.parent / SPEC_FILE).read_text())
    size, dim = spec["image_size"], spec["dim"]
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): uint8 RGB images "
          f"[N, {size}, {size}, 3] -> float32 [N, {dim}] unit vectors; see "
          f"{path.parent / SPEC_FILE}")
    return 0


def _config(args: argparse.Namespace) -> int:
    from trainer.config import TrainConfig

    for key, info in TrainConfig.documentation().items():
        print(f"{key} = {json.dumps(info['default'])}")
        print(textwrap.indent(textwrap.fill(info["doc"], 90), "    "))
    return 0


def _sample_data(args: argparse.Namespace) -> int:
    from trainer.sample_data import (
        PHOTO_REGIONS,
        write_digits,
        write_photo_patches,
        write_scattered_digits,
    )

    if args.photo_patches:
        root = write_photo_patches(args.dir, per_class=args.per_class, seed=args.seed)
        print(f"wrote patches of scikit-learn's sample photos to {root} (train/ and test/, one "
              f"folder per region: {', '.join(PHOTO_REGIONS)})")
        return 0
    write = write_scattered_digits if args.scattered else write_digits
    root = write(args.dir, seed=args.seed)
    print(f"wrote scikit-learn's digits to {root} (train/ and test/, one folder per digit)")
    return 0


def _no_labels(layout_note: str | None) -> int:
    print("error: the dataset has no labels to evaluate against (--no-labels gives the "
          "label-free scores)" + (f"; {layout_note}" if layout_note else ""), file=sys.stderr)
    return 2


def _describe(summary: dict[str, Any]) -> str:
    parts = [f"{summary['items']} images", f"{summary['train_items']} for training"]
    if summary["eval_items"]:
        parts.append(f"{summary['eval_items']} for evaluation")
    parts.append(f"{len(summary['classes'])} classes" if summary["labelled"] else "unlabelled")
    if summary["ignored_files"]:
        parts.append(f"{summary['ignored_files']} non-image files ignored")
    note = summary.get("layout_note")
    return ", ".join(parts) + (f"\n  note: {note}" if note else "")
