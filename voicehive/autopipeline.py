"""Concurrent calls of one Lua script go to Redis together, one pipeline per round trip.

WHY: under load the orchestrator has dozens of webhooks in flight, and each wrote its call with
its own EVALSHA: its own trip through redis-py's pool, its own socket write and its own timeout
task. ioredis (``enableAutoPipelining``), Lettuce and go-redis batch concurrent commands the same
way. Here one batch is in flight at a time, and the calls made meanwhile are sent together next,
in one non-transactional pipeline: one write and one read for the batch, each script still atomic
on its own and answered on its own. An idle service sends a lone call at once; a busy one sends
bigger batches, sized by Redis's round trip (group commit). With a ``WAIT`` policy one ``WAIT``
at the end of a batch covers every write in it, instead of one per event. Measured in
docs/orchestrator.md (issue 16).

Errors keep their meaning per call: a connection error or timeout fails every call of the batch
(nothing of theirs is known to be written, as with a lone command); a script's own error fails
that call only. ``NOSCRIPT`` (Redis restarted or failed over and lost its script cache) reloads the
script and sends those calls again: a call answered ``NOSCRIPT`` did not run.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import NoScriptError

_MAX_BATCH = 256  # bounds one pipeline's buffers; more waiting calls go in the next batch
# Loop turns a batch waits before it is sent, so the requests whose bytes arrived in the same
# I/O poll reach it too: with two orchestrator processes sharing the anchor's load, 2 turns gave
# larger batches and ~15% more events/s than 0 (docs/orchestrator.md); an idle service waits
# only these turns (microseconds).
_GATHER_TURNS = 2


@dataclass
class _Call:
    keys: Sequence[str]
    args: Sequence[str]
    wait: bool
    done: asyncio.Future[Any]


@dataclass
class ScriptPipeline:
    """Runs one Lua script for many callers, one batch in flight at a time.

    ``wait_replicas`` > 0: a batch holding a call that asked for it (``wait=True``) ends with
    ``WAIT``, and those calls get its reply (the replicas that acknowledged) to judge.
    """

    redis: Any
    script: str
    wait_replicas: int = 0
    wait_timeout_ms: int = 1000
    _queue: list[_Call] = field(default_factory=list, init=False)
    _sending: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.sha = hashlib.sha1(self.script.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1

    async def call(self, keys: Sequence[str], args: Sequence[str], *, wait: bool = False) -> tuple[Any, Any]:
        """The script's reply, and the ``WAIT`` reply (replicas that acknowledged) or None."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Call(keys, args, wait and self.wait_replicas > 0, done))
        if not self._sending:
            self._sending = True
            asyncio.ensure_future(self._drain()).add_done_callback(_consume)
        result: tuple[Any, Any] = await done
        return result

    async def _drain(self) -> None:
        """Send what is queued, and again what queued meanwhile, until nothing is left: one batch
        in flight, so a batch holds what arrived during the previous one's round trip."""
        try:
            for _ in range(_GATHER_TURNS):
                await asyncio.sleep(0)
            while self._queue:
                batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
                batch = [c for c in batch if not c.done.cancelled()]
                if batch:
                    await self._send(batch)
        except asyncio.CancelledError:  # shutting down: nobody will send what is still queued
            for c in self._queue:
                c.done.cancel()
            self._queue = []
            raise
        finally:
            self._sending = False

    async def _send(self, batch: list[_Call]) -> None:
        try:
            outcomes = await self._execute(batch)
            missing = [c for c, (reply, _acked) in zip(batch, outcomes, strict=True) if isinstance(reply, NoScriptError)]
            if missing:
                await self.redis.script_load(self.script)
                again = dict(zip(map(id, missing), await self._execute(missing), strict=True))
                outcomes = [again.get(id(c), outcome) for c, outcome in zip(batch, outcomes, strict=True)]
        except asyncio.CancelledError:
            for c in batch:
                c.done.cancel()
            raise
        except Exception as exc:  # the connection or the WAIT failed: every call of the batch fails
            for c in batch:
                if not c.done.done():
                    c.done.set_exception(exc)
            return
        for c, (reply, acked) in zip(batch, outcomes, strict=True):
            if c.done.done():
                continue
            if isinstance(reply, Exception):
                c.done.set_exception(reply)
            else:
                c.done.set_result((reply, acked))

    async def _execute(self, batch: list[_Call]) -> list[tuple[Any, Any]]:
        """One pipeline: each call's reply (an error as a value) and, for calls that asked, the
        ``WAIT`` reply, which covers every write sent before it on this connection."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for c in batch:
                pipe.execute_command("EVALSHA", self.sha, len(c.keys), *c.keys, *c.args)
            waiting = any(c.wait for c in batch)
            if waiting:
                pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            replies = await pipe.execute(raise_on_error=False)
        acked = replies.pop() if waiting else None
        if isinstance(acked, Exception):
            raise acked
        return [(reply, acked if c.wait else None) for c, reply in zip(batch, replies, strict=True)]


def _consume(task: asyncio.Future[Any]) -> None:
    """The batch's outcome is delivered to its callers; read it here so none is 'never retrieved'."""
    if not task.cancelled():
        task.exception()
