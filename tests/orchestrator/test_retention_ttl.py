"""Every Redis key of a call expires with its own line's retention (issue 10, review defect 2).

Two lines with different ``spec.retention.metadataDays``; the orchestrator's CallManager with its
real retention lookup (the HotelLine directory) and the worker's CallManager + CallState as the
worker builds them; TTLs read with ``TTL`` from the real redis-server.
"""

from __future__ import annotations

import os

from voicehive.callmanager import CallEvent, CallManager, EventKind, Transcript
from voicehive.callstore import CallStore, caller_key, owned_keys
from voicehive.lifecycle import EndReason
from voicehive.privacy import Privacy
from voicehive_orchestrator.sessions import LineDirectory
from voicehive_worker.state import CallState

DAY = 86_400
LINES = {"short": 3, "long": 11}  # metadataDays of two lines in one namespace
NS = "hotels"


def _line(name: str, days: int) -> dict[str, object]:
    return {"metadata": {"namespace": NS, "name": name}, "spec": {"retention": {"metadataDays": days}}}


async def _ttls(store: CallStore, keys: tuple[str, ...]) -> dict[str, int]:
    return {key: int(await store.redis.ttl(key)) for key in keys}


def _assert_days(ttls: dict[str, int], days: int) -> None:
    for key, ttl in ttls.items():
        assert days * DAY - 120 < ttl <= days * DAY, (key, ttl, days)


async def test_orchestrator_writes_each_line_retention_on_every_key(store: CallStore) -> None:
    directory = LineDirectory()
    directory.update([_line(name, days) for name, days in LINES.items()])
    manager = CallManager(store, Privacy.from_keys(os.urandom(32), os.urandom(32)), retention=directory.retention_days)
    for name, days in LINES.items():
        room = f"vh-{name}-_+4930901820_{name}"
        # only the SIP join names the line; the agent events and the transcripts do not
        await manager.handle(CallEvent(room, EventKind.SIP_JOINED, "livekit", event_id=f"j-{name}", line=name,
                                       namespace=NS, caller_number=f"+49301111{days:02d}",
                                       participant_identity="sip_x"))
        await manager.handle(CallEvent(room, EventKind.AGENT_READY, "agent", event_id=f"r-{name}"))
        await manager.handle(CallEvent(room, EventKind.CALL_STARTED, "agent", event_id=f"s-{name}"))
        await manager.record_transcript(Transcript(room, "I need a room", "en", 0.9, True))
        ref = manager.call_ref(room)
        caller = manager.privacy.hasher.phone(f"+49301111{days:02d}")
        _assert_days(await _ttls(store, (*owned_keys(ref)[:4], caller_key(caller))), days)
        await manager.handle(CallEvent(room, EventKind.CALL_ENDED, "agent", event_id=f"e-{name}",
                                       reason=EndReason.CALLER_HANGUP))
        _assert_days(await _ttls(store, owned_keys(ref)[:4]), days)


async def test_worker_writes_its_line_retention_on_every_key(store: CallStore) -> None:
    privacy = Privacy.from_keys(os.urandom(32), os.urandom(32))
    for name, days in LINES.items():
        room = f"vh-{name}-_+4930901820_w{name}"
        # as the worker's entrypoint builds it, with the line's retention from its spec
        state = CallState.of_line(store, privacy, call_sid=room, line=name, namespace=NS, worker_pod=f"w-{name}",
                                  retention_days=days)
        manager = state.manager
        await state.answered()
        await state.caller_turn("Do you have a room tonight", "en", 0.9)
        await state.save_request("message", {"name": "Ada"})
        await state.ended(EndReason.CALLER_HANGUP)
        ttls = await _ttls(store, owned_keys(manager.call_ref(room)))
        assert all(ttl > 0 for ttl in ttls.values()), ttls  # every key exists and expires
        _assert_days(ttls, days)
