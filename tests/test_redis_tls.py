"""Redis over TLS as the chart configures it: ``rediss://…?ssl_ca_certs=<mounted CA>`` (issue 11).

A real redis-server with TLS only, on loopback, with a test CA generated now; the CallStore
connects with the URL form the chart and the worker pods use, and a plaintext client cannot.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.tls import make_tls_files
from tests.operator.helpers import spec
from voicehive import contract
from voicehive.api.models import HotelLineSpec
from voicehive.callstore import CallStore
from voicehive_operator import builders
from voicehive_operator.settings import OperatorSettings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    tls = make_tls_files(tmp_path)
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--tls-cert-file", str(tls.cert_file), "--tls-key-file", str(tls.key_file),
         "--tls-ca-cert-file", str(tls.ca_file), "--tls-auth-clients", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "redis-server (TLS) did not start"
                time.sleep(0.05)  # polling for start-up
        yield port, tls.ca_file
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def test_callstore_speaks_tls_with_the_mounted_ca(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    store = CallStore.from_url(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}")
    try:
        assert await store.ping()
    finally:
        await store.close()
    plain = CallStore.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        assert not await plain.ping()  # the TLS-only port refuses plaintext
    finally:
        await plain.close()


def test_worker_pod_mounts_the_redis_ca_where_the_url_names_it(tls_redis: tuple[int, Path]) -> None:
    _, ca = tls_redis
    url = f"rediss://redis.voicehive.svc:6380/0?ssl_ca_certs={contract.REDIS_CA_DIR}/ca.crt"
    settings = OperatorSettings(redis_url=url, redis_ca_pem=ca.read_text())
    pod = builders.worker_pod(namespace="hotels", line_name="lindenhof", line_uid="u", settings=settings,
                              spec=HotelLineSpec.model_validate(spec()))
    container = pod["spec"]["containers"][0]
    assert {"name": "redis-ca", "mountPath": contract.REDIS_CA_DIR, "readOnly": True} in container["volumeMounts"]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "redis-ca")
    assert volume["secret"] == {"secretName": builders.line_secret_name("lindenhof"),
                                "items": [{"key": builders.LINE_SECRET_REDIS_CA, "path": "ca.crt"}]}
    data = builders.line_secret("hotels", "lindenhof", "u", settings)["data"]
    assert base64.b64decode(data[builders.LINE_SECRET_REDIS_CA]).decode() == ca.read_text()
    assert base64.b64decode(data[builders.LINE_SECRET_REDIS_URL]).decode() == url
