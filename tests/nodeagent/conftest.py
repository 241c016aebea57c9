"""The node agent against the rig's real kube-apiserver (tests marked ``rig``; skipped without it)."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rig.nodeagent.kube import Kube, KubeError
from rig.nodeagent.netns import netns_prefix
from tests.fixtures.rig import Rig

ROOT = Path(__file__).resolve().parents[2]


def eventually(check: Callable[[], Any], timeout: float = 90.0, interval: float = 0.3, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not reached within {timeout}s: {what} (last: {last!r})")


@dataclass
class RunningAgent:
    kube: Kube
    state: Path
    cpu_node: str
    gpu_node: str
    host_port: int
    proc: subprocess.Popen[bytes]

    @property
    def node_net(self) -> str:
        return f"{netns_prefix(self.state)}-node"

    def log(self, namespace: str, pod: str, container: str) -> str:
        path = self.state / "logs" / f"{namespace}_{pod}_{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def agent_log(self) -> str:
        return (self.state / "agent.log").read_text(errors="replace")

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self.kube.get_or_none(f"/api/v1/namespaces/{namespace}/pods/{name}")
        return result


class _Host(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the host"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def agent(rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    """``python -m rig.nodeagent`` with a CPU and a GPU node, a host port, 1 s back-off."""
    if os.geteuid() != 0:
        pytest.skip("the node agent needs root (network namespaces, mounts)")
    assert rig.kubeconfig is not None
    host = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Host)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    suffix = uuid.uuid4().hex[:6]
    cpu, gpu = f"na-cpu-{suffix}", f"na-gpu-{suffix}"
    state = tmp_path_factory.mktemp("nodeagent")
    log = open(state / "agent.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [sys.executable, "-m", "rig.nodeagent", "--kubeconfig", str(rig.kubeconfig), "--state", str(state),
         "--repo", str(ROOT), "--node", f"{cpu}:europe-west4:a", "--node", f"{gpu}:europe-west4:b:gpu=1",
         "--host-port", str(host.server_address[1]), "--backoff-base", "1", "--delete-nodes-on-exit"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    kube = Kube(rig.kubeconfig)
    running = RunningAgent(kube, state, cpu, gpu, int(host.server_address[1]), proc)

    def ready() -> bool:
        assert proc.poll() is None, running.agent_log()
        node = kube.get_or_none(f"/api/v1/nodes/{gpu}")
        conditions = (node or {}).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    eventually(ready, 60, what="the agent's nodes are Ready")
    yield running
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        host.shutdown()
        for node in (cpu, gpu):
            assert kube.get_or_none(f"/api/v1/nodes/{node}") is None, f"{node} left behind"
        kube.close()


@pytest.fixture
def namespace(agent: RunningAgent) -> Iterator[str]:
    name = f"na-{uuid.uuid4().hex[:8]}"
    agent.kube.post("/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    with contextlib.suppress(KubeError):
        agent.kube.delete(f"/api/v1/namespaces/{name}")
