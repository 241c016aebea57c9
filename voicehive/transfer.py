"""The transfer handshake on a VoiceSession's status: the worker asks, the operator transfers.

WHY: LiveKit lets a SIP transfer happen only with the SIP "call" grant, which also lets its holder
place outbound calls to any number through any trunk. Workers therefore do not get it; a worker
sets the condition :data:`~voicehive.contract.CONDITION_TRANSFER` to ``Unknown``/``Requested``,
the operator (which holds the API secret anyway) transfers the caller to the line's front desk and
answers ``True``/``Transferred`` or ``False``/``TransferFailed``. The target comes from the
HotelLine spec, never from the worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from voicehive import contract

REQUESTED = "Requested"
TRANSFERRED = "Transferred"
FAILED = "TransferFailed"


def condition(status: str, reason: str, message: str, now: str) -> dict[str, Any]:
    return {"type": contract.CONDITION_TRANSFER, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": now}


def request(now: str) -> dict[str, Any]:
    return condition("Unknown", REQUESTED, "The agent asked for a transfer to the front desk.", now)


def with_condition(existing: Iterable[Mapping[str, Any]] | None, new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The conditions list with ``new`` replacing its type (a merge patch replaces whole lists)."""
    kept = [dict(c) for c in existing or () if c.get("type") != new["type"]]
    return [*kept, dict(new)]


def state(status: Mapping[str, Any] | None) -> str | None:
    """``Requested``, ``Transferred``, ``TransferFailed`` or ``None`` (no transfer asked)."""
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == contract.CONDITION_TRANSFER:
            reason = cond.get("reason")
            return str(reason) if reason in (REQUESTED, TRANSFERRED, FAILED) else None
    return None
