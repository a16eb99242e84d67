"""Decoding and the one preprocessing every image goes through: at training, at evaluation and
when the service embeds a query. Keeping it in one function is what makes a served embedding
match the indexed one for the same file.
"""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from trainer.errors import TrainerError

# AVIF where this Pillow decodes it (its wheels carry libavif from 11.3 on; a build without
# it does not).
AVIF = features.check("avif")
try:  # HEIC/HEIF (iPhone photos) with the optional `heif` extra: pillow-heif adds a decoder
    from pillow_heif import register_heif_opener
except ImportError:
    HEIF = False
else:
    register_heif_opener()
    HEIF = True
# The formats users are told are accepted, by Pillow's name, as the messages spell them.
NAMED_FORMATS = ({"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "BMP": "BMP", "GIF": "GIF",
                  "TIFF": "TIFF"} | ({"AVIF": "AVIF"} if AVIF else {})
                 | ({"HEIF": "HEIC"} if HEIF else {}))
*_FIRST_NAMES, _LAST_NAME = NAMED_FORMATS.values()
ACCEPTED = f"{', '.join(_FIRST_NAMES)} or {_LAST_NAME}"
HEIF_EXTENSIONS = (".heic", ".heif")
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm",
     ".pgm"} | ({".avif"} if AVIF else set()) | (set(HEIF_EXTENSIONS) if HEIF else set())
)
# Pillow decoders an image may be read with: the formats of IMAGE_EXTENSIONS (PPM: also .pgm,
# for datasets). Pillow would otherwise try every decoder it has (PCX, EPS, ICO, ...) on any
# bytes it is given.
IMAGE_FORMATS = (*NAMED_FORMATS, "PPM")
# Dataset images: far above any photo, so only a decompression bomb is refused (the loader then
# skips it or refuses the dataset, naming the file, as `on_corrupt` says). Checked from the
# header, before any pixel is decoded. Queries have their own, smaller limit (the service's
# MAX_QUERY_PIXELS).
MAX_PIXELS = 128 * 1024 * 1024
# These explicit limits replace Pillow's global bomb check (MAX_IMAGE_PIXELS, 89 MP), which
# would otherwise refuse dataset images below MAX_PIXELS; past twice its value Pillow still
# refuses on its own. `warnings.catch_warnings` is not thread-safe, so the warning is not
# turned into an error per call.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class InvalidImage(TrainerError, ValueError):
    """The bytes are not an image we can decode."""


class ImageTooLarge(InvalidImage):
    """An image whose header declares more pixels than the limit in force."""

    def __init__(self, width: int, height: int, limit: int) -> None:
        self.width, self.height, self.limit = width, height, limit
        super().__init__(f"image is {width}x{height} pixels ({width * height / 1e6:.1f} MP); "
                         f"the limit is {limit / 1e6:.1f} MP")


# System clutter an archive or a copied folder brings along (macOS's __MACOSX/ and ._ files,
# .DS_Store, hidden folders): never an item, wherever it lies in a path.
CLUTTER_PREFIXES = (".", "__MACOSX")


def is_clutter(rel_path: str) -> bool:
    """True when any part of a relative, /-separated path is system clutter."""
    return any(part.startswith(CLUTTER_PREFIXES) for part in rel_path.split("/"))


def no_images(where: str, left_out: list[str]) -> str:
    """The message for `where` (e.g. "the archive") holding no image: the accepted formats, and
    how many of the files left out are HEIC photos, which need the optional `heif` extra."""
    heic = sum(name.lower().endswith(HEIF_EXTENSIONS) for name in left_out)
    return (f"{where} holds no images ({ACCEPTED})"
            + (f"; {len(left_out)} other files" if left_out else "")
            + (f", {heic} of them HEIC photos: install the `heif` extra (pip install "
               "'and-retrieval[heif]', pillow-heif) to read them" if heic and not HEIF else ""))


def is_image_name(name: str) -> bool:
    dot = name.rfind(".")
    return dot >= 0 and name[dot:].lower() in IMAGE_EXTENSIONS


def open_image(data: bytes, *, formats: tuple[str, ...] = IMAGE_FORMATS,
               max_pixels: int = MAX_PIXELS, decode_size: int | None = None) -> Image.Image:
    """Read an image's header only (nothing is decoded yet): its format must be one of
    `formats` and the pixels it will decode to at most `max_pixels`.

    With `decode_size` (the side it will be reduced to), a JPEG is set to decode at the
    smallest of 1/1, 1/2, 1/4 or 1/8 of its size that still covers it (`Image.draft`), and the
    limit holds for those pixels: a 50-megapixel phone photo decodes to 0.8 MP for a model or a
    thumbnail, so it passes a limit meant to stop a PNG or TIFF of that size."""
    try:
        image = Image.open(io.BytesIO(data), formats=formats)
        width, height = image.size
        if decode_size:
            image.draft("RGB", (decode_size, decode_size))  # a JPEG only; the size it decodes to
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
            Image.DecompressionBombError) as exc:
        raise InvalidImage(f"not a readable image ({_reason(exc)})") from exc
    if image.width * image.height > max_pixels:
        raise ImageTooLarge(width, height, max_pixels)
    return image


def square(image: Image.Image, size: int) -> np.ndarray:
    """Decode an opened image to a `size`x`size`x3 uint8 array.

    Greyscale, palette, alpha and 16-bit images become RGB; the shorter side is resized to
    `size` and the centre is cropped, so any aspect ratio and any size is accepted.
    """
    try:
        # JPEG can decode at 1/2, 1/4, 1/8 scale directly: big photos decode much faster (a
        # no-op when open_image was given the size: it set this already).
        image.draft("RGB", (size, size))
        if image.mode in RESIZED_FIRST:
            # Turning an image upright and converting its colours copy it: resized first, a
            # 24-megapixel RGBA PNG takes ~8 bytes per pixel on its way to 32 x 32, not ~20
            # (docs/benchmarks.md, "Large images"). The centre square is the same either way.
            image.load()  # a TIFF decoder turns its image upright as it loads
            image = _centre_square(image, size)  # keeps the EXIF (in image.info)
            ImageOps.exif_transpose(image, in_place=True)
            return np.asarray(to_rgb(image), dtype=np.uint8).copy()
        # In place: without an orientation tag (most images) nothing is copied.
        ImageOps.exif_transpose(image, in_place=True)
        return np.asarray(_centre_square(to_rgb(image), size), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
            Image.DecompressionBombError) as exc:
        raise InvalidImage(f"not a readable image ({_reason(exc)})") from exc


# Modes resized before they are converted to RGB, which gives the same pixels: their values
# average (transparency over white is linear in them). Not palette indices or 1-bit pixels, and
# not 16-bit or float greyscale, whose brightest pixel sets their scale (to_rgb).
RESIZED_FIRST = frozenset({"L", "LA", "RGB", "RGBA"})


def _centre_square(image: Image.Image, size: int) -> Image.Image:
    """The centred square of the shorter side, resized to `size` (bicubic). A large image is
    first reduced by a whole factor to at least 3 x `size` (`reducing_gap`): what a JPEG's
    draft mode does in its decoder, for every format, with pixels within a grey level or two of
    the full filter's."""
    w, h = image.size
    side = min(w, h)
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    return image.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)


def decode_square(data: bytes, size: int) -> np.ndarray:
    """Decode image bytes to a `size`x`size`x3 uint8 array (see `square`)."""
    return square(open_image(data, decode_size=size), size)


def _reason(exc: BaseException) -> str:
    # Messages of PIL name in-memory objects (<_io.BytesIO object at 0x...>): drop them.
    return re.sub(r"\s*<[^>]*object at 0x[0-9a-f]+>", "", str(exc)).strip() or (
        type(exc).__name__)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode as RGB, one rule for everything that shows or embeds an image: 16-bit and
    float greyscale rescaled (Pillow would clip them to white or black), transparency over
    white."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit and float greyscale: rescale to 8 bits instead of clipping.
        arr = np.asarray(image)
        peak = float(arr.max(initial=0))
        hi = max(peak, 1.0) if image.mode == "F" else full_scale(peak)
        if image.mode != "F" and arr.min(initial=0) >= 0 and peak <= 0xFFFF:
            # Through a table of the values up to the peak: no float copy of the image (a
            # 24-megapixel 16-bit PNG took 14 bytes per pixel on its way to 32 x 32, now 9).
            # Not past 16 bits: one bright pixel of a 32-bit image would size the table.
            table = np.arange(int(peak) + 1, dtype=np.float32)
            arr = np.clip(table / hi * 255.0, 0, 255).astype(np.uint8)[arr]
        else:
            arr = np.clip(arr.astype(np.float32) / hi * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels over white, the way image viewers show them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def full_scale(peak: float) -> float:
    """The white of an integer image whose brightest pixel is `peak`: the top of the smallest
    of 8 to 16 bits that holds it. Cameras and scanners of science and medicine write 10, 12
    or 14 significant bits into 16-bit PNG and TIFF files; divided by 65,535 a 12-bit image
    would keep 16 grey levels and show nearly black."""
    bits = min(max(int(np.ceil(np.log2(peak + 1.0))), 8), 16) if peak > 0 else 8
    return float(2 ** bits - 1)


def array_to_square(array: np.ndarray, size: int) -> np.ndarray:
    """Same preprocessing for images given as arrays (npz datasets): HxW, HxWxC or CxHxW."""
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[2] not in (1, 3, 4):
        arr = np.transpose(arr, (1, 2, 0))
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32)
        if arr.max(initial=0.0) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        image = Image.fromarray(arr, mode="L")
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        image = Image.fromarray(arr[:, :, :3], mode="RGB")
    else:
        raise InvalidImage(f"array of shape {array.shape} is not an image")
    image = ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8).copy()
