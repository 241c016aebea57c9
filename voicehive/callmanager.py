"""CallManager: the one call state machine, shared by the orchestrator (HTTP) and the worker
(in-process).

WHY one piece: LiveKit webhooks, agent webhooks and the worker itself all report on the same
call, in any order and often more than once. Deciding "what does this event do to this call"
in one place (on top of :mod:`voicehive.lifecycle`) is what keeps Redis, the VoiceSession
status and the audit log in agreement.

Rules:

* Every delivery has a dedupe id (the sender's event id, or a keyed hash of its content);
  a repeated delivery changes nothing and reports :attr:`Outcome.DUPLICATE`. Transcripts are
  the exception: without an event id each one is new (equal words are distinct turns).
* Phases only move forward (``lifecycle.can_transition``). An end that arrives before the
  start ends the call; a start that arrives after the end is logged as ``stale`` and does not
  revive it.
* Personal data (room name, caller number, SIP identity, transcript text) is hashed or sealed
  here, before anything reaches the store, a hook or the audit log.
* Side effects on Kubernetes go through :class:`CallHook` after the Redis write commits; a hook
  failure never loses the event (VoiceSession creation requests are queued in Redis in the
  same transaction as the event that asked for them).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from voicehive.audit import AuditLog, AuditRecord
from voicehive.callstore import (
    ApplyResult,
    CallRecord,
    CallStore,
    Outcome,
    Plan,
    retention_seconds,
)
from voicehive.intents import Intent, IntentResult, classify, normalise_language, with_asr_confidence
from voicehive.lifecycle import CallPhase, EndReason, can_transition, is_terminal
from voicehive.privacy import PiiHasher, Privacy

log = logging.getLogger(__name__)


class EventKind(StrEnum):
    """What happened, independent of who reported it."""

    SIP_JOINED = "sip_participant_joined"  # LiveKit: the caller is in a line's room
    ROOM_STARTED = "room_started"  # LiveKit: informational
    AGENT_READY = "agent_ready"  # agent/worker joined and is ready
    CALL_STARTED = "call_started"  # agent answered the caller
    CALL_ENDED = "call_ended"  # agent reports the end (reason says why)
    CALL_FAILED = "call_failed"  # worker/operator: the call could not be served
    CALLER_LEFT = "caller_left"  # LiveKit: the SIP participant left / connection aborted
    ROOM_FINISHED = "room_finished"  # LiveKit: the room is gone
    TRANSCRIPT = "transcript"  # one ASR segment
    NOTE = "note"  # any other accepted event, logged only


# The phase each kind asks for; kinds absent here never change the phase.
TARGET_PHASE: dict[EventKind, CallPhase] = {
    EventKind.SIP_JOINED: CallPhase.PENDING,
    EventKind.AGENT_READY: CallPhase.STARTING,
    EventKind.CALL_STARTED: CallPhase.ACTIVE,
    EventKind.CALL_ENDED: CallPhase.ENDED,
    EventKind.CALL_FAILED: CallPhase.FAILED,
    EventKind.CALLER_LEFT: CallPhase.ENDED,
    EventKind.ROOM_FINISHED: CallPhase.ENDED,
}

# What a transcript's decision reads of the call: its phase (the event's "from"), the language
# (set once) and what the TTL comes from. Appends do not conflict on anything else.
TRANSCRIPT_READS = ("phase", "language", "line", "namespace", "retention_s")

# Kinds that may create a call record when none exists (out-of-order tolerance).
CREATING_KINDS: frozenset[EventKind] = frozenset(TARGET_PHASE)

FAILURE_REASONS: frozenset[EndReason] = frozenset(
    {EndReason.START_TIMEOUT, EndReason.WORKER_LOST, EndReason.PIPELINE_ERROR}
)

_REASON_ALIASES: dict[str, EndReason] = {
    "participant_disconnected": EndReason.CALLER_HANGUP,
    "client_initiated": EndReason.CALLER_HANGUP,
    "hangup": EndReason.CALLER_HANGUP,
    "caller_hung_up": EndReason.CALLER_HANGUP,
    "disconnected": EndReason.CALLER_HANGUP,
    "user_hangup": EndReason.CALLER_HANGUP,
    "agent_hangup": EndReason.AGENT_ENDED,
    "completed": EndReason.AGENT_ENDED,
    "goodbye": EndReason.AGENT_ENDED,
    "transfer": EndReason.TRANSFERRED,
    "room_deleted": EndReason.ROOM_FINISHED,
    "room_closed": EndReason.ROOM_FINISHED,
    "timeout": EndReason.START_TIMEOUT,
    "error": EndReason.PIPELINE_ERROR,
    "failed": EndReason.PIPELINE_ERROR,
    "worker_crashed": EndReason.WORKER_LOST,
    "max_duration_exceeded": EndReason.MAX_DURATION,
}


def parse_end_reason(value: str | None) -> EndReason:
    """Map a sender's free-form reason onto :class:`EndReason` (unknown words -> UNKNOWN)."""
    if not value:
        return EndReason.UNKNOWN
    key = value.strip().lower().replace("-", "_").replace(" ", "_")
    if key in EndReason._value2member_map_:
        return EndReason(key)
    return _REASON_ALIASES.get(key, EndReason.UNKNOWN)


@dataclass(frozen=True)
class CallEvent:
    """One delivery about one call, as the CallManager sees it (personal data still raw)."""

    call_sid: str  # the LiveKit room name (PII: hashed before use)
    kind: EventKind
    actor: str  # "agent", "livekit", "worker", "operator", "orchestrator"
    event_id: str | None = None  # sender's id; None -> keyed hash of the content
    reason: EndReason | None = None
    line: str | None = None
    namespace: str | None = None
    hotel_id: str | None = None
    caller_number: str | None = None
    participant_identity: str | None = None
    language: str | None = None
    detail: str | None = None  # event type name for NOTE (e.g. "track_published")
    content: tuple[tuple[str, str], ...] = ()  # extra fields that identify the delivery

    def dedupe_source(self) -> str:
        if self.event_id:
            return f"id:{self.event_id}"
        fields = {
            "kind": self.kind.value,
            "sid": self.call_sid,
            "reason": self.reason.value if self.reason else None,
            "line": self.line,
            "hotel": self.hotel_id,
            "identity": self.participant_identity,
            "detail": self.detail,
            "content": list(self.content),
        }
        return "content:" + json.dumps(fields, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Transcript:
    """One ASR segment (text is personal data: sealed before storage, never logged)."""

    call_sid: str
    text: str
    language: str | None
    confidence: float
    is_final: bool
    actor: str = "agent"
    event_id: str | None = None


def transcript_dedupe_source(segment: Transcript) -> str:
    """What makes two transcript deliveries "the same": the sender's ``event_id`` only.

    WHY not the content: a caller who says "yes" twice sends the same text twice, and the
    seed's contract carries no segment time or sequence to tell the two apart. Without an id
    every delivery is a new segment (a blind retry may then store a segment twice; a sender that
    retries sends an ``event_id``, as the worker does).
    """
    if segment.event_id:
        return f"id:{segment.event_id}"
    return f"unkeyed:{secrets.token_hex(16)}"


@dataclass(frozen=True)
class PhaseChange:
    """What hooks see after a change committed: no personal data except the sealed ref."""

    call_ref: str
    room_hash: str
    line: str | None
    namespace: str | None
    actor: str
    kind: EventKind
    from_phase: CallPhase | None
    to_phase: CallPhase
    reason: EndReason | None
    at: float
    record: CallRecord
    session_request: SessionRequest | None = None


@dataclass(frozen=True)
class SessionRequest:
    """Everything needed to create the call's VoiceSession (queued in Redis until done)."""

    call_ref: str
    room_hash: str
    line: str
    namespace: str | None
    caller_hash: str
    sealed_call_ref: str
    language: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "call_ref": self.call_ref,
            "room_hash": self.room_hash,
            "line": self.line,
            "namespace": self.namespace,
            "caller_hash": self.caller_hash,
            "sealed_call_ref": self.sealed_call_ref,
            "language": self.language,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionRequest:
        return cls(
            call_ref=str(data["call_ref"]),
            room_hash=str(data["room_hash"]),
            line=str(data["line"]),
            namespace=data.get("namespace"),
            caller_hash=str(data["caller_hash"]),
            sealed_call_ref=str(data["sealed_call_ref"]),
            language=data.get("language"),
        )


class CallHook(Protocol):
    """Side effects after a committed change (VoiceSession create/patch). Must be idempotent:
    a hook may see the same change again after a retry."""

    async def on_change(self, change: PhaseChange) -> None: ...


@dataclass(frozen=True)
class EventResult:
    call_ref: str
    outcome: Outcome
    phase: CallPhase | None
    previous_phase: CallPhase | None
    created: bool


@dataclass(frozen=True)
class TranscriptResult:
    event: EventResult
    intent: IntentResult


RetentionLookup = Callable[[str | None, str | None], int | None]
"""``(namespace, line) -> metadata retention in days`` (None: default 30)."""


def line_retention(namespace: str, line: str, days: int) -> RetentionLookup:
    """The lookup of a process that serves one line (the worker): that line's retention."""

    def lookup(ns: str | None, name: str | None) -> int | None:
        return days if name == line and ns in (None, namespace) else None

    return lookup


@dataclass
class CallManager:
    """Applies events to calls in Redis; see the module docstring for the rules."""

    store: CallStore
    privacy: Privacy
    hooks: Sequence[CallHook] = ()
    audit: AuditLog = field(default_factory=AuditLog)
    retention: RetentionLookup | None = None
    clock: Callable[[], float] = time.time

    @classmethod
    def from_env(
        cls,
        redis_url: str | None = None,
        *,
        hooks: Sequence[CallHook] = (),
        retention: RetentionLookup | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> CallManager:
        """Build one from the environment (``VOICEHIVE_REDIS_URL``, ``VOICEHIVE_PII_KEY``,
        ``VOICEHIVE_TRANSCRIPT_KEY``): how the worker gets its in-process CallManager.
        Raises ``KeyConfigError`` naming a missing/malformed key."""
        env = os.environ if environ is None else environ
        url = redis_url or env.get("VOICEHIVE_REDIS_URL") or "redis://127.0.0.1:6379/0"
        return cls(CallStore.from_url(url), Privacy.from_env(env), hooks=hooks, retention=retention)

    async def close(self) -> None:
        await self.store.close()

    def call_ref(self, call_sid: str) -> str:
        return self.privacy.hasher.call_ref(call_sid)

    async def get(self, call_sid: str) -> CallRecord | None:
        return await self.store.get(self.call_ref(call_sid))

    # ------------------------------------------------------------------ events

    async def handle(self, event: CallEvent) -> EventResult:
        """Apply one event. Raises ``StoreUnavailable`` (nothing written) if Redis is down."""
        facts = self._facts(event)
        result = await self.store.apply(facts.ref, functools.partial(decide_event, event, facts),
                                        dedupe_id=self.privacy.hasher.event_id(event.dedupe_source()),
                                        retention_s=self._ttl(event.namespace, event.line))
        await self._after(event.call_sid, facts.ref, event.kind, event.actor, result)
        return _event_result(facts.ref, result)

    def _facts(self, event: CallEvent) -> EventFacts:
        """Hash and seal what the event carries, once, before the (possibly repeated) decision."""
        hasher = self.privacy.hasher
        target = TARGET_PHASE.get(event.kind)
        reason = event.reason
        if target is CallPhase.ENDED and reason in FAILURE_REASONS:
            target = CallPhase.FAILED
        if target in (CallPhase.ENDED, CallPhase.FAILED) and reason is None:
            reason = {
                EventKind.ROOM_FINISHED: EndReason.ROOM_FINISHED,
                EventKind.CALLER_LEFT: EndReason.CALLER_HANGUP,
            }.get(event.kind, EndReason.UNKNOWN)
        joined = event.kind is EventKind.SIP_JOINED
        return EventFacts(
            ref=hasher.call_ref(event.call_sid),
            now=self.clock(),
            caller_hash=_caller_hash(hasher, event.caller_number, joined),
            participant_hash=hasher.identity(event.participant_identity) if event.participant_identity else None,
            target=target,
            reason=reason,
            sealed_call_ref=(
                self.privacy.seal_call_ref(event.call_sid, event.participant_identity or "") if joined else None
            ),
            room_hash=hasher.room(event.call_sid) if joined else None,
            language=normalise_language(event.language) or (event.language or None),
        )

    async def record_transcript(self, segment: Transcript) -> TranscriptResult:
        """Store one ASR segment (sealed) and classify its intent. Unknown call -> NOT_FOUND."""
        hasher = self.privacy.hasher
        ref = hasher.call_ref(segment.call_sid)
        language = normalise_language(segment.language)
        intent = with_asr_confidence(classify(segment.text, language), segment.confidence)
        now = self.clock()
        dedupe_id = hasher.event_id(transcript_dedupe_source(segment))

        def decide(current: CallRecord | None, seen: bool) -> Plan:
            entry = {"type": EventKind.TRANSCRIPT.value, "actor": segment.actor, "at": f"{now:.6f}"}
            if seen:
                return Plan(Outcome.DUPLICATE, entry)
            if current is None:
                return Plan(Outcome.NOT_FOUND, entry)
            entry.update(
                {
                    "from": current.phase.value,
                    "final": "1" if segment.is_final else "0",
                    "intent": intent.intent.value,
                }
            )
            plan = Plan(Outcome.RECORDED, entry, set_once={"language": language or ""}, reads=TRANSCRIPT_READS)
            if segment.is_final:
                sealer = self.privacy.transcripts_for(current.namespace, current.line)
                plan.transcript = {
                    "text": sealer.seal_text(segment.text, context=ref),
                    "language": language or "",
                    "confidence": f"{segment.confidence:.4f}",
                    "intent": intent.intent.value,
                    "intent_confidence": f"{intent.confidence:.3f}",
                    "at": f"{now:.6f}",
                }
                plan.increments["turns"] = 1
                if intent.intent is not Intent.UNKNOWN:
                    plan.increments[f"intent:{intent.intent.value}"] = 1
                    plan.fields["last_intent"] = intent.intent.value
            return plan

        result = await self.store.apply(ref, decide, dedupe_id=dedupe_id, retention_s=self._ttl(None, None))
        return TranscriptResult(_event_result(ref, result), intent)

    # ------------------------------------------------------------------ conveniences (worker)

    async def agent_ready(self, call_sid: str, *, actor: str = "worker", **kw: Any) -> EventResult:
        return await self.handle(CallEvent(call_sid, EventKind.AGENT_READY, actor, **kw))

    async def call_started(self, call_sid: str, *, actor: str = "worker", **kw: Any) -> EventResult:
        return await self.handle(CallEvent(call_sid, EventKind.CALL_STARTED, actor, **kw))

    async def call_ended(
        self, call_sid: str, reason: EndReason, *, actor: str = "worker", **kw: Any
    ) -> EventResult:
        return await self.handle(CallEvent(call_sid, EventKind.CALL_ENDED, actor, reason=reason, **kw))

    async def call_failed(
        self, call_sid: str, reason: EndReason = EndReason.PIPELINE_ERROR, *, actor: str = "worker", **kw: Any
    ) -> EventResult:
        return await self.handle(CallEvent(call_sid, EventKind.CALL_FAILED, actor, reason=reason, **kw))

    # ------------------------------------------------------------------ erasure

    async def erase_caller(self, *, caller_number: str | None = None, caller_hash: str | None = None) -> list[str]:
        """Delete every call of a caller (by number, hashed here, or by hash); audits each."""
        if caller_hash is None:
            if caller_number is None:
                raise ValueError("give caller_number or caller_hash")
            caller_hash = self.privacy.hasher.phone(caller_number)
        refs = await self.store.erase_caller(caller_hash)
        for ref in refs:
            self.audit.transition(
                AuditRecord(ref, None, "orchestrator", None, CallPhase.ENDED, EndReason.ERASED, "erased", self.clock())
            )
        return refs

    # ------------------------------------------------------------------ internals

    def _ttl(self, namespace: str | None, line: str | None) -> Callable[[CallRecord | None], int]:
        """The TTL of a call's keys: its line's retention. An event that names no line (a
        transcript, an agent event) uses the line stored on the call; if the lookup does not
        know the line (directory not loaded yet) the call keeps the retention it has."""

        def ttl(current: CallRecord | None) -> int:
            ns = namespace or (current.namespace if current else None)
            name = line or (current.line if current else None)
            days = self._retention_days(ns, name)
            if days is None and current is not None:
                return current.retention_s
            return retention_seconds(days)

        return ttl

    def _retention_days(self, namespace: str | None, line: str | None) -> int | None:
        if self.retention is None:
            return None
        try:
            return self.retention(namespace, line)
        except Exception:  # a lookup problem must not drop an event; default retention applies
            log.warning("retention lookup failed; using the default", exc_info=True)
            return None

    async def _after(self, call_sid: str, ref: str, kind: EventKind, actor: str, result: ApplyResult) -> None:
        if result.outcome is not Outcome.APPLIED and not (result.plan and result.plan.pending_session):
            return
        after = result.after
        assert after is not None
        before_phase = result.before.phase if result.before else None
        reason = after.reason if is_terminal(after.phase) else None
        if result.outcome is Outcome.APPLIED:
            self.audit.transition(
                AuditRecord(ref, after.line, actor, before_phase, after.phase, reason, kind.value, after.updated_at)
            )
        pending = result.plan.pending_session if result.plan else None
        change = PhaseChange(
            call_ref=ref,
            room_hash=self.privacy.hasher.room(call_sid),
            line=after.line,
            namespace=after.namespace,
            actor=actor,
            kind=kind,
            from_phase=before_phase,
            to_phase=after.phase,
            reason=reason,
            at=after.updated_at,
            record=after,
            session_request=SessionRequest.from_json(pending) if pending else None,
        )
        for hook in self.hooks:
            try:
                await hook.on_change(change)
            except Exception:  # hooks retry on their own; the event is already durable
                log.warning("call hook %s failed", type(hook).__name__, exc_info=True, extra={"call_ref": ref})


def _caller_hash(hasher: PiiHasher, number: str | None, sip_joined: bool) -> str | None:
    """The caller hash an event carries. A SIP join always has one (a withheld number gets the
    anonymous hash, so the call still gets its VoiceSession); other events only with a number."""
    if sip_joined:
        return hasher.caller(number)
    return hasher.phone(number) if number else None


@dataclass(frozen=True)
class EventFacts:
    """What :meth:`CallManager.handle` derived from an event: hashes, sealed values, the target
    phase and end reason. No personal data in clear."""

    ref: str
    now: float
    caller_hash: str | None
    participant_hash: str | None
    target: CallPhase | None
    reason: EndReason | None
    sealed_call_ref: str | None
    room_hash: str | None
    language: str | None


def decide_event(event: CallEvent, facts: EventFacts, current: CallRecord | None, seen: bool) -> Plan:
    """Pure: the writes one event makes to the call as it is now (run again on a conflict)."""
    entry = {
        "type": event.kind.value,
        "actor": event.actor,
        "at": f"{facts.now:.6f}",
        "from": current.phase.value if current else "",
    }
    if event.detail:
        entry["detail"] = event.detail[:64]
    if seen:
        return Plan(Outcome.DUPLICATE, entry)
    if current is None and event.kind not in CREATING_KINDS:
        return Plan(Outcome.NOT_FOUND, entry)
    set_once = {
        "line": event.line or "",
        "namespace": event.namespace or "",
        "hotel_id": event.hotel_id or "",
        "caller_hash": facts.caller_hash or "",
        "participant_hash": facts.participant_hash or "",
        "language": facts.language or "",
    }
    plan = Plan(Outcome.RECORDED, entry, set_once=set_once, caller_hash=facts.caller_hash)
    if facts.target is not None:
        _transition(plan, facts, current)
    session = _session_request(event, facts, current, plan)
    if session is not None:
        plan.pending_session = session.to_json()
        plan.fields["session"] = "pending"
    return plan


def _transition(plan: Plan, facts: EventFacts, current: CallRecord | None) -> None:
    """Move the plan to the event's target phase if the lifecycle allows it, else mark it stale."""
    target, now, entry = facts.target, facts.now, plan.event
    assert target is not None
    entry["to"] = target.value
    if not can_transition(current.phase if current else None, target):
        plan.outcome = Outcome.STALE
        return
    plan.outcome = Outcome.APPLIED
    plan.phase = target
    if target is CallPhase.ACTIVE and not (current and current.answered_at):
        plan.fields["answered_at"] = f"{now:.6f}"
    if is_terminal(target):
        reason = (facts.reason or EndReason.UNKNOWN).value
        plan.fields["ended_at"] = f"{now:.6f}"
        plan.fields["reason"] = reason
        entry["reason"] = reason
        plan.active = False
    else:
        plan.active = True


def _session_request(event: CallEvent, facts: EventFacts, current: CallRecord | None,
                     plan: Plan) -> SessionRequest | None:
    """The VoiceSession to queue: once per call, when the SIP leg joined a live call of a line."""
    line = event.line or (current.line if current else None)
    phase_after = plan.phase or (current.phase if current else None)
    if (
        facts.sealed_call_ref is None
        or facts.room_hash is None
        or not line
        or not facts.caller_hash
        or phase_after is None
        or is_terminal(phase_after)
        or (current and current.session)
    ):
        return None
    return SessionRequest(
        call_ref=facts.ref,
        room_hash=facts.room_hash,
        line=line,
        namespace=event.namespace or (current.namespace if current else None),
        caller_hash=facts.caller_hash,
        sealed_call_ref=facts.sealed_call_ref,
        language=facts.language or (current.language if current else None),
    )


def _event_result(ref: str, result: ApplyResult) -> EventResult:
    return EventResult(
        call_ref=ref,
        outcome=result.outcome,
        phase=result.after.phase if result.after else None,
        previous_phase=result.before.phase if result.before else None,
        created=result.created,
    )
