"""Failover without loss: Sentinel promotes the replica while events arrive; nothing acknowledged
is missing afterwards.

Real processes: a master and a replica (redis-server) and one redis-sentinel on loopback. The
CallStore reaches the master through redis-py's Sentinel client and acknowledges an event only
after ``WAIT 1`` (``?wait_replicas=1`` in the URL). Senders behave as LiveKit and the agent do:
an event that was not acknowledged (StoreUnavailable -> 503) is sent again until it is.
"""

from __future__ import annotations

import asyncio
import time

from tests.fixtures.redis_topologies import RedisSentinelProcesses
from voicehive.callmanager import CallEvent, CallManager, EventKind, Transcript
from voicehive.callstore import CallStore, StoreUnavailable
from voicehive.privacy import Privacy, generate_key_b64

CALLS = 8
SEGMENTS = 60  # per call: 480 transcript events plus the calls' lifecycle events


async def _deliver(manager: CallManager, item: CallEvent | Transcript, deadline: float) -> None:
    """Send until acknowledged, as a webhook sender retries a 503."""
    while True:
        try:
            if isinstance(item, Transcript):
                await manager.record_transcript(item)
            else:
                await manager.handle(item)
            return
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)  # retry interval of a sender after a 503


async def _call(manager: CallManager, call: int, acked: list[tuple[str, str]], deadline: float,
                third: asyncio.Event) -> None:
    sid = f"vh-failover00-_+4930{call:07d}_f{call}"
    await _deliver(manager, CallEvent(sid, EventKind.CALL_STARTED, "agent", event_id=f"f{call}-start"), deadline)
    acked.append((sid, f"f{call}-start"))
    for segment in range(SEGMENTS):
        event_id = f"f{call}-seg{segment}"
        await _deliver(manager, Transcript(sid, f"segment {segment}", "en", 0.9, True, event_id=event_id), deadline)
        acked.append((sid, event_id))
        if len(acked) >= CALLS * SEGMENTS // 3:
            third.set()


async def test_master_killed_under_a_burst_loses_nothing_acknowledged(redis_sentinel: RedisSentinelProcesses) -> None:
    privacy = Privacy.from_env({"VOICEHIVE_PII_KEY": generate_key_b64(), "VOICEHIVE_TRANSCRIPT_KEY": generate_key_b64()})
    store = CallStore.from_url(redis_sentinel.url("wait_replicas=1&wait_timeout_ms=2000"))
    manager = CallManager(store, privacy)
    first_master = redis_sentinel.master_port()
    acked: list[tuple[str, str]] = []
    deadline = time.monotonic() + 120
    third = asyncio.Event()
    try:
        burst = asyncio.gather(*(_call(manager, call, acked, deadline, third) for call in range(CALLS)))
        await asyncio.wait_for(third.wait(), timeout=120)  # kill the master a third of the way in
        redis_sentinel.kill_master()
        await burst
        assert redis_sentinel.master_port() != first_master, "the sentinel did not promote the replica"
        assert len(acked) == CALLS * (SEGMENTS + 1)
        for sid, event_id in acked:
            stored = [e["event_id"] for e in await store.events(manager.call_ref(sid))]
            assert stored.count(privacy.hasher.event_id(f"id:{event_id}")) == 1, (sid, event_id)
    finally:
        await store.close()
