"""A VAD that runs behind the audio (a loaded CPU) must not leave a reply paused for ever.

Found by CI (2026-12-03, ``test_french_to_italian_mid_call_switches_within_one_turn``): the reply
was synthesised, its first frame reached the earpiece, the agent was "speaking", and the caller
heard nothing for 60 s. Mechanism, in livekit-agents 1.8.9 ``AgentActivity``: our TurnTaker ends
the turn from the ASR's word times (0.3 s of silence) while Silero, which needs 0.55 s of silence
and runs late under load, still reports speech; ``_reconcile_playout_pause`` then pauses the
reply "until EOS/transcripts/turn commit resolve it", but all three have already happened and the
framework flushed (reset) the VAD on the ASR's end of speech, so no VAD end of speech follows.

The lag is made explicit here: :class:`LaggingVAD` runs real Silero on the caller's audio
``lag`` seconds late, frames and flushes in order, as a VAD whose inference queue is backed up.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial

import pytest
from livekit import rtc
from livekit.agents import vad as lk_vad

from tests.worker.callrig import line_spec, provider_fakes, running_call
from tests.worker.speech import espeak_available, speak
from voicehive_worker.audio_io import Segment
from voicehive_worker.session import load_vad
from voicehive_worker.turn_taking import TurnTakingOptions

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not espeak_available(), reason="espeak-ng is needed for caller speech"),
]


class LaggingVAD(lk_vad.VAD):
    """Silero, fed everything ``lag`` seconds after it arrived (order kept, flushes included)."""

    def __init__(self, inner: lk_vad.VAD, lag: float) -> None:
        super().__init__(capabilities=inner.capabilities)
        self.inner, self.lag = inner, lag

    def stream(self) -> lk_vad.VADStream:
        return _LaggingStream(self)


class _LaggingStream(lk_vad.VADStream):
    def __init__(self, vad: LaggingVAD) -> None:
        self._lagging = vad
        super().__init__(vad)

    async def _main_task(self) -> None:
        inner = self._lagging.inner.stream()
        backlog: asyncio.Queue[tuple[float, object]] = asyncio.Queue()
        tasks = [asyncio.create_task(self._late(inner, backlog)), asyncio.create_task(self._relay(inner))]
        try:
            async for item in self._input_ch:
                backlog.put_nowait((time.monotonic() + self._lagging.lag, item))
            backlog.put_nowait((time.monotonic() + self._lagging.lag, None))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await inner.aclose()

    @staticmethod
    async def _late(inner: lk_vad.VADStream, backlog: asyncio.Queue[tuple[float, object]]) -> None:
        """Hands each frame (and flush) to Silero ``lag`` seconds after it arrived."""
        while True:
            due, item = await backlog.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if item is None:
                inner.end_input()
                return
            if isinstance(item, rtc.AudioFrame):
                inner.push_frame(item)
            else:
                inner.flush()

    async def _relay(self, inner: lk_vad.VADStream) -> None:
        async for event in inner:
            self._event_ch.send_nowait(event)


def _finished(segment: Segment) -> bool:
    return segment.finished_at is not None


async def test_replies_are_heard_when_the_vad_runs_behind_the_audio() -> None:
    said = ["I would like a room for two nights", "Is breakfast included in the price"]
    reply = "Certainly, I can help with that."
    vad = LaggingVAD(load_vad(TurnTakingOptions()), lag=0.4)
    async with (
        provider_fakes(said, lambda messages, tools: reply) as fakes,
        running_call(fakes, line_spec(), greet=False, vad=vad) as call,
    ):
        await asyncio.sleep(0.5)
        for text in said:
            utt = call.say(speak(text), text)
            heard = await call.wait_reply(utt, timeout=10)
            # the reply is heard to its end within seconds, not after the caller speaks again
            await call.wait_for(partial(_finished, heard), 10, f"the reply to {text!r} to be heard",
                                state=call.playout_state)
            assert not heard.interrupted and heard.played == pytest.approx(heard.duration, abs=0.05)
            assert heard.played >= fakes.eleven.expected_seconds(reply) - 0.1
            await call.wait_quiet(timeout=10)
