"""livekit-agents and the Rust SDK log room names and SIP identities, which carry the caller's
number: the worker's log filter keeps them out of the pod log (found by tests/e2e)."""

from __future__ import annotations

import logging

from voicehive_worker.entrypoint import DropLiveKitPii

ROOM = "vh-e556612cc6-_+4915112340000_cQNzMa5gZHBl"


def _record(name: str, msg: str, args: tuple[object, ...] = (), **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_room_and_sip_identity_extras_of_livekit_agents_are_redacted() -> None:
    record = _record("livekit.agents", "closing agent session due to participant disconnect",
                     room=ROOM, participant="sip_+4915112340000")
    assert DropLiveKitPii().filter(record)
    assert record.room == "vh-e556612cc6-_[redacted]"  # type: ignore[attr-defined]
    assert "4915112340000" not in record.participant  # type: ignore[attr-defined]


def test_a_room_name_inside_a_rust_sdk_message_is_redacted_and_the_prefix_kept() -> None:
    record = _record("livekit", 'livekit::room - Disconnected from room "%s" with reason: ClientInitiated', (ROOM,))
    DropLiveKitPii().filter(record)
    message = record.getMessage()
    assert "4915112340000" not in message and "cQNzMa5gZHBl" not in message
    assert "vh-e556612cc6-_[redacted]" in message and "ClientInitiated" in message


def test_records_of_other_loggers_are_left_alone() -> None:
    record = _record("voicehive.worker", "worker warm and idle", pod="lindenhof-main-w-1")
    DropLiveKitPii().filter(record)
    assert record.getMessage() == "worker warm and idle"
