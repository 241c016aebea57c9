"""What every handler needs at hand, passed through Kopf's ``memo`` (no module globals).

WHY: tests run, kill and restart operators in one process; each operator instance gets its own
clients, locks and caches, so a stopped operator leaves nothing behind for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from voicehive.tracing import Tracing
from voicehive_operator.conditions import Observation
from voicehive_operator.kube import Kube
from voicehive_operator.livekit_sip import LiveKitSip
from voicehive_operator.metrics import OperatorMetrics
from voicehive_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


@dataclass
class ProviderCheck:
    at: float  # clock timestamp of the check
    fingerprint: str  # what was checked (spec parts + secret versions)
    observations: list[Observation]


@dataclass
class Runtime:
    settings: OperatorSettings
    kube: Kube
    sip: LiveKitSip
    redis: Any | None = None  # redis.asyncio.Redis for retention/erasure of call state
    provider_checks: dict[str, ProviderCheck] = field(default_factory=dict)
    indexes: dict[str, Any] = field(default_factory=dict)  # Kopf's live indexes, for timers
    deleted_lines: set[str] = field(default_factory=set)  # uids of lines torn down: never refill them
    reserved: set[str] = field(default_factory=set)  # idle pods a claim is in flight for (or has won)
    bound: dict[str, str] = field(default_factory=dict)  # VoiceSession uid -> worker pod, bound by us
    transfers: set[str] = field(default_factory=set)  # VoiceSession uids whose transfer is in flight
    line_secrets: dict[str, str] = field(default_factory=dict)  # HotelLine uid -> fingerprint written
    starting: dict[str, set[str]] = field(default_factory=dict)  # "ns/line" -> pods created, not yet watched
    riva_applied: dict[str, tuple[dict[str, int], float]] = field(default_factory=dict)  # ns -> (pools, when)
    riva_cas: dict[str, str] = field(default_factory=dict)  # "ns/pool" -> the pool's CA certificate (public)
    namespaces: tuple[str, ...] = ()  # the namespaces served (empty: all, --all-namespaces)
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)  # Prometheus, served by main.run
    tracing: Tracing = field(default_factory=Tracing.disabled)  # OTLP spans of bindings (voicehive.tracing)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _background: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _rerun: set[str] = field(default_factory=set)

    def lock(self, key: str) -> asyncio.Lock:
        """One lock per key (a line's SIP objects, its warm pool, a Riva pool)."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def kick(self, key: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` in the background, coalescing bursts: at most one run plus one rerun.

        WHY: 20 claims a second on one line must not start 20 concurrent pool refills; each
        refill lists the pool anyway, so one more pass after the current one covers them all.
        """
        task = self._background.get(key)
        if task is not None and not task.done():
            self._rerun.add(key)
            return

        async def runner() -> None:
            while True:
                self._rerun.discard(key)
                try:
                    await work()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("background work %s failed; the periodic resync retries it", key)
                if key not in self._rerun:
                    return

        self._background[key] = asyncio.get_running_loop().create_task(runner(), name=f"voicehive:{key}")

    def keep_running(self, key: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work`` (a loop) in the background until :meth:`close`; once per key."""
        if key not in self._background or self._background[key].done():
            self._background[key] = asyncio.get_running_loop().create_task(work(), name=f"voicehive:{key}")

    async def close(self) -> None:
        for task in list(self._background.values()):
            task.cancel()
        for task in list(self._background.values()):
            with contextlib.suppress(BaseException):
                await task
        self._background.clear()
        await self.sip.close()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        await asyncio.to_thread(self.tracing.shutdown)
        self.kube.close()
