import io
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from trainer.data import open_collection
from trainer.errors import DatasetError
from trainer.images import AVIF, HEIF, InvalidImage, decode_square, to_rgb
from trainer.loader import prepare


def _png(mode="RGB", size=(20, 12), color=128) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def test_split_and_class_layout_with_stable_ids(cifar_dir):
    c = open_collection(cifar_dir)
    assert c.classes == ["airplane", "cat", "ship", "truck"]
    assert len(c) == 120 and int(c.is_eval.sum()) == 24
    assert "train/cat/0000.jpg" in c.ids and "test/ship/0000.jpg" in c.ids
    i = c.ids.index("test/ship/0000.jpg")
    assert c.is_eval[i] and c.classes[c.labels[i]] == "ship"
    assert c.summary()["splits"] == {"train": 96, "test": 24}


@pytest.mark.parametrize(("train", "test"), [("Train", "Test"), ("TRAIN", "VAL"),
                                              ("training", "testing"), ("Training", "Valid")])
def test_split_folders_in_any_case_and_their_long_names(tmp_path, train, test):
    """"Train/Test" as Windows and macOS users write them, "training/testing" as some data
    sets ship: splits, never two classes named after them (the test images trained on)."""
    root = _write(tmp_path / "d", {f"{split}/{kind}/{i}.png": _png()
                                   for split in (train, test) for kind in ("Cat", "Dog")
                                   for i in range(3)})
    c = open_collection(root)
    assert c.classes == ["Cat", "Dog"] and int(c.is_eval.sum()) == 6
    assert all(c.is_eval[i] == item.startswith(test) for i, item in enumerate(c.ids))
    assert f"{test}/Cat/0.png" in c.ids  # ids keep the folders' own names
    assert c.summary()["splits"] == {"train": 6, test.lower(): 6}


def test_zip_with_one_top_folder_reads_as_that_folder(cifar_zip, cifar_dir):
    z = open_collection(cifar_zip)
    d = open_collection(cifar_dir)
    assert z.ids == d.ids and (z.labels == d.labels).all()
    i = z.ids.index("train/airplane/0003.jpg")
    assert np.array_equal(z.load(i, 32), d.load(d.ids.index("train/airplane/0003.jpg"), 32))


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_tar_archives(cifar_dir, tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    with tarfile.open(path, "w:gz" if suffix.endswith("gz") else "w") as tf:
        tf.add(cifar_dir, arcname="cifar10")
    c = open_collection(path, work_dir=str(tmp_path / "work"))
    assert len(c) == 120 and c.classes == ["airplane", "cat", "ship", "truck"]
    assert c.load(0, 32).shape == (32, 32, 3)


def test_class_folders_without_splits_and_flat_folders(tmp_path):
    labelled = _write(tmp_path / "a", {f"{c}/{i}.png": _png() for c in "xy" for i in range(3)})
    c = open_collection(labelled)
    assert c.classes == ["x", "y"] and not c.is_eval.any() and c.ids[0] == "x/0.png"
    flat = _write(tmp_path / "b", {f"img{i}.png": _png() for i in range(4)} | {
        "sub/deeper/img.png": _png(), "notes.txt": b"hello", ".DS_Store": b"x"})
    f = open_collection(flat)
    assert not f.has_labels and len(f) == 5 and f.ignored == ["notes.txt"]
    assert c.layout_note is None and f.layout_note == (
        "read as unlabelled: 4 image(s) lie outside any folder (e.g. 'img0.png') beside the "
        "folders 'sub'; class folders give labels only when every image of a split sits in one")
    plain = _write(tmp_path / "d", {f"img{i}.png": _png() for i in range(3)})
    assert open_collection(plain).layout_note is None  # no folder: nothing was lost
    # Splits: the train split's loose image leaves the test split's classes alone.
    split = _write(tmp_path / "c", {f"{s}/{c}/{i}.png": _png() for s in ("train", "test")
                                    for c in "xy" for i in range(3)} | {"train/odd.png": _png()})
    s = open_collection(split)
    assert s.classes == ["x", "y"] and (s.labels[s.is_eval] >= 0).all()
    assert (s.labels[~s.is_eval] == -1).all() and (s.layout_note or "").startswith(
        "the split(s) train read as unlabelled: 1 image(s) lie outside any folder (e.g. "
        "'train/odd.png')")


def test_npz_arrays(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.integers(0, 255, (30, 8, 8), dtype=np.uint8),
             y_train=np.arange(30) % 3, x_test=rng.random((6, 3, 8, 8)).astype(np.float32),
             y_test=np.arange(6) % 3)
    c = open_collection(path)
    assert len(c) == 36 and c.classes == ["0", "1", "2"] and int(c.is_eval.sum()) == 6
    assert c.ids[0] == "train/00000" and c.load(35, 16).shape == (16, 16, 3)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "RGB"])
def test_any_mode_and_size_becomes_a_square_rgb(mode):
    color = 300 if mode == "I;16" else 100
    out = decode_square(_png(mode, (50, 20), color), 24)
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8


@pytest.mark.parametrize(("bits", "peak"), [(16, 65535), (16, 40000), (12, 4095), (10, 1023),
                                           (8, 200)])
def test_deep_greyscale_is_scaled_by_the_bits_it_uses(bits, peak):
    """A 16-bit PNG of 12-bit data (a microscope's or a scanner's) fills the 8 bits it is
    reduced to, as a 16-bit one does; one whose brightest pixel is 40,000 of 65,535 stays
    that grey, not stretched to white."""
    ramp = np.tile(np.linspace(0, peak, 64), (64, 1)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, "PNG")
    out = decode_square(buf.getvalue(), 64)[..., 0].astype(int)
    top = 2 ** max(bits, 8) - 1
    assert abs(out[:, -1].max() - round(peak / top * 255)) <= 1, out[:, -1]
    assert out[:, 0].max() == 0 and len(np.unique(out)) > min(50, peak // 4)


def test_one_bright_pixel_of_a_32_bit_image_costs_no_more_than_the_image():
    """8 x 8 pixels, one of them 2**30: scaled as the float path scales it, without a table
    of values up to the peak (it took 12 GB and 22 s)."""
    arr = np.zeros((8, 8), dtype=np.int32)
    arr[0, 0], arr[1, 1] = 2**30, 2**29
    tracemalloc.start()  # numpy reports its buffers to it
    try:
        out = np.asarray(to_rgb(Image.fromarray(arr, mode="I")))
        assert tracemalloc.get_traced_memory()[1] < 1_000_000
    finally:
        tracemalloc.stop()
    assert out.shape == (8, 8, 3) and out[0, 0, 0] == 255 and out[2, 2, 0] == 0
    assert out[1, 1, 0] == 255  # above the 16-bit full scale (to_rgb clips, as for floats)


def test_webp_jpeg_and_avif(tmp_path):
    for fmt in ("WEBP", "JPEG", *(("AVIF",) if AVIF else ())):
        buf = io.BytesIO()
        Image.new("RGB", (300, 200), (10, 200, 30)).save(buf, format=fmt)
        out = decode_square(buf.getvalue(), 32)
        assert out.shape == (32, 32, 3) and abs(int(out[16, 16, 1]) - 200) < 10


def test_jfif_and_avif_files_are_dataset_images(tmp_path):
    """Windows saves JPEGs as .jfif; AVIF where this Pillow decodes it (its wheels do)."""
    files = {f"a{i}.jfif": _png() for i in range(2)}  # the bytes decide the decoder
    if AVIF:
        buf = io.BytesIO()
        Image.new("RGB", (20, 12), (10, 200, 30)).save(buf, format="AVIF")
        files |= {"b.avif": buf.getvalue()}
    c = open_collection(_write(tmp_path / "d", files))
    assert sorted(c.ids) == sorted(files) and not c.ignored
    assert c.load(c.ids.index(sorted(files)[-1]), 8).shape == (8, 8, 3)


@pytest.mark.skipif(not HEIF, reason="the optional `heif` extra (pillow-heif) is not installed")
def test_heic_photos_with_the_heif_extra(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buf, format="HEIF")
    c = open_collection(_write(tmp_path / "d", {"IMG_0001.HEIC": buf.getvalue(),
                                                "IMG_0002.heic": buf.getvalue()}))
    assert c.ids == ["IMG_0001.HEIC", "IMG_0002.heic"] and not c.ignored
    assert abs(int(c.load(0, 8)[4, 4, 1]) - 200) < 10


def test_without_the_heif_extra_heic_photos_are_named_as_the_reason(monkeypatch, tmp_path):
    import trainer.images

    monkeypatch.setattr(trainer.images, "HEIF", False)
    message = trainer.images.no_images("the archive", ["a.HEIC", "b.heif", "notes.txt"])
    assert message.startswith("the archive holds no images (JPEG, PNG")
    assert message.endswith("; 3 other files, 2 of them HEIC photos: install the `heif` extra "
                            "(pip install 'and-retrieval[heif]', pillow-heif) to read them")
    assert "HEIC photos" not in trainer.images.no_images("x", ["notes.txt"])


def test_the_exif_orientation_is_applied():
    """A camera's portrait photo stored landscape with orientation 6 (rotate 90 degrees
    clockwise to view): the left half (red) becomes the top."""
    image = Image.new("RGB", (64, 32), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 32, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif, quality=95)
    out = decode_square(buf.getvalue(), 32)
    assert out[4, 16, 0] > 200 and out[4, 16, 2] < 60  # top: red
    assert out[28, 16, 2] > 200 and out[28, 16, 0] < 60  # bottom: blue


def _portrait_stored_landscape(width: int) -> Image.Image:
    """Left half red, right half blue: upright (orientation 6), red is on top."""
    image = Image.new("RGB", (width, width // 2), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, width // 2, width // 2))
    return image


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP", "JPEG"])
def test_a_large_image_is_reduced_first_and_still_turned_upright(fmt):
    """2048 x 1024 for 32 x 32: reduced by 16 before it is turned upright and converted (a
    JPEG by its decoder); the orientation is read from the file (a TIFF keeps it in the file's
    own tags, which the reduced copy does not have, and its decoder turns it upright itself).
    (HEIC is turned upright by its decoder; pillow-heif writes no orientation to test.)"""
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    _portrait_stored_landscape(2048).save(buf, format=fmt, exif=exif)
    out = decode_square(buf.getvalue(), 32)
    assert out[4, 16, 0] > 200 and out[4, 16, 2] < 60, out[4, 16]  # top: red
    assert out[28, 16, 2] > 200 and out[28, 16, 0] < 60, out[28, 16]  # bottom: blue


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA"])
def test_resizing_first_gives_the_pixels_of_converting_first(mode):
    """A 1920 x 1280 image for 32 x 32, resized before it is converted to RGB (and reduced by
    a whole factor first): within a grey level on average of the full bicubic resize of its RGB
    conversion, half-transparent pixels over white as well (Pillow's own reducing_gap=3 is
    0.77 on average, 9 at most, on this image)."""
    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 256, (24, 36, 4), dtype=np.uint8), "RGBA")
    image = coarse.resize((1920, 1280), Image.Resampling.BICUBIC).convert(mode)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    reduced = decode_square(buf.getvalue(), 32).astype(int)
    full = np.asarray(ImageOps.fit(to_rgb(image), (32, 32), Image.Resampling.BICUBIC)).astype(int)
    assert np.abs(reduced - full).max() <= 10 and np.abs(reduced - full).mean() < 1


def test_garbage_is_an_invalid_image():
    with pytest.raises(InvalidImage):
        decode_square(b"not an image at all", 32)


def _corrupt_dataset(cifar_dir: Path) -> Path:
    (cifar_dir / "train/cat/broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    good = (cifar_dir / "train/cat/0000.jpg").read_bytes()
    (cifar_dir / "train/ship/truncated.jpg").write_bytes(good[: len(good) // 3])
    return cifar_dir


def test_corrupt_files_are_reported_by_path_and_skipped(cifar_dir):
    c = open_collection(_corrupt_dataset(cifar_dir))
    prepared = prepare(c, 32, num_workers=0)
    skipped = dict(prepared.collection.skipped)
    assert set(skipped) == {"train/cat/broken.jpg", "train/ship/truncated.jpg"}
    assert len(prepared.collection) == 120 and prepared.images.shape[0] == 120


def test_corrupt_files_refuse_the_dataset_when_asked(cifar_dir):
    c = open_collection(_corrupt_dataset(cifar_dir))
    with pytest.raises(DatasetError, match=r"train/cat/broken\.jpg"):
        prepare(c, 32, on_corrupt="fail", num_workers=0)


def test_streaming_mode_decodes_in_worker_processes(cifar_dir):
    c = open_collection(_corrupt_dataset(cifar_dir))
    prepared = prepare(c, 32, cache="never", num_workers=2)
    assert prepared.images is None and len(prepared.collection.skipped) == 2
    assert prepared.mean.shape == (3,) and (prepared.std > 0).all()


def test_unusable_datasets_fail_before_training(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no images"):
        open_collection(empty)
    three = _write(tmp_path / "three", {f"{i}.png": _png() for i in range(3)})
    with pytest.raises(DatasetError, match="3 training images"):
        prepare(open_collection(three), 16, num_workers=0)
    one_class = _write(tmp_path / "one", {f"train/cat/{i}.png": _png() for i in range(20)}
                       | {f"test/cat/{i}.png": _png() for i in range(2)})
    with pytest.raises(DatasetError, match="only one class"):
        open_collection(one_class)
    with pytest.raises(DatasetError, match="does not exist"):
        open_collection(tmp_path / "missing")
    (tmp_path / "x.rar").write_bytes(b"rar")
    with pytest.raises(DatasetError, match="unsupported"):
        open_collection(tmp_path / "x.rar")


def test_archive_entries_that_escape_are_ignored(tmp_path):
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(12):
            z.writestr(f"ok/{i}.png", _png())
        z.writestr("../escape.png", _png())
        z.writestr("/abs.png", _png())
    c = open_collection(path)
    assert len(c) == 12 and all(".." not in i and not i.startswith("/") for i in c.ids)
