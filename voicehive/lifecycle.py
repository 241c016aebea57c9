"""The call lifecycle: phases and the transitions allowed between them.

This is the single definition of which phase may follow which. The CallManager (orchestrator
and worker, in-process) and the operator both consult it, so a VoiceSession's ``status.phase``
and the call state in Redis can never disagree about what a legal move is.

Out-of-order deliveries are the norm (webhooks race agent events), so the rules are forgiving
in one direction only: a call may skip forward (Pending -> Active when the operator's
"Starting" arrives late), but it never moves backwards and never leaves a terminal phase.
"""

from __future__ import annotations

from enum import StrEnum


class CallPhase(StrEnum):
    """Where a call is. Mirrors ``VoiceSession.status.phase``."""

    PENDING = "Pending"
    STARTING = "Starting"
    ACTIVE = "Active"
    ENDED = "Ended"
    FAILED = "Failed"


class EndReason(StrEnum):
    """Why a call left the live phases; plain words for status and audit."""

    CALLER_HANGUP = "caller_hangup"
    AGENT_ENDED = "agent_ended"
    TRANSFERRED = "transferred"
    ROOM_FINISHED = "room_finished"
    START_TIMEOUT = "start_timeout"
    WORKER_LOST = "worker_lost"
    MAX_DURATION = "max_duration"
    PIPELINE_ERROR = "pipeline_error"
    ERASED = "erased"
    UNKNOWN = "unknown"


TERMINAL_PHASES: frozenset[CallPhase] = frozenset({CallPhase.ENDED, CallPhase.FAILED})

# Forward order; a transition is legal when it goes strictly forward and does not start
# from a terminal phase. Ended and Failed share a rank: whichever lands first wins.
_RANK: dict[CallPhase, int] = {
    CallPhase.PENDING: 0,
    CallPhase.STARTING: 1,
    CallPhase.ACTIVE: 2,
    CallPhase.ENDED: 3,
    CallPhase.FAILED: 3,
}

ALLOWED_TRANSITIONS: dict[CallPhase, frozenset[CallPhase]] = {
    phase: frozenset(
        target
        for target in CallPhase
        if phase not in TERMINAL_PHASES and _RANK[target] > _RANK[phase]
    )
    for phase in CallPhase
}


def is_terminal(phase: CallPhase) -> bool:
    """A terminal call never changes phase again (a late start must not revive it)."""
    return phase in TERMINAL_PHASES


def can_transition(current: CallPhase | None, target: CallPhase) -> bool:
    """Whether ``current -> target`` is a legal move; ``None`` means the call is new."""
    if current is None:
        return True
    return target in ALLOWED_TRANSITIONS[current]
