"""Redis call state: the one key layout under ``vh:`` and its atomic writes.

WHY: Redis is where the orchestrator replicas and the per-call workers share live call state.
An event acknowledged with 2xx must be durable and an event answered with 503 must have left
nothing behind, so every change of one call is a single Lua script (atomic in Redis) that
compares the record's ``version`` with the one the CallManager decided on (optimistic
concurrency: on a conflict the decision is recomputed) and then writes all keys; a dropped
connection leaves either all of the change or none of it.

Redis Cluster: every key of one call carries the hash tag ``{<ref>}``, so the call's script
touches one slot. The shared indexes (active calls, the VoiceSession retry queues) share the tag
``{idx}`` and a caller's set the tag ``{<caller>}``; they are written *after* the call's script,
by their own idempotent script (``_INDEX_LUA``). If that second step is cut off, the event is
answered 503, the sender retries, the retry is a duplicate, and a duplicate re-writes the
indexes from the stored call (the call keeps its queued VoiceSession request for this). An
ended call leaves a tombstone in the ``{idx}`` slot so a late "active" cannot revive it there.
How to connect (single, Sentinel, Cluster) and what each guarantees: docs/redis.md.

Key layout (``<ref>`` is the call reference ``c-<20 hex>``, a keyed hash of the room name;
``<caller>`` is the 64-hex keyed hash of the caller's number). No key or value holds a phone
number, a room name or transcript text in clear. Every key of a call carries a TTL equal to its
line's metadata retention (default 30 days while the line is unknown), set on every write of the
call; keys shared by calls (caller set, ``vh:{idx}:active``, retry queues) keep the longest TTL.

===================================  ======  ==================================================
key                                  type    content
===================================  ======  ==================================================
``vh:call:{<ref>}``                  hash    call record: phase, line, namespace, hotel_id,
                                             caller_hash, participant_hash, language, reason,
                                             created_at, updated_at, answered_at, ended_at,
                                             turns, last_intent, intent:<name> counters,
                                             events, retention_s, version, session,
                                             session_request (JSON, while one is queued)
``vh:call:{<ref>}:events``           stream  append-only log, one entry per accepted delivery:
                                             event_id, type, actor, outcome, from, to, reason, at
``vh:call:{<ref>}:seen``             set     dedupe ids of accepted deliveries (keyed hashes)
``vh:call:{<ref>}:transcript``       stream  one entry per transcript segment: text (AES-GCM
                                             token, AAD = ref), language, confidence, is_final,
                                             intent, intent_confidence, at
``vh:call:{<ref>}:requests``         list    staff requests the worker took (AES-GCM tokens, AAD =
                                             ref); written by the worker with the same TTL
``vh:caller:{<caller>}``             set     call refs of one caller (erasure by caller hash)
``vh:{idx}:active``                  zset    live call refs scored by last update (active calls)
``vh:{idx}:ended``                   zset    refs ended in the last ACTIVE_STALE_SECONDS
``vh:{idx}:sessions:pending``        hash    ref -> JSON VoiceSession request (sealed room name)
                                             not yet created in Kubernetes (retry queue)
``vh:{idx}:sessions:ending``         hash    ref -> JSON terminal phase still to be written to
                                             the VoiceSession status (retry queue)
``vh:outbox:{<q>}:*``               z/hash  staff-delivery outbox of one line: due, item:<id>,
                                             dead (sealed payloads); see ``voicehive.delivery``
===================================  ======  ==================================================
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.exceptions import ClusterDownError, ReadOnlyError, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from voicehive.autopipeline import ScriptPipeline
from voicehive.lifecycle import CallPhase, EndReason, is_terminal
from voicehive.redis_client import connect, parse_redis_url

KEY_PREFIX = "vh:"
# Redis Cluster: the part of a key between the first "{" and "}" (the hash tag) picks its slot.
# Every key of one call is tagged with the call ref, so each script/MULTI on a call touches one
# slot; the global indexes share the tag "{idx}" (one slot), a caller's set its caller hash.
_INDEX = "vh:{idx}"
ACTIVE_KEY = f"{_INDEX}:active"
PENDING_SESSIONS_KEY = f"{_INDEX}:sessions:pending"
ENDING_SESSIONS_KEY = f"{_INDEX}:sessions:ending"
ENDED_KEY = f"{_INDEX}:ended"  # tombstones: refs that ended within ACTIVE_STALE_SECONDS
INDEX_KEYS = (ACTIVE_KEY, PENDING_SESSIONS_KEY, ENDED_KEY)  # the index script's KEYS
SESSION_REQUEST_FIELD = "session_request"  # the call's queued VoiceSession request (JSON)
DEFAULT_RETENTION_DAYS = 30
DAY_SECONDS = 86_400
# How long a call may stay "active" without an update before /metrics stops counting it
# (a crashed worker never sends call_ended; the retention GC ends such calls later).
ACTIVE_STALE_SECONDS = 6 * 3600
_MAX_CONFLICT_RETRIES = 50
# Redis cannot take the write now, but will: unreachable, timing out, loading its data after a
# restart (BusyLoadingError is a ConnectionError), or a replica/failover answering READONLY.
_UNAVAILABLE = (
    RedisConnectionError, RedisTimeoutError, ReadOnlyError, TryAgainError, ClusterDownError, OSError
)


def hash_tag(part: str) -> str:
    """``{part}``: Redis Cluster hashes only this part of a key, so keys sharing it share a slot."""
    return "{" + part + "}"


def call_key(ref: str) -> str:
    return f"vh:call:{hash_tag(ref)}"


def events_key(ref: str) -> str:
    return f"{call_key(ref)}:events"


def seen_key(ref: str) -> str:
    return f"{call_key(ref)}:seen"


def transcript_key(ref: str) -> str:
    return f"{call_key(ref)}:transcript"


def requests_key(ref: str) -> str:
    """Sealed staff requests the worker took during the call (written by the worker)."""
    return f"{call_key(ref)}:requests"


def caller_key(caller_hash: str) -> str:
    return f"vh:caller:{hash_tag(caller_hash)}"


def call_keys(ref: str) -> tuple[str, ...]:
    """The keys one delivery writes, in the order the apply script's KEYS expect (TTLs)."""
    return (call_key(ref), events_key(ref), seen_key(ref), transcript_key(ref))


def owned_keys(ref: str) -> tuple[str, ...]:
    """Every key that belongs to one call alone (erasure and retention delete these)."""
    return (*call_keys(ref), requests_key(ref))


def retention_seconds(days: int | float | None) -> int:
    days = DEFAULT_RETENTION_DAYS if days is None or days <= 0 else days
    return max(60, int(days * DAY_SECONDS))


class StoreUnavailable(Exception):
    """Redis could not be reached or did not answer; nothing was written. Retry later."""

    retry_after_seconds = 2


class Outcome(StrEnum):
    """What one delivery did to a call."""

    APPLIED = "applied"  # the phase changed
    RECORDED = "recorded"  # accepted and logged, phase unchanged (e.g. a transcript)
    STALE = "stale"  # accepted and logged, but the transition is not allowed (late/out of order)
    DUPLICATE = "duplicate"  # already accepted before: nothing written
    NOT_FOUND = "not_found"  # the call does not exist and this event may not create it


@dataclass(frozen=True)
class CallRecord:
    """A call as stored (no personal data)."""

    ref: str
    phase: CallPhase
    line: str | None = None
    namespace: str | None = None
    hotel_id: str | None = None
    caller_hash: str | None = None
    participant_hash: str | None = None
    language: str | None = None
    reason: EndReason | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    answered_at: float | None = None
    ended_at: float | None = None
    turns: int = 0
    last_intent: str | None = None
    intents: Mapping[str, int] = field(default_factory=dict)
    events: int = 0
    retention_s: int = DEFAULT_RETENTION_DAYS * DAY_SECONDS
    version: int = 0
    session: str | None = None  # VoiceSession: None, "pending", "created", "dropped", "not needed"

    @classmethod
    def from_hash(cls, ref: str, raw: Mapping[str, str]) -> CallRecord:
        """The record of a call's hash (absent fields: the defaults)."""
        return cls(ref=ref, phase=CallPhase.PENDING).with_fields(raw)

    def with_fields(self, raw: Mapping[str, str]) -> CallRecord:
        """This record with the hash fields in ``raw`` written over it (``intent:<name>``
        counters included); fields that are not the record's are ignored."""
        changes = {name: _FIELD_PARSERS[name](value) for name, value in raw.items() if name in _FIELD_PARSERS}
        counters = {k.removeprefix("intent:"): int(v) for k, v in raw.items() if k.startswith("intent:")}
        if counters:
            changes["intents"] = {**self.intents, **counters}
        return replace(self, **changes)

    def public(self) -> dict[str, Any]:
        """The JSON shape served by ``GET /v1/calls/{call_sid}`` (still no personal data)."""
        return {
            "call_ref": self.ref,
            "phase": self.phase.value,
            "line": self.line,
            "hotel_id": self.hotel_id,
            "caller_hash": self.caller_hash,
            "language": self.language,
            "end_reason": self.reason.value if self.reason else None,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "answered_at": self.answered_at,
            "ended_at": self.ended_at,
            "turns": self.turns,
            "last_intent": self.last_intent,
            "intents": dict(self.intents),
            "events": self.events,
        }


def _opt(value: str) -> str | None:
    return value or None


def _opt_float(value: str) -> float | None:
    return float(value) if value else None


def _reason(value: str) -> EndReason | None:
    return EndReason(value) if value in EndReason._value2member_map_ else None


# How each field of a call's hash reads into CallRecord (one place: reads and local merges).
_FIELD_PARSERS: dict[str, Callable[[str], Any]] = {
    "phase": CallPhase,
    **dict.fromkeys(("line", "namespace", "hotel_id", "caller_hash", "participant_hash", "language",
                     "last_intent", "session"), _opt),
    "reason": _reason,
    "created_at": lambda v: float(v or 0),
    "updated_at": lambda v: float(v or 0),
    "answered_at": _opt_float,
    "ended_at": _opt_float,
    "turns": lambda v: int(v or 0),
    "events": lambda v: int(v or 0),
    "version": lambda v: int(v or 0),
    "retention_s": lambda v: int(v) if v else DEFAULT_RETENTION_DAYS * DAY_SECONDS,
}


@dataclass
class Plan:
    """The writes one delivery makes, decided by the CallManager from the current record."""

    outcome: Outcome
    event: dict[str, str]
    phase: CallPhase | None = None
    fields: dict[str, str] = field(default_factory=dict)
    set_once: dict[str, str] = field(default_factory=dict)
    increments: dict[str, int] = field(default_factory=dict)
    transcript: dict[str, str] | None = None
    caller_hash: str | None = None
    active: bool | None = None
    pending_session: dict[str, Any] | None = None
    # The record's fields the decision read; empty: all of it (checked by the record's version).
    # A plan that names them is written while those fields are as read, whatever else changed
    # (two processes appending transcripts to one call do not conflict).
    reads: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApplyResult:
    outcome: Outcome
    before: CallRecord | None
    after: CallRecord | None
    plan: Plan | None

    @property
    def created(self) -> bool:
        return self.before is None and self.after is not None


@dataclass(frozen=True)
class _Known:
    """A call as last read from or written to Redis: the record, its ``created_at`` exactly as
    stored, whether the delivery at hand was seen, and the raw hash (None: this process's own
    copy after its write, not read; it is only a guess the apply script checks)."""

    record: CallRecord | None
    created: str
    seen: bool
    raw: Mapping[str, str] | None

    @classmethod
    def of_hash(cls, ref: str, raw: Mapping[str, str], seen: bool) -> _Known:
        record = CallRecord.from_hash(ref, raw) if raw else None
        return cls(record, raw.get("created_at", ""), seen, raw)

    @classmethod
    def of_reply(cls, ref: str, flat: list[str], seen: Any) -> _Known:
        """From the apply script's answer to a conflict: HGETALL as a flat list, SISMEMBER."""
        return cls.of_hash(ref, _pairs(flat), bool(int(seen)))

    def stored(self, fields: tuple[str, ...]) -> dict[str, str]:
        """``fields`` of the record as Redis holds them: read, or as this process wrote them."""
        if self.raw is not None:
            return {name: self.raw.get(name, "") for name in fields}
        assert self.record is not None  # copies are kept of written calls only
        return {name: _stored_text(getattr(self.record, name)) for name in fields}


def _stored_text(value: Any) -> str:
    """How a CallRecord field's value is written to the call's hash."""
    if value is None:
        return ""
    return str(value.value if isinstance(value, StrEnum) else value)


def _pairs(flat: list[str]) -> dict[str, str]:
    """A flat HGETALL reply (field, value, ...) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


class KnownCalls:
    """The calls this process wrote last, bounded (oldest dropped first).

    WHY: an event of a call is decided on the call's current record, and reading it costs a
    round trip per event. The record as this process wrote it is usually still current (a
    call's events mostly come over one connection); when it is not, the apply script's
    compare-and-set says so and hands back the current one, so a stale copy costs a round
    trip, never a wrong write.
    """

    def __init__(self, max_calls: int = 10_000) -> None:
        self._calls: dict[str, _Known] = {}
        self._max = max_calls

    def get(self, ref: str) -> _Known | None:
        return self._calls.get(ref)

    def remember(self, ref: str, known: _Known) -> None:
        self._calls.pop(ref, None)
        if len(self._calls) >= self._max:
            del self._calls[next(iter(self._calls))]
        self._calls[ref] = known

    def forget(self, ref: str) -> None:
        self._calls.pop(ref, None)


Decide = Callable[[CallRecord | None, bool], Plan]
"""``decide(current_record_or_None, already_seen) -> Plan``; must be pure (it may run again)."""

Retention = int | Callable[[CallRecord | None], int]
"""TTL seconds of a call's keys, or ``ttl(current_record_or_None)`` (must be pure)."""


class CallStore:
    """Async access to the ``vh:`` key space. All writes of one call are atomic."""

    def __init__(self, redis: Redis, *, wait_replicas: int = 0, wait_timeout_ms: int = 1000) -> None:
        # redis-py's async stubs type replies as "Awaitable[T] | T"; Any keeps call sites honest
        # without a cast on every line. ``redis`` may be a Redis, a Sentinel master or a RedisCluster.
        self.redis: Any = redis
        self.wait_replicas = wait_replicas  # > 0: an event is acknowledged once replicas have it
        self.wait_timeout_ms = wait_timeout_ms
        self._known = KnownCalls()  # the calls as this store last wrote them (saves a read per event)
        self._apply_script = self.redis.register_script(_APPLY_LUA)
        # Redis Cluster: one script call per event (a cluster pipeline splits by node; not batched)
        self._apply_batches = None if isinstance(redis, RedisCluster) else ScriptPipeline(
            redis, _APPLY_LUA, wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms)
        self._session_created_script = self.redis.register_script(_SESSION_CREATED_LUA)

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 2.0, max_connections: int = 128,
                 retry: Retry | None = None) -> CallStore:
        """Single, Sentinel or Cluster, and the WAIT policy, all from the URL (voicehive.redis_client).

        ``retry``: redis-py's own retry on connection errors and timeouts (the worker rides out
        a Redis restart with it); None keeps redis-py's short default, so the orchestrator
        answers 503 soon and the sender retries.
        """
        target = parse_redis_url(url)
        timeout_s = max(timeout_s, target.wait_timeout_ms / 1000 + 1) if target.wait_replicas else timeout_s
        client = connect(target, timeout_s=timeout_s, max_connections=max_connections, retry=retry)  # WAIT fits in it
        return cls(client, wait_replicas=target.wait_replicas, wait_timeout_ms=target.wait_timeout_ms)

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    # ------------------------------------------------------------------ reads

    async def get(self, ref: str) -> CallRecord | None:
        raw = await self._guard(self.redis.hgetall(call_key(ref)))
        return CallRecord.from_hash(ref, raw) if raw else None

    async def events(self, ref: str) -> list[dict[str, str]]:
        entries = await self._guard(self.redis.xrange(events_key(ref)))
        return [dict(fields) for _id, fields in entries]

    async def transcript(self, ref: str) -> list[dict[str, str]]:
        """Stored segments; ``text`` is still sealed (open it with the transcript Sealer)."""
        entries = await self._guard(self.redis.xrange(transcript_key(ref)))
        return [dict(fields) for _id, fields in entries]

    async def calls_of_caller(self, caller_hash: str) -> set[str]:
        return set(await self._guard(self.redis.smembers(caller_key(caller_hash))))

    async def active_count(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return int(await self._guard(self.redis.zcount(ACTIVE_KEY, now - ACTIVE_STALE_SECONDS, "+inf")))

    # ------------------------------------------------------------------ the one write path

    async def apply(self, ref: str, decide: Decide, *, dedupe_id: str, retention_s: Retention) -> ApplyResult:
        """Run ``decide`` on the current state and write its plan atomically.

        ``retention_s``: the TTL of the call's keys, or a function of the current record giving
        it (the line's retention: an event may not name the line, the record does). The call's
        own keys get exactly this TTL; the shared keys are only ever extended by it.

        Optimistic concurrency: the pure ``decide`` runs on the call as this store last wrote it
        (or, unknown here, on one pipelined read: record + dedupe membership), then one Lua
        script writes everything only if the record's ``version`` and ``created_at`` are still
        those and the delivery is still unseen. Otherwise the script answers with what Redis
        holds and the decision is recomputed on that. So an event of a call this process has
        written before costs one round trip. Raises :class:`StoreUnavailable` when Redis is
        unreachable; then nothing was written (or, if the connection broke after the script
        ran, everything was: a retry sees a duplicate).
        """
        try:
            state = self._known.get(ref) or await self._read(ref, dedupe_id)
            for _attempt in range(_MAX_CONFLICT_RETRIES):
                before = state.record
                plan = decide(before, state.seen)
                if plan.outcome in (Outcome.NOT_FOUND, Outcome.DUPLICATE):
                    if state.raw is None:  # decided on this process's copy: confirm with Redis
                        state = await self._read(ref, dedupe_id)
                        continue
                    if plan.outcome is Outcome.DUPLICATE:
                        await self._resync_indexes(ref, state.raw)
                    return ApplyResult(plan.outcome, before, before, None)
                ttl = retention_s(before) if callable(retention_s) else retention_s
                keys, args = self._script_call(ref, before, plan, dedupe_id, ttl, created=state.created,
                                               expect=state.stored(plan.reads) if before and plan.reads else None)
                sync = plan_indexes(before, plan, ttl)
                reply = await self._run_apply(keys, args, wait=sync is None)
                if reply[0] == "ok":  # reply[2]: the record, when others had written it since the read
                    after = CallRecord.from_hash(ref, _pairs(reply[2])) if reply[2] else _merge(ref, before, plan, ttl)
                    self._known.remember(ref, _Known(after, str(reply[1]), False, None))
                    await self.sync_indexes(ref, sync)
                    return ApplyResult(plan.outcome, before, after, plan)
                # "conflict" (changed since) or "duplicate" (a twin won): decide again on Redis's state
                self._known.forget(ref)
                state = _Known.of_reply(ref, reply[1], reply[2])
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(type(exc).__name__)) from exc
        raise StoreUnavailable("too much contention on one call")

    async def _read(self, ref: str, dedupe_id: str) -> _Known:
        """The call as Redis holds it and whether it has seen this delivery (one round trip)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(call_key(ref))
            pipe.sismember(seen_key(ref), dedupe_id)
            raw, seen = await pipe.execute()
        return _Known.of_hash(ref, raw, bool(seen))

    def _script_call(
        self, ref: str, before: CallRecord | None, plan: Plan, dedupe_id: str, ttl: int, *, created: str = "",
        expect: Mapping[str, str] | None = None,
    ) -> tuple[list[str], list[str]]:
        """KEYS and ARGV of the apply script; ``created``: the record's ``created_at`` exactly as
        stored ("" for a new call), checked so a call erased and written again is never taken
        for the one decided on; ``expect``: the stored fields the plan read (``Plan.reads``),
        checked instead of the version."""
        now = plan.event.get("at", f"{time.time():.6f}")
        mapping: dict[str, str] = dict(plan.fields)
        if before is None:
            mapping.setdefault("created_at", now)
            mapping.setdefault("phase", (plan.phase or CallPhase.PENDING).value)
            mapping.update({k: v for k, v in plan.set_once.items() if v})
        else:
            present = {
                "line": before.line,
                "namespace": before.namespace,
                "hotel_id": before.hotel_id,
                "caller_hash": before.caller_hash,
                "participant_hash": before.participant_hash,
                "language": before.language,
            }
            mapping.update({k: v for k, v in plan.set_once.items() if v and k in present and not present[k]})
        if plan.phase is not None:
            mapping["phase"] = plan.phase.value
        mapping["updated_at"] = now
        mapping["retention_s"] = str(ttl)
        if plan.pending_session is not None:
            # kept on the call too, so a retried delivery can re-queue it (see _resync_indexes)
            mapping[SESSION_REQUEST_FIELD] = json.dumps(plan.pending_session, separators=(",", ":"))
        increments = {"version": 1, "events": 1, **plan.increments}
        if not mapping.keys().isdisjoint(increments):  # the script writes a counter once: set or added
            raise ValueError(f"a plan both sets and increments {sorted(mapping.keys() & increments.keys())}")
        parts = (  # the script's field/value lists, sent as plain arguments after their lengths
            _flat(mapping),
            _flat({name: str(amount) for name, amount in increments.items()}),
            _flat({**plan.event, "event_id": dedupe_id, "outcome": plan.outcome.value}),
            _flat(plan.transcript or {}),
            _flat(expect or {}),
        )
        expected_version = str(before.version) if before else "0"
        args = [expected_version, dedupe_id, str(ttl), created, *(str(len(part)) for part in parts)]
        return list(call_keys(ref)), args + [item for part in parts for item in part]

    async def _run_apply(self, keys: list[str], args: list[str], *, wait: bool) -> list[Any]:
        """The call's script (its reply: see ``_APPLY_LUA``), batched with the other calls of this
        loop turn (voicehive.autopipeline); with ``wait`` (it is the change's last write) and a
        WAIT policy, acknowledged once the replicas have it."""
        if self._apply_batches is not None:
            reply, acked = await self._apply_batches.call(keys, args, wait=wait)
            if reply[0] == "ok" and acked is not None:
                self._check_acked(acked)
            return list(reply)
        if not (wait and self.wait_replicas):
            return list(await self._apply_script(keys=keys, args=args))
        async with self.redis.pipeline(transaction=False) as pipe:
            await self._apply_script(keys=keys, args=args, client=pipe)  # queued, sent by execute()
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            reply, acked = await pipe.execute()
        if reply[0] == "ok":
            self._check_acked(acked)
        return list(reply)

    def _check_acked(self, acked: Any) -> None:
        if int(acked) < self.wait_replicas:
            raise StoreUnavailable(f"{acked} of {self.wait_replicas} replicas acknowledged in time")

    # ------------------------------------------------------------------ indexes (other slots)

    async def sync_indexes(self, ref: str, sync: IndexSync | None) -> None:
        """Write what a committed change means for the shared indexes: the caller's set (its
        own slot) and active/pending/tombstones (the ``{idx}`` slot). Separate from the call's
        script so no script crosses slots; every step is idempotent and the index script
        ignores a late "active" for a call that already ended, so replays and races converge."""
        if sync is None:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            if sync.caller_hash:
                pipe.eval(_CALLER_LUA, 1, caller_key(sync.caller_hash), ref, str(sync.ttl))
            if sync.active is not None or sync.pending:
                active = -1 if sync.active is None else int(sync.active)
                pipe.eval(_INDEX_LUA, len(INDEX_KEYS), *INDEX_KEYS, ref, sync.now, str(active), sync.pending or "",
                          str(sync.ttl), str(ACTIVE_STALE_SECONDS))
            if self.wait_replicas:  # the change's last write: replicas have everything before it
                pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            replies = await pipe.execute()
        if self.wait_replicas:
            self._check_acked(replies[-1])

    async def _resync_indexes(self, ref: str, raw: Mapping[str, str]) -> None:
        """A delivery seen before may have been answered 503 after its call script committed
        and before its index writes: write them again from the record (idempotent)."""
        if raw:
            await self.sync_indexes(ref, record_indexes(CallRecord.from_hash(ref, raw), raw))

    # ------------------------------------------------------------------ VoiceSession retry queue

    async def pending_sessions(self) -> dict[str, dict[str, Any]]:
        return await self._json_hash(PENDING_SESSIONS_KEY)

    async def session_created(self, ref: str, marker: str = "created") -> None:
        """Drop a request from the retry queue once its VoiceSession exists, or ``marker`` says
        why not ("dropped"). Marks the call only if it still exists: a marker must not
        resurrect an erased call as a key without a TTL."""
        self._known.forget(ref)
        await self._guard(self._session_created_script(keys=[call_key(ref)], args=[marker]))
        await self._guard(self.redis.hdel(PENDING_SESSIONS_KEY, ref))

    async def queue_session_end(self, ref: str, payload: dict[str, Any], ttl: int) -> None:
        """Remember that a VoiceSession still has to be marked ended (Kubernetes was down)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(ENDING_SESSIONS_KEY, ref, json.dumps(payload, separators=(",", ":")))
            pipe.expire(ENDING_SESSIONS_KEY, ttl)
            await self._guard(pipe.execute())

    async def session_ends(self) -> dict[str, dict[str, Any]]:
        return await self._json_hash(ENDING_SESSIONS_KEY)

    async def _json_hash(self, key: str) -> dict[str, dict[str, Any]]:
        """A retry-queue hash as ``{ref: payload}``; an unreadable entry is skipped, not fatal."""
        raw = await self._guard(self.redis.hgetall(key))
        out: dict[str, dict[str, Any]] = {}
        for ref, payload in raw.items():
            try:
                out[ref] = json.loads(payload)
            except ValueError:
                continue
        return out

    async def session_end_done(self, ref: str) -> None:
        await self._guard(self.redis.hdel(ENDING_SESSIONS_KEY, ref))

    async def session_pending_count(self) -> int:
        return int(await self._guard(self.redis.hlen(PENDING_SESSIONS_KEY)))

    # ------------------------------------------------------------------ erasure

    async def delete_call(self, ref: str, caller_hash: str | None = None) -> None:
        """Delete every trace of one call (retention, erasure); the keys also expire by TTL."""
        self._known.forget(ref)
        async with self.redis.pipeline(transaction=False) as pipe:
            _delete_call(pipe, ref)
            if caller_hash:
                pipe.srem(caller_key(caller_hash), ref)
            await self._guard(pipe.execute())

    async def erase_caller(self, caller_hash: str) -> list[str]:
        """Delete every call of one caller (GDPR erasure by caller hash); returns the refs."""
        refs = sorted(await self.calls_of_caller(caller_hash))
        for ref in refs:
            self._known.forget(ref)
        async with self.redis.pipeline(transaction=False) as pipe:
            for ref in refs:
                _delete_call(pipe, ref)
            pipe.delete(caller_key(caller_hash))
            await self._guard(pipe.execute())
        return refs

    # ------------------------------------------------------------------ helpers

    async def _guard(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(type(exc).__name__)) from exc


def _flat(pairs: Mapping[str, str]) -> list[str]:
    """``{k: v, ...}`` as ``[k, v, ...]``, the way Redis commands take field/value pairs."""
    return [item for pair in pairs.items() for item in pair]


def _delete_call(pipe: Any, ref: str) -> None:
    """Queue the deletion of one call's own keys and its entries in the shared keys. Each
    command stays on one slot; a retry after a broken connection deletes the rest."""
    pipe.delete(*owned_keys(ref))
    pipe.zrem(ACTIVE_KEY, ref)
    pipe.hdel(PENDING_SESSIONS_KEY, ref)
    pipe.hdel(ENDING_SESSIONS_KEY, ref)
    pipe.zrem(ENDED_KEY, ref)


# The write half of CallStore.apply: compare-and-set on the record's version and created_at
# plus the dedupe check, then every write of the plan. Redis runs a script atomically, so a
# plan is written whole or not at all. KEYS: call, events, seen, transcript (one call: one hash
# slot). ARGV: version, dedupe id, ttl, created_at ("" for a new call), then the lengths of five
# field/value lists and the lists themselves: the record's HSET, its counters' increments (read
# and written back in the same HMGET and HSET; never also in the HSET list), the event entry,
# the transcript entry (may be empty), and "expect": the fields the decision read, checked
# instead of the version when given. Plain arguments, not one JSON document: no cjson in Redis,
# no json.dumps in the service (hiredis packs many arguments cheaply). Replies {'ok',
# created_at, the record's hash if others wrote it since the read and the write was checked by
# version, else {}}, or {'conflict' | 'duplicate', the record's hash, seen 0/1} so the caller
# can decide again without another read. TTLs: every key of the call gets ``ttl`` again unless
# it was set within the last minute (so keys expire between ttl - 60 s and ttl after the last
# event, never later), sparing three or four EXPIREs (AOF writes) on most events of a live call.
_APPLY_LUA = """
local first, last, at = {}, {}, 10
for i = 1, 5 do first[i] = at; at = at + tonumber(ARGV[4 + i]); last[i] = at - 1 end
local HSET, INCR, EVENT, TRANSCRIPT, EXPECT = 1, 2, 3, 4, 5
local fields = {'version', 'created_at'}  -- then the expected fields and the counters: one read
for i = first[EXPECT], last[EXPECT], 2 do fields[#fields + 1] = ARGV[i] end
local counters = #fields + 1
for i = first[INCR], last[INCR], 2 do fields[#fields + 1] = ARGV[i] end
local stored = redis.call('HMGET', KEYS[1], unpack(fields))
local same = (stored[2] or '') == ARGV[4]
local by_version = last[EXPECT] < first[EXPECT]
if by_version then
  same = same and (stored[1] or '0') == ARGV[1]
else
  for i = first[EXPECT], last[EXPECT], 2 do
    same = same and (stored[3 + (i - first[EXPECT]) / 2] or '') == ARGV[i + 1]
  end
end
if not same then return {'conflict', redis.call('HGETALL', KEYS[1]), redis.call('SISMEMBER', KEYS[3], ARGV[2])} end
-- the delivery is marked seen first; 0 added: a twin was written before, nothing else is
if redis.call('SADD', KEYS[3], ARGV[2]) == 0 then return {'duplicate', redis.call('HGETALL', KEYS[1]), 1} end
local ttl = tonumber(ARGV[3])
local left = redis.call('TTL', KEYS[1])  -- -2: a new call
local sets = {unpack(ARGV, first[HSET], last[HSET])}  -- the counters, added up, in the same HSET
for i = first[INCR], last[INCR], 2 do
  sets[#sets + 1] = ARGV[i]
  sets[#sets + 1] = tostring((tonumber(stored[counters]) or 0) + tonumber(ARGV[i + 1]))
  counters = counters + 1
end
redis.call('HSET', KEYS[1], unpack(sets))
redis.call('XADD', KEYS[2], '*', unpack(ARGV, first[EVENT], last[EVENT]))
local transcript = last[TRANSCRIPT] >= first[TRANSCRIPT]
if transcript then
  redis.call('XADD', KEYS[4], '*', unpack(ARGV, first[TRANSCRIPT], last[TRANSCRIPT]))
end
if left < ttl - 60 or left > ttl then  -- set within the last minute: left as it is (no AOF write)
  for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ttl) end
elseif transcript and redis.call('TTL', KEYS[4]) == -1 then  -- the first segment just created it
  redis.call('EXPIRE', KEYS[4], ttl)
end
-- a write checked by version hands back the record if others wrote since; one checked on the
-- fields it read (a transcript) does not: its copy may lag until a version-checked write
local moved = by_version and (stored[1] or '0') ~= ARGV[1]
return {'ok', stored[2] or redis.call('HGET', KEYS[1], 'created_at'), moved and redis.call('HGETALL', KEYS[1]) or {}}
"""

# The shared indexes of one committed change (all keys tagged {idx}: one slot). KEYS: active,
# pending, ended. ARGV: ref, now, active (1 live, 0 ended, -1 unchanged), pending JSON or "",
# ttl, stale seconds. An ended call leaves a tombstone, so a late "live"/"pending" is ignored.
_INDEX_LUA = """
local ref, now, active, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
-- keys shared with other calls (maybe of lines keeping data longer) only ever get a longer TTL
local function extend(key)
  if redis.call('TTL', key) < ttl then redis.call('EXPIRE', key, ttl) end
end
if active == 0 then
  redis.call('ZREM', KEYS[1], ref)
  redis.call('HDEL', KEYS[2], ref)
  redis.call('ZADD', KEYS[3], now, ref)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[6]))
  extend(KEYS[3])
  return 'ended'
end
if redis.call('ZSCORE', KEYS[3], ref) then return 'already ended' end
if active == 1 then
  redis.call('ZADD', KEYS[1], now, ref)
  extend(KEYS[1])
end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[2], ref, ARGV[4])
  extend(KEYS[2])
end
return 'ok'
"""

# A caller's set of calls (its own slot, tagged by the caller hash): shared by that caller's
# calls, maybe on lines keeping data longer, so its TTL only ever grows. KEYS: the set.
# ARGV: ref, ttl.
_CALLER_LUA = """
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

# KEYS: call. Marks the call only if it still exists (an erased call must not come back), and
# bumps its version like every write of the record, so no writer decides on the old one.
_SESSION_CREATED_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'session', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'version', 1)
end
return 1
"""


@dataclass(frozen=True)
class IndexSync:
    """The index writes one committed change asks for (see ``CallStore.sync_indexes``)."""

    now: str
    ttl: int
    caller_hash: str | None = None
    active: bool | None = None
    pending: str | None = None


def plan_indexes(before: CallRecord | None, plan: Plan, ttl: int) -> IndexSync | None:
    """Pure: the index writes of a plan just committed (None: it touches no index). The
    caller's set is refreshed with every phase change, so it outlives the call's keys."""
    pending = json.dumps(plan.pending_session, separators=(",", ":")) if plan.pending_session else None
    if plan.active is None and pending is None and not plan.caller_hash:
        return None
    caller = plan.caller_hash or (before.caller_hash if before else None)
    return IndexSync(plan.event.get("at", f"{time.time():.6f}"), ttl, caller, plan.active, pending)


def record_indexes(record: CallRecord, raw: Mapping[str, str]) -> IndexSync:
    """Pure: the index entries a stored call should have (to replay lost index writes)."""
    live = not is_terminal(record.phase)
    pending = raw.get(SESSION_REQUEST_FIELD) if live and record.session == "pending" else None
    return IndexSync(f"{record.updated_at:.6f}", record.retention_s, record.caller_hash, live, pending or None)


def _merge(ref: str, before: CallRecord | None, plan: Plan, ttl: int) -> CallRecord:
    """The record as it is after ``plan`` (computed locally; saves a read-back round trip):
    the fields the apply script writes, read as a read would read them, over ``before``."""
    base = before or CallRecord.from_hash(ref, {})
    now = plan.event.get("at", f"{time.time():.6f}")
    written: dict[str, str] = {}
    if before is None:
        written["created_at"] = now
        written["phase"] = (plan.phase or CallPhase.PENDING).value
    written.update({k: v for k, v in plan.set_once.items() if v and not getattr(base, k, None)})
    written.update(plan.fields)
    if plan.phase is not None:
        written["phase"] = plan.phase.value
    written["updated_at"] = now
    written["retention_s"] = str(ttl)
    counters = {"version": base.version + 1, "events": base.events + 1}
    for name, amount in plan.increments.items():
        current = base.turns if name == "turns" else base.intents.get(name.removeprefix("intent:"), 0)
        counters[name] = counters.get(name, current) + amount
    written.update({name: str(value) for name, value in counters.items()})
    return base.with_fields(written)
