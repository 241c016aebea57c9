"""Staff delivery end to end: real redis-server, HTTPS webhook receiver, aiosmtpd with STARTTLS.

Back-off is shortened (tens of milliseconds) so "down for a while" takes a second, not a minute;
the logic is the same. Every wait polls with a generous timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from tests.fakes.staff import SmtpSink, WebhookReceiver
from tests.fakes.tls import TlsFiles, make_tls_files
from tests.fixtures.redis import RedisServer, free_port
from tests.worker.callrig import line_spec
from voicehive import contract
from voicehive.delivery import Deliverer, DeliveryMetrics, Outbox, build_notice, due_key, scrub, sign, verify
from voicehive.intents import Intent
from voicehive.privacy import Sealer, generate_key_b64
from voicehive_worker.agent import LocalCallActions
from voicehive_worker.staff import NotifyingActions, channels_of, deliverer_for, outbox_for

FAST = {"base_backoff_s": 0.05, "max_backoff_s": 0.2, "lease_s": 0.5}
CARD = "4111 1111 1111 1111"


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


@pytest_asyncio.fixture
async def receiver(tls: TlsFiles) -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(secrets.token_bytes(32), ssl_context=tls.server_context()) as fake:
        yield fake


@pytest.fixture
def smtp(tls: TlsFiles) -> Iterator[SmtpSink]:
    sink = SmtpSink(tls.server_context(), free_port())
    sink.start()
    yield sink
    sink.stop()


def sealer() -> Sealer:
    import base64

    return Sealer(base64.b64decode(generate_key_b64()))


def delivery_spec(receiver: WebhookReceiver, smtp: SmtpSink | None, attempts: int = 12) -> dict[str, object]:
    out: dict[str, object] = {
        "webhook": {"url": receiver.hook_url, "secretRef": {"name": "hooks", "key": "hmac"}},
        "maxAttempts": attempts,
    }
    if smtp is not None:
        out["email"] = {"host": "127.0.0.1", "port": smtp.port, "sender": "agent@hotel.example", "to": ["desk@hotel.example"]}
    return out


async def drain(deliverer: Deliverer, done: object, timeout: float = 20.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # redis restarting: production's loop logs and retries
            await deliverer.run_once()
        if done():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("outbox did not drain")


def test_signature_is_hmac_over_timestamp_and_body() -> None:
    secret, body = b"k" * 32, b'{"a":1}'
    headers = {"X-VoiceHive-Timestamp": "1700000000", "X-VoiceHive-Signature": sign(secret, "1700000000", body)}
    assert verify(secret, headers, body, now=1700000010)
    assert not verify(secret, headers, body + b" ", now=1700000010)
    assert not verify(secret, headers, body, now=1700001000)  # stale: replay window closed
    assert not verify(b"x" * 32, headers, body, now=1700000010)


def test_notice_carries_no_card_no_unrequested_number() -> None:
    fields = {"name": "Ana", "message": f"my card is {CARD}, or ring +49 30 1234567", "callback_number": ""}
    notice = build_notice("message", fields, reference="R1", line="l", at="t")
    text = str(notice)
    assert CARD not in text and "1234567" not in text and "callback_number" not in notice
    given = build_notice("message", {**fields, "callback_number": "+49 30 7654321"}, reference="R2", line="l", at="t")
    assert given["callback_number"] == "+49 30 7654321"
    assert scrub("room 12 for 2 nights") == "room 12 for 2 nights"


async def test_receiver_down_then_up_and_redis_restart_lose_nothing(
    receiver: WebhookReceiver, smtp: SmtpSink, tls: TlsFiles, redis_server: RedisServer, redis_url: str
) -> None:
    spec = line_spec(staffDelivery=delivery_spec(receiver, smtp))
    redis = Redis.from_url(redis_url)
    outbox = outbox_for(redis, sealer(), "hotels", "lindenhof-main")
    env = {contract.ENV_WEBHOOK_SECRET: receiver.secret.decode("latin-1")}
    receiver.secret = env[contract.ENV_WEBHOOK_SECRET].encode()
    deliverer = deliverer_for(spec, outbox, env, verify=tls.client_context(), smtp_tls=tls.client_context(), **FAST)
    actions = NotifyingActions(LocalCallActions(), outbox, channels_of(spec), "lindenhof-main")
    port = receiver.port
    await receiver.stop()  # the hotel's endpoint is down
    refs = [await actions.save_request("message", {"name": f"Guest {i}", "message": "please call back"}) for i in range(5)]
    await drain(deliverer, lambda: len(smtp.messages) == 5)
    assert not receiver.received and await outbox.pending() == 5  # webhooks wait, mail went out
    assert deliverer.metrics.failed.labels("webhook")._value.get() >= 5
    redis_server.restart()  # acknowledged enqueues survive (append-only file)
    await redis.aclose()
    redis = Redis.from_url(redis_url)
    deliverer.outbox.redis = redis
    receiver.port = port
    await receiver.start()
    await drain(deliverer, lambda: len(receiver.received) == 5)
    assert set(receiver.received) == {f"{r}.webhook" for r in refs}
    assert all(count == 1 for count in receiver.hits.values())
    assert len(smtp.messages) == 5 and all(smtp.handler.tls_seen)
    assert {m["Idempotency-Key"] for m in smtp.messages} == {f"{r}.email" for r in refs}
    assert await outbox.pending() == 0 and receiver.rejected == 0
    await redis.aclose()


async def test_dead_letter_after_max_attempts(receiver: WebhookReceiver, tls: TlsFiles, redis_url: str) -> None:
    spec = line_spec(staffDelivery=delivery_spec(receiver, None, attempts=3))
    redis = Redis.from_url(redis_url)
    outbox = Outbox(redis, "q-test", sealer())
    metrics = DeliveryMetrics()
    deliverer = deliverer_for(spec, outbox, {contract.ENV_WEBHOOK_SECRET: "s3cret"}, verify=tls.client_context(), metrics=metrics, **FAST)
    receiver.secret = b"s3cret"
    receiver.status = 503
    await outbox.enqueue(build_notice("message", {"message": "hi"}, reference="R9", line="l", at="t"), ["webhook"])
    await drain(deliverer, lambda: metrics.dead.labels("webhook")._value.get() == 1)
    assert await outbox.dead() == ["R9.webhook"] and await outbox.pending() == 0
    keys = [k.decode() for k in await redis.keys("vh:outbox:*")]
    assert all(k.startswith(due_key("q-test").removesuffix("due")) for k in keys)  # one queue, one hash tag
    items = [await redis.hgetall(k) for k in keys if ":item:" in k]
    assert len(items) == 1 and items[0][b"payload"].startswith(b"v1_")  # sealed at rest
    assert b"message" not in items[0][b"payload"]
    await redis.aclose()


async def test_same_request_enqueued_twice_is_one_delivery(receiver: WebhookReceiver, tls: TlsFiles, redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    outbox = Outbox(redis, "q-dup", sealer())
    spec = line_spec(staffDelivery=delivery_spec(receiver, None))
    receiver.secret = b"k"
    deliverer = deliverer_for(spec, outbox, {contract.ENV_WEBHOOK_SECRET: "k"}, verify=tls.client_context(), **FAST)
    notice = build_notice("booking_request", {"guest_name": "Ana Lopez", "nights": "2"}, reference="R5", line="l", at="t")
    await outbox.enqueue(notice, ["webhook"])
    await outbox.enqueue(notice, ["webhook"])  # a worker retrying its enqueue after a timeout
    await drain(deliverer, lambda: len(receiver.received) == 1)
    assert await deliverer.run_once() == 0 and receiver.hits["R5.webhook"] == 1
    await redis.aclose()


async def test_pod_staff_delivery_sends_transfer_handoffs(
    receiver: WebhookReceiver, tls: TlsFiles, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voicehive_worker.staff import start_staff_delivery

    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))  # the pod trusts the hotel's CA through the system store
    spec = line_spec(staffDelivery=delivery_spec(receiver, None))
    env = {contract.ENV_REDIS_URL: redis_url, contract.ENV_WEBHOOK_SECRET: receiver.secret.decode("latin-1")}
    receiver.secret = env[contract.ENV_WEBHOOK_SECRET].encode()
    staff = start_staff_delivery(spec, env, sealer(), "hotels", "lindenhof-main")
    assert staff is not None
    inner = LocalCallActions()
    inner.record_intent(Intent.BOOK_ROOM)
    actions = staff.wrap(inner)
    await actions.transfer_to_front_desk("tel:+493012345600")
    for _ in range(400):  # poll up to 20 s
        if receiver.received:
            break
        await asyncio.sleep(0.05)
    await staff.stop()
    notice = next(iter(receiver.received.values()))
    assert notice["kind"] == "transfer_handoff" and Intent.BOOK_ROOM.value in notice["details"]["notes"]
    assert inner.transfers == ["tel:+493012345600"] and "+49" not in json.dumps(notice)
    assert staff.metrics.delivered.labels("webhook")._value.get() == 1
    assert start_staff_delivery(line_spec(), env, sealer(), "hotels", "l") is None  # no channels: nothing runs


async def test_unreadable_item_is_dead_lettered_and_the_queue_moves(receiver: WebhookReceiver, tls: TlsFiles, redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    old, new = Outbox(redis, "q-rot", sealer()), Outbox(redis, "q-rot", sealer())  # the key was rotated
    await old.enqueue(build_notice("message", {"message": "a"}, reference="R1", line="l", at="t"), ["webhook"])
    await new.enqueue(build_notice("message", {"message": "b"}, reference="R2", line="l", at="t"), ["webhook"], now=time.time() + 0.01)
    receiver.secret = b"k"
    spec = line_spec(staffDelivery=delivery_spec(receiver, None))
    deliverer = deliverer_for(spec, new, {contract.ENV_WEBHOOK_SECRET: "k"}, verify=tls.client_context(), **FAST)
    await drain(deliverer, lambda: "R2.webhook" in receiver.received)
    assert await new.dead() == ["R1.webhook"] and deliverer.metrics.dead.labels("unreadable")._value.get() == 1
    await redis.aclose()
