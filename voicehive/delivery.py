"""Staff requests that reach people: a durable Redis outbox, signed webhooks and STARTTLS e-mail.

WHY: a message or booking request the agent took is worthless until the hotel sees it. The
worker puts each request into a per-line outbox in Redis (append-only file on, so it survives a
restart) and a deliverer sends it on every channel of the line (``spec.staffDelivery``) until
the receiver says 2xx, backing off between tries; after ``maxAttempts`` it is dead-lettered and
``voicehive_staff_deliveries_dead_total`` counts it (alert on it). Every line always has warm
worker pods holding its secrets, so they drain the outbox between calls.

At-least-once: a delivery can repeat (a receiver that answered after our timeout), so each
carries an ``Idempotency-Key`` that is the same on every try of that request and channel.

Privacy: a notice holds a short summary, the request's fields, and the callback number only if
the caller gave one for a callback; digit runs that look like card or phone numbers are removed
from free text. Payloads in Redis are sealed (AES-GCM, AAD = item id); keys hold no personal data.

Redis layout (``<q>`` = first 16 hex of sha256 of ``namespace/line``):

=================================  ======  ==================================================
``vh:outbox:{<q>}:due``            zset    item id -> unix time it is due next (claim = lease)
``vh:outbox:{<q>}:item:<id>``      hash    channel, payload (sealed JSON), attempts, created_at
``vh:outbox:{<q>}:dead``           zset    item id -> unix time it was dead-lettered
=================================  ======  ==================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import smtplib
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Protocol

import httpx
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis

from voicehive.callstore import hash_tag

log = logging.getLogger("voicehive.delivery")

SIGNATURE_HEADER = "X-VoiceHive-Signature"
TIMESTAMP_HEADER = "X-VoiceHive-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
NOTICE_FIELDS = ("guest_name", "name", "check_in", "nights", "guests", "room_type", "quoted_total", "confirmation", "language")
FREE_TEXT_FIELDS = ("message", "notes")
_DIGIT_RUN = re.compile(r"(?:\+?\d[\s./-]?){7,}")


class Sealer(Protocol):
    def seal_text(self, text: str, context: str = "") -> str: ...
    def open_text(self, token: str, context: str = "") -> str: ...


def queue_id(namespace: str, line: str) -> str:
    return hashlib.sha256(f"{namespace}/{line}".encode()).hexdigest()[:16]


def due_key(q: str) -> str:
    """Every key of one queue carries the hash tag ``{<q>}``: one Redis Cluster slot per queue."""
    return f"vh:outbox:{hash_tag(q)}:due"


def item_key(q: str, item: str) -> str:
    return f"vh:outbox:{hash_tag(q)}:item:{item}"


def dead_key(q: str) -> str:
    return f"vh:outbox:{hash_tag(q)}:dead"


def scrub(text: str) -> str:
    """Free text without digit runs long enough to be a card or phone number."""
    return _DIGIT_RUN.sub("[number removed]", text)


def build_notice(kind: str, fields: Mapping[str, str], *, reference: str, line: str, at: str) -> dict[str, Any]:
    """What staff receive: kind, reference, a one-line summary, allowed fields; nothing else personal."""
    details = {k: fields[k] for k in NOTICE_FIELDS if fields.get(k)}
    for k in FREE_TEXT_FIELDS:
        if fields.get(k):
            details[k] = scrub(fields[k])[:1000]
    callback = fields.get("callback_number", "").strip()
    stay = " ".join(f"{k}={details[k]}" for k in ("room_type", "check_in", "nights", "guests", "quoted_total") if k in details)
    summary = f"{kind.replace('_', ' ')} taken by the phone agent" + (f": {stay}" if stay else "")
    notice: dict[str, Any] = {"kind": kind, "reference": reference, "line": line, "at": at, "summary": summary, "details": details}
    if callback and re.fullmatch(r"\+?[0-9 ()/.-]{6,20}", callback):
        notice["callback_number"] = callback  # given by the caller to be called back
    return notice


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``<timestamp>.<body>`` (the timestamp defeats replays)."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: bytes, headers: Mapping[str, str], body: bytes, *, now: float, tolerance_s: float = 300) -> bool:
    """What a receiver does: constant-time signature check and a fresh timestamp."""
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), headers.get(SIGNATURE_HEADER, ""))


def backoff_s(attempt: int, base_s: float, cap_s: float) -> float:
    """Exponential back-off after the ``attempt``-th failure (1, 2, 4, ... x base, capped)."""
    return float(min(cap_s, base_s * 2 ** max(0, attempt - 1)))


@dataclass
class Outbox:
    """One line's durable queue; every write is one MULTI/EXEC or one Lua script."""

    redis: Redis
    queue: str
    sealer: Sealer
    ttl_s: int = 30 * 86_400

    async def enqueue(self, notice: dict[str, Any], channels: list[str], *, now: float | None = None) -> list[str]:
        """One item per channel, id ``<reference>.<channel>``; enqueuing the same id twice is a no-op."""
        now = time.time() if now is None else now
        ids = []
        for channel in channels:
            item = f"{notice['reference']}.{channel}"
            payload = self.sealer.seal_text(json.dumps(notice, separators=(",", ":")), context=item)
            key = item_key(self.queue, item)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(key, "payload", payload)
                pipe.hsetnx(key, "channel", channel)
                pipe.hsetnx(key, "attempts", "0")
                pipe.expire(key, self.ttl_s)
                pipe.zadd(due_key(self.queue), {item: now}, nx=True)
                await pipe.execute()
            ids.append(item)
        return ids

    async def claim(self, now: float, lease_s: float, limit: int = 20) -> list[str]:
        """Due items, each leased (moved ``lease_s`` ahead) so a second deliverer skips it."""
        claimed = await self.redis.eval(_CLAIM, 1, due_key(self.queue), str(now), str(now + lease_s), str(limit))  # type: ignore[misc]
        return [c.decode() if isinstance(c, bytes) else str(c) for c in claimed]

    async def load(self, item: str) -> tuple[str, dict[str, Any], int] | None:
        raw = await self.redis.hgetall(item_key(self.queue, item))  # type: ignore[misc]
        if not raw:
            await self.redis.zrem(due_key(self.queue), item)
            return None
        get = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items()}
        return get["channel"], json.loads(self.sealer.open_text(get["payload"], context=item)), int(get["attempts"])

    async def done(self, item: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(due_key(self.queue), item)
            pipe.delete(item_key(self.queue, item))
            await pipe.execute()

    async def failed(self, item: str, attempts: int, next_due: float | None, now: float) -> None:
        """Records a failed try; ``next_due=None`` dead-letters the item (kept, sealed, until its TTL)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(item_key(self.queue, item), "attempts", str(attempts))
            if next_due is None:
                pipe.zrem(due_key(self.queue), item)
                pipe.zadd(dead_key(self.queue), {item: now})
                pipe.expire(dead_key(self.queue), self.ttl_s)
            else:
                pipe.zadd(due_key(self.queue), {item: next_due}, xx=True)
            await pipe.execute()

    async def pending(self) -> int:
        return int(await self.redis.zcard(due_key(self.queue)))

    async def dead(self) -> list[str]:
        return [d.decode() if isinstance(d, bytes) else str(d) for d in await self.redis.zrange(dead_key(self.queue), 0, -1)]


_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id) end
return due
"""


Send = Callable[[dict[str, Any], str], Awaitable[None]]


@dataclass
class WebhookChannel:
    """POSTs the notice as JSON with timestamp, HMAC signature and idempotency key."""

    url: str
    secret: bytes
    verify_tls: Any = True
    timeout_s: float = 10.0
    clock: Callable[[], float] = time.time

    async def __call__(self, notice: dict[str, Any], key: str) -> None:
        body = json.dumps(notice, separators=(",", ":"), sort_keys=True).encode()
        timestamp = str(int(self.clock()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.secret, timestamp, body),
            IDEMPOTENCY_HEADER: key,
        }
        async with httpx.AsyncClient(verify=self.verify_tls, timeout=self.timeout_s) as client:
            response = await client.post(self.url, content=body, headers=headers)
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"webhook answered {response.status_code}")


@dataclass
class EmailChannel:
    """Sends the notice as plain text over SMTP, always upgraded with STARTTLS (no clear-text fallback)."""

    host: str
    port: int
    sender: str
    to: list[str]
    user: str = ""
    password: str = ""
    tls: ssl.SSLContext = field(default_factory=ssl.create_default_context)
    timeout_s: float = 10.0

    async def __call__(self, notice: dict[str, Any], key: str) -> None:
        await asyncio.to_thread(self._send, build_email(notice, key, self.sender, self.to))

    def _send(self, message: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                smtp.starttls(context=self.tls)
                if self.user:
                    smtp.login(self.user, self.password)
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as err:
            raise DeliveryError(f"smtp: {type(err).__name__}") from None


def build_email(notice: dict[str, Any], key: str, sender: str, to: list[str]) -> EmailMessage:
    """The e-mail staff read; ``Message-ID`` carries the idempotency key so mail clients thread repeats."""
    message = EmailMessage()
    message["Subject"] = f"[VoiceHive] {notice['summary'][:120]} ({notice['reference']})"
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Message-ID"] = f"<{key}@voicehive>"
    message[IDEMPOTENCY_HEADER] = key
    lines = [notice["summary"], "", *(f"{k}: {v}" for k, v in notice["details"].items())]
    if notice.get("callback_number"):
        lines.append(f"callback number (given by the caller): {notice['callback_number']}")
    lines += ["", f"reference: {notice['reference']}", f"taken at: {notice['at']}"]
    message.set_content("\n".join(lines))
    return message


class DeliveryError(Exception):
    """A channel did not accept the notice (the reason carries no payload)."""


@dataclass
class DeliveryMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.delivered = Counter("voicehive_staff_deliveries", "Staff notices delivered.", ["channel"], registry=self.registry)
        self.failed = Counter("voicehive_staff_delivery_failures", "Failed delivery tries.", ["channel"], registry=self.registry)
        self.dead = Counter("voicehive_staff_deliveries_dead", "Notices dead-lettered after max attempts.", ["channel"], registry=self.registry)


@dataclass
class Deliverer:
    """Drains one outbox: send, then ``done``; on failure back off, after ``max_attempts`` dead-letter."""

    outbox: Outbox
    channels: Mapping[str, Send]
    max_attempts: int = 12
    base_backoff_s: float = 5.0
    max_backoff_s: float = 900.0
    lease_s: float = 60.0
    metrics: DeliveryMetrics = field(default_factory=DeliveryMetrics)
    clock: Callable[[], float] = time.time

    async def run_once(self) -> int:
        """One pass over due items; returns how many were delivered."""
        delivered = 0
        for item in await self.outbox.claim(self.clock(), self.lease_s):
            try:
                loaded = await self.outbox.load(item)
            except (ValueError, KeyError):  # unreadable (key rotated, tampered): dead-letter, keep the queue moving
                await self.outbox.failed(item, self.max_attempts, None, self.clock())
                self.metrics.dead.labels("unreadable").inc()
                continue
            if loaded is None:
                continue
            channel, notice, attempts = loaded
            delivered += await self._try(item, channel, notice, attempts)
        return delivered

    async def _try(self, item: str, channel: str, notice: dict[str, Any], attempts: int) -> int:
        send = self.channels.get(channel)
        try:
            if send is None:
                raise DeliveryError(f"channel {channel} is not configured")
            await send(notice, item)
        except Exception as err:
            attempts += 1
            self.metrics.failed.labels(channel).inc()
            dead = attempts >= self.max_attempts
            next_due = None if dead else self.clock() + backoff_s(attempts, self.base_backoff_s, self.max_backoff_s)
            await self.outbox.failed(item, attempts, next_due, self.clock())
            if dead:
                self.metrics.dead.labels(channel).inc()
            log.warning("staff delivery failed", extra={"channel": channel, "attempts": attempts, "dead": dead, "error": str(err)[:80] if isinstance(err, DeliveryError) else type(err).__name__})
            return 0
        await self.outbox.done(item)
        self.metrics.delivered.labels(channel).inc()
        return 1

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        """Until ``stop``: drain, then wait ``interval_s`` (Redis errors are logged and retried)."""
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception as err:
                log.warning("outbox unavailable", extra={"error": type(err).__name__})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
