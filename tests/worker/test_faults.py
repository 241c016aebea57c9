"""Never dead air: provider faults mid-call, the caller hears the local fallback within 2 s.

The LLM tests run without the hotel-policy fallback (``llm_fallback=False``): they are about
the case where nothing can answer; ``test_llm_outage.py`` covers the fallback. Each test runs a
real session on the fakes with the watchdog attached, injects one fault
through the fake's own fault API, and checks from the caller's side (the sink's timeline)
that audio reached the caller within 2 s of the end of their speech, that the watchdog
named the cause, and that the call then carries on (the next turn gets a normal reply).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from livekit import rtc

from tests.worker.callrig import Call, line_spec, provider_fakes, running_call
from tests.worker.speech import espeak_available, speak
from voicehive.lifecycle import EndReason
from voicehive_worker.agent import HotelAgent, LocalCallActions
from voicehive_worker.audio_io import AgentAudioSink, Utterance
from voicehive_worker.watchdog import WatchdogOptions

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not espeak_available(), reason="espeak-ng is needed for caller speech and the fallback"),
]

REPLY = "Of course, happy to help."
FIRST = "I would like to book a room"
SECOND = "Do you have parking"
THIRD = "What time is breakfast"
FOURTH = "Is there a sauna"


async def _heard_within(call: Call, utt: Utterance, seconds: float) -> float:
    """Seconds from the caller's last voiced sample to the first agent audio after it."""
    seg = await call.wait_reply(utt, timeout=seconds + 3)
    assert utt.last_voiced_at is not None
    gap = seg.first_frame_at - utt.last_voiced_at
    assert gap <= seconds, f"dead air: the caller heard nothing for {gap:.2f}s"
    return gap


async def _normal_turn(call: Call, text: str) -> None:
    await call.wait_quiet()
    await asyncio.sleep(0.3)
    utt = call.say(speak(text), text)
    await _heard_within(call, utt, 2.0)


async def test_asr_server_killed_mid_call() -> None:
    async with (
        provider_fakes([FIRST, SECOND, THIRD], lambda m, t: REPLY) as fakes,
        running_call(fakes, line_spec(), greet=False, watchdog=True) as call,
    ):
        assert call.watchdog is not None
        await asyncio.sleep(0.3)
        await _normal_turn(call, FIRST)
        await call.wait_quiet()
        await fakes.riva.kill()
        utt = call.say(speak(SECOND), "unheard")
        await _heard_within(call, utt, 2.0)
        assert [cause for _, cause in call.watchdog.report.fallbacks] == ["asr_silent"]
        # the caller can still reach a person: the fallback says so, and the session is alive
        assert call.session.agent_state in ("listening", "speaking", "thinking")


async def test_llm_500_and_timeout_then_the_call_continues() -> None:
    async with (
        provider_fakes([FIRST, SECOND, THIRD, FOURTH], lambda m, t: REPLY) as fakes,
        # no policy fallback: nothing else can answer, so the watchdog must (test_llm_outage.py: with it)
        running_call(fakes, line_spec(), greet=False, watchdog=True, llm_fallback=False) as call,
    ):
        assert call.watchdog is not None
        await asyncio.sleep(0.3)
        fakes.azure.fail_next(500)
        utt = call.say(speak(FIRST), "llm 500")
        await _heard_within(call, utt, 2.0)
        await _normal_turn(call, SECOND)  # the LLM answers again
        await call.wait_quiet()
        fakes.azure.hang_next(6.0)
        utt = call.say(speak(THIRD), "llm hang")
        await _heard_within(call, utt, 2.0)
        causes = [cause for _, cause in call.watchdog.report.fallbacks]
        assert causes == ["llm_error", "reply_overdue"]
        await _normal_turn(call, FOURTH)
        assert call.watchdog.report.gave_up is None


async def test_llm_down_for_good_hands_the_call_over() -> None:
    gave_up: list[str] = []
    async with (
        provider_fakes([FIRST, SECOND], lambda m, t: REPLY) as fakes,
        running_call(fakes, line_spec(), greet=False, watchdog=True, llm_fallback=False) as call,
    ):
        assert call.watchdog is not None

        async def give_up(cause: str) -> None:
            gave_up.append(cause)

        call.watchdog.on_give_up = give_up
        await asyncio.sleep(0.3)
        fakes.azure.fail_next(500, count=10)
        for text in (FIRST, SECOND):
            utt = call.say(speak(text), text)
            await _heard_within(call, utt, 2.0)
            await call.wait_quiet()
        await call.wait_for(lambda: gave_up, 5, "the watchdog to hand the call over")
        assert gave_up == ["llm_error"]


async def test_tts_socket_dropped() -> None:
    async with (
        provider_fakes([FIRST, SECOND, THIRD], lambda m, t: REPLY) as fakes,
        running_call(fakes, line_spec(), greet=False, watchdog=True) as call,
    ):
        assert call.watchdog is not None
        await asyncio.sleep(0.3)
        # one drop: the plugin reconnects and the reply still comes, in time
        fakes.eleven.drop_next(after_chunks=0)
        utt = call.say(speak(FIRST), "tts drop once")
        await _heard_within(call, utt, 2.0)
        assert call.watchdog.report.fallbacks == []
        # every attempt dropped: the local fallback voice speaks instead
        await call.wait_quiet()
        fakes.eleven.drop_next(after_chunks=0, count=20)
        utt = call.say(speak(SECOND), "tts down")
        await _heard_within(call, utt, 2.0)
        assert [cause for _, cause in call.watchdog.report.fallbacks] in (["tts_error"], ["reply_overdue"])
        fakes.eleven.clear_faults()
        await _normal_turn(call, THIRD)


async def test_tts_down_when_the_call_is_answered() -> None:
    async with provider_fakes([FIRST], lambda m, t: REPLY) as fakes:
        fakes.eleven.drop_next(after_chunks=0, count=20)
        async with running_call(fakes, line_spec(), greet=True, watchdog=True) as call:
            started = time.monotonic()
            assert call.watchdog is not None
            first = await call.wait_for(lambda: call.sink.segments, 5, "any agent audio")
            assert first[0].first_frame_at - started <= 2.0, "dead air after answering"
            assert [cause for _, cause in call.watchdog.report.fallbacks] in (["tts_error"], ["reply_overdue"])



class StuckOutput(AgentAudioSink):
    """An audio output that takes no frame ever (a stuck track or transport): nothing plays."""

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await asyncio.Event().wait()


async def test_audio_output_stuck_hands_the_call_over() -> None:
    """Seen on the installed chart: a worker's greeting was overdue, the watchdog started the
    fallback, and the caller then heard nothing for 60 s: the fallback never played out and the
    watchdog, waiting on it, was disarmed. Now it waits the fallback's length plus a margin, then
    gives up (the entrypoint hands the call to the front desk or ends it with a reason)."""
    gave_up: list[str] = []

    async def on_give_up(cause: str) -> None:
        gave_up.append(cause)

    async with (
        provider_fakes([FIRST], lambda m, t: REPLY) as fakes,
        running_call(fakes, line_spec(), greet=True, watchdog=True, sink=StuckOutput(),
                     watchdog_options=WatchdogOptions(playout_margin=1.0)) as call,
    ):
        assert call.watchdog is not None
        call.watchdog.on_give_up = on_give_up
        fallback_s = len(call.watchdog.voice.fallback) / 2 / 16000
        await call.wait_for(lambda: gave_up, 1.5 + fallback_s + 1.0 + 5, "the call handed over")
        assert gave_up == ["audio_output_stuck"]
        assert call.watchdog.report.gave_up == "audio_output_stuck"
        assert [cause for _, cause in call.watchdog.report.fallbacks] == ["reply_overdue"]


async def test_audio_output_stuck_still_reaches_the_front_desk() -> None:
    """The hand-over itself announces "transferring you" and waited for it to play out: with a
    stuck output the transfer never happened. The announcement now waits a bounded time."""
    async with (
        provider_fakes([FIRST], lambda m, t: REPLY) as fakes,
        running_call(fakes, line_spec(), greet=True, watchdog=True, sink=StuckOutput(),
                     watchdog_options=WatchdogOptions(playout_margin=1.0)) as call,
    ):
        assert call.watchdog is not None
        agent = call.agent
        assert isinstance(agent, HotelAgent)

        async def give_up(cause: str) -> None:  # as the entrypoint's _give_up
            await agent.to_front_desk(reason="watchdog")

        call.watchdog.on_give_up = give_up
        actions = call.actions
        assert isinstance(actions, LocalCallActions)
        await call.wait_for(lambda: actions.transfers, 30, "the transfer to the front desk")
        assert actions.ended is EndReason.TRANSFERRED
