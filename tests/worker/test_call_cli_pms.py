"""`voicehive call`, run as a user runs it (the console script in a subprocess), on a line whose
``spec.pms`` points at the Mews or Apaleo fake, and the same call with the PMS down.

The CLI uses the providers (VOICEHIVE_CALL_ENGINES=providers): Riva, Azure OpenAI and ElevenLabs
fakes, the Azure fake scripted as the receptionist of test_backoffice_call (it calls the tools and
speaks their results verbatim). The PMS fakes and the staff receivers speak TLS from a test CA the
CLI trusts through SSL_CERT_FILE, as an operator's own CA would be. With the PMS down the staff
request goes through a real redis-server outbox to the signed webhook and STARTTLS e-mail before
the command exits.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes.apaleo import ApaleoFake
from tests.fakes.azure_openai import message_text
from tests.fakes.mews import MewsFake
from tests.fakes.staff import WebhookReceiver
from tests.fakes.tls import TlsFiles
from tests.worker.callrig import ProviderFakes, line_spec, provider_fakes
from tests.worker.speech import espeak_available
from tests.worker.test_backoffice_call import ASK, BYE, CALLER, CARD, CONFIRM, STAFF, Receptionist, smtp
from tests.worker.test_pms_adapters import apaleo_spec, mews_spec
from voicehive import contract
from voicehive.api.models import HotelLineSpec
from voicehive.privacy import TRANSCRIPT_KEY_ENV
from voicehive_worker.session import ENV_LLM_ENDPOINT, ENV_TTS_ENDPOINT

__all__ = ["smtp"]  # the SMTP sink fixture

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not espeak_available(), reason="espeak-ng is needed for caller speech")]

CLI = Path(sys.executable).with_name("voicehive")
CLI_TIMEOUT_S = 300.0


def _line_file(directory: Path, spec: HotelLineSpec) -> Path:
    """The HotelLine YAML a hotel would keep in its repository."""
    doc = {
        "apiVersion": contract.API_VERSION, "kind": contract.HOTELLINE_KIND,
        "metadata": {"name": "lindenhof-main", "namespace": "hotels"},
        "spec": spec.model_dump(by_alias=True, mode="json", exclude_none=True),
    }
    path = directory / "line.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _env(fakes: ProviderFakes, tls: TlsFiles, **extra: str) -> dict[str, str]:
    endpoints = fakes.endpoints()
    return {
        **os.environ,
        "VOICEHIVE_CALL_ENGINES": "providers",
        contract.ENV_RIVA_SERVER: endpoints.riva_server,
        contract.ENV_AZURE_OPENAI_API_KEY: endpoints.llm_api_key,
        contract.ENV_ELEVEN_API_KEY: endpoints.tts_api_key,
        ENV_LLM_ENDPOINT: endpoints.llm_endpoint,
        ENV_TTS_ENDPOINT: endpoints.tts_base_url,
        "SSL_CERT_FILE": str(tls.ca_file),
        **extra,
    }


async def _voicehive_call(line: Path, says: list[str], env: dict[str, str]) -> tuple[int, list[dict[str, Any]], str]:
    """Runs ``voicehive call --json``; returns the exit code, the turn reports and stderr."""
    args = [str(CLI), "call", "--line", str(line), "--json"]
    for text in says:
        args += ["--say", text]
    proc = await asyncio.create_subprocess_exec(*args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    turns = [json.loads(row) for row in out.decode().splitlines() if row.startswith("{")]
    return proc.returncode or 0, turns, err.decode()


def _tool_results(fakes: ProviderFakes) -> list[str]:
    return [message_text(m) for r in fakes.azure.requests for m in r.messages if m.get("role") == "tool"]


def _arrival() -> str:
    return (dt.date.today() + dt.timedelta(days=30)).isoformat()


@pytest.mark.parametrize("kind", ["mews", "apaleo"])
async def test_voicehive_call_quotes_books_and_reads_back_the_pms_number(
    kind: str, mews: MewsFake, apaleo: ApaleoFake, tls: TlsFiles, tmp_path: Path
) -> None:
    if kind == "mews":
        pms_spec, ident, secret = mews_spec(mews, booking="book", timeoutSeconds=10.0), mews.client_token, mews.access_token
    else:
        pms_spec, ident, secret = apaleo_spec(apaleo, booking="book", timeoutSeconds=10.0), apaleo.client_id, apaleo.client_secret
    async with provider_fakes([ASK, CONFIRM], Receptionist(_arrival())) as fakes:
        line = _line_file(tmp_path, fakes.spec_for(line_spec(pms=pms_spec.model_dump(by_alias=True, mode="json"))))
        env = _env(fakes, tls, **{contract.ENV_PMS_ID: ident, contract.ENV_PMS_SECRET: secret})
        code, turns, err = await _voicehive_call(line, [ASK, CONFIRM], env)
        heard = _tool_results(fakes)
    assert code == 0, err
    nightly = mews.categories[0].nightly if kind == "mews" else apaleo.groups[0].nightly
    number = mews.reservations[0]["Number"] if kind == "mews" else apaleo.bookings[0]["id"]
    quote, booked = f"Double Room: {2 * nightly:.0f} EUR in total", f"confirmation number {' '.join(number)}"
    assert any(quote in h for h in heard) and any(booked in h for h in heard), heard
    # what the command reports the agent said: the fake's total on the ask, its number on the yes
    assert [t["tools"] for t in turns[1:]] == [["check_availability"], ["book_stay"]], turns
    assert quote in turns[1]["reply"] and booked in turns[2]["reply"], turns


async def test_voicehive_call_with_the_pms_down_delivers_a_staff_request_by_webhook_and_email(
    mews: MewsFake, tls: TlsFiles, smtp: Any, redis_url: str, tmp_path: Path
) -> None:
    mews.down = True
    async with WebhookReceiver(secrets.token_hex(16).encode(), ssl_context=tls.server_context()) as receiver:
        delivery = {
            "webhook": {"url": receiver.hook_url, "secretRef": {"name": "hooks", "key": "hmac"}},
            "email": {"host": "127.0.0.1", "port": smtp.port, "sender": "agent@hotel.example", "to": ["desk@hotel.example"]},
        }
        async with provider_fakes([ASK, STAFF, BYE], Receptionist(_arrival())) as fakes:
            spec = line_spec(pms=mews_spec(mews).model_dump(by_alias=True, mode="json"), staffDelivery=delivery)
            line = _line_file(tmp_path, fakes.spec_for(spec))
            env = _env(fakes, tls, **{
                contract.ENV_PMS_ID: mews.client_token, contract.ENV_PMS_SECRET: mews.access_token,
                contract.ENV_REDIS_URL: redis_url, contract.ENV_WEBHOOK_SECRET: receiver.secret.decode(),
                TRANSCRIPT_KEY_ENV: base64.b64encode(secrets.token_bytes(32)).decode(),
            })
            code, turns, err = await _voicehive_call(line, [ASK, STAFF, BYE], env)
            heard = _tool_results(fakes)
    assert code == 0, err
    assert any("booking system is unavailable" in h for h in heard) and not any("in total" in h for h in heard), heard
    assert "capture_booking_request" in turns[2]["tools"], turns
    # delivered before the command returned: no waiting here
    assert len(receiver.received) == 1 and len(smtp.messages) == 1, (receiver.received, smtp.messages, err)
    notice = next(iter(receiver.received.values()))
    assert notice["kind"] == "new_booking" and notice["details"]["guest_name"] == "Anna Schmidt"
    assert notice["line"] == "lindenhof-main"
    assert "new booking" in str(smtp.messages[0]["Subject"])
    scanned = b"\n".join(receiver.raw + smtp.handler.raw).decode() + err
    for leaked in (CARD, CARD.replace(" ", ""), CALLER, CALLER[1:]):
        assert leaked not in scanned, f"{leaked!r} delivered or printed"
