"""Errors the trainer raises on purpose: each names what the user must fix."""

from __future__ import annotations


class TrainerError(Exception):
    """Base class: a problem with the user's input, not a bug."""


class ConfigError(TrainerError, ValueError):
    """A configuration key is unknown or its value is out of range."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"config key {key!r}: {message}")


class DatasetError(TrainerError, ValueError):
    """The dataset cannot be used for training (empty, too small, corrupt, bad layout)."""


class EncoderOutputError(TrainerError):
    """The encoder gave a vector that is not a finite unit vector (trainer/unit_vectors.py):
    nothing is written from it."""


class BundleError(TrainerError):
    """A model bundle is missing, incomplete or inconsistent."""


class TrainingStopped(TrainerError):
    """Training stopped on request (cancel or deadline) after writing a checkpoint."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"training stopped: {reason}")


class RankFailed(TrainerError):
    """A process of a distributed run died or failed, which stops the whole run; its last
    checkpoint is kept and the run resumes from it."""
