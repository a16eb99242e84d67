"""What exists when the API starts is exempt from the cycle collector's walks."""

from __future__ import annotations

import gc
import weakref

from service.gc_pauses import freeze_startup_objects


def test_objects_alive_at_start_are_frozen_and_garbage_is_not():
    class Cycle:
        pass

    garbage = Cycle()
    garbage.me = garbage  # type: ignore[attr-defined]  # collectable only by the collector
    gone = weakref.ref(garbage)
    del garbage
    kept = Cycle()
    kept.me = kept  # type: ignore[attr-defined]
    try:
        frozen = freeze_startup_objects()
        # Frozen objects can still be freed (by other threads of the test process, too), and
        # leave the count as they go: never more than were frozen.
        assert 0 < gc.get_freeze_count() <= frozen
        assert gone() is None  # collected first, not frozen
        assert gc.is_tracked(kept) and not any(o is kept for o in gc.get_objects())
    finally:
        gc.unfreeze()  # the test process goes on collecting as before
