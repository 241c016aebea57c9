"""CallStore deciding on the call as it last wrote it (one round trip per event), checked by the
apply script's compare-and-set: several stores on one call, and a call erased and written again.

Runs on a single redis-server and on a three-master Cluster (``call_state_url``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from voicehive.callmanager import CallEvent, CallManager, EventKind, Transcript
from voicehive.callstore import CallStore, Outcome
from voicehive.lifecycle import CallPhase, EndReason
from voicehive.privacy import Privacy, generate_key_b64

ROOM = "vh-0a1b2c3d4e-_+4930901820_kNw"


@pytest.fixture
async def two(call_state_url: str) -> AsyncIterator[tuple[CallManager, CallManager]]:
    """Two managers with their own stores (two orchestrator processes) on the same Redis."""
    privacy = Privacy.from_env({"VOICEHIVE_PII_KEY": generate_key_b64(), "VOICEHIVE_TRANSCRIPT_KEY": generate_key_b64()})
    stores = [CallStore.from_url(call_state_url), CallStore.from_url(call_state_url)]
    try:
        yield CallManager(stores[0], privacy), CallManager(stores[1], privacy)
    finally:
        for store in stores:
            await store.close()


def _segment(n: int) -> Transcript:
    return Transcript(ROOM, "I would like to book a room", "en", 0.9, True, event_id=f"seg-{n}")


async def test_two_stores_taking_turns_on_one_call_count_every_event_once(two: tuple[CallManager, CallManager]) -> None:
    a, b = two
    await a.handle(CallEvent(ROOM, EventKind.AGENT_READY, "agent", event_id="ready"))
    await b.handle(CallEvent(ROOM, EventKind.CALL_STARTED, "agent", event_id="started"))  # b never read it
    results = [await (a if n % 2 else b).record_transcript(_segment(n)) for n in range(10)]
    assert [r.event.outcome for r in results] == [Outcome.RECORDED] * 10
    again = [await m.record_transcript(_segment(3)) for m in (a, b)]  # each store's copy is stale now
    assert [r.event.outcome for r in again] == [Outcome.DUPLICATE] * 2
    record = await a.get(ROOM)
    assert record is not None and record.phase is CallPhase.ACTIVE
    assert (record.turns, record.events, record.version) == (10, 12, 12)
    events = await a.store.events(record.ref)
    assert [e["from"] for e in events[2:]] == ["Active"] * 10
    assert len(await a.store.transcript(record.ref)) == 10


async def test_a_call_erased_and_written_again_elsewhere_is_not_decided_on_the_old_copy(
    two: tuple[CallManager, CallManager],
) -> None:
    a, b = two
    caller = "+4930901820"
    await a.handle(CallEvent(ROOM, EventKind.AGENT_READY, "agent", event_id="r1", caller_number=caller))
    await a.handle(CallEvent(ROOM, EventKind.CALL_STARTED, "agent", event_id="s1"))  # a's copy: Active, version 2
    erased = await b.erase_caller(caller_number=caller)
    assert erased == [a.call_ref(ROOM)]
    await b.handle(CallEvent(ROOM, EventKind.AGENT_READY, "agent", event_id="r2"))
    await b.record_transcript(_segment(1))  # Redis: a new call, Starting, version 2 again
    result = await a.record_transcript(_segment(2))
    assert result.event.outcome is Outcome.RECORDED
    record = await a.get(ROOM)
    assert record is not None and record.phase is CallPhase.STARTING and record.turns == 2
    events = await a.store.events(record.ref)
    assert [e["from"] for e in events] == ["", "Starting", "Starting"]  # decided on Redis's call, not a's copy


async def test_transcripts_from_two_stores_do_not_conflict_but_a_phase_change_does(
    two: tuple[CallManager, CallManager], monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = two
    await a.handle(CallEvent(ROOM, EventKind.AGENT_READY, "agent", event_id="ready"))
    await a.handle(CallEvent(ROOM, EventKind.CALL_STARTED, "agent", event_id="started"))
    await b.record_transcript(_segment(0))  # b reads the call once; the first segment sets the language
    await a.record_transcript(_segment(100))  # a's copy had no language: conflict, a now has the call as stored
    runs: list[str] = []
    for manager, name in ((a, "a"), (b, "b")):
        run = manager.store._run_apply

        async def counted(*args: Any, _run: Any = run, _name: str = name, **kwargs: Any) -> list[Any]:
            runs.append(_name)
            return list(await _run(*args, **kwargs))

        monkeypatch.setattr(manager.store, "_run_apply", counted)
    for n in range(1, 7):  # each store's copy is behind the other's appends, on fields a transcript does not read
        assert (await (a if n % 2 else b).record_transcript(_segment(n))).event.outcome is Outcome.RECORDED
    assert runs == ["a", "b"] * 3  # one script run each: no conflict
    await b.call_ended(ROOM, EndReason.CALLER_HANGUP, actor="agent")
    runs.clear()
    late = await a.record_transcript(_segment(7))  # a's copy says Active: the phase it read has changed
    assert late.event.outcome is Outcome.RECORDED and runs == ["a", "a"]
    record = await a.get(ROOM)
    assert record is not None and record.turns == 9 and record.version == 12
    assert (await a.store.events(record.ref))[-1]["from"] == "Ended"
