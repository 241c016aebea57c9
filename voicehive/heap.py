"""Garbage-collector settings for the long-running processes (operator, worker).

WHY: the imports (kubernetes models, pydantic, kopf; livekit-agents, onnxruntime, numpy) leave
~160 000 (operator) / ~250 000 (worker) objects that live as long as the process, and every
full collection walks all of them again: 85 / 138 ms on this machine when idle, 150-185 ms
under load. In the operator bench those stops came every ~4 s at 20 calls/s and were the whole
binding tail. A 160 s benchmark call made no full collection in the worker (longest pause
1.9 ms), but a call may last 30 minutes. Collected once and frozen after start-up, the
start-up heap is never scanned again (a full collection then takes well under a millisecond).
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any


def freeze_startup_heap() -> int:
    """Collect once, then move every object alive now out of the collector's reach; returns their count."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@dataclass
class GcPauses:
    """Records how long each collection stopped the process (``gc.callbacks``), for benchmarks."""

    pauses_ms: list[tuple[int, float]] = field(default_factory=list)  # (generation, ms)
    _started: float = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses_ms.append((int(info["generation"]), (time.perf_counter() - self._started) * 1000))

    def start(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def summary(self) -> dict[str, Any]:
        full = [ms for gen, ms in self.pauses_ms if gen == 2]
        return {
            "collections": len(self.pauses_ms),
            "full_collections": len(full),
            "full_max_ms": round(max(full), 1) if full else 0.0,
            "max_ms": round(max((ms for _, ms in self.pauses_ms), default=0.0), 1),
            "total_ms": round(sum(ms for _, ms in self.pauses_ms), 1),
        }
