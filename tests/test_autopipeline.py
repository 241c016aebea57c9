"""Script calls of one loop turn go to a real redis-server as one pipeline (voicehive.autopipeline),
and each call still gets its own answer: its reply, its own script error, the batch's connection
error, a reload after the script cache was flushed, and the WAIT reply when it asked for one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from tests.fixtures.redis import RedisServer
from voicehive.autopipeline import ScriptPipeline
from voicehive.redis_client import connect_url

# Appends ARGV[1] to KEYS[1]'s list and answers its length; "boom" is a script error.
SCRIPT = """
if ARGV[1] == 'boom' then return redis.error_reply('boom asked for') end
return redis.call('RPUSH', KEYS[1], ARGV[1])
"""


class CountingClient:
    """The real client, counting the pipelines it sends (how many round trips the calls took)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.pipelines = 0

    def pipeline(self, **kwargs: Any) -> Any:
        self.pipelines += 1
        return self.client.pipeline(**kwargs)

    async def script_load(self, script: str) -> Any:
        return await self.client.script_load(script)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Any]:
    c = connect_url(redis_url)
    try:
        yield c
    finally:
        await c.aclose()


async def test_calls_of_one_loop_turn_share_one_round_trip(client: Any) -> None:
    counting = CountingClient(client)
    pipeline = ScriptPipeline(counting, SCRIPT)
    await client.script_load(SCRIPT)
    replies = await asyncio.gather(*(pipeline.call([f"list:{i % 4}"], [f"v{i}"]) for i in range(40)))
    assert counting.pipelines == 1
    assert sorted(reply for reply, _acked in replies) == sorted(n for _ in range(4) for n in range(1, 11))
    assert await client.lrange("list:1", 0, -1) == [f"v{i}" for i in range(1, 40, 4)]  # in call order


async def test_a_script_error_fails_its_own_call_only(client: Any) -> None:
    pipeline = ScriptPipeline(client, SCRIPT)
    results = await asyncio.gather(pipeline.call(["l"], ["a"]), pipeline.call(["l"], ["boom"]),
                                   pipeline.call(["l"], ["b"]), return_exceptions=True)
    assert results[0] == (1, None) and results[2] == (2, None)
    assert isinstance(results[1], ResponseError) and "boom asked for" in str(results[1])


async def test_a_flushed_script_cache_is_reloaded_and_the_calls_run_once(client: Any) -> None:
    pipeline = ScriptPipeline(client, SCRIPT)
    await pipeline.call(["l"], ["first"])
    await client.script_flush()  # as after a restart or a failover to a replica without the script
    replies = await asyncio.gather(*(pipeline.call(["l"], [f"x{i}"]) for i in range(5)))
    assert [reply for reply, _ in replies] == [2, 3, 4, 5, 6]
    assert await client.lrange("l", 0, -1) == ["first", "x0", "x1", "x2", "x3", "x4"]


async def test_a_lost_connection_fails_every_call_of_the_batch(tmp_path: Any) -> None:
    server = RedisServer(tmp_path / "r")
    server.start()
    c = connect_url(server.url, timeout_s=1.0)
    try:
        pipeline = ScriptPipeline(c, SCRIPT)
        await pipeline.call(["l"], ["a"])
        server.kill()
        results = await asyncio.gather(*(pipeline.call(["l"], [f"v{i}"]) for i in range(3)), return_exceptions=True)
        assert all(isinstance(r, RedisConnectionError) for r in results), results
    finally:
        await c.aclose()
        server.stop()


async def test_a_cancelled_caller_leaves_the_others_answered(client: Any) -> None:
    pipeline = ScriptPipeline(client, SCRIPT)
    await client.script_load(SCRIPT)
    first = asyncio.ensure_future(pipeline.call(["l"], ["dropped"]))
    others = [asyncio.ensure_future(pipeline.call(["l"], [f"v{i}"])) for i in range(3)]
    first.cancel()
    assert [reply for reply, _ in await asyncio.gather(*others)] == [1, 2, 3]
    assert await client.lrange("l", 0, -1) == ["v0", "v1", "v2"]


async def test_wait_is_sent_once_per_batch_and_answered_to_the_calls_that_asked(client: Any) -> None:
    await client.config_resetstat()
    counting = CountingClient(client)
    pipeline = ScriptPipeline(counting, SCRIPT, wait_replicas=1, wait_timeout_ms=50)  # no replica: WAIT says 0
    replies = await asyncio.gather(pipeline.call(["l"], ["a"], wait=True), pipeline.call(["l"], ["b"]),
                                   pipeline.call(["l"], ["c"], wait=True))
    assert counting.pipelines == 1
    assert replies == [(1, 0), (2, None), (3, 0)]
    info = await client.info("commandstats")
    assert info["cmdstat_wait"]["calls"] == 1


async def test_more_calls_than_one_batch_holds_are_all_answered(client: Any) -> None:
    pipeline = ScriptPipeline(client, SCRIPT)
    replies = await asyncio.gather(*(pipeline.call(["big"], [str(i)]) for i in range(600)))
    assert sorted(reply for reply, _ in replies) == list(range(1, 601))
