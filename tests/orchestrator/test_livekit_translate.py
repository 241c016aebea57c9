"""Pure mapping of verified LiveKit webhook events onto call events (no I/O)."""

from __future__ import annotations

from livekit.protocol import models
from livekit.protocol.webhook import WebhookEvent

from voicehive import contract
from voicehive.callmanager import EventKind
from voicehive.lifecycle import EndReason
from voicehive_orchestrator.livekit_events import translate

PREFIX = contract.room_prefix("hotels", "grand")
ROOM = f"{PREFIX}_+4930111222_abc"


def _event(name: str, room: str = ROOM, kind: int | None = models.ParticipantInfo.Kind.SIP,
           attributes: dict[str, str] | None = None) -> WebhookEvent:
    event = WebhookEvent(event=name, id=f"EV_{name}", room=models.Room(name=room))
    if kind is not None:
        event.participant.CopyFrom(models.ParticipantInfo(identity="sip_+4930111222", kind=kind,
                                                          attributes=attributes or {}))
    return event


def lookup(room: str) -> tuple[str, str] | None:
    return ("hotels", "grand") if room.startswith(PREFIX) else None


def test_sip_join_takes_the_line_from_the_attribute_first() -> None:
    t = translate(_event("participant_joined", attributes={contract.ATTRIBUTE_LINE: "ns1/other",
                                                            "sip.phoneNumber": "+4930111222"}), lookup)
    assert t.event is not None and t.event.kind is EventKind.SIP_JOINED
    assert (t.event.namespace, t.event.line) == ("ns1", "other")
    assert t.event.caller_number == "+4930111222" and t.event.event_id == "lk:EV_participant_joined"


def test_room_prefix_is_the_fallback() -> None:
    t = translate(_event("participant_joined"), lookup)
    assert t.event is not None and (t.event.namespace, t.event.line) == ("hotels", "grand")


def test_caller_leaving_or_aborting_ends_the_call() -> None:
    for name in ("participant_left", "participant_connection_aborted"):
        t = translate(_event(name), lookup)
        assert t.event is not None and t.event.kind is EventKind.CALLER_LEFT
        assert t.event.reason is EndReason.CALLER_HANGUP


def test_agent_participants_do_not_end_or_start_calls() -> None:
    for name in ("participant_joined", "participant_left"):
        t = translate(_event(name, kind=models.ParticipantInfo.Kind.AGENT), lookup)
        assert t.event is not None and t.event.kind is EventKind.NOTE


def test_room_events_and_foreign_rooms() -> None:
    finished = translate(_event("room_finished", kind=None), lookup)
    assert finished.event is not None and finished.event.kind is EventKind.ROOM_FINISHED
    started = translate(_event("room_started", kind=None), lookup)
    assert started.event is not None and started.event.kind is EventKind.ROOM_STARTED
    foreign = translate(_event("room_finished", room="support-chat-42", kind=None), lookup)
    assert foreign.event is None and foreign.ignored
    nameless = translate(WebhookEvent(event="egress_started", id="EV_e"), lookup)
    assert nameless.event is None
