"""Recording retention and erasure by the operator, against moto's S3 server over TLS on loopback:
the bucket lifecycle rule is set and restored, erasure by caller hash deletes that caller's
recordings, and the sweep deletes recordings past their expiry on a shifted clock (moto never
expires objects by itself)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.s3 import S3Server
from tests.operator.conftest import Providers
from tests.operator.helpers import spec, wait_for
from tests.operator.test_sessions import Call, privacy  # noqa: F401 (fixture)
from tests.worker.test_recording_units import FakeClock, frames, recording_block, tone
from voicehive import contract
from voicehive import recording_store as store
from voicehive.contract import HOTELLINES, VOICESESSIONS
from voicehive.privacy import Privacy
from voicehive_operator.kube import Kube
from voicehive_worker.recording import CallRecording, RecordingTarget

LINE = "lindenhof"
REC_SECRET = "recording-keys"


async def _record(s3: S3Server, bucket: str, namespace: str, session: str, caller_hash: str) -> str:
    """One short recording as a worker leaves it (7-day expiry); returns its prefix."""
    import datetime as dt

    clock = FakeClock()
    target = RecordingTarget(namespace, LINE, session, caller_hash, dt.datetime.now(dt.UTC) + dt.timedelta(days=7))
    rec = CallRecording(s3.client(), bucket, target, os.urandom(32), clock=clock)
    await rec.start()
    for frame in frames(tone(1.5, 300)):
        clock.now += 0.02
        rec.caller_frame(frame)
    await rec.finish()
    return target.prefix


def _ca_bundle(directory: Path, *ca_files: str) -> Path:
    """One CA file the operator trusts for the providers' fakes and the S3 server."""
    bundle = directory / "ca-bundle.pem"
    bundle.write_text("".join(Path(f).read_text() for f in ca_files))
    return bundle


def _rules(s3: S3Server, bucket: str) -> list[dict[str, Any]]:
    try:
        return list(s3.client().get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules") or [])
    except Exception:
        return []


async def test_lifecycle_rule_erasure_and_retention_sweep_of_recordings(
    start_operator: Any, hotelline: Any, kube_client: Kube, namespace: str, providers: Providers,
    line_secret: dict[str, str], privacy: Privacy, s3_server: S3Server, tmp_path: Path,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    bundle = _ca_bundle(tmp_path, providers.ca_file, s3_server.ca_file)
    await asyncio.to_thread(kube_client.core.create_namespaced_secret, namespace, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": REC_SECRET, "namespace": namespace},
        "data": {"id": base64.b64encode(s3_server.access_key_id.encode()).decode(),
                 "secret": base64.b64encode(s3_server.secret_access_key.encode()).decode()}})
    bucket = s3_server.new_bucket()
    caller_a, caller_b = secrets.token_hex(32), secrets.token_hex(32)
    kept = Call(privacy, LINE)
    prefixes = {name: await _record(s3_server, bucket, namespace, name, caller)
                for name, caller in (("vs-a1", caller_a), ("vs-a2", caller_a), (kept.name, caller_b))}
    await kube_client.create_custom(namespace, VOICESESSIONS, kept.body(namespace))
    await kube_client.patch_custom_status(namespace, VOICESESSIONS, kept.name, {"status": {"recording": {
        "exists": True, "state": "Complete", "expiresAt": "2030-01-01T00:00:00Z", "seconds": 1.5}}})

    handle = await start_operator(check_providers=False, provider_ca_file=str(bundle))
    block = recording_block(s3_server, bucket, accessKeyIdSecretRef={"name": REC_SECRET, "key": "id"},
                            secretAccessKeySecretRef={"name": REC_SECRET, "key": "secret"})
    workers = {**spec()["workers"], "warmPool": 0}
    await hotelline(LINE, providers.line_spec(workers=workers, retention={"metadataDays": 30, "recordingDays": 7},
                                              recording=block))

    # the lifecycle rule: set, and put back when someone removes it
    rule_id = store.lifecycle_rule(namespace, LINE, 7)["ID"]
    await wait_for(lambda: asyncio.to_thread(_rules, s3_server, bucket),
                   lambda rules: any(r["ID"] == rule_id and r["Expiration"] == {"Days": 7} for r in rules),
                   what="the lifecycle rule")
    await asyncio.to_thread(s3_server.client().delete_bucket_lifecycle, Bucket=bucket)
    await wait_for(lambda: asyncio.to_thread(_rules, s3_server, bucket),
                   lambda rules: any(r["ID"] == rule_id for r in rules), what="the lifecycle rule restored")
    assert all(s3_server.keys(bucket, p) for p in prefixes.values())  # nothing expired yet

    # erasure by caller hash: caller A's recordings go, caller B's stays
    await kube_client.patch_custom(namespace, HOTELLINES, LINE, {"metadata": {"annotations": {
        contract.ANNOTATION_ERASE: caller_a}}})
    await wait_for(lambda: asyncio.to_thread(s3_server.keys, bucket, store.line_prefix(namespace, LINE)),
                   lambda keys: not any(k.startswith((prefixes["vs-a1"], prefixes["vs-a2"])) for k in keys),
                   what="caller A's recordings erased")
    assert s3_server.keys(bucket, prefixes[kept.name])

    # retention: 8 days later (shifted clock) the sweep deletes what is past its expiry
    handle.settings.clock.advance(8 * 86_400)
    await wait_for(lambda: asyncio.to_thread(s3_server.keys, bucket, store.line_prefix(namespace, LINE)),
                   lambda keys: keys == [], what="the retention sweep")
    vs = await wait_for(lambda: kube_client.get_custom(namespace, VOICESESSIONS, kept.name),
                        lambda o: ((o or {}).get("status") or {}).get("recording", {}).get("state") == "Expired",
                        what="the session's recording status")
    assert vs["status"]["recording"]["exists"] is False and "expiresAt" not in vs["status"]["recording"]

    # no credential anywhere the operator writes
    dumps = json.dumps(await kube_client.list_custom(namespace, HOTELLINES)) + json.dumps(
        await kube_client.list_pods(namespace, {})) + "\n".join(r.getMessage() for r in caplog.records)
    assert s3_server.secret_access_key not in dumps and s3_server.access_key_id not in dumps
