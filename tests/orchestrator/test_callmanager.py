"""CallManager on the real redis-server: idempotency, out-of-order tolerance, TTLs, erasure.

Every test that takes ``manager`` (or ``call_state_url``) runs twice: on a single redis-server
and on a three-master Redis Cluster (tests/fixtures/redis_topologies.py)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from voicehive.callmanager import CallEvent, CallManager, EventKind, Transcript
from voicehive.callstore import CallStore, Outcome, call_keys, caller_key, requests_key
from voicehive.intents import classify
from voicehive.lifecycle import CallPhase, EndReason
from voicehive.privacy import Privacy, generate_key_b64

ROOM = "vh-0a1b2c3d4e-_+4930901820_xYz"


@pytest.fixture
async def manager(call_state_url: str) -> AsyncIterator[CallManager]:
    privacy = Privacy.from_env({"VOICEHIVE_PII_KEY": generate_key_b64(), "VOICEHIVE_TRANSCRIPT_KEY": generate_key_b64()})
    store = CallStore.from_url(call_state_url)
    try:
        yield CallManager(store, privacy, retention=lambda ns, line: {("hotels", "grand"): 7}.get((ns, line)))
    finally:
        await store.close()


def _sip_joined(room: str = ROOM, event_id: str = "lk-1") -> CallEvent:
    return CallEvent(room, EventKind.SIP_JOINED, "livekit", event_id=event_id, line="grand", namespace="hotels",
                     caller_number="+49 30 901820", participant_identity="sip_+4930901820")


async def test_same_event_five_times_changes_state_once(manager: CallManager) -> None:
    outcomes = [(await manager.handle(_sip_joined())).outcome for _ in range(5)]
    assert outcomes == [Outcome.APPLIED] + [Outcome.DUPLICATE] * 4
    started = [await manager.call_started(ROOM, actor="agent") for _ in range(5)]
    assert [r.outcome for r in started] == [Outcome.APPLIED] + [Outcome.DUPLICATE] * 4
    record = await manager.get(ROOM)
    assert record is not None and record.phase is CallPhase.ACTIVE and record.events == 2 and record.version == 2
    assert len(await manager.store.events(record.ref)) == 2


async def test_concurrent_duplicates_are_applied_once(manager: CallManager) -> None:
    results = await asyncio.gather(*(manager.handle(_sip_joined()) for _ in range(20)))
    assert sum(r.outcome is Outcome.APPLIED for r in results) == 1
    assert sum(r.outcome is Outcome.DUPLICATE for r in results) == 19


LIFECYCLE = [
    ("sip", lambda: _sip_joined()),
    ("ready", lambda: CallEvent(ROOM, EventKind.AGENT_READY, "agent")),
    ("started", lambda: CallEvent(ROOM, EventKind.CALL_STARTED, "agent")),
    ("ended", lambda: CallEvent(ROOM, EventKind.CALL_ENDED, "agent", reason=EndReason.CALLER_HANGUP)),
    ("finished", lambda: CallEvent(ROOM, EventKind.ROOM_FINISHED, "livekit", event_id="lk-9")),
]


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(LIFECYCLE))))[::7])
async def test_shuffled_orders_end_consistently(manager: CallManager, order: tuple[int, ...]) -> None:
    for index in order:
        await manager.handle(LIFECYCLE[index][1]())
    record = await manager.get(ROOM)
    assert record is not None
    assert record.phase is CallPhase.ENDED  # whatever the order: ended, never revived
    assert record.events == len(LIFECYCLE)  # every delivery recorded exactly once
    assert record.line == "grand" and record.caller_hash is not None  # facts from the SIP join kept
    # The first terminal event decides the reason; the stream shows every event once.
    first_end = next(LIFECYCLE[i][0] for i in order if LIFECYCLE[i][0] in ("ended", "finished"))
    expected = EndReason.CALLER_HANGUP if first_end == "ended" else EndReason.ROOM_FINISHED
    assert record.reason is expected
    stream = await manager.store.events(record.ref)
    assert len(stream) == len(LIFECYCLE) and len({e["event_id"] for e in stream}) == len(LIFECYCLE)


async def test_end_before_start_ends_and_late_start_does_not_revive(manager: CallManager) -> None:
    ended = await manager.call_ended(ROOM, EndReason.CALLER_HANGUP, actor="agent")
    assert ended.outcome is Outcome.APPLIED and ended.created and ended.phase is CallPhase.ENDED
    late = await manager.call_started(ROOM, actor="agent")
    assert late.outcome is Outcome.STALE and late.phase is CallPhase.ENDED
    failed = await manager.call_failed(ROOM, EndReason.WORKER_LOST)
    assert failed.outcome is Outcome.STALE  # terminal is terminal: Ended is not overwritten by Failed


async def test_failure_reasons_end_in_failed(manager: CallManager) -> None:
    await manager.handle(_sip_joined())
    result = await manager.call_ended(ROOM, EndReason.PIPELINE_ERROR)
    assert result.phase is CallPhase.FAILED


async def test_transcripts_are_sealed_and_counted(manager: CallManager) -> None:
    missing = await manager.record_transcript(Transcript(ROOM, "I want to cancel", "en", 0.9, True))
    assert missing.event.outcome is Outcome.NOT_FOUND
    await manager.handle(_sip_joined())
    said = "Ich möchte meine Reservierung stornieren"
    result = await manager.record_transcript(Transcript(ROOM, said, "de-DE", 0.9, True, event_id="seg-1"))
    assert result.intent.intent.value == "cancel_booking" and result.event.outcome is Outcome.RECORDED
    again = await manager.record_transcript(Transcript(ROOM, said, "de-DE", 0.9, True, event_id="seg-1"))
    assert again.event.outcome is Outcome.DUPLICATE
    await manager.record_transcript(Transcript(ROOM, "Ich möchte", "de", 0.5, False, event_id="seg-0"))
    record = await manager.get(ROOM)
    assert record is not None and record.turns == 1 and record.intents == {"cancel_booking": 1}
    segments = await manager.store.transcript(record.ref)
    assert len(segments) == 1 and said not in str(segments)
    assert manager.privacy.transcripts.open_text(segments[0]["text"], context=record.ref) == said


async def test_intent_confidence_follows_the_asr_confidence(manager: CallManager) -> None:
    """The same words heard with less certainty give a less certain intent, in the reply and in Redis."""
    await manager.handle(_sip_joined())
    said = "I would like to cancel my reservation"
    classifier = classify(said, "en")
    sure = await manager.record_transcript(Transcript(ROOM, said, "en", 0.95, True, event_id="seg-sure"))
    unsure = await manager.record_transcript(Transcript(ROOM, said, "en", 0.4, True, event_id="seg-unsure"))
    assert sure.intent.intent is unsure.intent.intent is classifier.intent
    assert unsure.intent.confidence < sure.intent.confidence < classifier.confidence
    assert sure.intent.confidence == pytest.approx(classifier.confidence * 0.95, abs=0.001)
    assert unsure.intent.confidence == pytest.approx(classifier.confidence * 0.4, abs=0.001)
    record = await manager.get(ROOM)
    assert record is not None
    segments = await manager.store.transcript(record.ref)
    assert [s["intent_confidence"] for s in segments] == [
        f"{sure.intent.confidence:.3f}", f"{unsure.intent.confidence:.3f}"]


async def test_every_key_has_the_line_retention_ttl(manager: CallManager) -> None:
    await manager.handle(_sip_joined())
    await manager.record_transcript(Transcript(ROOM, "bye", "en", 0.9, True))
    redis = manager.store.redis
    keys = [k async for k in redis.scan_iter("*")]
    assert keys and all(k.startswith("vh:") for k in keys)
    for key in keys:
        ttl = await redis.ttl(key)
        assert 0 < ttl <= 7 * 86400, (key, ttl)


async def test_erasure_by_caller_hash_removes_every_call(manager: CallManager) -> None:
    other = "vh-0a1b2c3d4e-_+4930901820_second"
    await manager.handle(_sip_joined())
    await manager.handle(_sip_joined(other, event_id="lk-2"))
    await manager.handle(CallEvent("vh-x-_+4411111111_z", EventKind.SIP_JOINED, "livekit", caller_number="+4411111111",
                                   participant_identity="sip_+4411111111", line="grand"))
    await manager.store.redis.rpush(requests_key(manager.call_ref(ROOM)), "v1_sealed")  # the worker's key
    erased = await manager.erase_caller(caller_number="0049 30 901820")  # another spelling, same caller
    assert not await manager.store.redis.exists(requests_key(manager.call_ref(ROOM)))
    assert sorted(erased) == sorted([manager.call_ref(ROOM), manager.call_ref(other)])
    redis = manager.store.redis
    for ref in erased:
        for key in call_keys(ref):
            assert not await redis.exists(key)
    assert not await redis.exists(caller_key(manager.privacy.hasher.phone("+4930901820")))
    assert await manager.get("vh-x-_+4411111111_z") is not None


async def test_from_env_builds_a_working_manager(call_state_url: str) -> None:
    env = {"VOICEHIVE_PII_KEY": generate_key_b64(), "VOICEHIVE_TRANSCRIPT_KEY": generate_key_b64(),
           "VOICEHIVE_REDIS_URL": call_state_url}
    manager = CallManager.from_env(environ=env)
    try:
        result = await manager.agent_ready(ROOM, line="grand")
        assert result.outcome is Outcome.APPLIED and result.phase is CallPhase.STARTING
    finally:
        await manager.close()


async def test_one_json_audit_line_per_state_change(manager: CallManager, caplog: pytest.LogCaptureFixture) -> None:
    import json
    import logging

    from voicehive.audit import AUDIT_LOGGER_NAME, JsonFormatter

    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER_NAME)
    for _ in range(3):
        await manager.handle(_sip_joined())
    await manager.call_started(ROOM, actor="agent")
    await manager.call_ended(ROOM, EndReason.TRANSFERRED, actor="worker")
    await manager.call_started(ROOM, actor="agent", event_id="late")  # stale: no state change, no line
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == AUDIT_LOGGER_NAME]
    assert [(line["from_phase"], line["to_phase"]) for line in lines] == [
        (None, "Pending"), ("Pending", "Active"), ("Active", "Ended")]
    last = lines[-1]
    assert last["reason"] == "transferred" and last["actor"] == "worker" and last["line"] == "grand"
    assert last["call_ref"] == manager.call_ref(ROOM) and last["time"].endswith("Z")
    assert "4930901820" not in json.dumps(lines)
