"""LiveKit server webhooks (signed JWT) and VoiceSession creation through the Kubernetes API.

The webhook signature is made by livekit-api's AccessToken and checked by its WebhookReceiver;
VoiceSessions are created in KMock (or the rig's kube-apiserver) over a real socket.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fixtures.kube import KubeAPI
from tests.orchestrator.helpers import (
    LIVEKIT_KEY,
    RunningServer,
    auth,
    livekit_event,
    post_livekit,
    run_app,
    sign_livekit,
)
from voicehive import contract
from voicehive.api.models import GROUP, VERSION
from voicehive_orchestrator.app import create_app
from voicehive_orchestrator.sessions import KubeSessions
from voicehive_orchestrator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CALLER = "+4915799912345"
IDENTITY = f"sip_{CALLER}"


def _room(namespace: str, line: str = "lindenhof-main") -> str:
    return f"{contract.room_prefix(namespace, line)}_{CALLER}_Qw3rTy"


def _joined(namespace: str, event_id: str = "EV_join", attributes: bool = True) -> str:
    attrs = {"sip.phoneNumber": CALLER}
    if attributes:
        attrs[contract.ATTRIBUTE_LINE] = contract.line_key(namespace, "lindenhof-main")
    return livekit_event("participant_joined", _room(namespace), event_id=event_id, identity=IDENTITY,
                         attributes=attrs)


def _wait_for(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)  # polling interval


def _create_line(kube: KubeAPI, namespace: str) -> dict[str, Any]:
    from kubernetes import client

    docs = [d for d in yaml.safe_load_all((ROOT / "examples/hotelline.yaml").read_text()) if d]
    line = next(d for d in docs if d["kind"] == "HotelLine")
    line["metadata"]["namespace"] = namespace
    api = client.CustomObjectsApi(kube.api_client())
    created: dict[str, Any] = api.create_namespaced_custom_object(GROUP, VERSION, namespace, "hotellines", line)
    return created


def _sessions(kube: KubeAPI, namespace: str) -> list[dict[str, Any]]:
    from kubernetes import client

    api = client.CustomObjectsApi(kube.api_client())
    items: list[dict[str, Any]] = api.list_namespaced_custom_object(GROUP, VERSION, namespace, "voicesessions")["items"]
    return items


@pytest.fixture
def kube_server(orch_settings: Settings, kube: KubeAPI) -> Iterator[RunningServer]:
    with run_app(create_app(orch_settings, sink=KubeSessions(kube.api_client()))) as server:
        yield server


def test_forged_unsigned_and_tampered_webhooks_are_401(client: httpx.Client) -> None:
    body = _joined("hotels")
    assert post_livekit(client, body, None).status_code == 401
    assert post_livekit(client, body, "not-a-jwt").status_code == 401
    forged = sign_livekit(body, LIVEKIT_KEY, "some-other-secret-that-is-long-enough")
    assert post_livekit(client, body, forged).status_code == 401
    wrong_key = sign_livekit(body, "APIother")
    assert post_livekit(client, body, wrong_key).status_code == 401
    tampered = body.replace("EV_join", "EV_evil")
    r = post_livekit(client, tampered, sign_livekit(body))
    assert r.status_code == 401 and "hash" in r.json()["detail"]
    from livekit import api as lkapi

    no_hash = lkapi.AccessToken(LIVEKIT_KEY, "test-livekit-secret-0123456789abcdefghijkl").to_jwt()
    assert post_livekit(client, body, no_hash).status_code == 401
    # nothing of it was stored
    assert client.get(f"/v1/calls/{_room('hotels')}", headers=auth()).status_code == 404


def test_signed_webhooks_drive_the_call(client: httpx.Client) -> None:
    body = _joined("hotels")
    r = post_livekit(client, body, sign_livekit(body))
    assert r.status_code == 200 and r.json()["phase"] == "Pending", r.text
    again = post_livekit(client, body, sign_livekit(body))
    assert again.json()["status"] == "duplicate"
    other_room = livekit_event("room_finished", "someone-elses-room", event_id="EV_x")
    assert post_livekit(client, other_room, sign_livekit(other_room)).json()["status"] == "ignored"
    left = livekit_event("participant_left", _room("hotels"), event_id="EV_left", identity=IDENTITY)
    r = post_livekit(client, left, sign_livekit(left))
    assert r.json()["phase"] == "Ended"
    state = client.get(f"/v1/calls/{_room('hotels')}", headers=auth()).json()
    assert state["end_reason"] == "caller_hangup" and state["line"] == "lindenhof-main"
    ready = client.get("/readyz").json()
    assert ready["pending_voicesessions"] == 0  # an ended call needs no VoiceSession any more


def test_sip_join_creates_one_voicesession(kube_server: RunningServer, kube: KubeAPI, namespace: str) -> None:
    line = _create_line(kube, namespace)
    with httpx.Client(base_url=kube_server.url, timeout=30) as c:
        body = _joined(namespace)
        for _ in range(3):
            assert post_livekit(c, body, sign_livekit(body)).status_code == 200
        # a second delivery with a new id for the same room: still one VoiceSession
        body2 = _joined(namespace, event_id="EV_join_again")
        assert post_livekit(c, body2, sign_livekit(body2)).status_code == 200
        sessions = _wait_for(lambda: _sessions(kube, namespace))
        assert len(sessions) == 1
        vs = sessions[0]
        assert vs["metadata"]["ownerReferences"][0]["uid"] == line["metadata"]["uid"]
        assert vs["metadata"]["labels"][contract.LABEL_LINE] == "lindenhof-main"
        assert vs["spec"]["lineRef"] == {"name": "lindenhof-main"}
        text = yaml.safe_dump(vs)
        assert CALLER not in text and CALLER.lstrip("+") not in text and _room(namespace) not in text
        orch = kube_server.app.state.orch
        secret = orch.settings.privacy.open_call_ref(vs["spec"]["sealedCallRef"])
        assert secret.room == _room(namespace) and secret.participant_identity == IDENTITY
        assert vs["spec"]["callerHash"] == orch.settings.privacy.hasher.phone(CALLER)
        _wait_for(lambda: c.get("/readyz").json()["pending_voicesessions"] == 0)
        finished = livekit_event("room_finished", _room(namespace), event_id="EV_fin")
        assert post_livekit(c, finished, sign_livekit(finished)).json()["phase"] == "Ended"
        _wait_for(lambda: (_sessions(kube, namespace)[0].get("status") or {}).get("phase") == "Ended")


def test_unreachable_kube_queues_and_retries(orch_settings: Settings, kube: KubeAPI, namespace: str) -> None:
    """No call is lost while the Kubernetes API is down: the request waits in Redis."""
    import kubernetes

    config = kubernetes.client.Configuration()
    config.host = "http://127.0.0.1:9"  # discard port: connection refused
    config.retries = 0
    down = KubeSessions(kubernetes.client.ApiClient(config), timeout_s=1)
    _create_line(kube, namespace)
    with run_app(create_app(orch_settings, sink=down)) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        body = _joined(namespace)
        assert post_livekit(c, body, sign_livekit(body)).status_code == 200
        ready = _wait_for(lambda: (r := c.get("/readyz").json())["kubernetes"] != "ok" and r)
        assert ready["status"] == "ready" and ready["pending_voicesessions"] == 1
        assert any("kubernetes: unreachable" in d for d in ready["degraded"])
        # the API is back: the background retry creates the VoiceSession exactly once
        # (both the sink and its line listing: in production they share one client)
        up = KubeSessions(kube.api_client())
        server.app.state.orch.coordinator.sink = up
        server.app.state.orch.coordinator._list_lines = up.list_lines
        assert len(_wait_for(lambda: _sessions(kube, namespace))) == 1
        _wait_for(lambda: c.get("/readyz").json()["pending_voicesessions"] == 0)
        assert c.get("/readyz").json()["kubernetes"] == "ok"
        # the API goes away again while the call ends: the end is queued and written later
        coordinator = server.app.state.orch.coordinator
        coordinator.sink = down
        finished = livekit_event("room_finished", _room(namespace), event_id="EV_fin2")
        assert post_livekit(c, finished, sign_livekit(finished)).json()["phase"] == "Ended"
        assert len(server.call(coordinator.store.session_ends())) == 1
        coordinator.sink = KubeSessions(kube.api_client())
        _wait_for(lambda: (_sessions(kube, namespace)[0].get("status") or {}).get("phase") == "Ended")
        _wait_for(lambda: not server.call(coordinator.store.session_ends()))
