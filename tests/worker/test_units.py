"""Pure logic of the worker: PMS adapter, agent helpers, latency summary, line loading, readiness."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from tests.worker.callrig import EXAMPLE, line_spec
from voicehive import contract
from voicehive.api.models import OpeningHours, Weekday
from voicehive_worker.agent import desk_is_open, goodbye, greeting, instructions_for
from voicehive_worker.entrypoint import Warm, load_line_spec, serve_readiness
from voicehive_worker.pms import FactsPms, PmsError, answer_from_facts, make_request
from voicehive_worker.session import ProviderConfigError, ProviderEndpoints
from voicehive_worker.state import latency_summary

TODAY = dt.date(2026, 11, 25)


async def test_availability_and_quote_from_facts() -> None:
    pms = FactsPms(line_spec().facts)
    offers = await pms.availability(make_request("2026-12-12", 2, 2, today=TODAY))
    assert [o.room_code for o in offers] == ["DBL", "STE"]  # cheapest first, singles too small
    assert offers[0].total == 258 and offers[0].currency == "EUR"
    quote = await pms.quote(make_request("tomorrow", 3, 1, today=TODAY, room_code="single"))
    assert quote.room_code == "SGL" and quote.total == 267
    with pytest.raises(PmsError, match="at most 2 guests"):
        await pms.quote(make_request("2026-12-12", 1, 3, today=TODAY, room_code="DBL"))
    with pytest.raises(PmsError, match="no room type called"):
        pms.match_room("penthouse")


@pytest.mark.parametrize(
    ("check_in", "nights", "guests", "message"),
    [
        ("2026-11-01", 2, 2, "in the past"),
        ("next friday", 2, 2, "could not understand"),
        ("2026-12-01", 0, 2, "1 to 60 nights"),
        ("2026-12-01", 2, 0, "1 to 20 guests"),
    ],
)
def test_bad_stays_are_refused_in_plain_words(check_in: str, nights: int, guests: int, message: str) -> None:
    with pytest.raises(PmsError, match=message):
        make_request(check_in, nights, guests, today=TODAY)


def test_questions_answered_from_facts() -> None:
    facts = line_spec().facts
    assert "15 euros" in (answer_from_facts(facts, "Can I bring my dog? Are pets allowed?") or "")
    assert answer_from_facts(facts, "What time is check-in?") == "Check-in is from 15:00."
    assert "Lindenstrasse" in (answer_from_facts(facts, "What is the address?") or "")
    assert answer_from_facts(facts, "xyzzy plugh") is None


def test_greeting_discloses_ai_in_the_line_language() -> None:
    spec = line_spec()
    assert "AI assistant" in greeting(spec) and spec.display_name in greeting(spec)
    assert "KI-Assistent" in greeting(spec, "de-DE")
    assert greeting(spec, "fi").startswith("Hello")  # a language we have no phrase for: English
    assert spec.display_name in goodbye(spec, "de")
    prompt = instructions_for(spec, TODAY, "en")
    assert "2026-11-25" in prompt and "double room" in prompt and "Hauptbahnhof" in prompt


def test_front_desk_hours_in_the_hotel_time_zone() -> None:
    weekdays = [Weekday.MON, Weekday.TUE, Weekday.WED, Weekday.THU, Weekday.FRI]
    hours = [OpeningHours(days=weekdays, open="07:00", close="22:00")]
    berlin = ZoneInfo("Europe/Berlin")
    assert desk_is_open(hours, dt.datetime(2026, 11, 25, 9, 0, tzinfo=berlin))  # Wednesday
    assert not desk_is_open(hours, dt.datetime(2026, 11, 25, 23, 0, tzinfo=berlin))
    assert not desk_is_open(hours, dt.datetime(2026, 11, 29, 9, 0, tzinfo=berlin))  # Sunday
    assert desk_is_open([], dt.datetime(2026, 11, 29, 3, 0, tzinfo=berlin))


def test_latency_summary_matches_the_crd_field_names() -> None:
    assert latency_summary([]) == {"turns": 0}
    summary = latency_summary([400.0, 420.0, 450.0, 900.0])
    assert summary["turns"] == 4 and summary["p50Ms"] == 435.0 and summary["maxMs"] == 900.0
    assert summary["p95Ms"] == 900.0


def test_line_spec_from_file_or_environment(tmp_path: Path) -> None:
    spec = load_line_spec(EXAMPLE)
    assert spec.hotel_id == "hotel-lindenhof"
    env = {contract.ENV_LINE_SPEC: json.dumps(spec.model_dump(by_alias=True, mode="json"))}
    assert load_line_spec(None, env) == spec
    with pytest.raises(ValueError, match=contract.ENV_LINE_SPEC):
        load_line_spec(None, {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Something\n---\nkind: Else\n")
    with pytest.raises(ValueError, match="no HotelLine"):
        load_line_spec(bad)


def test_provider_endpoints_name_what_is_missing() -> None:
    spec = line_spec()
    with pytest.raises(ProviderConfigError, match=contract.ENV_RIVA_SERVER):
        ProviderEndpoints.from_env(spec, {})
    env = {contract.ENV_RIVA_SERVER: "127.0.0.1:50051"}
    with pytest.raises(ProviderConfigError, match=contract.ENV_AZURE_OPENAI_API_KEY):
        ProviderEndpoints.from_env(spec, env)
    env[contract.ENV_AZURE_OPENAI_API_KEY] = "k"
    with pytest.raises(ProviderConfigError, match=contract.ENV_ELEVEN_API_KEY):
        ProviderEndpoints.from_env(spec, env)
    env[contract.ENV_ELEVEN_API_KEY] = "e"
    endpoints = ProviderEndpoints.from_env(spec, env)
    assert endpoints.tts_base_url == "https://api.eu.residency.elevenlabs.io/v1"
    assert endpoints.llm_endpoint == spec.llm.endpoint and not endpoints.riva_tls


async def test_readiness_is_503_until_warm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEHIVE_READY_HOST", "127.0.0.1")
    runner = await serve_readiness(None, 0)
    try:
        port = runner.port
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                assert r.status == 200
            async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                assert r.status == 503
            runner.state["warm"] = Warm(spec=line_spec(), vad=None, privacy=None, endpoints=None, voice=None, ready=True)
            async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                assert r.status == 200
    finally:
        await runner.cleanup()


def test_livekit_pii_extras_never_reach_the_log() -> None:
    import io
    import logging

    from voicehive.audit import JsonFormatter
    from voicehive_worker.entrypoint import install_log_privacy

    logger = logging.getLogger("test.worker.pii")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        install_log_privacy(logger)
        install_log_privacy(logger)  # idempotent
        assert len(handler.filters) == 1
        logger.warning("skipping user input", extra={"lk.pii.user_input": "my number is +4915112345678",
                                                     "language": "en"})
        line = stream.getvalue()
        assert "skipping user input" in line and '"language":"en"' in line
        assert "4915112345678" not in line and "lk.pii" not in line
    finally:
        logger.removeHandler(handler)
