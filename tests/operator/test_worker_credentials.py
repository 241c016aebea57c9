"""A worker Pod holds only what its one call needs (issue 11), checked on the pure builders.

Per-line keys (HKDF of the master keys) in a per-line Secret; the Redis URL by reference; a
room-scoped LiveKit token sealed with the line's key; nothing of another line opens.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import jwt
import pytest

from tests.operator.helpers import spec
from voicehive import contract, privacy
from voicehive.api.models import HotelLineSpec
from voicehive_operator import builders, tokens
from voicehive_operator.settings import OperatorSettings
from voicehive_worker.credentials import NoRoomToken, room_access

LK_KEY, ROOM = "APIworker", "vh-hotels-lindenhof-_+4930123456_abc"


def settings() -> OperatorSettings:
    """Master keys and a Redis password generated now (never committed)."""
    return OperatorSettings(
        livekit_api_key=LK_KEY, livekit_api_secret=privacy.generate_key_b64(),
        pii_key=base64.b64decode(privacy.generate_key_b64()),
        transcript_key=base64.b64decode(privacy.generate_key_b64()),
        redis_url=f"rediss://voicehive:{privacy.generate_key_b64()}@redis.voicehive.svc:6380/0",
    )


def line() -> HotelLineSpec:
    return HotelLineSpec.model_validate(spec())


def secret_values(s: OperatorSettings) -> list[str]:
    assert s.pii_key and s.transcript_key and s.redis_url
    return [s.livekit_api_secret, base64.b64encode(s.pii_key).decode(), base64.b64encode(s.transcript_key).decode(),
            s.redis_url, s.redis_url.split("@")[0].split(":")[-1]]


def scan_for_secrets(obj: Any, values: list[str]) -> list[str]:
    """Every secret value, or URL with a password, found anywhere in ``obj`` (as JSON text)."""
    text = json.dumps(obj)
    found = [v[:6] + "…" for v in values if v and v in text]
    found += re.findall(r"[a-z+]+://[^/\s\"@:]*:[^/\s\"@]+@", text)  # scheme://user:password@
    return found


def test_worker_pod_holds_no_secret_value_and_no_master_credential() -> None:
    s = settings()
    pod = builders.worker_pod(namespace="hotels", line_name="lindenhof", line_uid="u1", spec=line(), settings=s)
    assert scan_for_secrets(pod, secret_values(s)) == []
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert not {contract.ENV_LIVEKIT_API_KEY, contract.ENV_LIVEKIT_API_SECRET, contract.ENV_AGENT_TOKEN} & set(env)
    line_secret = builders.line_secret_name("lindenhof")
    for name, key in ((contract.ENV_TRANSCRIPT_KEY, builders.LINE_SECRET_TRANSCRIPT_KEY),
                      (contract.ENV_LINE_TOKEN_KEY, builders.LINE_SECRET_TOKEN_KEY),
                      (contract.ENV_REDIS_URL, builders.LINE_SECRET_REDIS_URL)):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": line_secret, "key": key}, name


def test_line_secret_holds_per_line_keys_that_differ_between_lines() -> None:
    s = settings()
    a = builders.line_secret("hotels", "lindenhof", "u1", s)
    b = builders.line_secret("resorts", "lindenhof", "u2", s)
    assert a["metadata"]["ownerReferences"][0]["kind"] == "HotelLine"
    decoded = {k: base64.b64decode(v).decode() for k, v in a["data"].items()}
    assert decoded[builders.LINE_SECRET_REDIS_URL] == s.redis_url
    assert s.transcript_key is not None
    assert base64.b64decode(decoded[builders.LINE_SECRET_TRANSCRIPT_KEY]) == privacy.derive_line_key(
        s.transcript_key, "hotels", "lindenhof", "transcript")
    # the recording key is the one `voicehive recording key` hands the line's staff
    from voicehive_worker.recording import recording_key

    assert base64.b64decode(decoded[builders.LINE_SECRET_RECORDING_KEY]) == recording_key(
        s.transcript_key, "hotels", "lindenhof")
    # The master keys never leave the operator; another namespace's line of the same name differs.
    assert scan_for_secrets(a, secret_values(s)[:3]) == []
    for key in (builders.LINE_SECRET_TRANSCRIPT_KEY, builders.LINE_SECRET_RECORDING_KEY, builders.LINE_SECRET_TOKEN_KEY):
        assert a["data"][key] != b["data"][key]


def _sealed(s: OperatorSettings, namespace: str = "hotels", session: str = "vs-1") -> str:
    assert s.pii_key is not None
    call_ref = privacy.seal_call_ref(privacy.call_ref_sealer(s.pii_key), ROOM, "sip_caller")
    sealed = tokens.sealed_room_token(s, namespace=namespace, line="lindenhof", session=session, pod="lindenhof-w-1",
                                      sealed_call_ref=call_ref, spec=line())
    assert sealed is not None
    return sealed


def _worker_env(s: OperatorSettings, namespace: str, name: str) -> dict[str, str]:
    data = builders.line_secret_data(namespace, name, s)
    return {contract.ENV_LINE_TOKEN_KEY: data[builders.LINE_SECRET_TOKEN_KEY]}


def test_room_token_is_sealed_per_line_and_grants_one_room_for_one_call() -> None:
    s = settings()
    sealed = _sealed(s)
    session = {"metadata": {"namespace": "hotels", "name": "vs-1",
                            "annotations": {contract.ANNOTATION_SEALED_TOKEN: sealed}}}
    access = room_access(_worker_env(s, "hotels", "lindenhof"), session, room=ROOM, pod="lindenhof-w-1")
    claims = jwt.decode(access.token, s.livekit_api_secret, algorithms=["HS256"], options={"verify_aud": False})
    assert claims["video"]["room"] == ROOM and claims["video"]["roomJoin"] is True
    assert claims["video"].get("roomAdmin") is True  # of this room only: remove the caller at hang-up
    assert not claims["video"].get("roomCreate") and not claims["video"].get("roomList")
    assert "sip" not in claims  # no SIP grant: with it a worker could place calls anywhere
    assert claims["sub"] == contract.AGENT_IDENTITY_PREFIX + "lindenhof-w-1"
    spec_workers = line().workers
    assert claims["exp"] - claims["nbf"] <= (spec_workers.start_timeout_seconds + spec_workers.max_call_duration_seconds
                                             + builders.TERMINATION_MARGIN_S)
    assert access.api_key is None and access.api_secret is None
    # Another line's worker (same name, other namespace) cannot open it, nor can it be moved to another session.
    with pytest.raises(NoRoomToken):
        room_access(_worker_env(s, "resorts", "lindenhof"), session, room=ROOM, pod="x")
    moved = {"metadata": {**session["metadata"], "name": "vs-2"}}
    with pytest.raises(NoRoomToken):
        room_access(_worker_env(s, "hotels", "lindenhof"), moved, room=ROOM, pod="x")


def test_no_token_without_the_operator_keys_and_no_silent_fallback() -> None:
    s = settings().replace(pii_key=None)
    assert tokens.sealed_room_token(s, namespace="hotels", line="lindenhof", session="vs", pod="p",
                                    sealed_call_ref="x", spec=line()) is None
    with pytest.raises(NoRoomToken, match=r"no voicehive\.io/sealed-livekit-token"):
        room_access({}, {"metadata": {}}, room=ROOM, pod="p")


def test_a_worker_cannot_open_another_lines_transcripts() -> None:
    """What a worker seals with its line's transcript key (the Privacy it loads from its env) does
    not open with another line's key, nor with the master key."""
    s = settings()
    ours = builders.line_secret_data("hotels", "lindenhof", s)
    theirs = builders.line_secret_data("hotels", "seeblick", s)

    def sealer(data: dict[str, str]) -> privacy.Sealer:
        return privacy.Sealer(privacy.decode_key("k", data[builders.LINE_SECRET_TRANSCRIPT_KEY]))

    sealed = sealer(theirs).seal_text("I'd like to book room 12 for Friday", context="c-0123456789abcdef0123")
    assert sealer(theirs).open_text(sealed, context="c-0123456789abcdef0123").startswith("I'd like")
    assert s.transcript_key is not None
    for other in (sealer(ours), privacy.Sealer(s.transcript_key)):
        with pytest.raises(privacy.SealError):
            other.open_text(sealed, context="c-0123456789abcdef0123")


def test_a_recording_line_gives_its_workers_the_line_recording_key_by_reference() -> None:
    """Not the master transcript key: the line's recording key, from the line's Secret."""
    recorded = HotelLineSpec.model_validate({**spec(), "recording": {
        "enabled": True, "bucket": "hotel-recordings", "region": "eu-central-1",
        "endpoint": "https://s3.eu-central-1.amazonaws.com",
        "accessKeyIdSecretRef": {"name": "rec", "key": "id"},
        "secretAccessKeySecretRef": {"name": "rec", "key": "secret"}}})
    env = {e["name"]: e for e in builders.worker_env("hotels", "lindenhof", recorded, settings())}
    assert env[contract.ENV_RECORDING_LINE_KEY]["valueFrom"]["secretKeyRef"] == {
        "name": builders.line_secret_name("lindenhof"), "key": builders.LINE_SECRET_RECORDING_KEY}
    plain = {e["name"] for e in builders.worker_env("hotels", "lindenhof", line(), settings())}
    assert contract.ENV_RECORDING_LINE_KEY not in plain  # a line that records nothing gets no key
