"""voicehive.heap: frozen objects stay alive and out of the collector's reach; pauses are recorded."""

from __future__ import annotations

import gc

from voicehive.heap import GcPauses, freeze_startup_heap


def test_freeze_moves_the_live_heap_out_of_reach_and_pauses_are_recorded() -> None:
    try:
        frozen = freeze_startup_heap()
        # frozen objects that die later (refcount) leave the permanent generation: it can only shrink
        assert frozen > 1000 and 0 < gc.get_freeze_count() <= frozen
        pauses = GcPauses().start()
        try:
            gc.collect()
        finally:
            pauses.stop()
        summary = pauses.summary()
        assert summary["full_collections"] == 1 and summary["collections"] == 1
        assert summary["full_max_ms"] >= 0 and summary["max_ms"] == summary["full_max_ms"]
        assert pauses._callback not in gc.callbacks
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
