"""Network namespaces per Pod, and a userspace proxy between them and the host.

No host route, interface or iptables rule is touched. The node's network is its own netns
with a bridge (the Pods' gateway); each Pod netns has ``lo`` and an ``eth0`` veth on that bridge
with the Pod IP, so Pods reach each other directly. The node netns owns the Service CIDR as
local addresses: a Pod's connection to a ClusterIP is routed to the gateway and accepted there
by the agent, which connects to a ready endpoint's Pod IP. The agent (root, host netns)
creates sockets *inside* a netns from a short-lived thread that called setns(2): a socket keeps
the netns it was created in, so one asyncio loop serves all of them. ``127.0.0.1:P`` inside a
Pod (``--host-port P``) is forwarded to the host's ``127.0.0.1:P`` the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import os
import socket
import subprocess
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
T = TypeVar("T")


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh thread that joined ``netns`` (a name in /run/netns; None = host)."""
    if netns is None:
        return fn()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            fd = os.open(NETNS_DIR / netns, os.O_RDONLY)
            try:
                if _libc().setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def listen_socket(netns: str | None, host: str, port: int, kind: int = socket.SOCK_STREAM) -> socket.socket:
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
        sock.setblocking(False)
        return sock

    return in_netns(netns, make)


def connect_socket(netns: str | None, host: str, port: int, timeout: float = 5.0) -> socket.socket:
    def make() -> socket.socket:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setblocking(False)
        return sock

    return in_netns(netns, make)


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


def create_node_network(name: str, gateway: str, prefix_len: int, service_cidr: str) -> None:
    """The node's network: a netns with bridge ``br0`` (the Pods' gateway) that owns the Service
    CIDR as local addresses, so Service listeners bind any ClusterIP there."""
    delete_netns(name)
    run("ip", "netns", "add", name)
    run("ip", "-n", name, "link", "set", "lo", "up")
    run("ip", "-n", name, "link", "add", "br0", "type", "bridge")
    run("ip", "-n", name, "addr", "add", f"{gateway}/{prefix_len}", "dev", "br0")
    run("ip", "-n", name, "link", "set", "br0", "up")
    run("ip", "-n", name, "route", "add", "local", service_cidr, "dev", "lo", "table", "local")


def create_pod_network(name: str, node_net: str, veth: str, pod_ip: str, prefix_len: int, gateway: str) -> None:
    """A Pod netns: ``lo``, and ``eth0`` (a veth into the node bridge) with the Pod IP."""
    delete_netns(name)
    run("ip", "netns", "add", name)
    run("ip", "-n", name, "link", "set", "lo", "up")
    subprocess.run(["ip", "-n", node_net, "link", "delete", veth], capture_output=True, timeout=30, check=False)
    run("ip", "-n", node_net, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
    run("ip", "-n", node_net, "link", "set", veth, "master", "br0", "up")
    run("ip", "-n", name, "addr", "add", f"{pod_ip}/{prefix_len}", "dev", "eth0")
    run("ip", "-n", name, "link", "set", "eth0", "up")
    run("ip", "-n", name, "route", "add", "default", "via", gateway)


def delete_netns(name: str) -> None:
    if (NETNS_DIR / name).exists():
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30, check=False)


def netns_prefix(state: Path) -> str:
    """Names of one agent's netns (``<prefix>-node``, ``<prefix>-<pod uid>``), unique per --state,
    so agents of two work trees on one machine never touch each other's."""
    return "vh" + hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:6]


def kill_netns_processes(name: str) -> None:
    """SIGKILL what still runs in a netns a killed agent left behind (its containers)."""
    result = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30, check=False)
    for pid in result.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)


def owned_netns(prefix: str) -> list[str]:
    """Netns names this agent made (left over from a crash), by its unique prefix."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


Target = tuple[str | None, str, int]  # (netns or None for the host, host, port)
Resolver = Callable[[], Target | None]
Key = tuple[str | None, str, int]  # (netns, host, port) of a listener


@dataclass
class _Listener:
    server: asyncio.AbstractServer
    resolver: Resolver


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


class _UdpFlow(asyncio.DatagramProtocol):
    def __init__(self, relay: _UdpRelay, client: tuple[str, int]) -> None:
        self.relay, self.client = relay, client

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.relay.transport is not None:
            self.relay.transport.sendto(data, self.client)


class _UdpRelay(asyncio.DatagramProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, target: tuple[str, int]) -> None:
        self.loop, self.target = loop, target
        self.transport: asyncio.DatagramTransport | None = None
        self.flows: dict[tuple[str, int], asyncio.DatagramTransport | None] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        client = (str(addr[0]), int(addr[1]))
        flow = self.flows.get(client)
        if flow is not None:
            flow.sendto(data)
        elif client not in self.flows:
            self.flows[client] = None
            self.loop.create_task(self._open(client, data))

    async def _open(self, client: tuple[str, int], first: bytes) -> None:
        transport, _ = await self.loop.create_datagram_endpoint(
            lambda: _UdpFlow(self, client), remote_addr=self.target
        )
        self.flows[client] = transport
        transport.sendto(first)

    def close(self) -> None:
        for flow in self.flows.values():
            if flow is not None:
                flow.close()
        if self.transport is not None:
            self.transport.close()


class Proxy:
    """All userspace forwarding of the agent, on one asyncio loop in its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._listeners: dict[Key, _Listener] = {}
        self._udp: dict[str, list[_UdpRelay]] = {}
        self._thread = threading.Thread(target=self.loop.run_forever, name="nodeagent-proxy", daemon=True)
        self._thread.start()

    def _call(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)  # type: ignore[arg-type]

    def keys(self) -> set[Key]:
        return set(self._listeners)

    def add(self, netns: str | None, host: str, port: int, resolver: Resolver) -> int:
        """Listen on host:port in ``netns`` (port 0: any); each connection goes where ``resolver``
        says at that moment. Returns the port."""
        key = (netns, host, port)
        if port and key in self._listeners:
            self._listeners[key].resolver = resolver
            return port
        sock = listen_socket(netns, host, port)
        key = (netns, host, sock.getsockname()[1])
        self._call(self._add(key, sock, resolver))
        return key[2]

    async def _add(self, key: Key, sock: socket.socket, resolver: Resolver) -> None:
        listener = _Listener(server=None, resolver=resolver)  # type: ignore[arg-type]

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._forward(listener, reader, writer)

        listener.server = await asyncio.start_server(handle, sock=sock)
        self._listeners[key] = listener

    async def _forward(self, listener: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = listener.resolver()
        upstream: socket.socket | None = None
        if target is not None:
            with contextlib.suppress(OSError):
                upstream = await asyncio.to_thread(connect_socket, *target)
        if upstream is None:  # no ready endpoint: refuse, as a Service without endpoints does
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(sock=upstream)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        for w in (writer, up_writer):
            with contextlib.suppress(OSError):
                w.close()

    def add_udp(self, netns: str, host: str, port: int, target: tuple[str, int]) -> None:
        """UDP ``host:port`` in ``netns`` relayed to ``target`` on the host, one host socket per
        client flow so replies find their way back (LiveKit's RTC port from inside a Pod)."""
        sock = listen_socket(netns, host, port, socket.SOCK_DGRAM)
        relay = self._call(self._add_udp(sock, target))
        self._udp.setdefault(netns, []).append(relay)

    async def _add_udp(self, sock: socket.socket, target: tuple[str, int]) -> _UdpRelay:
        loop = asyncio.get_running_loop()
        relay = _UdpRelay(loop, target)
        await loop.create_datagram_endpoint(lambda: relay, sock=sock)
        return relay

    def remove(self, key: Key) -> None:
        listener = self._listeners.pop(key, None)
        if listener is not None:
            self._call(self._close(listener.server))

    def remove_netns(self, netns: str) -> None:
        for key in [k for k in self._listeners if k[0] == netns]:
            self.remove(key)
        for relay in self._udp.pop(netns, []):
            self.loop.call_soon_threadsafe(relay.close)

    @staticmethod
    async def _cancel_all() -> None:
        """Open connections end with the agent."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def _close(server: asyncio.AbstractServer) -> None:
        server.close()

    def close(self) -> None:
        for key in list(self._listeners):
            self.remove(key)
        for netns in list(self._udp):
            self.remove_netns(netns)
        self._call(self._cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
