"""The node network without an apiserver: Pod netns on a bridge, ClusterIP and host-port
forwarding (TCP and UDP), probes from the node network. Needs root (network namespaces)."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rig.nodeagent import netns
from rig.nodeagent.probes import ProbeContext, run_probe

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 (network namespaces)"
)


@pytest.fixture
def network() -> Iterator[dict[str, Any]]:
    prefix = f"vhtest{uuid.uuid4().hex[:4]}"
    node = f"{prefix}-node"
    netns.create_node_network(node, "10.244.0.1", 16, "10.0.0.0/24")
    pods = {f"{prefix}-a": "10.244.0.2", f"{prefix}-b": "10.244.0.3"}
    for index, (name, ip) in enumerate(pods.items()):
        netns.create_pod_network(name, node, f"v{prefix[-4:]}{index}", ip, 16, "10.244.0.1")
    proxy = netns.Proxy()
    yield {"node": node, "pods": pods, "proxy": proxy}
    proxy.close()
    for name in [*pods, node]:
        netns.delete_netns(name)


def serve_in(ns: str, text: str) -> subprocess.Popen[bytes]:
    """A tiny HTTP server on 0.0.0.0:8080 inside ``ns`` answering ``text``."""
    # socketserver, not http.server's server: its bind looks up the host's FQDN through a DNS
    # server this netns cannot reach.
    code = (
        "import http.server, socketserver\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        f"        self.send_response(200); self.end_headers(); self.wfile.write({text!r}.encode())\n"
        "    def log_message(self, *a): pass\n"
        "s = socketserver.ThreadingTCPServer(('0.0.0.0', 8080), H)\n"
        "print('up', flush=True); s.serve_forever()\n"
    )
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"up"
    return proc


def run_in(ns: str, code: str) -> str:
    result = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_pods_share_a_port_reach_each_other_and_a_cluster_ip(network: dict[str, Any]) -> None:
    (a, ip_a), (b, ip_b) = network["pods"].items()
    servers = [serve_in(a, "pod-a"), serve_in(b, "pod-b")]
    try:
        network["proxy"].add(network["node"], "10.0.0.50", 80, lambda: (network["node"], ip_b, 8080))
        fetch = "import urllib.request as u; print(u.urlopen('{}', timeout=5).read().decode())"
        assert run_in(a, fetch.format(f"http://{ip_b}:8080/")) == "pod-b"
        assert run_in(b, fetch.format(f"http://{ip_a}:8080/")) == "pod-a"
        assert run_in(a, fetch.format("http://10.0.0.50/")) == "pod-b"
        ctx = ProbeContext(network["node"], ip_a, {"http": 8080}, {}, 0, 0, 0, lambda p: p)
        assert run_probe({"httpGet": {"port": "http", "path": "/"}}, ctx)
        assert run_probe({"tcpSocket": {"port": 8080}}, ctx)
        assert not run_probe({"tcpSocket": {"port": 8081}}, ctx)
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait()


def test_host_ports_tcp_and_udp_reach_the_host_loopback(network: dict[str, Any]) -> None:
    a = next(iter(network["pods"]))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"host")

        def log_message(self, *args: Any) -> None:
            pass

    host = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))

    def answer() -> None:
        while True:
            try:
                data, addr = echo.recvfrom(2048)
            except OSError:
                return
            echo.sendto(b"echo:" + data, addr)

    threading.Thread(target=answer, daemon=True).start()
    tcp, udp = int(host.server_address[1]), echo.getsockname()[1]
    try:
        network["proxy"].add(a, "127.0.0.1", tcp, lambda: (None, "127.0.0.1", tcp))
        network["proxy"].add_udp(a, "127.0.0.1", udp, ("127.0.0.1", udp))
        assert run_in(a, f"import urllib.request as u; print(u.urlopen('http://127.0.0.1:{tcp}/').read().decode())") \
            == "host"
        code = (f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)\n"
                f"for i in range(3):\n    s.sendto(b'x%d' % i, ('127.0.0.1', {udp})); print(s.recvfrom(64)[0].decode())")
        assert run_in(a, code).split() == ["echo:x0", "echo:x1", "echo:x2"]
    finally:
        host.shutdown()
        echo.close()
