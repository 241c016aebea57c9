"""Custom audio input/output for a session without a LiveKit room (tests, bench, simulated call).

WHY: latency must be measured from the input, not from the framework's own estimate. The
caller side here knows exactly when the last voiced sample of each utterance went in, and the
agent side knows exactly when the first frame of each reply came out; both on
``time.monotonic`` (the fakes' clock too).

:class:`CallerAudioInput` plays queued PCM as 20 ms frames paced in real time (silence in
between, like a phone line). :class:`AgentAudioSink` "plays" reply audio in real time, honours
pause/clear (barge-in), and reports playback to the framework as its contract requires
(``on_playback_started`` on a segment's first frame, ``on_playback_finished`` on flush/clear).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc
from livekit.agents.voice.io import AudioInput, AudioOutput, AudioOutputCapabilities

SAMPLE_RATE = 16000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
VOICED_DBFS = -45.0  # what counts as a voiced sample for the v2v measurement (the fakes' threshold)


def pcm_from_float(samples: np.ndarray) -> bytes:
    clipped = np.clip(samples, -1.0, 1.0)
    pcm: bytes = (clipped * 32767.0).astype("<i2").tobytes()
    return pcm


def tone(seconds: float, *, freq: float = 220.0, level_dbfs: float = -12.0, sample_rate: int = SAMPLE_RATE) -> bytes:
    """A voiced stand-in for speech (harmonic-rich, so Silero VAD also fires on it)."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    amp = 10 ** (level_dbfs / 20)
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 8))
    # syllable-like amplitude modulation at 4 Hz
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t)
    out = amp * wave / np.max(np.abs(wave) + 1e-9) * envelope
    fade = min(n // 2, int(0.005 * sample_rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        out[:fade] *= ramp
        out[-fade:] *= ramp[::-1]
    return pcm_from_float(out)


def silence(seconds: float, sample_rate: int = SAMPLE_RATE) -> bytes:
    return b"\x00\x00" * int(seconds * sample_rate)


def last_voiced_offset(pcm: bytes, sample_rate: int = SAMPLE_RATE, threshold_dbfs: float = VOICED_DBFS) -> float | None:
    """Seconds from the start of ``pcm`` to the end of its last voiced 10 ms (None: all silent)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    step = sample_rate // 100
    usable = len(samples) - len(samples) % step
    if usable == 0:
        return None
    rms = np.sqrt(np.mean(samples[:usable].reshape(-1, step) ** 2, axis=1))
    voiced = np.nonzero(rms > 32768.0 * 10 ** (threshold_dbfs / 20))[0]
    if len(voiced) == 0:
        return None
    return float((voiced[-1] + 1) * step / sample_rate)


@dataclass
class Utterance:
    """One caller utterance as played: when its last voiced sample went into the pipeline."""

    label: str
    queued_at: float
    started_at: float | None = None
    last_voiced_at: float | None = None  # monotonic


class CallerAudioInput(AudioInput):
    """The caller's microphone: queued PCM (16 kHz mono s16) as paced 20 ms frames.

    ``speed`` > 1 feeds faster than real time (only for functional tests, never for latency).
    """

    def __init__(self, *, speed: float = 1.0, label: str = "caller") -> None:
        super().__init__(label=label)
        self.speed = speed
        self._pending: deque[tuple[bytes, Utterance | None]] = deque()
        self._buffer = b""
        self._current: Utterance | None = None
        self._current_voiced_end: float | None = None
        self._consumed_in_current = 0
        self._next_at: float | None = None
        self._closed = False
        self.utterances: list[Utterance] = []
        self.frames_sent = 0

    def say(self, pcm: bytes, label: str = "") -> Utterance:
        """Queues an utterance (played after whatever is queued before it)."""
        utt = Utterance(label=label, queued_at=time.monotonic())
        self._pending.append((pcm, utt))
        self.utterances.append(utt)
        return utt

    def pause(self, seconds: float) -> None:
        """Queues silence (e.g. a mid-sentence pause between two parts of one utterance)."""
        self._pending.append((silence(seconds), None))

    @property
    def idle(self) -> bool:
        """Nothing left to play."""
        return not self._pending and not self._buffer

    def close(self) -> None:
        """The caller hung up: the input ends."""
        self._closed = True

    def _next_frame(self, now: float) -> bytes:
        need = FRAME_SAMPLES * 2
        out = b""
        while len(out) < need:
            if not self._buffer:
                if not self._pending:
                    out += b"\x00" * (need - len(out))
                    break
                pcm, utt = self._pending.popleft()
                self._buffer = pcm
                self._consumed_in_current = 0
                if utt is not None:
                    self._current = utt
                    offset = last_voiced_offset(pcm)
                    self._current_voiced_end = offset
                else:
                    self._current = None
                    self._current_voiced_end = None
            take = self._buffer[: need - len(out)]
            self._buffer = self._buffer[len(take) :]
            start_in_frame = len(out) // 2
            out += take
            utt = self._current
            if utt is not None:
                if utt.started_at is None:
                    utt.started_at = now
                before = self._consumed_in_current / SAMPLE_RATE
                self._consumed_in_current += len(take) // 2
                after = self._consumed_in_current / SAMPLE_RATE
                end = self._current_voiced_end
                if end is not None and before < end <= after + 1e-9:
                    # the frame is complete (delivered) at `now`; the sample sits earlier in it
                    samples_after = (FRAME_SAMPLES - start_in_frame) - round((end - before) * SAMPLE_RATE)
                    utt.last_voiced_at = now - samples_after / SAMPLE_RATE / self.speed
        return out

    async def __anext__(self) -> rtc.AudioFrame:
        if self._closed:
            raise StopAsyncIteration
        period = FRAME_MS / 1000 / self.speed
        now = time.monotonic()
        if self._next_at is None:
            self._next_at = now + period
        delay = self._next_at - now
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.2:
            self._next_at = now  # we fell far behind (debugger, GC): do not burst
        self._next_at += period
        if self._closed:
            raise StopAsyncIteration
        data = self._next_frame(time.monotonic())
        self.frames_sent += 1
        return rtc.AudioFrame(data=data, sample_rate=SAMPLE_RATE, num_channels=1, samples_per_channel=FRAME_SAMPLES)


@dataclass
class Segment:
    """One reply segment as the caller hears it."""

    first_frame_at: float  # monotonic: first frame handed to the output (the v2v end point)
    frames: int = 0
    duration: float = 0.0
    pcm: bytearray = field(default_factory=bytearray)
    finished_at: float | None = None
    interrupted: bool = False
    played: float = 0.0


class AgentAudioSink(AudioOutput):
    """The caller's earpiece: real-time playout with pause/clear, recording what was heard."""

    def __init__(self, *, sample_rate: int | None = SAMPLE_RATE, keep_audio: bool = True, label: str = "agent") -> None:
        super().__init__(label=label, capabilities=AudioOutputCapabilities(pause=True), sample_rate=sample_rate)
        self.keep_audio = keep_audio
        self.segments: list[Segment] = []
        self._queue: deque[rtc.AudioFrame] = deque()
        self._segment: Segment | None = None
        self._flushed = False
        self._paused = asyncio.Event()
        self._paused.set()  # set == playing
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.cleared_at: list[float] = []
        self.paused_at: list[float] = []

    def _ensure_task(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._playout(), name="agent-audio-playout")

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        self._ensure_task()
        if self._segment is None:
            self._segment = Segment(first_frame_at=time.monotonic())
            self.segments.append(self._segment)
            self._flushed = False
            self.on_playback_started(created_at=time.time())
        seg = self._segment
        seg.frames += 1
        seg.duration += frame.samples_per_channel / frame.sample_rate
        if self.keep_audio:
            seg.pcm += bytes(frame.data.cast("b"))
        self._queue.append(frame)
        self._wake.set()

    def flush(self) -> None:
        super().flush()
        if self._segment is None:
            return
        self._flushed = True
        self._wake.set()

    def clear_buffer(self) -> None:
        self._queue.clear()
        seg = self._segment
        if seg is None:
            return
        self.cleared_at.append(time.monotonic())
        self._finish(interrupted=True)

    def _finish(self, *, interrupted: bool) -> None:
        seg = self._segment
        if seg is None:
            return
        self._segment = None
        self._flushed = False
        seg.finished_at = time.monotonic()
        seg.interrupted = interrupted
        self.on_playback_finished(playback_position=seg.played, interrupted=interrupted)

    def pause(self) -> None:
        if self._paused.is_set():
            self.paused_at.append(time.monotonic())
        self._paused.clear()

    def resume(self) -> None:
        self._paused.set()

    def stopped_after(self, t: float) -> float | None:
        """When the caller stopped hearing agent audio (pause or clear) after ``t``, if they did."""
        times = [x for x in (*self.paused_at, *self.cleared_at) if x > t]
        return min(times) if times else None

    @property
    def playing(self) -> bool:
        """Whether the caller hears agent audio right now."""
        return self._segment is not None and bool(self._queue) and self._paused.is_set()

    async def _playout(self) -> None:
        next_at = time.monotonic()
        while True:
            if not self._queue:
                if self._segment is not None and self._flushed:
                    self._finish(interrupted=False)
                self._wake.clear()
                await self._wake.wait()
                next_at = max(next_at, time.monotonic())
                continue
            await self._paused.wait()
            if not self._queue:
                continue  # cleared while paused (barge-in)
            frame = self._queue.popleft()
            seg = self._segment
            duration = frame.samples_per_channel / frame.sample_rate
            next_at = max(next_at, time.monotonic()) + duration
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if seg is not None and seg is self._segment:
                seg.played += duration

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
