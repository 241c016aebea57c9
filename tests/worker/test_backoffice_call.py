"""A whole call through the worker's session on each PMS fake, and the same call with the PMS down.

Caller speech (espeak-ng) -> Riva fake -> our session -> Azure fake (a scripted model that calls
the tools and speaks their results verbatim, so what the caller hears is what the tools
returned) -> ElevenLabs fake. The PMS fakes speak HTTPS on loopback. With the PMS down the
request goes to staff: the line's outbox in a real redis-server, delivered by the signed
webhook and STARTTLS e-mail. Finally deliveries and log lines are scanned for a card number,
the caller's phone number and transcript text.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.fakes.apaleo import ApaleoFake
from tests.fakes.azure_openai import JSON, Reply, ToolCall, last_message, message_text
from tests.fakes.mews import MewsFake
from tests.fakes.staff import SmtpSink, WebhookReceiver
from tests.fakes.tls import TlsFiles
from tests.fixtures.redis import free_port
from tests.worker.callrig import line_spec, provider_fakes, running_call
from tests.worker.speech import espeak_available, speak
from tests.worker.test_pms_adapters import apaleo_pms, mews_pms
from voicehive import contract
from voicehive.audit import JsonFormatter
from voicehive.privacy import Sealer
from voicehive_worker.agent import LocalCallActions
from voicehive_worker.engines.policy import caller_facing
from voicehive_worker.pms import PmsAdapter
from voicehive_worker.staff import NotifyingActions, channels_of, deliverer_for, outbox_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not espeak_available(), reason="espeak-ng is needed for caller speech")]

ASK = "I would like a double room for two nights for two guests"
CONFIRM = "Yes please book it for Anna Schmidt"
STAFF = "Yes please pass it to the staff my card is four one one one"
BYE = "Thank you goodbye"
CARD = "4111 1111 1111 1111"
CALLER = "+4915112345678"


class Receptionist:
    """The scripted model: availability on the ask, a booking with the total it heard on the yes."""

    def __init__(self, arrival: str) -> None:
        self.arrival = arrival

    def __call__(self, messages: list[JSON], tools: list[JSON]) -> Reply:
        last = last_message(messages)
        if last is not None and last.get("role") == "tool":
            # a model says what the tool result holds for the caller, never the instructions in it
            return Reply(text=caller_facing(message_text(last), "en"))
        said = message_text(last_message(messages, "user")).lower()
        stay = {"check_in": self.arrival, "nights": 2, "guests": 2}
        if "double" in said:
            return Reply(tool_calls=[ToolCall("check_availability", {**stay, "room_type": "double room"})])
        if "staff" in said:  # the model puts what it heard into notes (a card number included!)
            return Reply(tool_calls=[ToolCall("capture_booking_request", {
                "kind": "new_booking", "guest_name": "Anna Schmidt", **stay, "room_type": "double room",
                "notes": f"caller read a card number {CARD}; call back on {CALLER}"})])
        if "book" in said:
            heard = " ".join(message_text(m) for m in messages if m.get("role") == "tool")
            total = re.search(r"Double Room: ([\d.]+) EUR in total", heard)
            assert total, heard
            return Reply(tool_calls=[ToolCall("book_stay", {
                "guest_name": "Anna Schmidt", **stay, "room_type": "Double Room",
                "quoted_total": float(total.group(1)), "caller_confirmed": True})])
        if "goodbye" in said:
            return Reply(tool_calls=[ToolCall("end_call", {})])
        return Reply(text="Sorry?")


@pytest.fixture
def smtp(tls: TlsFiles) -> Iterator[SmtpSink]:
    sink = SmtpSink(tls.server_context(), free_port())
    sink.start()
    yield sink
    sink.stop()


async def _converse(pms: PmsAdapter, actions: Any, utterances: list[str], spec: Any = None) -> list[str]:
    """Runs the call; returns the tool results the model (and so the caller) heard."""
    arrival = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    async with provider_fakes(utterances, Receptionist(arrival)) as fakes:
        async with running_call(fakes, spec or line_spec(), actions=actions, pms=pms) as call:
            await call.wait_for(lambda: call.sink.segments, 15, "the greeting")
            await call.wait_quiet()
            for index, text in enumerate(utterances):
                utt = call.say(speak(text), f"turn-{index}")
                await call.wait_reply(utt, timeout=20)
                await call.wait_quiet(timeout=30)
        return [message_text(m) for r in fakes.azure.requests for m in r.messages if m.get("role") == "tool"]


@pytest.mark.parametrize("kind", ["mews", "apaleo"])
async def test_call_quotes_books_and_reads_back_the_pms_number(
    kind: str, mews: MewsFake, apaleo: ApaleoFake, tls: TlsFiles
) -> None:
    pms: Any = mews_pms(mews, tls.client_context()) if kind == "mews" else apaleo_pms(apaleo, tls.client_context())
    spec = line_spec(pms={"kind": kind, "endpoint": "https://pms.example", "credentials": {"secretName": "p"},
                          "propertyId": "p", "booking": "book"})
    actions = LocalCallActions()
    heard = await _converse(pms, actions, [ASK, CONFIRM], spec)
    nightly = mews.categories[0].nightly if kind == "mews" else apaleo.groups[0].nightly
    assert any(f"Double Room: {2 * nightly:.0f} EUR in total" in h for h in heard), heard
    number = mews.reservations[0]["Number"] if kind == "mews" else apaleo.bookings[0]["id"]
    assert any(f"Booked: confirmation number {' '.join(number)}" in h for h in heard), heard
    assert any("payment link" in h for h in heard)
    await pms.aclose()


async def test_pms_down_call_ends_with_a_staff_request_by_webhook_and_email(
    mews: MewsFake, tls: TlsFiles, smtp: SmtpSink, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with WebhookReceiver(secrets.token_hex(16).encode(), ssl_context=tls.server_context()) as receiver:
        delivery = {
            "webhook": {"url": receiver.hook_url, "secretRef": {"name": "hooks", "key": "hmac"}},
            "email": {"host": "127.0.0.1", "port": smtp.port, "sender": "agent@hotel.example", "to": ["desk@hotel.example"]},
        }
        spec = line_spec(staffDelivery=delivery)
        redis = Redis.from_url(redis_url)
        outbox = outbox_for(redis, Sealer(secrets.token_bytes(32)), "hotels", "lindenhof-main")
        env = {contract.ENV_WEBHOOK_SECRET: receiver.secret.decode()}
        deliverer = deliverer_for(spec, outbox, env, verify=tls.client_context(), smtp_tls=tls.client_context(),
                                  base_backoff_s=0.05, max_backoff_s=0.2, lease_s=1.0)
        stop = asyncio.Event()
        drainer = asyncio.create_task(deliverer.run(stop, interval_s=0.05))
        mews.down = True
        actions = NotifyingActions(LocalCallActions(), outbox, channels_of(spec), "lindenhof-main")
        pms = mews_pms(mews, tls.client_context())
        heard = await _converse(pms, actions, [ASK, STAFF, BYE], spec)
        assert any("booking system is unavailable" in h for h in heard) and not any("in total" in h for h in heard)
        for _ in range(400):
            if receiver.received and smtp.messages:
                break
            await asyncio.sleep(0.05)
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await drainer
        await pms.aclose()
        await redis.aclose()
    notice = next(iter(receiver.received.values()))
    assert notice["kind"] == "new_booking" and notice["details"]["guest_name"] == "Anna Schmidt"
    assert len(smtp.messages) == 1 and "new booking" in str(smtp.messages[0]["Subject"])
    formatter = JsonFormatter()
    scanned = b"\n".join(receiver.raw + smtp.handler.raw).decode() + "\n".join(formatter.format(r) for r in caplog.records)
    for leaked in (CARD, CARD.replace(" ", ""), CALLER, CALLER[1:], ASK, STAFF):
        assert leaked not in scanned, f"{leaked!r} delivered or logged"
