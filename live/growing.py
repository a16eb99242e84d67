"""An append-only array that readers use without a lock (see live/index.py)."""

from __future__ import annotations

from typing import Any

import numpy as np


class Growing:
    """An append-only array whose storage is replaced (never resized in place) when full."""

    def __init__(self, shape: tuple[int, ...], dtype: Any, capacity: int = 1024) -> None:
        self.data = np.zeros((capacity, *shape), dtype=dtype)
        self.count = 0

    def append(self, rows: np.ndarray) -> None:
        need = self.count + len(rows)
        if need > len(self.data):
            grown = np.zeros((max(need, 2 * len(self.data)), *self.data.shape[1:]),
                             dtype=self.data.dtype)
            grown[:self.count] = self.data[:self.count]
            grown[self.count:need] = rows
            self.data = grown  # readers holding the old array still see whole rows
        else:
            self.data[self.count:need] = rows
        self.count = need

    def view(self) -> np.ndarray:
        count = self.count  # read the count first: the rows below it are complete
        return self.data[:count]
