"""After a whole call, no phone number, room name or transcript sentence exists in clear in
Redis (live data and its append-only file), in any log line, or in a VoiceSession object."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from tests.fixtures.kube import KubeAPI
from tests.fixtures.redis import RedisServer
from tests.orchestrator.helpers import LIVEKIT_SECRET, auth, livekit_event, post_livekit, run_app, sign_livekit
from voicehive import contract
from voicehive.api.models import GROUP, VERSION
from voicehive.audit import JsonFormatter
from voicehive_orchestrator.app import create_app
from voicehive_orchestrator.sessions import KubeSessions
from voicehive_orchestrator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
NUMBER = "+4917098765432"
SENTENCES = [
    "My name is Evelyn Fairbanks and I arrive on Tuesday",
    "Ich möchte meine Buchung auf den Namen Quendolin Maier stornieren",
    "Je voudrais parler à quelqu'un de la réception pour Zéphyrine",
]


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    # The test's own HTTP client (httpx/httpcore) logs the URLs it requests; it is not the service.
    handler.addFilter(lambda record: not record.name.startswith(("httpx", "httpcore")))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def _redis_dump(url: str) -> str:
    client = redis.Redis.from_url(url, decode_responses=True)
    parts: list[str] = []
    for key in client.scan_iter("*"):
        parts.append(key)
        kind = client.type(key)
        value: Any
        if kind == "hash":
            value = client.hgetall(key)
        elif kind == "stream":
            value = client.xrange(key)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1)
        else:
            value = client.get(key)
        parts.append(repr(value))
    client.close()
    return "\n".join(parts)


def test_nothing_personal_in_clear_anywhere(
    orch_settings: Settings, redis_server: RedisServer, redis_url: str, kube: KubeAPI, namespace: str,
    captured_logs: io.StringIO, orch_env: dict[str, str],
) -> None:
    from kubernetes import client as kclient

    api = kclient.CustomObjectsApi(kube.api_client())
    line = next(d for d in yaml.safe_load_all((ROOT / "examples/hotelline.yaml").read_text()) if d and d["kind"] == "HotelLine")
    line["metadata"]["namespace"] = namespace
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "hotellines", line)
    room = f"{contract.room_prefix(namespace, 'lindenhof-main')}_{NUMBER}_pR1v"
    identity = f"sip_{NUMBER}"
    with run_app(create_app(orch_settings, sink=KubeSessions(kube.api_client()))) as server, \
            httpx.Client(base_url=server.url, timeout=30) as c:
        joined = livekit_event("participant_joined", room, event_id="EV_p1", identity=identity,
                               attributes={"sip.phoneNumber": NUMBER,
                                           contract.ATTRIBUTE_LINE: contract.line_key(namespace, "lindenhof-main")})
        assert post_livekit(c, joined, sign_livekit(joined)).status_code == 200
        for payload in (
            {"event_type": "agent_ready", "call_sid": room, "data": {"room_name": room, "hotel_id": "hotel-lindenhof"}},
            {"event_type": "call_started", "call_sid": room, "data": {"participant_sid": "PA_x", "is_sip": True}},
        ):
            assert c.post("/v1/livekit/webhook", json=payload, headers=auth()).status_code == 200
        for i, sentence in enumerate(SENTENCES):
            r = c.post("/v1/livekit/transcription", headers=auth(), json={
                "call_sid": room, "text": sentence, "language": ["en", "de", "fr"][i], "confidence": 0.9,
                "is_final": True})
            assert r.status_code == 200
        # bad input that quotes personal data must not echo it into logs either
        c.post("/v1/livekit/transcription", headers=auth(), json={"call_sid": room, "text": SENTENCES[0], "language": 7})
        c.post("/v1/livekit/webhook", headers=auth(), content=f'{{"call_sid": "{room}", oops'.encode())
        left = livekit_event("participant_left", room, event_id="EV_p2", identity=identity)
        assert post_livekit(c, left, sign_livekit(left)).status_code == 200
        state = c.get(f"/v1/calls/{room}", headers=auth())
        assert state.json()["phase"] == "Ended" and state.json()["turns"] == 3
        deadline = time.monotonic() + 20
        while not api.list_namespaced_custom_object(GROUP, VERSION, namespace, "voicesessions")["items"]:
            assert time.monotonic() < deadline, "VoiceSession was not created"
            time.sleep(0.05)  # polling interval
        sessions = yaml.safe_dump(api.list_namespaced_custom_object(GROUP, VERSION, namespace, "voicesessions"))
        api_response = state.text

    redis.Redis.from_url(redis_url).bgrewriteaof()
    aof = "\n".join(p.read_bytes().decode("utf-8", "replace") for p in Path(redis_server.workdir).rglob("*.aof*"))
    places = {
        "redis": _redis_dump(redis_url),
        "redis append-only file": aof,
        "logs": captured_logs.getvalue(),
        "VoiceSessions": sessions,
        "GET /v1/calls": api_response,
    }
    assert "call_transition" in places["logs"], "the audit log was not captured"
    assert "sealedCallRef" in sessions
    needles = [NUMBER, NUMBER.lstrip("+"), NUMBER[3:], room, identity, *SENTENCES,
               *(s.split()[3] for s in SENTENCES)]
    secret_values = [orch_settings.agent_token, LIVEKIT_SECRET, orch_env["VOICEHIVE_PII_KEY"],
                     orch_env["VOICEHIVE_TRANSCRIPT_KEY"]]
    for place, text in places.items():
        for needle in needles + secret_values:
            assert needle not in text, f"{needle!r} found in clear in {place}"
