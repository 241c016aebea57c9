"""The Redis layout on Redis Cluster: one slot per call, indexes that converge, outbox per slot.

Runs on a single redis-server and on a three-master Cluster (``call_state_url``)."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator

import pytest
from redis.crc import key_slot

from voicehive import callstore
from voicehive.callmanager import CallEvent, CallManager, EventKind
from voicehive.callstore import CallStore, IndexSync, Outcome
from voicehive.delivery import Outbox, dead_key, due_key, item_key, queue_id
from voicehive.lifecycle import EndReason
from voicehive.privacy import Privacy, Sealer, generate_key_b64
from voicehive.redis_client import Topology, connect_url, parse_redis_url

ROOM = "vh-0a1b2c3d4e-_+4930901820_xYz"


def _slot(key: str) -> int:
    return int(key_slot(key.encode()))


@pytest.fixture
async def manager(call_state_url: str) -> AsyncIterator[CallManager]:
    privacy = Privacy.from_env({"VOICEHIVE_PII_KEY": generate_key_b64(), "VOICEHIVE_TRANSCRIPT_KEY": generate_key_b64()})
    store = CallStore.from_url(call_state_url)
    try:
        yield CallManager(store, privacy)
    finally:
        await store.close()


def _sip_joined() -> CallEvent:
    return CallEvent(ROOM, EventKind.SIP_JOINED, "livekit", event_id="lk-1", line="grand", namespace="hotels",
                     caller_number="+49 30 901820", participant_identity="sip_+4930901820")


def test_every_script_and_multi_stays_on_one_slot() -> None:
    refs = [f"c-{i:020x}" for i in (1, 2, 3, 0xABCDEF)]
    for ref in refs:
        assert len({_slot(k) for k in callstore.owned_keys(ref)}) == 1, ref
    assert len({_slot(k) for k in (*callstore.INDEX_KEYS, callstore.ENDING_SESSIONS_KEY)}) == 1
    assert len({_slot(callstore.call_key(ref)) for ref in refs}) > 1  # calls spread over the slots
    q = queue_id("hotels", "grand")
    assert len({_slot(due_key(q)), _slot(dead_key(q)), _slot(item_key(q, "ref.webhook"))}) == 1


def test_the_url_names_the_topology() -> None:
    assert parse_redis_url("redis://127.0.0.1:6379/0").topology is Topology.SINGLE
    cluster = parse_redis_url("redis+cluster://10.0.0.1:7000/0")
    assert cluster.topology is Topology.CLUSTER and cluster.url == "redis://10.0.0.1:7000/0"
    sentinel = parse_redis_url("redis+sentinel://:pw@s1:26379,s2:26380/main/2?wait_replicas=1&wait_timeout_ms=500")
    assert sentinel.sentinels == (("s1", 26379), ("s2", 26380)) and sentinel.service == "main"
    assert (sentinel.db, sentinel.password, sentinel.wait_replicas, sentinel.wait_timeout_ms) == (2, "pw", 1, 500)
    for bad, word in [("http://x:1/0", "scheme"), ("redis+sentinel://s1/main", "host:port"),
                      ("redis+sentinel://s1:1", "master"), ("redis://x:1/0?wait_replicas=two", "integers"),
                      ("redis+cluster://x:1/0?wait_replicas=1", "Cluster")]:
        with pytest.raises(ValueError, match=word):
            parse_redis_url(bad)


async def test_index_writes_lost_after_the_call_script_come_back_on_the_retry(manager: CallManager) -> None:
    first = await manager.handle(_sip_joined())
    assert first.outcome is Outcome.APPLIED
    store, ref = manager.store, first.call_ref
    caller = manager.privacy.hasher.phone("+4930901820")
    # A connection cut after the call's script: the event was answered 503, the indexes not written.
    await store.redis.delete(callstore.ACTIVE_KEY, callstore.PENDING_SESSIONS_KEY)
    await store.redis.delete(callstore.caller_key(caller))
    retry = await manager.handle(_sip_joined())
    assert retry.outcome is Outcome.DUPLICATE
    assert await store.active_count() == 1
    assert ref in await store.pending_sessions()
    assert await store.calls_of_caller(caller) == {ref}


async def test_a_late_live_index_write_does_not_revive_an_ended_call(manager: CallManager) -> None:
    joined = await manager.handle(_sip_joined())
    await manager.call_ended(ROOM, EndReason.CALLER_HANGUP, actor="agent")
    assert await manager.store.active_count() == 0 and not await manager.store.pending_sessions()
    late = IndexSync(f"{time.time():.6f}", 3600, None, True, '{"call_ref": "late"}')  # raced past the end
    await manager.store.sync_indexes(joined.call_ref, late)
    assert await manager.store.active_count() == 0 and not await manager.store.pending_sessions()


async def test_session_created_marks_the_call_and_leaves_the_queue(manager: CallManager) -> None:
    joined = await manager.handle(_sip_joined())
    assert joined.call_ref in await manager.store.pending_sessions()
    await manager.store.session_created(joined.call_ref)
    record = await manager.get(ROOM)
    assert record is not None and record.session == "created"
    assert await manager.store.session_pending_count() == 0
    await manager.store.delete_call(joined.call_ref)
    await manager.store.session_created(joined.call_ref)  # late marker: the erased call stays erased
    assert await manager.get(ROOM) is None


async def test_staff_outbox_on_the_topology(call_state_url: str) -> None:
    client = connect_url(call_state_url, decode_responses=False)
    try:
        outbox = Outbox(client, queue_id("hotels", "grand"), Sealer(secrets.token_bytes(32)))
        ids = await outbox.enqueue({"reference": "R-1", "kind": "message"}, ["webhook", "email"], now=100.0)
        assert sorted(await outbox.claim(now=101.0, lease_s=30)) == sorted(ids)
        loaded = await outbox.load(ids[0])
        assert loaded is not None and loaded[1]["reference"] == "R-1"
        await outbox.done(ids[0])
        await outbox.failed(ids[1], 5, None, now=102.0)
        assert await outbox.pending() == 0 and await outbox.dead() == [ids[1]]
    finally:
        await client.aclose()
