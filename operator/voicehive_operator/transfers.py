"""The operator's side of the transfer handshake (:mod:`voicehive.transfer`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from livekit import api as lkapi

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
        ok, message = await _transfer(runtime, body, line_spec)
    finally:
        runtime.transfers.discard(uid)
    now = conditions.rfc3339(runtime.settings.clock.now())
    result = transfer.condition("True" if ok else "False", transfer.TRANSFERRED if ok else transfer.FAILED,
                                message, now)
    await runtime.kube.patch_custom_status(namespace, VOICESESSIONS, name, {
        "status": {"conditions": transfer.with_condition(status.get("conditions"), result)}})
    return str(result["reason"])


async def _transfer(runtime: Runtime, body: Mapping[str, Any], line_spec: HotelLineSpec | None) -> tuple[bool, str]:
    settings = runtime.settings
    if line_spec is None:
        return False, "The call's HotelLine is missing or refused; there is no front desk to transfer to."
    if settings.pii_key is None:
        return False, "The operator has no PII key, so it cannot open the call's reference."
    try:
        call = privacy.open_call_ref(privacy.call_ref_sealer(settings.pii_key),
                                     str((body.get("spec") or {}).get("sealedCallRef") or ""))
    except privacy.SealError:
        return False, "The call's sealed reference does not open with this operator's key."
    try:
        await runtime.sip.api.sip.transfer_sip_participant(lkapi.TransferSIPParticipantRequest(
            participant_identity=call.participant_identity, room_name=call.room,
            transfer_to=line_spec.front_desk.transfer_to, play_dialtone=False))
    except Exception as exc:  # LiveKit's message may quote the room (the caller's number): type only
        log.warning("front-desk transfer failed", extra={"error": type(exc).__name__})
        return False, f"LiveKit refused the transfer ({type(exc).__name__})."
    return True, "Transferred to the front desk."
