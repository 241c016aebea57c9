"""The operator's side of the transfer handshake (:mod:`voicehive.transfer`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from livekit import api as lkapi
from livekit.api.twirp_client import TwirpError, TwirpErrorCode

from voicehive import privacy, transfer
from voicehive.api.models import HotelLineSpec
from voicehive.contract import VOICESESSIONS
from voicehive_operator import conditions
from voicehive_operator.runtime import Runtime

log = logging.getLogger(__name__)


async def perform(runtime: Runtime, *, namespace: str, name: str, uid: str, body: Mapping[str, Any],
                  line_spec: HotelLineSpec | None) -> str | None:
    """Transfer the caller if the worker asked and nobody did yet; returns the outcome reason."""
    status = body.get("status") or {}
    if transfer.state(status) != transfer.REQUESTED or uid in runtime.transfers:
        return None
    runtime.transfers.add(uid)  # before the first await: a duplicate event is a no-op
    try:
        ok, message = await _transfer(runtime, _call_of(runtime, body), line_spec)
    finally:
        runtime.transfers.discard(uid)
    return await _record(runtime, namespace, name, status, ok, message)


NO_ANSWER = "No worker answered the call."
WORKER_STOPPED = "The call's worker stopped before the call ended."


async def hand_over(runtime: Runtime, *, namespace: str, name: str, body: Mapping[str, Any],
                    line_spec: HotelLineSpec | None, why: str) -> str:
    """The call has no agent (none answered, or its worker died): hand the caller to the front
    desk or, if that fails, hang up (livekit-sip ends the SIP call when its participant is
    removed) rather than leave them in a room where nobody speaks. Recorded as the transfer
    condition, ``why`` first; returns what happened."""
    status = body.get("status") or {}
    if transfer.state(status) == transfer.TRANSFERRED:  # the agent had handed the caller over already
        return "The caller had been transferred to the front desk."
    call = _call_of(runtime, body)
    ok, message = await _transfer(runtime, call, line_spec)
    if not ok:
        message = f"{message} {await _hang_up(runtime, call)}"
    await _record(runtime, namespace, name, status, ok, f"{why} {message}")
    return message


async def _record(runtime: Runtime, namespace: str, name: str, status: Mapping[str, Any], ok: bool,
                  message: str) -> str:
    """The transfer's outcome as the session's transfer condition; returns its reason."""
    now = conditions.rfc3339(runtime.settings.clock.now())
    result = transfer.condition("True" if ok else "False", transfer.TRANSFERRED if ok else transfer.FAILED,
                                message, now)
    await runtime.kube.patch_custom_status(namespace, VOICESESSIONS, name, {
        "status": {"conditions": transfer.with_condition(status.get("conditions"), result)}})
    return str(result["reason"])


def _call_of(runtime: Runtime, body: Mapping[str, Any]) -> privacy.CallSecret | str:
    """The call's room and SIP identity, opened from the session's sealed reference, or why not."""
    if runtime.settings.pii_key is None:
        return "The operator has no PII key, so it cannot open the call's reference."
    try:
        return privacy.open_call_ref(privacy.call_ref_sealer(runtime.settings.pii_key),
                                     str((body.get("spec") or {}).get("sealedCallRef") or ""))
    except privacy.SealError:
        return "The call's sealed reference does not open with this operator's key."


async def _transfer(runtime: Runtime, call: privacy.CallSecret | str,
                    line_spec: HotelLineSpec | None) -> tuple[bool, str]:
    if line_spec is None:
        return False, "The call's HotelLine is missing or refused; there is no front desk to transfer to."
    if isinstance(call, str):
        return False, call
    try:
        await runtime.sip.api.sip.transfer_sip_participant(lkapi.TransferSIPParticipantRequest(
            participant_identity=call.participant_identity, room_name=call.room,
            transfer_to=line_spec.front_desk.transfer_to, play_dialtone=False))
    except Exception as exc:  # LiveKit's message may quote the room (the caller's number): type only
        log.warning("front-desk transfer failed", extra={"error": type(exc).__name__})
        return False, f"LiveKit refused the transfer ({type(exc).__name__})."
    return True, "Transferred to the front desk."


async def _hang_up(runtime: Runtime, call: privacy.CallSecret | str) -> str:
    if isinstance(call, str):
        return f"The caller could not be disconnected: {call}"
    try:
        await runtime.sip.api.room.remove_participant(lkapi.RoomParticipantIdentity(
            room=call.room, identity=call.participant_identity))
    except Exception as exc:  # type only, as above
        if isinstance(exc, TwirpError) and exc.code == TwirpErrorCode.NOT_FOUND:  # the caller gave up first
            return "The caller had already left."
        log.warning("hanging up a call with no agent failed", extra={"error": type(exc).__name__})
        return f"Disconnecting the caller failed too ({type(exc).__name__})."
    return "The caller was disconnected instead of being left in silence."
