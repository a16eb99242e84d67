"""A collection's own read key: made here, kept by the job store as a digest only.

The server makes every key (`secrets.token_urlsafe(32)`: 256 random bits) and shows it once, so
an unsalted SHA-256 is enough to store it: a slow, salted password hash defends guessable
secrets, and nothing about a random 256-bit key is guessable. A client-chosen key could be a
weak password, which is why none is taken. Digests are compared in constant time.

The job store keeps one digest per collection (`get_key_digest`, `put_key_digest`,
`delete_key_digest`), in Redis or SQLite like the retrain policies, so every API replica
checks the same keys; service/auth.py decides which routes a collection key opens."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_key() -> str:
    return secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def matches(given: str, stored: str | None) -> bool:
    """Whether `given` is the key whose digest is `stored` (None: the collection has none)."""
    return stored is not None and hmac.compare_digest(digest(given), stored)
