"""Request size limits derived from the settings, in one place: the body-size middleware, the
body readers and the OpenAPI document take their numbers from here."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from service.settings import ServiceSettings

KIB = 1024
MIB = 1024 * 1024
# What a JSON body may hold besides base64 images: keys, numbers, ids, short strings.
JSON_BASE = 64 * KIB
# In a JSON query body, only images are strings this long; they are counted separately.
LONG_STRING = 2 * KIB
# Longest item id, dataset path and model version a request may name.
ID_MAX = 1024
VERSION_MAX = 128
# The widest embedding a model may have (TrainConfig.embedding_dim) and the longest number
# (-1.2345678901234567e-123, plus a separator) a JSON vector may spell it with.
DIM_MAX = 4096
NUMBER_CHARS = 32
# Classes one query's filter may name (x 256 characters at most: within JSON_BASE).
FILTER_LABELS = 100
# Multipart framing: boundary lines and part headers.
PART_OVERHEAD = 4 * KIB
# Near-duplicates: pairs listed by one request; the lowest threshold a listing may ask for
# (pairs are computed once at it and kept, so it bounds what is kept); existing items named per
# added image.
DUPLICATE_PAIRS_MAX = 1000
DUPLICATE_THRESHOLD_MIN = 0.8
DUPLICATES_SHOWN = 10
IMAGE_ROUTES = ("/embed", "/search", "/classify")  # and /items, which also takes archives
# A serving route under a collection has the limits it has at the root (service/app.py).
COLLECTION_PREFIX = re.compile(r"^/collections/[^/]+(?=/)")


@dataclass(frozen=True)
class Limits:
    images: int              # images (or vectors, or ids) in one query
    image_bytes: int         # one query image
    upload_bytes: int        # one dataset archive
    k: int
    classify_k: int
    items: int = 10_000      # ids in a bulk delete, images in an archive of POST /items

    @classmethod
    def of(cls, settings: ServiceSettings) -> Limits:
        return cls(images=settings.max_images_per_request,
                   image_bytes=int(settings.max_image_mb * MIB),
                   upload_bytes=settings.max_upload_mb * MIB,
                   k=settings.max_k, classify_k=settings.max_classify_k,
                   items=settings.max_items_per_request)

    @property
    def default_k(self) -> int:
        return min(10, self.k)

    @property
    def default_classify_k(self) -> int:
        return min(200, self.classify_k)

    @property
    def b64_image_chars(self) -> int:
        return 4 * -(-self.image_bytes // 3)

    def vectors_budget(self, dim: int) -> int:
        """The JSON structure of `images` query vectors of `dim` numbers, and the rest."""
        return JSON_BASE + self.images * (dim + 1) * NUMBER_CHARS

    @property
    def ids_budget(self) -> int:
        return JSON_BASE + self.images * (ID_MAX + 8)

    @property
    def bulk_ids_budget(self) -> int:
        return JSON_BASE + self.items * (ID_MAX + 8)

    def body_limit(self, path: str, media: str) -> int:
        """Largest request body for a path and media type, checked before it is read."""
        path = COLLECTION_PREFIX.sub("", path.rstrip("/")) or "/"
        multipart = media == "multipart/form-data"
        if path == "/datasets" and multipart:
            return self.upload_bytes + PART_OVERHEAD
        if path == "/items":
            if multipart:  # image files, or one archive
                return max(self.upload_bytes, self.images * (self.image_bytes + PART_OVERHEAD)
                           ) + JSON_BASE
            # base64 images to add, or the ids of a bulk delete
            return max(self.images * self.b64_image_chars + self.ids_budget,
                       self.bulk_ids_budget)
        if path in IMAGE_ROUTES:
            if multipart:
                return self.images * (self.image_bytes + PART_OVERHEAD) + JSON_BASE
            structure = max(self.vectors_budget(DIM_MAX), self.ids_budget)
            return self.images * self.b64_image_chars + structure
        return JSON_BASE


class Gate:
    """At most `size` holders at once; one more is refused at once rather than queued (its
    caller answers 503), so waiting requests hold no memory or disk."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._held = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self._held >= self.size:
                return False
            self._held += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._held = max(0, self._held - 1)
