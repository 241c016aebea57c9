"""``vad_reset.ResettingVAD``: a flush drops what the wrapped VAD has not judged yet, nothing else."""

from __future__ import annotations

import asyncio

from livekit import rtc
from livekit.agents import vad as lk_vad

from voicehive_worker.audio_io import FRAME_SAMPLES, SAMPLE_RATE
from voicehive_worker.vad_reset import ResettingVAD, resetting


class SlowVAD(lk_vad.VAD):
    """Judges each frame 50 ms after it arrives: one INFERENCE_DONE per frame, numbered per stream."""

    def __init__(self) -> None:
        super().__init__(capabilities=lk_vad.VADCapabilities(update_interval=0.02))
        self.streams = 0

    def stream(self) -> lk_vad.VADStream:
        self.streams += 1
        return _SlowStream(self)


class _SlowStream(lk_vad.VADStream):
    async def _main_task(self) -> None:
        index = 0
        async for item in self._input_ch:
            if not isinstance(item, rtc.AudioFrame):
                continue
            await asyncio.sleep(0.05)
            index += 1
            self._event_ch.send_nowait(lk_vad.VADEvent(
                type=lk_vad.VADEventType.INFERENCE_DONE, samples_index=index, timestamp=0.0,
                speech_duration=0.0, silence_duration=0.0, speaking=True, frames=[item]))


def _frame(value: int) -> rtc.AudioFrame:
    data = value.to_bytes(2, "little", signed=True) * FRAME_SAMPLES
    return rtc.AudioFrame(data=data, sample_rate=SAMPLE_RATE, num_channels=1, samples_per_channel=FRAME_SAMPLES)


def _value(event: lk_vad.VADEvent) -> int:
    return int.from_bytes(bytes(event.frames[0].data.cast("b"))[:2], "little", signed=True)


async def _collect(stream: lk_vad.VADStream, count: int) -> list[lk_vad.VADEvent]:
    events: list[lk_vad.VADEvent] = []
    async with asyncio.timeout(10):
        async for event in stream:
            events.append(event)
            if len(events) == count:
                break
    return events


async def test_a_flush_discards_the_unjudged_backlog_and_starts_afresh() -> None:
    inner = SlowVAD()
    stream = resetting(inner).stream()
    for value in (1, 2, 3, 4):  # the ended turn, still queued when the flush comes
        stream.push_frame(_frame(value))
    stream.flush()
    for value in (7, 8):
        stream.push_frame(_frame(value))
    events = await _collect(stream, 2)
    await asyncio.sleep(0.3)  # anything the old stream had left would have arrived by now
    stream.end_input()
    rest = [e async for e in stream]
    assert [_value(e) for e in events + rest] == [7, 8]
    assert [e.samples_index for e in events] == [1, 2]  # counted from a fresh stream, as after a reset


async def test_without_a_flush_every_frame_is_judged_in_order() -> None:
    stream = ResettingVAD(SlowVAD()).stream()
    for value in range(1, 6):
        stream.push_frame(_frame(value))
    events = await _collect(stream, 5)
    await stream.aclose()
    assert [_value(e) for e in events] == [1, 2, 3, 4, 5]


def test_wrapping_is_idempotent() -> None:
    once = resetting(SlowVAD())
    assert resetting(once) is once
