"""SIGTERM does not end a live call (issue 10, review defect 4).

A worker with a live call stops being Ready and lets the call finish; it says goodbye only when
its grace period is about to run out (or the call reaches the line's maximum duration). An idle
warm worker exits at once. The live calls are the CallRunner on a real AgentSession against the
loopback provider fakes and the LiveKit Twirp fake, state in the real redis-server.
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import AsyncExitStack

import pytest

from tests.fakes.livekit_twirp import LiveKitFake
from tests.worker.speech import espeak_available
from tests.worker.test_call_events import _call
from voicehive import contract
from voicehive.lifecycle import CallPhase, EndReason
from voicehive_operator import builders
from voicehive_operator.settings import OperatorSettings
from voicehive_worker.drain import Drain, grace_seconds, serve_until_end, unless_stopped

from .callrig import line_spec


def test_the_goodbye_comes_before_sigkill_and_never_after_the_call_cap() -> None:
    drain = Drain(grace_s=630, max_call_s=600, margin_s=15)
    # SIGTERM 10 s into a call: the line's cap (600 s after the answer) comes first
    assert drain.goodbye_at(sigterm_at=110, answered_at=100) == (700, EndReason.MAX_DURATION)
    # without a known answer time: just before SIGKILL
    assert drain.goodbye_at(sigterm_at=110, answered_at=None) == (110 + 615, EndReason.WORKER_LOST)
    # a grace period shorter than the goodbye needs: say it at once
    assert Drain(grace_s=5).goodbye_at(50, None) == (50, EndReason.WORKER_LOST)
    assert grace_seconds({contract.ENV_TERMINATION_GRACE_SECONDS: "630"}) == 630
    assert grace_seconds({}) == grace_seconds({contract.ENV_TERMINATION_GRACE_SECONDS: "soon"}) == 30


def test_the_worker_pod_is_told_a_grace_period_long_enough_for_a_call() -> None:
    spec = line_spec()
    grace = builders.worker_grace_seconds(spec)
    assert grace > spec.workers.max_call_duration_seconds
    env = {e["name"]: e.get("value") for e in builders.worker_env("hotels", "lindenhof", spec, OperatorSettings())}
    assert env[contract.ENV_TERMINATION_GRACE_SECONDS] == str(grace)


needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng needed")


@pytest.mark.slow
@needs_espeak
async def test_sigterm_lets_a_live_call_finish(redis_url: str, livekit_fake: LiveKitFake) -> None:
    async with AsyncExitStack() as stack:
        rig = await stack.enter_async_context(_call(redis_url, livekit_fake))
        await rig.call.wait_for(lambda: rig.call.sink.segments, 10, "the greeting")
        await rig.call.wait_quiet()
        stopping = asyncio.Event()
        drain = Drain(grace_s=630, max_call_s=600)
        serving = asyncio.ensure_future(
            serve_until_end(rig.runner.ended, stopping, drain, rig.call.agent.say_goodbye_and_end)
        )
        stopping.set()  # SIGTERM
        said = len(rig.call.sink.segments)
        await asyncio.sleep(3)  # the call goes on: no goodbye, not ended
        assert not serving.done() and not rig.runner.ended.is_set() and len(rig.call.sink.segments) == said
        record = await rig.manager.get(rig.room)
        assert record is not None and record.phase is CallPhase.ACTIVE
        rig.runner.on_caller_left()  # the call ends naturally
        assert await asyncio.wait_for(serving, 15) is None
        record = await rig.manager.get(rig.room)
        assert record is not None and record.phase is CallPhase.ENDED and record.reason is EndReason.CALLER_HANGUP


@pytest.mark.slow
@needs_espeak
async def test_goodbye_only_when_the_grace_period_runs_out(redis_url: str, livekit_fake: LiveKitFake) -> None:
    async with AsyncExitStack() as stack:
        rig = await stack.enter_async_context(_call(redis_url, livekit_fake))
        await rig.call.wait_for(lambda: rig.call.sink.segments, 10, "the greeting")
        await rig.call.wait_quiet()
        stopping = asyncio.Event()
        drain = Drain(grace_s=2, margin_s=0)  # SIGKILL two seconds after SIGTERM
        said = len(rig.call.sink.segments)
        serving = asyncio.ensure_future(
            serve_until_end(rig.runner.ended, stopping, drain, rig.call.agent.say_goodbye_and_end)
        )
        stopping.set()
        assert await asyncio.wait_for(serving, 30) is EndReason.WORKER_LOST
        assert len(rig.call.sink.segments) > said  # the goodbye was spoken before the end
        await rig.call.wait_for(lambda: rig.runner.ended.is_set(), 10, "the end of the call")
        record = await rig.manager.get(rig.room)
        assert record is not None and record.reason is EndReason.WORKER_LOST


async def test_an_idle_worker_stops_waiting_for_a_call_at_once() -> None:
    never = threading.Event()  # a VoiceSession watch that would block for as long as it likes
    stopping = asyncio.Event()
    waiting = asyncio.ensure_future(unless_stopped(lambda: never.wait(3600), stopping))
    try:
        await asyncio.sleep(0.2)
        assert not waiting.done()
        stopping.set()  # SIGTERM
        assert await asyncio.wait_for(waiting, 10) is None
    finally:
        never.set()  # let the abandoned daemon thread go
    # an assignment that arrives is returned as it is
    assert await unless_stopped(lambda: {"kind": "VoiceSession"}, asyncio.Event()) == {"kind": "VoiceSession"}


async def test_sigterm_turns_the_readiness_probe_to_503(monkeypatch: pytest.MonkeyPatch) -> None:
    import aiohttp

    from voicehive_worker.entrypoint import Warm, serve_readiness

    monkeypatch.setenv("VOICEHIVE_READY_HOST", "127.0.0.1")
    warm = Warm(spec=line_spec(), vad=None, privacy=None, endpoints=None, voice=None, ready=True)
    readiness = await serve_readiness(warm, 0)
    stopping = asyncio.Event()
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{readiness.port}/readyz"
            async with http.get(url) as r:
                assert r.status == 200
            readiness.stop(stopping)  # what the SIGTERM handler runs
            assert stopping.is_set()
            async with http.get(url) as r:
                assert r.status == 503  # the operator claims no new call for this pod
    finally:
        await readiness.cleanup()


async def test_sigterm_ends_at_once_a_call_whose_caller_is_not_in_the_room() -> None:
    """Nothing to drain: a worker bound to a call whose caller never joined (or was erased first)
    must not hold its Pod for the whole grace period (found on the installed chart: uninstall
    waited for such a worker)."""
    ended, stopping = asyncio.Event(), asyncio.Event()
    said: list[EndReason] = []

    async def goodbye(reason: EndReason) -> None:
        said.append(reason)
        ended.set()

    drain = Drain(grace_s=1830, max_call_s=1800)
    serving = asyncio.ensure_future(serve_until_end(ended, stopping, drain, goodbye, caller_present=lambda: False))
    stopping.set()
    assert await asyncio.wait_for(serving, 60) is EndReason.WORKER_LOST
    assert said == [EndReason.WORKER_LOST]
