"""A Redis blip when the worker answers does not drop the call (issue 10, review defect 3).

A real redis-server of the test's own (AOF on, as in production) is killed with SIGKILL around
``CallState.answered()``: restarted within the retry window the answer is recorded; gone for
good, the write is given up and the call goes on.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.redis import RedisServer
from voicehive.callmanager import CallEvent, CallManager, EventKind
from voicehive.lifecycle import CallPhase
from voicehive.privacy import Privacy
from voicehive_worker.state import CallState, worker_store

ROOM = "vh-blip-_+4930901820_Bl1p"
# Longer than redis-py's default retries last (3 tries, backoff up to 1 + 2 + 4 s), well inside
# the worker's (about 30 s).
OUTAGE_S = 8.0


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def _call(url: str, retries: int | None = None) -> tuple[CallState, CallManager]:
    store = worker_store(url) if retries is None else worker_store(url, retries=retries)
    manager = CallManager(store, Privacy.from_keys(os.urandom(32), os.urandom(32)))
    await manager.handle(CallEvent(ROOM, EventKind.SIP_JOINED, "livekit", event_id="j", line="l", namespace="ns",
                                   caller_number="+4930901820", participant_identity="sip_x"))
    return CallState(manager=manager, call_sid=ROOM, line="l", namespace="ns", worker_pod="w"), manager


async def test_answer_rides_out_a_redis_restart(own_redis: RedisServer) -> None:
    state, manager = await _call(own_redis.url)
    own_redis.kill()
    restart = threading.Timer(OUTAGE_S, own_redis.start)
    restart.start()
    try:
        await state.answered()  # blocks through the outage, retrying
        assert own_redis.process is not None  # it returned after the restart, not before
        record = await manager.get(ROOM)
        assert record is not None and record.phase is CallPhase.ACTIVE and record.answered_at
        assert state.phase is CallPhase.ACTIVE
    finally:
        restart.join()
        await manager.close()


async def test_answer_never_raises_when_redis_stays_away(own_redis: RedisServer) -> None:
    state, manager = await _call(own_redis.url, retries=2)
    own_redis.kill()
    try:
        await state.answered()  # gives the write up, not the call
        assert state.phase is CallPhase.ACTIVE
        own_redis.start()  # the call goes on: its later writes reach Redis again
        await state.caller_turn("Do you have parking", "en", 0.9)
        record = await manager.get(ROOM)
        assert record is not None and record.turns == 1
    finally:
        await manager.close()
