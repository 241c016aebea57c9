"""A call's transcript is sealed with its line's key whichever component stores it (issue 11).

The worker seals with the line key the operator puts in the line's Secret; the orchestrator,
which holds the master transcript key, must seal segments posted to
``/v1/livekit/transcription`` with the same line key. Otherwise one call's transcript holds
segments under two keys, and the line's staff (given the line key, never the master) cannot read
what the orchestrator stored. Keys as deployed: the operator's ``line_secret`` and the
orchestrator's ``load_settings``; segments read back from the real redis-server.
"""

from __future__ import annotations

import base64

import pytest

from tests.orchestrator.helpers import orchestrator_env
from voicehive import privacy
from voicehive.callmanager import CallEvent, CallManager, EventKind, Transcript
from voicehive.callstore import CallStore
from voicehive.privacy import Privacy, Sealer, SealError
from voicehive_operator import builders
from voicehive_operator.settings import OperatorSettings
from voicehive_orchestrator.settings import load_settings

NS, LINE, OTHER = "hotels", "lindenhof", "seeblick"


def _line_key_as_the_worker_gets_it(env: dict[str, str], line: str) -> bytes:
    """The transcript key in the line's Secret, built by the operator from the same master keys."""
    operator = OperatorSettings(
        pii_key=base64.b64decode(env["VOICEHIVE_PII_KEY"]),
        transcript_key=base64.b64decode(env["VOICEHIVE_TRANSCRIPT_KEY"]),
        redis_url="redis://redis.voicehive.svc:6379/0",
    )
    data = builders.line_secret(NS, line, "uid-1", operator)["data"]
    return base64.b64decode(base64.b64decode(data[builders.LINE_SECRET_TRANSCRIPT_KEY]))


async def _segments(store: CallStore, manager: CallManager, room: str) -> list[str]:
    return [str(s["text"]) for s in await store.transcript(manager.call_ref(room))]


async def test_the_orchestrator_seals_a_calls_transcript_with_its_lines_key(store: CallStore, redis_url: str) -> None:
    env = orchestrator_env(redis_url)
    orchestrator = CallManager(store, load_settings(env).privacy)
    room = f"vh-{LINE}-_+4930901820_abc"
    await orchestrator.handle(CallEvent(room, EventKind.SIP_JOINED, "livekit", event_id="j1", line=LINE,
                                        namespace=NS, caller_number="+4930111111", participant_identity="sip_x"))
    await orchestrator.handle(CallEvent(room, EventKind.AGENT_READY, "agent", event_id="r1"))
    await orchestrator.record_transcript(Transcript(room, "I need a room for two nights", "en", 0.9, True,
                                                    actor="agent", event_id="t1"))
    # the worker of the same call, on its line's key, adds its own segment
    line_key = _line_key_as_the_worker_gets_it(env, LINE)
    worker = CallManager(store, Privacy.from_keys(base64.b64decode(env["VOICEHIVE_PII_KEY"]), line_key))
    await worker.record_transcript(Transcript(room, "and breakfast please", "en", 0.9, True, event_id="t2"))

    ref = orchestrator.call_ref(room)
    segments = await _segments(store, orchestrator, room)
    assert len(segments) == 2
    line_sealer = Sealer(line_key)
    assert [line_sealer.open_text(s, context=ref) for s in segments] == [
        "I need a room for two nights", "and breakfast please"]
    # neither the master key nor another line's key opens them
    for key in (base64.b64decode(env["VOICEHIVE_TRANSCRIPT_KEY"]), _line_key_as_the_worker_gets_it(env, OTHER)):
        for sealed in segments:
            with pytest.raises(SealError):
                Sealer(key).open_text(sealed, context=ref)


async def test_a_call_whose_line_is_unknown_keeps_the_components_own_key(store: CallStore) -> None:
    """No line to derive from (an agent event before any SIP join names one): the master key,
    so the segment is still sealed and readable by whoever holds that key."""
    master = privacy.decode_key("test", privacy.generate_key_b64())
    manager = CallManager(store, Privacy.from_keys(privacy.decode_key("t", privacy.generate_key_b64()), master,
                                                    per_line=True))
    room = "unknown-room-1"
    await manager.handle(CallEvent(room, EventKind.AGENT_READY, "agent", event_id="r2"))
    await manager.record_transcript(Transcript(room, "hello there", "en", 0.9, True, event_id="t3"))
    [sealed] = await _segments(store, manager, room)
    assert Sealer(master).open_text(sealed, context=manager.call_ref(room)) == "hello there"
