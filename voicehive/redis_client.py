"""One Redis URL names the whole topology: single server, Sentinel-managed master, or Cluster.

WHY: the orchestrator, the worker pods and the operator all get the same ``VOICEHIVE_REDIS_URL``
(the operator copies it into worker pods), so the URL is the one knob, and every component
builds its client here. See docs/redis.md for what each topology guarantees.

========================================================  ========================================
URL                                                       client (redis-py)
========================================================  ========================================
``redis://host:6379/0`` (``rediss://`` for TLS)            ``redis.asyncio.Redis``
``redis+cluster://host:7000/0`` (any node; ``rediss+``)   ``redis.asyncio.cluster.RedisCluster``
``redis+sentinel://h1:26379,h2:26379/<master>/0``         ``redis.asyncio.Sentinel.master_for``
========================================================  ========================================

Query options of VoiceHive's own (removed before redis-py sees the URL):
``wait_replicas=N`` acknowledges a call-state write only after ``N`` replicas have it (Redis
``WAIT``), ``wait_timeout_ms=T`` (default 1000) bounds that wait; fewer acks in time -> the
event is answered 503 and the sender retries (the write itself is idempotent).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from redis.asyncio import Connection, ConnectionPool, Redis, Sentinel, SSLConnection
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

_OWN_OPTIONS = ("wait_replicas", "wait_timeout_ms")


class _HiredisPacking:
    """Commands packed by hiredis's C packer, as redis-py's own sync client packs them.

    WHY: redis-py's asyncio ``Connection.pack_command`` encodes and joins every argument in Python;
    its sync client uses hiredis's ``pack_command`` (``HiredisRespSerializer``) whenever hiredis is
    installed. On the orchestrator's webhook path the Python packer was the largest single cost
    after the HTTP server (py-spy, issue 16). Same bytes, same errors (tests/test_redis_client.py).
    """

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        return self._packer.pack(*args)  # type: ignore[no-any-return]


class HiredisConnection(_HiredisPacking, Connection):
    pass


class HiredisSSLConnection(_HiredisPacking, SSLConnection):
    pass


class HiredisSentinelConnection(_HiredisPacking, SentinelManagedConnection):
    pass


class HiredisSentinelSSLConnection(_HiredisPacking, SentinelManagedSSLConnection):
    pass


class Topology(StrEnum):
    SINGLE = "single"
    CLUSTER = "cluster"
    SENTINEL = "sentinel"


@dataclass(frozen=True)
class RedisTarget:
    """What a VoiceHive Redis URL names (parsed once, without I/O)."""

    topology: Topology
    url: str  # single/cluster: the plain redis(s):// URL for redis-py's from_url (own options removed)
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    wait_replicas: int = 0
    wait_timeout_ms: int = 1000


def parse_redis_url(url: str) -> RedisTarget:
    """Pure: split a VoiceHive Redis URL into topology, redis-py URL and the WAIT policy.
    Raises ``ValueError`` naming what is wrong (a misconfiguration must not look like an outage)."""
    parts = urlsplit(url)
    scheme, _, kind = parts.scheme.partition("+")
    if scheme not in ("redis", "rediss") or kind not in ("", "cluster", "sentinel"):
        raise ValueError(f"VOICEHIVE_REDIS_URL: unknown scheme {parts.scheme!r} "
                         "(redis, rediss, redis+cluster, rediss+cluster, redis+sentinel, rediss+sentinel)")
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in _OWN_OPTIONS}
    rest = urlencode([(k, v) for k, v in query if k not in _OWN_OPTIONS])
    try:
        wait = int(own.get("wait_replicas", "0"))
        wait_ms = int(own.get("wait_timeout_ms", "1000"))
    except ValueError as exc:
        raise ValueError("VOICEHIVE_REDIS_URL: wait_replicas and wait_timeout_ms must be integers") from exc
    if wait < 0 or wait_ms <= 0:
        raise ValueError("VOICEHIVE_REDIS_URL: wait_replicas must be >= 0 and wait_timeout_ms > 0")
    common: dict[str, Any] = {"wait_replicas": wait, "wait_timeout_ms": wait_ms, "tls": scheme == "rediss"}
    if kind == "sentinel":
        return _sentinel_target(parts.netloc, parts.path, common)
    if kind == "cluster" and wait:
        raise ValueError("VOICEHIVE_REDIS_URL: wait_replicas is not supported with Redis Cluster (docs/redis.md)")
    plain = urlunsplit((scheme, parts.netloc, parts.path, rest, parts.fragment))
    return RedisTarget(Topology.CLUSTER if kind == "cluster" else Topology.SINGLE, plain, **common)


def _sentinel_target(netloc: str, path: str, common: dict[str, Any]) -> RedisTarget:
    auth, _, hosts = netloc.rpartition("@")
    username, _, password = auth.partition(":") if auth else ("", "", "")
    sentinels = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise ValueError(f"VOICEHIVE_REDIS_URL: sentinel address {host!r} is not host:port")
        sentinels.append((name, int(port)))
    segments = [s for s in path.split("/") if s]
    if not segments:
        raise ValueError("VOICEHIVE_REDIS_URL: a sentinel URL names the master: redis+sentinel://h:26379/<master>/0")
    db = segments[1] if len(segments) > 1 else "0"
    if not db.isdigit():
        raise ValueError(f"VOICEHIVE_REDIS_URL: database {db!r} is not a number")
    return RedisTarget(Topology.SENTINEL, "", tuple(sentinels), unquote(segments[0]), int(db),
                       unquote(username) or None, unquote(password) or None, **common)


def connect(target: RedisTarget, *, decode_responses: bool = True, timeout_s: float = 2.0,
            max_connections: int = 128, retry: Retry | None = None) -> Any:
    """The asyncio client for ``target`` (no I/O until first use).

    ``retry``: redis-py's own retry of a command on connection errors and timeouts (the worker
    rides out a Redis restart with it); None keeps redis-py's short default.
    """
    timeouts: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if retry is not None:
        timeouts |= {"retry": retry, "retry_on_error": [RedisConnectionError, RedisTimeoutError]}
    if target.topology is Topology.CLUSTER:
        return RedisCluster.from_url(target.url, decode_responses=decode_responses, max_connections=max_connections,
                                     **timeouts)
    if target.topology is Topology.SENTINEL:
        sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=timeouts, **timeouts)  # type: ignore[no-untyped-call]
        return sentinel.master_for(
            target.service, redis_class=Redis, db=target.db, username=target.username,
            password=target.password, decode_responses=decode_responses, max_connections=max_connections,
            connection_class=HiredisSentinelSSLConnection if target.tls else HiredisSentinelConnection,
        )
    # Redis.from_url, except the connection class: the URL's scheme would override a class passed in
    options = {"decode_responses": decode_responses, "max_connections": max_connections, "health_check_interval": 10,
               **timeouts, **parse_url(target.url)}
    tls = options.pop("connection_class", Connection) is SSLConnection
    pool = ConnectionPool(connection_class=HiredisSSLConnection if tls else HiredisConnection, **options)
    return Redis.from_pool(pool)


def connect_url(url: str, **kwargs: Any) -> Any:
    """``connect(parse_redis_url(url))``: for components that only need the client."""
    return connect(parse_redis_url(url), **kwargs)
