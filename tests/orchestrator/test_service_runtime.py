"""The service as deployed: start-up refusal on bad keys, Redis outages, TLS with reload."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.fixtures.redis import RedisServer
from tests.orchestrator.helpers import auth, free_port, orchestrator_env


def _run_cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voicehive_orchestrator", *args],
        env={**{k: v for k, v in os.environ.items() if not k.startswith(("VOICEHIVE_", "LIVEKIT_"))}, **env},
        capture_output=True, text=True, timeout=timeout, check=False,
    )


@pytest.mark.parametrize(
    ("drop", "bad", "named"),
    [
        ("VOICEHIVE_PII_KEY", None, ["VOICEHIVE_PII_KEY"]),
        (None, ("VOICEHIVE_TRANSCRIPT_KEY", "bm90IDMyIGJ5dGVz"), ["VOICEHIVE_TRANSCRIPT_KEY", "decodes to"]),
        (None, ("VOICEHIVE_PII_KEY", "***"), ["VOICEHIVE_PII_KEY", "not valid base64"]),
        ("VOICEHIVE_AGENT_TOKEN", None, ["VOICEHIVE_AGENT_TOKEN"]),
        ("LIVEKIT_API_SECRET", None, ["LIVEKIT_API_SECRET"]),
    ],
)
def test_startup_refuses_bad_configuration_naming_it(
    redis_url: str, drop: str | None, bad: tuple[str, str] | None, named: list[str]
) -> None:
    env = orchestrator_env(redis_url)
    if drop:
        env.pop(drop)
    if bad:
        env[bad[0]] = bad[1]
    result = _run_cli(env, "--plain-http", "--port", str(free_port()))
    assert result.returncode == 2, result.stderr
    for word in named:
        assert word in result.stderr
    if bad:
        assert bad[1] not in result.stderr  # the bad value itself is not echoed


def test_plain_http_only_when_asked(redis_url: str) -> None:
    result = _run_cli(orchestrator_env(redis_url), "--port", str(free_port()))
    assert result.returncode == 2 and "--plain-http" in result.stderr


def test_redis_down_is_503_with_retry_after_and_nothing_partial(
    client: httpx.Client, redis_server: RedisServer
) -> None:
    sid = "vh-down000000-_+4930555000_z"
    redis_server.stop()
    try:
        r = client.post("/v1/livekit/webhook", headers=auth(),
                        json={"event_type": "agent_ready", "call_sid": sid, "data": {}})
        assert r.status_code == 503 and r.headers["Retry-After"].isdigit()
        assert r.json()["error"] == "state_store_unavailable"
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["redis"] == "unreachable"
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 200
    finally:
        redis_server.start()
    assert client.get(f"/v1/calls/{sid}", headers=auth()).status_code == 404  # nothing was written
    deadline = time.monotonic() + 30
    while (r := client.post("/v1/livekit/webhook", headers=auth(),
                            json={"event_type": "agent_ready", "call_sid": sid, "data": {}})).status_code == 503:
        assert time.monotonic() < deadline
        time.sleep(0.1)  # the client reconnects on its next command
    assert r.status_code == 200 and r.json()["outcome"] == "applied"


# ---------------------------------------------------------------------------- TLS


def _write_cert(directory: Path, common_name: str) -> int:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    # Write key then cert through temp files and rename, as cert-manager's atomic writer does.
    for target, data in (
        ("tls.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())),
        ("tls.crt", cert.public_bytes(serialization.Encoding.PEM)),
    ):
        tmp = directory / f".{target}.tmp"
        tmp.write_bytes(data)
        tmp.replace(directory / target)
    return cert.serial_number


def _served_serial(port: int) -> int:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.fixture
def tls_server(tmp_path: Path, redis_url: str) -> Iterator[tuple[int, Path, int]]:
    serial = _write_cert(tmp_path, "orchestrator-one")
    port = free_port()
    env = orchestrator_env(redis_url, VOICEHIVE_TLS_CERT=str(tmp_path / "tls.crt"),
                           VOICEHIVE_TLS_KEY=str(tmp_path / "tls.key"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "voicehive_orchestrator", "--port", str(port), "--cert-poll-seconds", "0.2"],
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=(tmp_path / "stderr.log").open("w"),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with httpx.Client(verify=False, timeout=2) as c:  # noqa: S501 - self-signed test cert
                    if c.get(f"https://127.0.0.1:{port}/healthz").status_code == 200:
                        break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (tmp_path / "stderr.log").read_text()
            assert time.monotonic() < deadline, "orchestrator did not start"
            time.sleep(0.1)  # polling for start-up
        yield port, tmp_path, serial
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_tls_certificate_is_reloaded_when_files_change(tls_server: tuple[int, Path, int]) -> None:
    port, directory, first = tls_server
    assert _served_serial(port) == first
    with httpx.Client(verify=False, timeout=5) as c:  # noqa: S501 - self-signed test cert
        assert c.post(f"https://127.0.0.1:{port}/v1/livekit/webhook", json={}).status_code == 401
    second = _write_cert(directory, "orchestrator-two")
    deadline = time.monotonic() + 30
    while _served_serial(port) != second:
        assert time.monotonic() < deadline, "the new certificate was not picked up"
        time.sleep(0.1)  # polling for the reload
    with httpx.Client(verify=False, timeout=5) as c:  # noqa: S501 - self-signed test cert
        assert c.get(f"https://127.0.0.1:{port}/readyz").json()["redis"] == "ok"


def test_failover_replica_answering_readonly_is_503(client: httpx.Client, redis_client: redis.Redis) -> None:
    """After a failover the old primary becomes a replica and refuses writes (READONLY)."""
    sid = "vh-readonly00-_+4930555111_z"
    redis_client.execute_command("REPLICAOF", "127.0.0.1", "9")  # a primary that never answers
    try:
        r = client.post("/v1/livekit/webhook", headers=auth(),
                        json={"event_type": "agent_ready", "call_sid": sid, "data": {}})
        assert r.status_code == 503 and r.headers["Retry-After"]
    finally:
        redis_client.execute_command("REPLICAOF", "NO", "ONE")
    assert client.get(f"/v1/calls/{sid}", headers=auth()).status_code == 404
    r = client.post("/v1/livekit/webhook", headers=auth(), json={"event_type": "agent_ready", "call_sid": sid, "data": {}})
    assert r.status_code == 200


def test_tls_is_at_least_1_2(tls_server: tuple[int, Path, int]) -> None:
    """The served context refuses anything below TLS 1.2, whatever the platform default."""
    from voicehive_orchestrator.main import harden_tls

    lax = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    lax.minimum_version = ssl.TLSVersion.TLSv1
    assert harden_tls(lax).minimum_version is ssl.TLSVersion.TLSv1_2
    port, _, _ = tls_server
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # the oldest a client may still offer
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version() == "TLSv1.2"
