"""The caller hash of a real SIP call (issue 10, review defect 1).

LiveKit omits ``sip.phoneNumber`` when a dispatch rule sets ``hide_phone_number``
(livekit/protocol ``livekit/attrs.go``), and a caller may withhold their number. The rule the
operator creates must deliver the number (the orchestrator hashes it on arrival), and a call
without a number must still get its VoiceSession, under the one documented anonymous caller
hash. Signed LiveKit webhooks over a real socket, the real redis-server, VoiceSessions in the
kube fixture.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis
import yaml

from tests.fixtures.kube import KubeAPI
from tests.orchestrator.helpers import RunningServer, livekit_event, post_livekit, run_app, sign_livekit
from tests.orchestrator.test_livekit_sessions import _create_line, _sessions, _wait_for
from voicehive import contract
from voicehive_operator import builders
from voicehive_orchestrator.app import create_app
from voicehive_orchestrator.sessions import KubeSessions
from voicehive_orchestrator.settings import Settings

NUMBER = "+4915799954321"
LINE = "lindenhof-main"


@pytest.fixture
def kube_server(orch_settings: Settings, kube: KubeAPI) -> Iterator[RunningServer]:
    with run_app(create_app(orch_settings, sink=KubeSessions(kube.api_client()))) as server:
        yield server


def test_the_dispatch_rule_delivers_the_caller_number() -> None:
    rule = builders.dispatch_rule("hotels", LINE, "ST_x")
    assert rule.hide_phone_number is False  # else LiveKit omits sip.phoneNumber: no caller hash


def _join(namespace: str, room: str, identity: str, number: str | None) -> str:
    attributes = {contract.ATTRIBUTE_LINE: contract.line_key(namespace, LINE), "sip.callID": "SCL_test"}
    if number is not None:
        attributes["sip.phoneNumber"] = number
    return livekit_event("participant_joined", room, event_id=f"EV_{identity}", identity=identity,
                         attributes=attributes)


@pytest.mark.parametrize("number", [NUMBER, None], ids=["number", "withheld"])
def test_a_sip_join_gets_a_voicesession_with_or_without_a_number(
    kube_server: RunningServer, kube: KubeAPI, namespace: str, redis_url: str, number: str | None
) -> None:
    _create_line(kube, namespace)
    room = f"{contract.room_prefix(namespace, LINE)}_{number or 'anonymous'}_Zx81"
    identity = f"sip_{number or 'anonymous'}"
    with httpx.Client(base_url=kube_server.url, timeout=30) as c:
        body = _join(namespace, room, identity, number)
        r = post_livekit(c, body, sign_livekit(body))
        assert r.status_code == 200 and r.json()["status"] == "processed", r.text
        sessions = _wait_for(lambda: _sessions(kube, namespace))
    assert len(sessions) == 1
    hasher = kube_server.app.state.orch.settings.privacy.hasher
    expected = hasher.phone(number) if number else hasher.anonymous_caller()
    assert sessions[0]["spec"]["callerHash"] == expected
    if number is None:  # the anonymous hash is no caller's hash
        assert expected not in {hasher.phone(n) for n in ("anonymous", "", "0")}
    # the number never lands in clear: not in the VoiceSession, not anywhere in Redis
    assert NUMBER.lstrip("+") not in yaml.safe_dump(sessions[0])
    client = redis.Redis.from_url(redis_url)
    try:
        dump = b"".join(client.dump(k) or b"" for k in client.scan_iter("*"))
        assert b"".join(client.scan_iter("*")) and NUMBER.lstrip("+").encode() not in dump
    finally:
        client.close()
