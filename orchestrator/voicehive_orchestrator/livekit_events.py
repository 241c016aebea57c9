"""LiveKit server webhooks: verification and translation into CallManager events.

WHY separate: the mapping "which LiveKit event means what for a call" is pure logic that is
tested without HTTP; the verification uses livekit-api's own ``WebhookReceiver`` (HS256 JWT in
``Authorization`` whose ``sha256`` claim must equal the body's hash), never a hand-made check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from livekit import api as lkapi
from livekit.protocol import models as lkmodels
from livekit.protocol.webhook import WebhookEvent

from voicehive import contract
from voicehive.callmanager import CallEvent, EventKind
from voicehive.lifecycle import EndReason

SIP_KIND = lkmodels.ParticipantInfo.Kind.SIP
SIP_PHONE_ATTRIBUTE = "sip.phoneNumber"
ROOM_PREFIX_START = "vh-"

LineLookup = Callable[[str], tuple[str, str] | None]
"""``room name -> (namespace, line name)`` from the line's room prefix (None: not ours)."""


class WebhookAuthError(Exception):
    """The webhook's signature is missing, forged, expired or does not match the body."""


class WebhookFormatError(Exception):
    """The webhook verified but its body is not a LiveKit WebhookEvent."""


class LiveKitVerifier:
    def __init__(self, api_key: str, api_secret: str) -> None:
        self._verifier = lkapi.TokenVerifier(api_key, api_secret)
        self._receiver = lkapi.WebhookReceiver(self._verifier)

    def verify(self, body: str, authorization: str | None) -> WebhookEvent:
        if not authorization:
            raise WebhookAuthError("missing Authorization header")
        token = authorization.removeprefix("Bearer ").strip()
        try:
            claims = self._verifier.verify(token)
        except Exception as exc:
            raise WebhookAuthError("signature is invalid or expired") from exc
        if not claims.sha256:
            raise WebhookAuthError("token carries no body hash")
        try:
            return self._receiver.receive(body, token)
        except Exception as exc:
            if "hash mismatch" in str(exc):
                raise WebhookAuthError("body does not match the signed hash") from exc
            raise WebhookFormatError("body is not a LiveKit webhook event") from exc


@dataclass(frozen=True)
class Translation:
    """The CallEvent for a webhook, or why there is none (``ignored``)."""

    event: CallEvent | None
    ignored: str | None = None


def _line_of(event: WebhookEvent, lookup: LineLookup | None) -> tuple[str | None, str | None]:
    attributes = dict(event.participant.attributes) if event.HasField("participant") else {}
    value = attributes.get(contract.ATTRIBUTE_LINE, "")
    namespace, sep, name = value.rpartition("/")
    if name and sep and namespace:
        return namespace, name
    if name and not sep:
        return None, name
    if lookup is not None and event.room.name:
        found = lookup(event.room.name)
        if found:
            return found
    return None, None


def translate(event: WebhookEvent, lookup: LineLookup | None = None) -> Translation:
    """Map a verified LiveKit event onto the call lifecycle."""
    room = event.room.name if event.HasField("room") else ""
    if not room:
        return Translation(None, "event names no room")
    namespace, line = _line_of(event, lookup)
    ours = bool(line) or room.startswith(ROOM_PREFIX_START)
    if not ours:
        return Translation(None, "room does not belong to a HotelLine")
    participant = event.participant if event.HasField("participant") else None
    is_sip = participant is not None and participant.kind == SIP_KIND
    event_id = event.id or None
    kind: EventKind
    reason: EndReason | None = None
    if event.event == "participant_joined" and is_sip:
        kind = EventKind.SIP_JOINED
    elif event.event in ("participant_left", "participant_connection_aborted") and is_sip:
        kind = EventKind.CALLER_LEFT
        reason = EndReason.CALLER_HANGUP
    elif event.event == "room_finished":
        kind = EventKind.ROOM_FINISHED
        reason = EndReason.ROOM_FINISHED
    elif event.event == "room_started":
        kind = EventKind.ROOM_STARTED
    else:
        kind = EventKind.NOTE
    caller = None
    identity = None
    if is_sip and participant is not None:
        caller = participant.attributes.get(SIP_PHONE_ATTRIBUTE) or None
        identity = participant.identity or None
    return Translation(
        CallEvent(
            call_sid=room,
            kind=kind,
            actor="livekit",
            event_id=f"lk:{event_id}" if event_id else None,
            reason=reason,
            line=line,
            namespace=namespace,
            caller_number=caller,
            participant_identity=identity,
            detail=event.event[:64] or None,
            content=(("created_at", str(event.created_at)), ("participant", participant.sid if participant else "")),
        )
    )
