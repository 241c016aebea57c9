"""The worker's side of staff delivery: requests into the line's outbox, and the pod's deliverer.

WHY a wrapper around :class:`CallActions`: the agent keeps calling ``save_request`` exactly as
before (sealed into the call's Redis record); :class:`NotifyingActions` additionally puts a
privacy-scrubbed notice into the line's outbox (``voicehive.delivery``), and after a transfer a
hand-off notice. Every warm worker pod of the line runs :func:`deliverer_for`'s loop, so the
outbox drains between calls too, with the line's own webhook secret and SMTP credentials.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from voicehive import contract
from voicehive.api.models import HotelLineSpec
from voicehive.delivery import (
    Deliverer,
    DeliveryMetrics,
    EmailChannel,
    Outbox,
    Sealer,
    Send,
    WebhookChannel,
    build_notice,
    now_rfc3339,
    queue_id,
)
from voicehive.intents import Intent
from voicehive.lifecycle import EndReason
from voicehive.redis_client import connect_url
from voicehive_worker.agent import CallActions


def channels_of(spec: HotelLineSpec) -> list[str]:
    delivery = spec.staff_delivery
    return [name for name, on in (("webhook", delivery.webhook), ("email", delivery.email)) if on is not None]


def outbox_for(redis: Redis, sealer: Sealer, namespace: str, line: str) -> Outbox:
    return Outbox(redis, queue_id(namespace, line), sealer)


@dataclass
class NotifyingActions:
    """Any CallActions plus delivery of each request (and of transfer hand-offs) to staff."""

    inner: CallActions
    outbox: Outbox
    channels: list[str]
    line: str

    async def save_request(self, kind: str, fields: dict[str, str]) -> str:
        reference = await self.inner.save_request(kind, fields)
        await self._notify(kind, fields, reference)
        return reference

    async def _notify(self, kind: str, fields: dict[str, str], reference: str) -> None:
        if self.channels:
            notice = build_notice(kind, fields, reference=reference, line=self.line, at=now_rfc3339())
            await self.outbox.enqueue(notice, self.channels)

    async def transfer_to_front_desk(self, target: str) -> None:
        await self.inner.transfer_to_front_desk(target)
        intents = ", ".join(getattr(self.inner, "intents", []) or getattr(getattr(self.inner, "state", None), "intents", []))
        reference = "T-" + secrets.token_hex(4).upper()
        await self._notify("transfer_handoff", {"notes": f"caller transferred; topics: {intents or 'none'}"}, reference)

    async def end_call(self, reason: EndReason) -> None:
        await self.inner.end_call(reason)

    def record_intent(self, intent: Intent) -> None:
        self.inner.record_intent(intent)


def deliverer_for(
    spec: HotelLineSpec,
    outbox: Outbox,
    env: Mapping[str, str],
    *,
    verify: Any = True,
    smtp_tls: ssl.SSLContext | None = None,
    metrics: DeliveryMetrics | None = None,
    **timing: Any,
) -> Deliverer:
    """The line's channels with secrets from the pod env (names in voicehive.contract)."""
    delivery = spec.staff_delivery
    channels: dict[str, Send] = {}
    if delivery.webhook is not None:
        secret = env.get(contract.ENV_WEBHOOK_SECRET, "")
        if not secret:
            raise ValueError(f"staffDelivery.webhook: {contract.ENV_WEBHOOK_SECRET} is not set")
        channels["webhook"] = WebhookChannel(delivery.webhook.url, secret.encode(), verify_tls=verify)
    if delivery.email is not None:
        email = delivery.email
        channels["email"] = EmailChannel(
            email.host, email.port, email.sender, list(email.to),
            user=env.get(contract.ENV_SMTP_USER, ""), password=env.get(contract.ENV_SMTP_PASSWORD, ""),
            tls=smtp_tls or ssl.create_default_context(),
        )
    return Deliverer(outbox, channels, max_attempts=delivery.max_attempts, metrics=metrics or DeliveryMetrics(), **timing)


@dataclass
class StaffDelivery:
    """The pod's outbox and its drain loop (started warm, so requests of past calls keep moving)."""

    outbox: Outbox
    channels: list[str]
    line: str
    stop_event: asyncio.Event
    task: asyncio.Task[None]
    metrics: DeliveryMetrics

    def wrap(self, actions: CallActions) -> NotifyingActions:
        return NotifyingActions(actions, self.outbox, self.channels, self.line)

    async def stop(self) -> None:
        self.stop_event.set()
        await self.task
        await self.outbox.redis.aclose()


def start_staff_delivery(
    spec: HotelLineSpec, env: Mapping[str, str], sealer: Sealer, namespace: str, line: str
) -> StaffDelivery | None:
    """None when the line has no delivery channel or no Redis (requests then stay sealed in Redis)."""
    channels, url = channels_of(spec), env.get(contract.ENV_REDIS_URL, "")
    if not channels or not url:
        return None
    outbox = outbox_for(connect_url(url, decode_responses=False), sealer, namespace, line)
    deliverer = deliverer_for(spec, outbox, env)
    stop = asyncio.Event()
    task = asyncio.create_task(deliverer.run(stop))
    return StaffDelivery(outbox, channels, line, stop, task, deliverer.metrics)
