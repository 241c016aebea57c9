"""Probe execution: httpGet (http/https), tcpSocket, grpc health and exec, as the kubelet runs
them, from the node's network (the bridge netns) to the Pod IP."""

from __future__ import annotations

import http.client
import ssl
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rig.nodeagent.netns import connect_socket

# grpc.health.v1.HealthCheckResponse{status: SERVING} on the wire: field 1, varint 1.
SERVING = b"\x08\x01"


@dataclass(frozen=True)
class ProbeContext:
    """Where a probe runs: the Pod IP on the node network, the container's ports/env/pid/user."""

    node_net: str
    pod_ip: str
    ports: Mapping[str, int]
    env: Mapping[str, str]
    pid: int
    uid: int
    gid: int
    grpc_forward: Callable[[int], int]  # pod port -> a host 127.0.0.1 port forwarding to it


def resolve_port(value: Any, ports: Mapping[str, int]) -> int:
    """A probe/targetPort: a number, or the name of a container port."""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    if value in ports:
        return ports[value]
    raise ValueError(f"port {value!r} is not a container port name")


def http_probe(spec: Mapping[str, Any], ctx: ProbeContext, timeout: float) -> bool:
    host = spec.get("host") or ctx.pod_ip
    port = resolve_port(spec.get("port"), ctx.ports)
    sock = connect_socket(ctx.node_net, host, port, timeout)
    sock.setblocking(True)
    sock.settimeout(timeout)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    if str(spec.get("scheme", "HTTP")).upper() == "HTTPS":  # the kubelet does not verify
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(sock, server_hostname=host)
    conn.sock = sock
    try:
        headers = {"User-Agent": "kube-probe/1.34", "Accept": "*/*"}
        headers.update({h["name"]: h["value"] for h in spec.get("httpHeaders", []) or []})
        conn.request("GET", spec.get("path", "/") or "/", headers=headers)
        status = conn.getresponse().status
    finally:
        conn.close()
    return 200 <= status < 400


def tcp_probe(spec: Mapping[str, Any], ctx: ProbeContext, timeout: float) -> bool:
    port = resolve_port(spec.get("port"), ctx.ports)
    connect_socket(ctx.node_net, spec.get("host") or ctx.pod_ip, port, timeout).close()
    return True


def grpc_probe(spec: Mapping[str, Any], ctx: ProbeContext, timeout: float) -> bool:
    import grpc

    local = ctx.grpc_forward(int(spec["port"]))
    with grpc.insecure_channel(f"127.0.0.1:{local}") as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        service = str(spec.get("service") or "").encode()
        request = (b"\x0a" + bytes([len(service)]) + service) if service else b""
        return bool(check(request, timeout=timeout) == SERVING)


def exec_probe(spec: Mapping[str, Any], ctx: ProbeContext, timeout: float) -> bool:
    argv = ["nsenter", "-t", str(ctx.pid), "-n", "-m", "-u", "-S", str(ctx.uid), "-G", str(ctx.gid), "--"]
    result = subprocess.run(
        [*argv, *spec.get("command", [])], env=dict(ctx.env), capture_output=True, timeout=timeout, check=False
    )
    return result.returncode == 0


def run_probe(probe: Mapping[str, Any], ctx: ProbeContext) -> bool:
    """One attempt; any error (refused, timeout, bad status) is a failure."""
    timeout = float(probe.get("timeoutSeconds", 1) or 1)
    kinds: dict[str, Callable[[Mapping[str, Any], ProbeContext, float], bool]] = {
        "httpGet": http_probe,
        "tcpSocket": tcp_probe,
        "grpc": grpc_probe,
        "exec": exec_probe,
    }
    for key, fn in kinds.items():
        if key in probe:
            try:
                return fn(probe[key], ctx, timeout)
            except (TimeoutError, OSError, ValueError, http.client.HTTPException, subprocess.TimeoutExpired):
                return False
            except Exception:
                return False
    return True
