"""Call recording without a call: sealing, the timeline, consent words, the bucket layout and
lifecycle rules, against moto's S3 server over TLS on loopback (boto3, real sockets)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import secrets
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from pydantic import ValidationError

from tests.fixtures.s3 import S3Server
from tests.worker.callrig import line_spec
from voicehive import recording_store as store
from voicehive.privacy import SealError, derive_line_key
from voicehive_worker.recording import (
    SAMPLE_RATE,
    CallRecording,
    RecordingTarget,
    Timeline,
    is_objection,
    read_recording,
    recording_key,
    recording_notice,
)

CALLER_HASH = "ab" * 32


def tone(seconds: float, freq: float, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (np.sin(2 * np.pi * freq * t) * level * 32767).astype("<i2")


def frames(samples: np.ndarray, frame_ms: int = 20) -> list[rtc.AudioFrame]:
    step = SAMPLE_RATE * frame_ms // 1000
    return [rtc.AudioFrame(samples[i : i + step].tobytes(), SAMPLE_RATE, 1, step)
            for i in range(0, len(samples) - step + 1, step)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def recording_block(s3: S3Server, bucket: str, **overrides: Any) -> dict[str, Any]:
    block = {"enabled": True, "bucket": bucket, "region": s3.region, "endpoint": s3.endpoint,
             "accessKeyIdSecretRef": {"name": "rec", "key": "id"},
             "secretAccessKeySecretRef": {"name": "rec", "key": "secret"}}
    block.update(overrides)
    return block


async def poll(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def _target(session: str | None = None, days: int = 7) -> RecordingTarget:
    return RecordingTarget("hotels", "lindenhof-main", session or f"vs-{secrets.token_hex(10)}", CALLER_HASH,
                           dt.datetime.now(dt.UTC) + dt.timedelta(days=days))


# --------------------------------------------------------------------------- pure parts


def test_line_keys_are_derived_per_line_and_purpose() -> None:
    master = os.urandom(32)
    a = derive_line_key(master, "hotels", "lindenhof-main")
    assert a == derive_line_key(master, "hotels", "lindenhof-main") and len(a) == 32
    others = {derive_line_key(master, "hotels", "lindenhof-spa"), derive_line_key(master, "other", "lindenhof-main"),
              derive_line_key(master, "hotels", "lindenhof-main", purpose="recording"),
              derive_line_key(os.urandom(32), "hotels", "lindenhof-main")}
    assert a not in others and len(others) == 4
    assert recording_key(master, "hotels", "lindenhof-main") == derive_line_key(
        master, "hotels", "lindenhof-main", purpose="recording")


def test_timeline_places_the_agent_when_played_and_the_caller_as_it_arrives() -> None:
    timeline = Timeline(t0=100.0)
    caller = tone(2.0, 300)
    for i, frame in enumerate(frames(caller)):
        timeline.add_caller(frame, 100.0 + (i + 1) * 0.02 + (0.003 if i % 2 else 0.0))  # arrival jitter
    timeline.add_agent(100.5, tone(1.0, 800))
    cut = timeline.cut(timeline.at(103.0))
    assert cut is not None and cut[0] == 0
    stereo = np.frombuffer(cut[1], dtype="<i2").reshape(-1, 2)
    assert len(stereo) == 3 * SAMPLE_RATE
    assert np.array_equal(stereo[: len(caller), 0], caller)  # contiguous despite jitter
    agent = stereo[:, 1]
    assert not agent[: SAMPLE_RATE // 2 - 10].any() and not agent[int(1.5 * SAMPLE_RATE) + 10 :].any()
    assert np.array_equal(agent[SAMPLE_RATE // 2 : int(1.5 * SAMPLE_RATE)], tone(1.0, 800))
    assert timeline.cut(timeline.at(103.0)) is None  # nothing twice


@pytest.mark.parametrize(("text", "objects"), [
    ("Please do not record this call", True),
    ("don't record me", True),
    ("I object to the recording", True),
    ("Bitte nicht aufnehmen", True),
    ("Ich widerspreche der Aufzeichnung", True),
    ("Merci de ne pas enregistrer", True),
    ("no grabar por favor", True),
    ("Per favore non registrare", True),
    ("I would like to book a double room", False),
    ("Do you have a record of my booking", False),
    ("Ich möchte ein Zimmer buchen", False),
])
def test_objection_words(text: str, objects: bool) -> None:
    assert is_objection(text) is objects


def test_the_notice_is_in_the_callers_language_and_names_the_key() -> None:
    notices = {lang: recording_notice(lang, "7") for lang in ("en", "de-DE", "fr", "es", "it")}
    assert len(set(notices.values())) == 5
    assert all("7" in n for n in notices.values())
    assert "aufgezeichnet" in notices["de-DE"] and "enregistré" in notices["fr"]
    assert recording_notice("pl", "9") == recording_notice("en", "9")


def test_the_recording_spec_is_off_by_default_eu_only_and_keeps_0_for_the_front_desk(s3_server: S3Server) -> None:
    assert line_spec().recording is None
    spec = line_spec(recording=recording_block(s3_server, "b-ok"))
    assert spec.recording is not None and spec.recording.objection_key == "9"
    assert not line_spec(recording={**recording_block(s3_server, "b-ok"), "enabled": False}).recording.enabled  # type: ignore[union-attr]
    for bad, field in (({"objectionKey": "0"}, "objectionKey"), ({"region": "eu-west-2"}, "region"),
                       ({"endpoint": "http://127.0.0.1:9000"}, "endpoint"), ({"bucket": "No_Such"}, "bucket")):
        with pytest.raises(ValidationError, match=field if field != "objectionKey" else "objectionKey cannot be 0"):
            line_spec(recording={**recording_block(s3_server, "b-ok"), **bad})


def test_worker_pods_get_the_bucket_credentials_as_secret_references(s3_server: S3Server) -> None:
    from voicehive_operator import builders
    from voicehive_operator.settings import OperatorSettings

    spec = line_spec(recording=recording_block(s3_server, "b-ok"))
    env = {e["name"]: e for e in builders.worker_env("hotels", "lindenhof-main", spec, OperatorSettings())}
    assert env[store.ENV_ACCESS_KEY_ID]["valueFrom"] == {"secretKeyRef": {"name": "rec", "key": "id"}}
    assert env[store.ENV_SECRET_ACCESS_KEY]["valueFrom"] == {"secretKeyRef": {"name": "rec", "key": "secret"}}
    plain = builders.worker_env("hotels", "lindenhof-main", line_spec(), OperatorSettings())
    assert store.ENV_ACCESS_KEY_ID not in {e["name"] for e in plain}


# --------------------------------------------------------------------------- against the S3 server


async def test_a_recording_is_sealed_per_chunk_and_opens_only_with_the_line_key(s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    client = s3_server.client()
    master = os.urandom(32)
    clock = FakeClock()
    target = _target()
    statuses: list[dict[str, Any]] = []

    async def report(status: dict[str, Any]) -> None:
        statuses.append(status)

    rec = CallRecording(client, bucket, target, recording_key(master, target.namespace, target.line),
                        report=report, clock=clock)
    await rec.start()
    caller = tone(12.0, 300)
    for frame in frames(caller):
        clock.now += 0.02
        rec.caller_frame(frame)
    rec.agent_played(rec.timeline.t0 + 2.0, tone(3.0, 800))
    clock.now += 1.0
    chunk_keys = await poll(lambda: [k for k in s3_server.keys(bucket, target.prefix) if "chunk-" in k],
                            "chunks uploaded while the call runs")
    assert statuses[0]["state"] == "Recording" and statuses[0]["exists"] is True
    await rec.finish()
    assert statuses[-1]["state"] == "Complete" and statuses[-1]["seconds"] >= 12.0
    assert dt.datetime.fromisoformat(statuses[-1]["expiresAt"].replace("Z", "+00:00")) > dt.datetime.now(dt.UTC)

    keys = s3_server.keys(bucket, target.prefix)
    assert target.prefix + store.HEADER in keys and target.prefix + store.END in keys
    assert len([k for k in keys if "chunk-" in k]) == 3 and chunk_keys  # 12.x s in 5 s chunks
    opened = read_recording(client, bucket, target.namespace, target.line, target.session,
                            recording_key(master, target.namespace, target.line))
    stereo = np.frombuffer(opened.pcm, dtype="<i2").reshape(-1, 2)
    assert opened.complete and opened.chunks == 3
    assert np.array_equal(stereo[: len(caller), 0], caller)
    assert np.array_equal(stereo[2 * SAMPLE_RATE : 5 * SAMPLE_RATE, 1], tone(3.0, 800))
    assert not stereo[: 2 * SAMPLE_RATE, 1].any()

    # without the line's key: nothing opens, and no object holds audio or the data key in clear
    for wrong in (recording_key(os.urandom(32), target.namespace, target.line),
                  recording_key(master, target.namespace, "another-line")):
        with pytest.raises(SealError):
            read_recording(client, bucket, target.namespace, target.line, target.session, wrong)
    for key in keys:
        obj = client.get_object(Bucket=bucket, Key=key)
        body = obj["Body"].read()
        assert caller[SAMPLE_RATE : SAMPLE_RATE + 400].tobytes() not in body
        assert set(obj["Metadata"]) == {store.META_EXPIRES, store.META_CALLER}
        assert obj["Metadata"][store.META_CALLER] == CALLER_HASH
    header = json.loads(client.get_object(Bucket=bucket, Key=target.prefix + store.HEADER)["Body"].read())
    assert set(header) == {"version", "format", "startedAt", "wrappedKey"}


async def test_an_objection_deletes_what_was_already_uploaded(s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    clock = FakeClock()
    target = _target()
    statuses: list[dict[str, Any]] = []

    async def report(status: dict[str, Any]) -> None:
        statuses.append(status)

    rec = CallRecording(s3_server.client(), bucket, target, os.urandom(32), report=report, clock=clock)
    await rec.start()
    for frame in frames(tone(11.0, 300)):
        clock.now += 0.02
        rec.caller_frame(frame)
    await poll(lambda: len([k for k in s3_server.keys(bucket, target.prefix) if "chunk-" in k]) >= 2,
               "two chunks uploaded")
    assert await rec.object() is True
    assert s3_server.keys(bucket, target.prefix) == []
    assert statuses[-1] == {"exists": False, "state": "Objected"}
    for frame in frames(tone(6.0, 300)):  # the call goes on: nothing more is recorded
        clock.now += 0.02
        rec.caller_frame(frame)
    await rec.finish()
    assert await rec.object() is False
    assert s3_server.keys(bucket, target.prefix) == []


def test_the_lifecycle_rule_is_put_restored_and_leaves_other_rules_alone(s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    client = s3_server.client()
    foreign = {"ID": "someone-elses", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 90}}
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [foreign]})
    rule = store.lifecycle_rule("hotels", "lindenhof-main", 7)
    assert store.ensure_lifecycle(client, bucket, rule) is True
    assert store.ensure_lifecycle(client, bucket, rule) is False  # unchanged: no write
    rules = {r["ID"]: r for r in client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules[rule["ID"]]["Expiration"] == {"Days": 7} and "someone-elses" in rules
    assert rules[rule["ID"]]["Filter"]["Prefix"] == "recordings/hotels/lindenhof-main/"
    changed = {**rule, "Expiration": {"Days": 365}}
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [changed, foreign]})
    assert store.ensure_lifecycle(client, bucket, rule) is True
    rules = {r["ID"]: r for r in client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules[rule["ID"]]["Expiration"] == {"Days": 7}


async def test_the_voicesession_status_shows_the_recording_and_its_expiry_never_its_place(
    s3_server: S3Server, kube: Any, namespace: str
) -> None:
    import kubernetes

    from voicehive.api.models import API_VERSION, GROUP, VERSION
    from voicehive_worker.state import CallState, VoiceSessionStatus

    bucket = s3_server.new_bucket()
    target = _target()
    custom = kubernetes.client.CustomObjectsApi(kube.api_client())
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "voicesessions", {
        "apiVersion": API_VERSION, "kind": "VoiceSession", "metadata": {"name": target.session},
        "spec": {"lineRef": {"name": target.line}, "roomHash": "cd" * 32, "callerHash": CALLER_HASH,
                 "sealedCallRef": "v1_" + "A" * 40}})
    state = CallState(manager=None, call_sid="unused", line=target.line, namespace=namespace,  # type: ignore[arg-type]
                      worker_pod="worker-0", status=VoiceSessionStatus(kube.api_client(), namespace, target.session))
    clock = FakeClock()

    async def report(status: dict[str, Any]) -> None:
        await state.report({"recording": status})

    rec = CallRecording(s3_server.client(), bucket, target, os.urandom(32), report=report, clock=clock)
    await rec.start()
    vs: Any = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "voicesessions", target.session)
    assert vs["status"]["recording"]["exists"] is True and vs["status"]["recording"]["state"] == "Recording"
    for frame in frames(tone(2.0, 300)):
        clock.now += 0.02
        rec.caller_frame(frame)
    await rec.finish()
    vs = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "voicesessions", target.session)
    recording = vs["status"]["recording"]
    assert recording["state"] == "Complete" and recording["seconds"] >= 2.0
    assert recording["expiresAt"] == store.rfc3339(target.expires_at)
    assert bucket not in json.dumps(vs) and s3_server.endpoint not in json.dumps(vs)
