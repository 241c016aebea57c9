"""The worker's side of call state: the CallManager in-process, the VoiceSession status, staff requests.

WHY in-process: the call lifecycle has one implementation (``voicehive.callmanager``); the
worker calls it directly instead of posting webhooks to the orchestrator, so there is no
second state machine and no HTTP hop on the hot path. Nothing written here carries a phone
number, a room name or transcript text in clear: the CallManager hashes/seals, booking
requests and messages are sealed (AES-GCM, the transcript key, AAD = call ref) before Redis.

The worker adds one key to the call's layout (``voicehive.callstore``): ``requests_key`` (list),
sealed JSON of each booking/change request or message, with the call's TTL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import statistics
from dataclasses import dataclass, field
from typing import Any

from voicehive.callmanager import CallManager, Transcript, line_retention
from voicehive.callstore import CallStore, requests_key, retention_seconds
from voicehive.contract import GROUP, VERSION, VOICESESSIONS
from voicehive.intents import Intent
from voicehive.lifecycle import CallPhase, EndReason
from voicehive.privacy import Privacy

log = logging.getLogger("voicehive.worker.state")

# How long the worker's state writes ride out Redis being away (a restart replaying its AOF, a
# failover): redis-py retries each command with exponential backoff, 0.1 s doubling up to 2 s,
# 20 times (about 30 s in all), before the write is given up (and logged; the call goes on).
STATE_RETRIES = 20
STATE_BACKOFF_CAP_S = 2.0
STATE_BACKOFF_BASE_S = 0.1


def worker_store(url: str, retries: int = STATE_RETRIES) -> CallStore:
    """The worker's CallStore: redis-py's Retry/ExponentialBackoff on connection errors."""
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    backoff = ExponentialBackoff(cap=STATE_BACKOFF_CAP_S, base=STATE_BACKOFF_BASE_S)
    return CallStore.from_url(url, retry=Retry(backoff, retries))


def _now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def latency_summary(values_ms: list[float]) -> dict[str, Any]:
    """The VoiceSession ``status.latency`` block (LatencySummary, camelCase)."""
    if not values_ms:
        return {"turns": 0}
    ordered = sorted(values_ms)
    p95_index = min(len(ordered) - 1, max(0, round(0.95 * (len(ordered) - 1))))
    return {
        "turns": len(ordered),
        "p50Ms": round(statistics.median(ordered), 1),
        "p95Ms": round(ordered[p95_index], 1),
        "maxMs": round(ordered[-1], 1),
    }


class VoiceSessionStatus:
    """Merge-patches the VoiceSession's status subresource (sync kubernetes client in a thread)."""

    def __init__(self, api_client: Any, namespace: str, name: str) -> None:
        from kubernetes import client

        self._api = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.name = name

    async def patch(self, status: dict[str, Any]) -> None:
        await asyncio.to_thread(
            self._api.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            self.namespace,
            VOICESESSIONS,
            self.name,
            {"status": status},
        )

    async def read(self) -> dict[str, Any]:
        obj: Any = await asyncio.to_thread(
            self._api.get_namespaced_custom_object, GROUP, VERSION, self.namespace, VOICESESSIONS, self.name
        )
        return dict(obj)


@dataclass
class CallState:
    """One call's state, written through the CallManager (Redis) and the VoiceSession status.

    ``call_sid`` is the LiveKit room name (PII): it only ever goes into the CallManager, which
    hashes it. Status writes are best effort (logged, never raised into the call): a caller
    must not hear silence because the kube API is slow.
    """

    manager: CallManager
    call_sid: str
    line: str
    namespace: str
    worker_pod: str
    status: VoiceSessionStatus | None = None
    retention_days: int = 30
    intents: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    turns: int = 0
    language: str | None = None
    """The call's current language (base code), shown in the VoiceSession status."""
    phase: CallPhase = CallPhase.STARTING
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def of_line(cls, store: CallStore, privacy: Privacy, *, call_sid: str, line: str, namespace: str,
                worker_pod: str, retention_days: int, status: VoiceSessionStatus | None = None) -> CallState:
        """The worker's call state: its CallManager keeps every key for the line's retention."""
        manager = CallManager(store=store, privacy=privacy, retention=line_retention(namespace, line, retention_days))
        return cls(manager=manager, call_sid=call_sid, line=line, namespace=namespace, worker_pod=worker_pod,
                   status=status, retention_days=retention_days)

    @property
    def ref(self) -> str:
        return self.manager.call_ref(self.call_sid)

    async def answered(self) -> None:
        """Records that the agent answered. The store retries through a Redis blip
        (:func:`worker_store`); a write that still fails is logged, never raised: the caller is
        already talking to the agent, and a call is not dropped for its bookkeeping."""
        try:
            await self.manager.agent_ready(self.call_sid, line=self.line, namespace=self.namespace)
            await self.manager.call_started(self.call_sid, line=self.line, namespace=self.namespace)
        except Exception as err:  # error texts may quote what they failed on: log the type only
            log.error("could not record the answered call; the call goes on",
                      extra={"call_ref": self.ref, "error": type(err).__name__})
        self.phase = CallPhase.ACTIVE
        answered = {"phase": CallPhase.ACTIVE.value, "workerPod": self.worker_pod, "answeredAt": _now_rfc3339()}
        if self.language:
            answered["language"] = self.language
        await self._patch(answered)

    async def caller_turn(self, text: str, language: str | None, confidence: float) -> str | None:
        """A final caller transcript: sealed into Redis by the CallManager, intent classified.

        The turn index is taken before the await: two finals recorded concurrently must get
        distinct event ids, or the second would be deduplicated away.
        """
        index = self.turns
        self.turns += 1
        result = await self.manager.record_transcript(
            Transcript(call_sid=self.call_sid, text=text, language=language, confidence=confidence, is_final=True,
                       event_id=f"{self.worker_pod}:turn:{index}")
        )
        intent = result.intent.intent
        if intent is not Intent.UNKNOWN:
            self.add_intent(intent)
        return intent.value

    def add_intent(self, intent: Intent) -> None:
        if intent.value not in self.intents and len(self.intents) < 64:
            self.intents.append(intent.value)

    def add_latency(self, ms: float) -> None:
        self.latencies_ms.append(ms)

    async def flush(self) -> None:
        """Writes turns, intents and the latency summary to the VoiceSession status."""
        await self._patch(self._progress())

    async def save_request(self, kind: str, fields: dict[str, str]) -> str:
        """Seals a staff request (AES-GCM, AAD = call ref) into Redis; returns a short reference."""
        ref = self.ref
        payload = json.dumps({"kind": kind, "fields": fields, "at": _now_rfc3339()}, separators=(",", ":"))
        sealed = self.manager.privacy.transcripts.seal_text(payload, context=ref)
        redis = self.manager.store.redis
        key = requests_key(ref)
        async with redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, sealed)
            pipe.expire(key, retention_seconds(self.retention_days))
            results = await pipe.execute()
        return f"{ref[-6:].upper()}-{int(results[0])}"

    async def ended(self, reason: EndReason) -> None:
        async with self._lock:
            if self.phase in (CallPhase.ENDED, CallPhase.FAILED):
                return
            failed = reason is EndReason.PIPELINE_ERROR and self.turns == 0
            if failed:
                await self.manager.call_failed(self.call_sid, reason, line=self.line, namespace=self.namespace)
                self.phase = CallPhase.FAILED
            else:
                await self.manager.call_ended(self.call_sid, reason, line=self.line, namespace=self.namespace)
                self.phase = CallPhase.ENDED
            await self._patch(
                {**self._progress(), "phase": self.phase.value, "endedAt": _now_rfc3339(), "endReason": reason.value}
            )

    async def report(self, status: dict[str, Any]) -> None:
        """Merges a block into the VoiceSession status (best effort, like every status write)."""
        await self._patch(status)

    def _progress(self) -> dict[str, Any]:
        progress = {"turns": self.turns, "intents": list(self.intents), "latency": latency_summary(self.latencies_ms)}
        if self.language:
            progress["language"] = self.language
        return progress

    async def _patch(self, status: dict[str, Any]) -> None:
        if self.status is None:
            return
        try:
            await self.status.patch(status)
        except Exception as err:
            log.warning("VoiceSession status patch failed", extra={"call_ref": self.ref, "error": type(err).__name__,
                                                                   "fields": rejected_fields(err)})


@dataclass
class WorkerCallActions:
    """The agent's side effects in the pod: sealed requests, SIP transfer, hang-up, intents.

    ``room`` and ``sip_identity`` come from the opened ``sealedCallRef``; they are used only in
    LiveKit API calls, never logged. ``hangup`` is how the entrypoint ends the session.
    """

    state: CallState
    livekit: Any  # livekit.api.LiveKitAPI
    room: str
    sip_identity: str
    hangup: Any = None  # async callable (EndReason) -> None
    transferred: bool = False
    # Set when the worker holds only a room token (no SIP grant): the operator transfers for it.
    request_transfer: Any = None  # async callable () -> None, raises if refused

    async def save_request(self, kind: str, fields: dict[str, str]) -> str:
        return await self.state.save_request(kind, fields)

    async def transfer_to_front_desk(self, target: str) -> None:
        from livekit import api as lkapi

        if self.request_transfer is not None:  # the operator transfers to the line's front desk
            await self.request_transfer()
            self.transferred = True
            return
        await self.livekit.sip.transfer_sip_participant(
            lkapi.TransferSIPParticipantRequest(
                participant_identity=self.sip_identity,
                room_name=self.room,
                transfer_to=target,
                play_dialtone=False,
            )
        )
        self.transferred = True

    async def end_call(self, reason: EndReason) -> None:
        await self.state.ended(reason)
        if reason is not EndReason.TRANSFERRED:
            from livekit import api as lkapi

            try:
                await self.livekit.room.remove_participant(
                    lkapi.RoomParticipantIdentity(room=self.room, identity=self.sip_identity)
                )
            except Exception:
                log.info("caller already gone at hang-up", extra={"call_ref": self.state.ref})
        if self.hangup is not None:
            await self.hangup(reason)

    def record_intent(self, intent: Intent) -> None:
        self.state.add_intent(intent)


def rejected_fields(err: Exception) -> list[str]:
    """``field: reason`` of each cause the API server gave for refusing a write (a 422), without
    its message, which may quote the refused value."""
    body = getattr(err, "body", None)
    try:
        causes = json.loads(body)["details"]["causes"] if body else []
    except (ValueError, KeyError, TypeError):
        return []
    return [f"{c.get('field', '?')}: {c.get('reason', '?')}" for c in causes if isinstance(c, dict)]
