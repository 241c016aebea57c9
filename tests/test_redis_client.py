"""The asyncio clients pack commands with hiredis (voicehive.redis_client): same bytes and errors
as redis-py's own Python packer, on every topology that lets us choose the connection class."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from voicehive.redis_client import (
    HiredisConnection,
    HiredisSentinelConnection,
    HiredisSentinelSSLConnection,
    HiredisSSLConnection,
    connect_url,
)

COMMANDS: list[tuple[Any, ...]] = [
    ("EVALSHA", "a" * 40, 4, "vh:{c-1}:call", "ü€ 😀", 1.5, 0.1, -3, b"\x00\xff\r\n", 10**20, 1e-7, 3.0),
    ("CONFIG GET", "maxmemory"),  # a command name holding its first argument
    (b"CLIENT SETNAME", "orchestrator"),
    ("HSET", "k", "x" * 100_000),  # above redis-py's buffer cutoff
    ("XADD", "s", "*", "text", ""),
]


@pytest.mark.parametrize("command", COMMANDS)
def test_hiredis_packing_writes_the_bytes_redis_py_writes(command: tuple[Any, ...]) -> None:
    ours = b"".join(HiredisConnection(decode_responses=True).pack_command(*command))
    theirs = b"".join(Connection(decode_responses=True).pack_command(*command))
    assert ours == theirs


def test_an_argument_redis_cannot_take_is_refused_the_same_way() -> None:
    for conn in (HiredisConnection(), Connection()):
        with pytest.raises(DataError):
            conn.pack_command("SET", "k", None)


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:6379/0", HiredisConnection),
    ("rediss://127.0.0.1:6380/0", HiredisSSLConnection),
    ("redis+sentinel://127.0.0.1:26379/mymaster/0", HiredisSentinelConnection),
    ("rediss+sentinel://127.0.0.1:26379/mymaster/0", HiredisSentinelSSLConnection),
])
def test_every_single_and_sentinel_client_uses_it(url: str, expected: type) -> None:
    client = connect_url(url)
    assert client.connection_pool.connection_class is expected
