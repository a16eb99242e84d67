"""Row bitmaps as FAISS's IDSelectorBitmap reads them: bit `row & 7` of byte `row >> 3` (little
bit order) is set when the row is selected."""

from __future__ import annotations

import numpy as np


def pack(mask: np.ndarray) -> np.ndarray:
    return np.packbits(mask.astype(bool), bitorder="little")


def unpack(bits: np.ndarray, rows: int) -> np.ndarray:
    return np.unpackbits(bits, count=rows, bitorder="little").astype(bool)


def clear(bits: np.ndarray, row: int) -> None:
    bits[row >> 3] &= np.uint8(0xFF ^ (1 << (row & 7)))
