"""The seed's webhook contract over a real socket, against the real redis-server and against a
three-master Redis Cluster (every test runs on both: ``orch_env`` below)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.orchestrator.helpers import admin_auth, auth, orchestrator_env

SID = "vh-0123456789-_+4915112345678_AbCd"


@pytest.fixture
def orch_env(call_state_url: str) -> dict[str, str]:
    """The orchestrator unchanged on a single redis-server and on Redis Cluster (only the URL differs)."""
    return orchestrator_env(call_state_url)


def seed_agent_ready(sid: str = SID) -> dict[str, Any]:
    return {"event_type": "agent_ready", "call_sid": sid, "data": {"room_name": sid, "hotel_id": "hotel-berlin"}}


def seed_call_started(sid: str = SID) -> dict[str, Any]:
    return {"event_type": "call_started", "call_sid": sid, "data": {"participant_sid": "PA_1", "is_sip": True}}


def seed_call_ended(sid: str = SID) -> dict[str, Any]:
    return {"event_type": "call_ended", "call_sid": sid, "data": {"reason": "participant_disconnected"}}


def seed_transcription(sid: str = SID) -> dict[str, Any]:
    return {"call_sid": sid, "text": "Hello, I need a room", "language": "en", "confidence": 0.95, "is_final": True}


def test_seed_payloads_work_as_written(client: httpx.Client) -> None:
    for payload, phase in ((seed_agent_ready(), "Starting"), (seed_call_started(), "Active")):
        r = client.post("/v1/livekit/webhook", json=payload, headers=auth())
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "processed" and r.json()["phase"] == phase
    r = client.post("/v1/livekit/transcription", json=seed_transcription(), headers=auth())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "processed" and body["call_sid"] == SID
    assert body["intent_detected"] == "book_room"
    assert 0 < body["intent_confidence"] <= 1
    r = client.post("/v1/livekit/webhook", json=seed_call_ended(), headers=auth())
    assert r.status_code == 200 and r.json()["phase"] == "Ended"

    view = client.get(f"/v1/calls/{SID}", headers=auth())
    assert view.status_code == 200
    state = view.json()
    assert state["phase"] == "Ended" and state["end_reason"] == "caller_hangup"
    assert state["turns"] == 1 and state["intents"] == {"book_room": 1} and state["hotel_id"] == "hotel-berlin"
    assert "4915112345678" not in view.text and SID not in view.text
    by_ref = client.get(f"/v1/calls/by-ref/{state['call_ref']}", headers=auth())
    assert by_ref.status_code == 200 and by_ref.json() == state
    assert client.get("/v1/calls/by-ref/c-00000000000000000000", headers=auth()).status_code == 404
    assert client.get("/v1/calls/by-ref/not-a-ref", headers=auth()).status_code == 422


def _problem(r: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    assert set(body) >= {"error", "detail"}, body
    return body


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{not json", 400, None),
        (b"", 400, None),
        (b"[1, 2]", 422, "body"),
        (json.dumps({"call_sid": SID, "data": {}}).encode(), 422, "event_type"),
        (json.dumps({"event_type": "call_exploded", "call_sid": SID}).encode(), 422, "event_type"),
        (json.dumps({"event_type": "agent_ready", "data": {}}).encode(), 422, "call_sid"),
        (json.dumps({"event_type": "agent_ready", "call_sid": 42}).encode(), 422, "call_sid"),
        (json.dumps({"event_type": "call_started", "call_sid": SID, "data": {"is_sip": "yes"}}).encode(), 422,
         "data.is_sip"),
        (json.dumps({"event_type": "call_ended", "call_sid": SID, "data": {"reason": 7}}).encode(), 422,
         "data.reason"),
        (json.dumps({"event_type": "agent_ready", "call_sid": SID, "data": "x"}).encode(), 422, "data"),
    ],
)
def test_bad_agent_events_are_4xx_naming_the_problem(
    client: httpx.Client, body: bytes, status: int, field: str | None
) -> None:
    r = client.post("/v1/livekit/webhook", content=body, headers={**auth(), "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    problem = _problem(r)
    if field is not None:
        assert field in [e["field"] for e in problem["errors"]], problem


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"text": None}, "text"),
        ({"confidence": "high"}, "confidence"),
        ({"confidence": 1.5}, "confidence"),
        ({"is_final": "true"}, "is_final"),
        ({"language": 5}, "language"),
        ({"call_sid": ""}, "call_sid"),
    ],
)
def test_bad_transcriptions_are_422_naming_the_field(client: httpx.Client, patch: dict[str, Any], field: str) -> None:
    payload = {**seed_transcription(), **patch}
    r = client.post("/v1/livekit/transcription", json=payload, headers=auth())
    assert r.status_code == 422, r.text
    assert field in [e["field"] for e in _problem(r)["errors"]]


def test_missing_field_in_transcription(client: httpx.Client) -> None:
    payload = seed_transcription()
    del payload["is_final"]
    r = client.post("/v1/livekit/transcription", json=payload, headers=auth())
    assert r.status_code == 422
    assert {"field": "is_final", "problem": "Field required"} in _problem(r)["errors"]


def test_oversized_body_is_413(client: httpx.Client) -> None:
    payload = seed_transcription()
    payload["text"] = "x" * (70 * 1024)
    r = client.post("/v1/livekit/transcription", json=payload, headers=auth())
    assert r.status_code == 413 and _problem(r)["error"] == "body_too_large"

    def chunks() -> Any:  # no Content-Length: the limit must hold on the stream too
        for _ in range(100):
            yield b"x" * 1024

    r = client.post("/v1/livekit/webhook", content=chunks(), headers=auth())
    assert r.status_code == 413


def test_unknown_calls_are_404(client: httpx.Client) -> None:
    r = client.post("/v1/livekit/transcription", json=seed_transcription("never-seen"), headers=auth())
    assert r.status_code == 404 and _problem(r)["error"] == "unknown_call"
    r = client.get("/v1/calls/never-seen", headers=auth())
    assert r.status_code == 404 and _problem(r)["error"] == "unknown_call"


@pytest.mark.parametrize("header", [None, "Bearer wrong-token-wrong-token", "Basic dXNlcjpwYXNz", "Bearer"])
def test_agent_writes_need_the_bearer_token(client: httpx.Client, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for path, payload in (("/v1/livekit/webhook", seed_agent_ready()), ("/v1/livekit/transcription", seed_transcription())):
        r = client.post(path, json=payload, headers=headers)
        assert r.status_code == 401 and _problem(r)["error"] == "unauthorized"
    assert client.get(f"/v1/calls/{SID}", headers=auth()).status_code == 404  # nothing was written


def test_health_ready_metrics_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["redis"] == "ok"
    assert any("kubernetes: not configured" in d for d in ready.json()["degraded"])
    client.post("/v1/livekit/webhook", json=seed_agent_ready(), headers=auth())
    client.post("/v1/livekit/webhook", json=seed_agent_ready(), headers=auth())
    metrics = client.get("/metrics").text
    assert 'voicehive_orchestrator_events_total{outcome="applied",type="agent_ready"} 1.0' in metrics
    assert 'voicehive_orchestrator_events_total{outcome="duplicate",type="agent_ready"} 1.0' in metrics
    assert "voicehive_orchestrator_active_calls 1.0" in metrics
    assert "voicehive_orchestrator_handling_seconds_bucket" in metrics
    spec = client.get("/openapi.json").json()
    assert {"/v1/livekit/webhook", "/v1/livekit/transcription", "/v1/calls/{call_sid}"} <= set(spec["paths"])
    assert "AgentEvent" in spec["components"]["schemas"]


def test_erasure_by_caller_number(client: httpx.Client) -> None:
    r = client.post("/v1/erasure", json={"phone_number": "+49 151 12345678"}, headers=admin_auth())
    assert r.status_code == 200 and r.json()["erased_calls"] == 0
    r = client.post("/v1/erasure", json={"caller_hash": "nothex"}, headers=admin_auth())
    assert r.status_code == 422
    r = client.post("/v1/erasure", json={}, headers=admin_auth())
    assert r.status_code == 422


def test_responses_are_counted_by_route_template_never_by_call(client: httpx.Client) -> None:
    """The webhook 5xx alert reads voicehive_orchestrator_http_responses_total; a call id in the
    path (a room name: the caller's number) must never become a label value."""
    client.get(f"/v1/calls/{SID}", headers=auth())
    client.post("/v1/livekit/webhook", json=seed_agent_ready(), headers={})
    metrics = client.get("/metrics").text
    assert 'voicehive_orchestrator_http_responses_total{code="404",handler="/v1/calls/{call_sid}"} 1.0' in metrics
    assert 'voicehive_orchestrator_http_responses_total{code="401",handler="/v1/livekit/webhook"} 1.0' in metrics
    assert SID not in metrics and "4915112345678" not in metrics
