"""What a worker does on SIGTERM: an idle one exits at once, a busy one lets its call finish.

WHY: Kubernetes sends SIGTERM on every rollout, ``helm upgrade`` and node drain, then waits the
Pod's ``terminationGracePeriodSeconds`` before SIGKILL. Peers drop live calls there (field
notes: livekit/agents#3020). The operator gives a worker pod ``maxCallDurationSeconds + 30``
(``builders.worker_grace_seconds``) and tells it so in ``VOICEHIVE_TERMINATION_GRACE_SECONDS``;
the worker stops being Ready (no new call) and waits for the call's natural end. Only when
the grace period is about to run out (``GOODBYE_MARGIN_S`` before SIGKILL), or the call
reaches the line's maximum duration (the operator deletes such a pod to end it), does it say
a polite goodbye and end the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from voicehive import contract
from voicehive.lifecycle import EndReason

T = TypeVar("T")

# Kubernetes' default terminationGracePeriodSeconds, for a pod that was not told its own.
DEFAULT_GRACE_S = 30.0
# Time the goodbye (TTS + playout) and the last state writes need before SIGKILL.
GOODBYE_MARGIN_S = 15.0


def grace_seconds(environ: Mapping[str, str]) -> float:
    """The pod's grace period from the environment (a bad or missing value: the k8s default)."""
    try:
        value = float(environ.get(contract.ENV_TERMINATION_GRACE_SECONDS, DEFAULT_GRACE_S))
    except ValueError:
        return DEFAULT_GRACE_S
    return value if value >= 0 else DEFAULT_GRACE_S


@dataclass(frozen=True)
class Drain:
    """When a draining worker must end its call itself, and with which reason (pure)."""

    grace_s: float
    max_call_s: float | None = None
    margin_s: float = GOODBYE_MARGIN_S

    def goodbye_at(self, sigterm_at: float, answered_at: float | None) -> tuple[float, EndReason]:
        """Before SIGKILL by ``margin_s``; never past the line's maximum call duration."""
        by_grace = sigterm_at + max(0.0, self.grace_s - self.margin_s)
        if self.max_call_s is not None and answered_at is not None:
            by_cap = answered_at + self.max_call_s
            if by_cap <= by_grace:
                return by_cap, EndReason.MAX_DURATION
        return by_grace, EndReason.WORKER_LOST


async def serve_until_end(
    ended: asyncio.Event,
    stopping: asyncio.Event,
    drain: Drain,
    goodbye: Callable[[EndReason], Awaitable[None]],
    *,
    answered_at: float | None = None,
    caller_present: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> EndReason | None:
    """Wait for the call to end. After SIGTERM (``stopping``) keep waiting, up to the drain
    deadline; then ``goodbye``. A call whose caller is not in the room (never joined, or a
    VoiceSession erased before the caller came) has nothing to drain: it ends at once.
    Returns the reason the worker ended the call with, or None when it ended by itself."""
    stop = asyncio.ensure_future(stopping.wait())
    end = asyncio.ensure_future(ended.wait())
    try:
        await asyncio.wait({stop, end}, return_when=asyncio.FIRST_COMPLETED)
        if ended.is_set():
            return None
        deadline, reason = drain.goodbye_at(clock(), answered_at)
        if caller_present is not None and not caller_present():
            deadline = clock()
        try:
            await asyncio.wait_for(asyncio.shield(end), timeout=max(0.0, deadline - clock()))
            return None
        except TimeoutError:
            await goodbye(reason)
            return reason
    finally:
        stop.cancel()
        end.cancel()


async def unless_stopped(blocking: Callable[[], T], stopping: asyncio.Event) -> T | None:
    """``blocking()`` in a daemon thread, or None as soon as ``stopping`` is set.

    WHY a daemon thread and not ``asyncio.to_thread``: the VoiceSession watch blocks up to its
    timeout, and ``asyncio.run`` joins the default executor on exit, so an idle warm worker
    would linger after SIGTERM. An abandoned daemon thread does not hold the process.
    """
    loop = asyncio.get_running_loop()
    result: asyncio.Future[T] = loop.create_future()

    def settle(value: T | None, error: BaseException | None) -> None:
        if result.done():
            return
        if error is not None:
            result.set_exception(error)
        else:
            result.set_result(value)  # type: ignore[arg-type]

    def run() -> None:
        try:
            value, error = blocking(), None
        except BaseException as exc:  # handed to the awaiting coroutine
            value, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=run, name="voicehive-wait", daemon=True).start()
    stop = asyncio.ensure_future(stopping.wait())
    waiters: list[asyncio.Future[Any]] = [result, stop]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if result.done():
        return result.result()
    result.cancel()
    return None
