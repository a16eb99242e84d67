"""Decoding and the one preprocessing every image goes through: at training, at evaluation and
when the service embeds a query. Keeping it in one function is what makes a served embedding
match the indexed one for the same file.
"""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from trainer.errors import TrainerError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}
)
# Far above any photo; refuses decompression bombs before they allocate.
MAX_PIXELS = 128 * 1024 * 1024


class InvalidImage(TrainerError, ValueError):
    """The bytes are not an image we can decode."""


def is_image_name(name: str) -> bool:
    dot = name.rfind(".")
    return dot >= 0 and name[dot:].lower() in IMAGE_EXTENSIONS


def decode_square(data: bytes, size: int) -> np.ndarray:
    """Decode image bytes to a `size`x`size`x3 uint8 array.

    Greyscale, palette, alpha and 16-bit images become RGB; the shorter side is resized to
    `size` and the centre is cropped, so any aspect ratio and any size is accepted.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise InvalidImage(f"image too large ({image.width}x{image.height} pixels)")
            # JPEG can decode at 1/2, 1/4, 1/8 scale directly: big photos decode much faster.
            image.draft("RGB", (size, size))
            image = ImageOps.exif_transpose(image)
            image = _to_rgb(image)
            image = ImageOps.fit(image, (size, size), Image.Resampling.BICUBIC)
            return np.asarray(image, dtype=np.uint8).copy()
    except InvalidImage:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Messages of PIL name in-memory objects (<_io.BytesIO object at 0x...>): drop them.
        reason = re.sub(r"\s*<[^>]*object at 0x[0-9a-f]+>", "", str(exc)).strip() or (
            type(exc).__name__)
        raise InvalidImage(f"not a readable image ({reason})") from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit and float greyscale: rescale to 8 bits instead of clipping.
        arr = np.asarray(image, dtype=np.float32)
        hi = 65535.0 if image.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr = np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels over white, the way image viewers show them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


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
