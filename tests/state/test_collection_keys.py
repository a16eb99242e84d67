"""A collection's read key: kept as a digest by both job-store backends, matched only by the
key it was made from."""

from __future__ import annotations

import hashlib

from state.collection_keys import digest, matches, new_key


def test_a_key_matches_its_own_digest_only():
    key = new_key()
    assert len(key) == 43  # 32 random bytes, URL-safe base64 without padding
    assert digest("abc") == hashlib.sha256(b"abc").hexdigest()
    assert matches(key, digest(key))
    assert not matches(key + "x", digest(key))
    assert not matches(key, None)
    assert new_key() != key


def test_the_store_keeps_one_digest_per_collection(store):
    assert store.get_key_digest("a") is None
    assert store.delete_key_digest("a") is False
    store.put_key_digest("a", digest("one"))
    assert store.get_key_digest("a") == digest("one")
    assert store.get_key_digest("b") is None
    store.put_key_digest("a", digest("two"))  # rotated: the old digest is gone
    assert store.get_key_digest("a") == digest("two")
    assert store.delete_key_digest("a") is True
    assert store.get_key_digest("a") is None
