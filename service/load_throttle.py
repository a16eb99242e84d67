"""The pace of pinned model loads: a token bucket (service/registry.py), so that requests naming
many versions cannot make the API load bundle after bundle."""

from __future__ import annotations

import time


class LoadThrottle:
    """A token bucket: `per_min` loads a minute, at most `burst` at once."""

    def __init__(self, per_min: int, burst: int) -> None:
        self.rate = per_min / 60.0
        self.burst = float(burst)
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> float:
        """0 when a load may start now (and counts it), else seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate
