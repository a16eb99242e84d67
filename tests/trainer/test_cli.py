"""The command line as a user runs it: a real subprocess."""

import json
import shutil
import subprocess
import sys

import numpy as np

from trainer.label_free import MEASURE


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_train_evaluate_publish(cifar_zip, tmp_path):
    out = tmp_path / "run"
    r = _cli("train", "--data", str(cifar_zip), "--out", str(out), "--quiet",
             "--set", "backbone=small_cnn", "rounds=2", "--set", "epochs_per_round=1",
             "batch_size=32", "knn_k=10", "num_workers=0")
    assert r.returncode == 0, r.stderr
    assert "120 images" in r.stdout and "4 classes" in r.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["knn_protocol"] == "test" and metrics["knn_queries"] == 24
    assert "pixel_knn_top1" in metrics and metrics["pixel_knn_queries"] == 24
    assert len((out / "progress.jsonl").read_text().splitlines()) == 2

    e = _cli("evaluate", "--model", str(out), "--data", str(cifar_zip))
    assert e.returncode == 0, e.stderr
    evaluated = json.loads(e.stdout)
    # The saved encoder, embedded again by `evaluate` with the run's own kNN settings (from
    # its config.json: knn_k=10 as trained, sigma the default), is the model training
    # measured: the same figures, not merely close ones. (knn_top5 is 1.0 whatever the model
    # with 4 classes; top-1 and the settings are what can differ.)
    assert (evaluated["knn_k"], evaluated["knn_sigma"]) == (10, 0.1)
    shared = ("knn_top1", "knn_top5", "knn_protocol", "knn_queries", "knn_k", "knn_sigma")
    assert {k: evaluated[k] for k in shared} == {k: metrics[k] for k in shared}
    assert evaluated["pixel_knn_top1"] == metrics["pixel_knn_top1"]
    # The label-free figures, on the same items as training measured them.
    assert evaluated["label_free_items"] == 120
    assert all(0.0 < evaluated[k] <= 1.0
               for k in ("label_free", "pixel_label_free", "untrained_label_free"))
    assert {k: evaluated[k] for k in ("label_free", "pixel_label_free")} == {
        k: metrics[k] for k in ("label_free", "pixel_label_free")}
    # What the score measures is kept with it: a score compares only with its own kind.
    assert evaluated["label_free_measure"] == metrics["label_free_measure"] == MEASURE

    # Published from a folder named `run`, the model serves the collection of the data it was
    # trained on (named after the run folder, it would serve images that are not there).
    p = _cli("publish", "--run", str(out), "--models", str(tmp_path / "models"))
    assert p.returncode == 0, p.stderr
    pointer = tmp_path / "models" / "collections" / cifar_zip.name / "CURRENT"
    version = pointer.read_text().strip()
    manifest = json.loads((tmp_path / "models" / version / "manifest.json").read_text())
    assert manifest["dataset"] == cifar_zip.name and f"{cifar_zip.name!r}" in p.stdout
    assert manifest["map_points"] == 120  # every item: fewer than the default 50,000

    # A smaller map: a sample of the items; none at all with 0; a negative count is refused.
    for points, shown in (("50", 50), ("0", None)):
        p = _cli("publish", "--run", str(out), "--models", str(tmp_path / "models"),
                 "--no-current", "--map-points", points)
        assert p.returncode == 0, p.stderr
        version = p.stdout.split()[1].rsplit("/", 1)[-1]
        bundle = tmp_path / "models" / version
        assert json.loads((bundle / "manifest.json").read_text())["map_points"] == shown
        assert (bundle / "map.npy").exists() is (shown is not None)
        if shown:
            assert np.load(bundle / "map.npy").shape == (50, 2)
    p = _cli("publish", "--run", str(out), "--models", str(tmp_path / "models"),
             "--map-points", "-1")
    assert p.returncode == 2 and "--map-points" in p.stderr and "Traceback" not in p.stderr


def test_bad_config_and_bad_data_exit_2_with_a_clear_message(cifar_zip, tmp_path):
    r = _cli("train", "--data", str(cifar_zip), "--out", str(tmp_path / "o"), "--set", "lr=-1")
    assert r.returncode == 2 and "'lr'" in r.stderr and "Traceback" not in r.stderr
    r = _cli("train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    # Publishing a folder that holds no finished run (with or without a dataset named).
    for named in ((), ("--dataset", "x")):
        r = _cli("publish", "--run", str(tmp_path / "nowhere"), "--models",
                 str(tmp_path / "models"), *named)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert f"{tmp_path / 'nowhere'} is not a finished training run (no encoder.pt" \
            in r.stderr, r.stderr


def test_config_lists_every_key():
    r = _cli("config")
    assert r.returncode == 0 and "anchor_rate" in r.stdout and "bank_momentum = 0.5" in r.stdout


def test_sample_data_writes_photo_patches_or_digits(tmp_path):
    r = _cli("sample-data", "--photo-patches", str(tmp_path / "pp"), "--per-class", "5",
             "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert "sky" in r.stdout and "flower_heart" in r.stdout
    assert len(list((tmp_path / "pp" / "train").glob("*/*.jpg"))) == 8 * 4
    assert len(list((tmp_path / "pp" / "test").glob("*/*.jpg"))) == 8
    r = _cli("sample-data", str(tmp_path / "digits"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "digits" / "train").iterdir()) == [
        str(d) for d in range(10)]
    r = _cli("sample-data", "--photo-patches", "--scattered", str(tmp_path / "both"))
    assert r.returncode == 2 and "not allowed with" in r.stderr


def test_sample_data_refuses_a_bad_count(tmp_path):
    for bad in ("0", "-3", "many"):
        r = _cli("sample-data", "--photo-patches", str(tmp_path / "pp"), "--per-class", bad)
        assert r.returncode == 2 and "--per-class" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "pp").exists()


def _flat_folder(root, n=40, side=16):
    """Images straight in `root`: no class folder, no split."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir()
    for i in range(n):
        pixels = np.zeros((side, side, 3), dtype=np.uint8)
        pixels[:] = rng.integers(0, 256, size=3)
        top, left = rng.integers(0, side // 2, size=2)
        pixels[top:top + side // 2, left:left + side // 2] = rng.integers(0, 256, size=3)
        Image.fromarray(pixels).save(root / f"{i:03d}.png")
    return root


def test_evaluate_without_labels_on_a_flat_folder(tmp_path):
    import torch

    from trainer.backbones import Encoder
    from trainer.encoder_file import EncoderMeta, save_encoder

    # The model is the seed-0 initialisation itself, so it must score exactly what the
    # untrained network scores on the same items and views.
    torch.manual_seed(0)
    model = tmp_path / "model"
    model.mkdir()
    save_encoder(model / "encoder.pt", Encoder("small_cnn", 8),
                 EncoderMeta("small_cnn", 8, 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    data = _flat_folder(tmp_path / "flat")

    r = _cli("evaluate", "--model", str(model), "--data", str(data), "--set", "num_workers=0")
    assert r.returncode == 2 and "--no-labels" in r.stderr
    # Class folders with a loose image beside them: no labels either, and the reason is given.
    (data / "kind-a").mkdir()
    shutil.move(data / "000.png", data / "kind-a" / "000.png")
    r = _cli("evaluate", "--model", str(model), "--data", str(data), "--set", "num_workers=0")
    assert r.returncode == 2 and "lie outside any folder" in r.stderr, r.stderr
    r = _cli("train", "--data", str(data), "--out", str(tmp_path / "run"), "--set", "rounds=1",
             "epochs_per_round=1", "backbone=small_cnn", "num_workers=0", "device=cpu")
    assert r.returncode == 0 and "note: read as unlabelled: 39 image(s)" in r.stdout, r.stdout

    r = _cli("evaluate", "--model", str(model), "--data", str(data), "--no-labels",
             "--set", "num_workers=0", "device=cpu")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert not any(key.startswith(("knn", "loo", "pixel_knn")) for key in out)
    assert out["label_free_items"] == 40
    for key in ("label_free", "pixel_label_free", "untrained_label_free"):
        assert 0.0 < out[key] <= 1.0
    assert out["label_free"] == out["untrained_label_free"]
    assert out["label_free_parts"]["model"] == out["label_free_parts"]["untrained"]
    assert set(out["label_free_parts"]["pixels"]) >= {"retrieval_mrr", "effective_rank"}
    assert out["label_free"] == out["label_free_parts"]["model"][MEASURE]
    assert out["label_free_measure"] == MEASURE


def test_labels_only_in_the_test_split_are_measured_leave_one_out(tmp_path):
    """train/ holds unlabelled images, test/ two class folders: the test items' labels are
    the only ones, so each of them is voted on by the others (for the model and for raw
    pixels alike)."""
    (tmp_path / "data").mkdir()
    data = _flat_folder(tmp_path / "data" / "train")
    for n, picture in enumerate(sorted(data.iterdir())[:8]):
        kind = tmp_path / "data" / "test" / ("dark" if n % 2 else "light")
        kind.mkdir(parents=True, exist_ok=True)
        shutil.move(picture, kind / picture.name)
    r = _cli("train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
             "--quiet", "--set", "rounds=1", "epochs_per_round=1", "backbone=small_cnn",
             "num_workers=0", "device=cpu", "knn_k=3")
    assert r.returncode == 0, r.stderr
    assert "32 for training, 8 for evaluation, 2 classes" in r.stdout, r.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["knn_protocol"] == metrics["pixel_knn_protocol"] == "leave-one-out"
    assert metrics["knn_queries"] == 8 and 0.0 <= metrics["loo_knn_top1"] <= 1.0
