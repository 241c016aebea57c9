"""Turn-taking: end of turn timed from the ASR's word end times, speculative replies, no cut-offs.

WHY this module exists (see docs/worker.md and the latency-anchor note): in a bare
livekit-agents 1.8.9 session with ``turn_detection="stt"`` the end-of-turn wait starts when the
nvidia plugin's END_OF_SPEECH event arrives, and that event carries no timing, so the framework
anchors the wait at "now" (≈100 ms after the caller really stopped); and the framework only
starts a preemptive reply from a final transcript *after* the turn is committed, i.e. never
early in STT mode. Together that is ~300 ms of avoidable silence per turn.

The seam is the documented ``Agent.stt_node`` override; nothing in the framework is forked.
:class:`TurnTaker` sits between the caller's audio and the STT events and rewrites the event
stream into what the framework already understands:

* every FINAL transcript is preceded by a PREFLIGHT_TRANSCRIPT with the same text, which makes
  the framework start the LLM (and, with ``preemptive_tts``, the TTS) speculatively at once,
  while the end-of-turn silence is still being confirmed;
* END_OF_SPEECH is emitted by us (the plugin's own START/END events are dropped: the nvidia
  plugin sends START only once per stream and END without timing), and only once the
  end-of-turn silence after the last recognised word has been *seen in the audio* (the word end
  time is on the audio clock). It carries ``speech_end_time`` = the wall-clock moment that word's
  final sample arrived (from our log of when each input frame arrived), so the framework commits
  at once, ``end_of_turn_silence`` after the caller truly stopped. Deciding on the audio clock
  keeps a lagging event loop from committing a turn whose continuation is still unread;
* a fast energy gate watches the same audio. If the caller goes on speaking inside the
  end-of-turn silence (a mid-sentence pause), the turn is simply not handed over (and if it was
  handed over in the silence's last frame, START_OF_SPEECH takes it back before the framework
  commits); the next preflight supersedes (cancels) the speculative reply. If the noise that
  triggered the gate never becomes words, the turn is closed from the gate's own silence.

Barge-in while the agent speaks stays with the framework's VAD interruption (configured in
:meth:`TurnTakingOptions.turn_handling`), so echo or line noise cannot cut the agent off here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from livekit import rtc
from livekit.agents import stt as lk_stt
from livekit.agents.voice.turn import TurnHandlingOptions

TurnEventKind = Literal["speech", "timer", "end"]  # what wakes the TurnTaker


@dataclass(frozen=True)
class TurnTakingOptions:
    """The line's turn-taking settings; one object configures the session and the TurnTaker."""

    end_of_turn_silence: float = 0.3
    """Silence after the last recognised word before the turn is the agent's (seconds)."""
    max_end_of_turn_delay: float = 3.0
    speculative: bool = True
    """Start the reply from the ASR final while the end-of-turn silence is being confirmed."""
    speculative_tts: bool = True
    """Also synthesise speculatively (the first audio is then ready when the turn commits)."""
    resume_gate: bool = True
    """Detect the caller going on speaking inside the end-of-turn silence from the raw audio."""
    gate_threshold_dbfs: float = -42.0
    gate_min_voiced: float = 0.03
    """Voiced audio needed (seconds, contiguous) before the gate calls it speech."""
    gate_guard: float = 0.05
    """Audio this soon after the last word's end still belongs to that word (release tail)."""
    reclose_after: float = 0.6
    """After a resume the ASR never turned into words: close the turn again after this much gate silence."""
    interruption_min_duration: float = 0.12
    """Caller speech (per Silero VAD) needed to interrupt the agent, seconds. Short on purpose:
    an interruption first *pauses* the agent, and a false one (a cough, line noise: no words
    within ``false_interruption_timeout``) resumes it, so a low threshold costs little and the
    caller is heard at once (~250 ms from the first voiced sample to silence, see the bench)."""
    false_interruption_timeout: float | None = 1.5
    vad_min_silence: float = 0.55
    audio_stall: float = 1.0
    """No caller audio for this long (seconds, wall clock) while a turn waits: close it anyway."""

    def turn_handling(self) -> TurnHandlingOptions:
        """The AgentSession ``turn_handling`` that matches this module's event rewriting."""
        return TurnHandlingOptions(
            turn_detection="stt",
            endpointing={"mode": "fixed", "min_delay": self.end_of_turn_silence, "max_delay": self.max_end_of_turn_delay},
            interruption={
                "enabled": True,
                "mode": "vad",
                "min_duration": self.interruption_min_duration,
                "min_words": 0,
                "resume_false_interruption": self.false_interruption_timeout is not None,
                "false_interruption_timeout": self.false_interruption_timeout,
                "discard_audio_if_uninterruptible": True,
            },
            preemptive_generation={
                "enabled": self.speculative,
                "preemptive_tts": self.speculative_tts,
                "max_speech_duration": 30.0,
                "max_retries": 1000,
            },
        )


@dataclass
class TurnStats:
    """What the turn-taker did, for the VoiceSession latency summary and the benchmark."""

    finals: int = 0
    speculations: int = 0
    """Preflights emitted (each one starts a speculative LLM request)."""
    resumes: int = 0
    """Caller went on speaking inside the end-of-turn silence (speculation superseded)."""
    recloses: int = 0
    speech_ends: list[float] = field(default_factory=list)
    """Wall-clock end of the last word of each closed turn (time.time())."""


class _FrameClock:
    """Maps an audio position (seconds since the first frame given to the ASR) to arrival time.

    WHY: ASR word times are on the audio clock; the framework's end-of-turn timer is on the wall
    clock. The frame that carried a sample tells exactly when that sample reached us.
    """

    def __init__(self, horizon: float = 60.0) -> None:
        self._frames: deque[tuple[float, float]] = deque()  # (audio end position, arrival wall time)
        self._position = 0.0
        self._horizon = horizon

    @property
    def position(self) -> float:
        return self._position

    def add(self, duration: float, arrived_at: float) -> None:
        self._position += duration
        self._frames.append((self._position, arrived_at))
        while self._frames and self._frames[0][0] < self._position - self._horizon:
            self._frames.popleft()

    def wall_time(self, position: float) -> float | None:
        for end, arrived in self._frames:
            if end >= position - 1e-6:
                return arrived - (end - position)
        if self._frames:
            end, arrived = self._frames[-1]
            return arrived - (end - position)
        return None


class _EnergyGate:
    """Voiced/unvoiced per 10 ms on the audio clock, with the onset of the latest long-enough voiced run."""

    def __init__(self, threshold_dbfs: float, min_voiced: float) -> None:
        self.threshold = 32768.0 * 10 ** (threshold_dbfs / 20)
        self.min_voiced = min_voiced
        self._run_start: float | None = None
        self.last_onset: float | None = None  # audio position where a qualifying voiced run began
        self.last_voiced: float | None = None  # audio position of the end of the last voiced 10 ms

    def feed(self, frame: rtc.AudioFrame, end_position: float) -> bool:
        """Returns True when a qualifying voiced run (re)starts in this frame (ending at ``end_position``)."""
        samples = np.frombuffer(frame.data, dtype=np.int16)
        if frame.num_channels > 1:
            samples = samples[:: frame.num_channels]
        step = max(1, frame.sample_rate // 100)
        usable = len(samples) - len(samples) % step
        if usable == 0:
            return False
        chunks = samples[:usable].astype(np.float32).reshape(-1, step)
        rms = np.sqrt(np.mean(chunks * chunks, axis=1))
        n = len(rms)
        started = False
        for i, value in enumerate(rms.tolist()):
            at = end_position - (n - 1 - i) * 0.01  # end of this 10 ms chunk
            if value > self.threshold:
                if self._run_start is None:
                    self._run_start = at - 0.01
                self.last_voiced = at
                long_enough = at - self._run_start >= self.min_voiced - 1e-6
                if long_enough and (self.last_onset is None or self._run_start > self.last_onset):
                    self.last_onset = self._run_start
                    started = True
            else:
                self._run_start = None
        return started


class TurnTaker:
    """Rewrites one STT stream's events (see module docstring). One instance per stt_node run.

    Every decision is taken on the audio clock (seconds of caller audio seen), never on the wall
    clock: a turn is handed to the framework only once the end-of-turn silence after its last
    word has actually been *seen* in the audio. WHY: on a loaded machine the event loop can fall
    behind the caller's audio; a wall-clock timer would then commit a turn whose continuation is
    already waiting, unread, in the queue (the caller hears the agent start over them).
    """

    def __init__(
        self, options: TurnTakingOptions, stats: TurnStats | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.options = options
        self._now = clock  # wall clock (the framework's time.time); injectable for unit tests
        self.stats = stats or TurnStats()
        self._clock = _FrameClock()
        self._gate = _EnergyGate(options.gate_threshold_dbfs, options.gate_min_voiced)
        self._queue: asyncio.Queue[tuple[TurnEventKind, Any]] = asyncio.Queue()
        self._speaking = False  # as told to the framework
        self._held_end: float | None = None  # audio end of a final turn whose silence is still being watched
        self._close_queued = False
        self._open_turn_end: float | None = None  # audio end of the closed-but-uncommitted turn
        self._last_final: lk_stt.SpeechEvent | None = None
        self._resumed_at: float | None = None  # audio position the caller went on speaking
        self._last_frame_at: float = self._now()
        self._timer: asyncio.TimerHandle | None = None
        self.on_final: Callable[[lk_stt.SpeechEvent], None] | None = None

    # -- audio side ---------------------------------------------------------------------

    async def tap(self, audio: AsyncIterable[rtc.AudioFrame]) -> AsyncIterator[rtc.AudioFrame]:
        """Passes frames to the ASR unchanged, logging arrival times and watching for speech."""
        async for frame in audio:
            self._last_frame_at = now = self._now()
            duration = frame.samples_per_channel / frame.sample_rate
            self._clock.add(duration, now)
            if self._gate.feed(frame, self._clock.position) and self.options.resume_gate:
                self._on_gate_onset()
            self._watch_silence(duration)
            yield frame

    def _on_gate_onset(self) -> None:
        end = self._held_end if self._held_end is not None else self._open_turn_end
        onset = self._gate.last_onset
        if end is None or onset is None or onset <= end + self.options.gate_guard:
            return
        if onset > end + self.options.end_of_turn_silence:
            return  # the turn was already the agent's: barge-in is the framework's job
        self._queue.put_nowait(("timer", "resume"))

    def _watch_silence(self, frame_duration: float) -> None:
        """Queues the turn's close once its end-of-turn silence (or a reclose silence) has been seen."""
        if self._close_queued:
            return
        position = self._clock.position
        if self._held_end is not None and self._resumed_at is None:
            # within one frame is enough: the framework sleeps the few ms left on its own timer
            if position >= self._held_end + self.options.end_of_turn_silence - frame_duration:
                self._close_queued = True
                self._queue.put_nowait(("timer", "close"))
        elif self._resumed_at is not None:
            last = max(self._gate.last_voiced or 0.0, self._resumed_at)
            if position - last >= self.options.reclose_after:
                self._close_queued = True
                self._queue.put_nowait(("timer", "reclose"))

    # -- event side ---------------------------------------------------------------------

    async def process(self, events: AsyncIterable[lk_stt.SpeechEvent]) -> AsyncIterator[lk_stt.SpeechEvent]:
        """The rewritten event stream for the framework."""

        async def pump() -> None:
            try:
                async for ev in events:
                    await self._queue.put(("speech", ev))
            finally:
                await self._queue.put(("end", None))

        pump_task = asyncio.create_task(pump(), name="turn-taker-pump")
        try:
            while True:
                kind, payload = await self._queue.get()
                if kind == "end":
                    if self._held_end is not None or self._resumed_at is not None:
                        yield self._end_held()  # no more audio: the words so far are the turn
                    break
                if kind == "speech":
                    for out in self._on_speech_event(payload):
                        yield out
                elif payload == "resume":
                    for out in self._on_resume():
                        yield out
                elif payload in ("close", "reclose"):
                    for out in self._on_close(payload):
                        yield out
            if pump_task.done() and pump_task.exception() is not None:
                raise pump_task.exception()  # type: ignore[misc]
        finally:
            if self._timer is not None:
                self._timer.cancel()
            pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump_task

    def _start(self, position: float | None = None) -> lk_stt.SpeechEvent:
        self._speaking = True
        at = self._clock.wall_time(position) if position is not None else None
        return lk_stt.SpeechEvent(type=lk_stt.SpeechEventType.START_OF_SPEECH, speech_start_time=at)

    def _speech_end_of(self, ev: lk_stt.SpeechEvent) -> float:
        """Audio position of the last recognised word's end; the gate's last voiced audio otherwise."""
        alt = ev.alternatives[0] if ev.alternatives else None
        if alt is not None and alt.end_time > 0:
            return min(alt.end_time, self._clock.position)
        if self._gate.last_voiced is not None:
            return self._gate.last_voiced
        return self._clock.position

    def _on_speech_event(self, ev: lk_stt.SpeechEvent) -> list[lk_stt.SpeechEvent]:
        kind = ev.type
        if kind in (lk_stt.SpeechEventType.START_OF_SPEECH, lk_stt.SpeechEventType.END_OF_SPEECH):
            return []  # we own speech boundaries (see module docstring)
        text = ev.alternatives[0].text.strip() if ev.alternatives else ""
        out: list[lk_stt.SpeechEvent] = []
        if kind == lk_stt.SpeechEventType.INTERIM_TRANSCRIPT:
            if text and not self._speaking:
                self._open_turn_end = None
                out.append(self._start())
            out.append(ev)
            return out
        if kind != lk_stt.SpeechEventType.FINAL_TRANSCRIPT:
            return [ev]
        if not text:
            return [ev]
        if self.on_final is not None:
            self.on_final(ev)  # before the preflight: the listener may switch the reply's language
        self.stats.finals += 1
        if not self._speaking:
            out.append(self._start())
        end = self._speech_end_of(ev)
        onset = self._gate.last_onset
        resumed = self.options.resume_gate and onset is not None and onset > end + self.options.gate_guard
        if self.options.speculative and not resumed:
            self.stats.speculations += 1
            out.append(replace(ev, type=lk_stt.SpeechEventType.PREFLIGHT_TRANSCRIPT))
        out.append(ev)
        self._last_final = ev
        self._held_end = end
        self._close_queued = False
        if resumed:
            # the caller is already speaking again: keep the turn open, wait for more words
            self.stats.resumes += 1
            self._resumed_at = onset
        else:
            self._resumed_at = None
        self._arm_stall_check()
        self._watch_silence(0.0)  # the silence may already be behind us (a slow final)
        return out

    def _end(self, speech_end: float) -> lk_stt.SpeechEvent:
        """END_OF_SPEECH anchored at the wall time the audio position ``speech_end`` arrived."""
        self._speaking = False
        self._open_turn_end = speech_end
        self._held_end = None
        self._resumed_at = None
        self._close_queued = False
        wall = self._clock.wall_time(speech_end)
        wall = min(wall, self._now()) if wall is not None else self._now()
        self.stats.speech_ends.append(wall)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return lk_stt.SpeechEvent(type=lk_stt.SpeechEventType.END_OF_SPEECH, speech_end_time=wall)

    def _end_held(self) -> lk_stt.SpeechEvent:
        end = self._held_end if self._held_end is not None else self._open_turn_end or self._clock.position
        if self._resumed_at is not None:
            end = max(end, self._gate.last_voiced or 0.0)  # the noise that reopened the turn ended here
        return self._end(end)

    def _on_resume(self) -> list[lk_stt.SpeechEvent]:
        if self._held_end is not None:
            if self._resumed_at is not None:
                return []
            # the caller went on inside the silence before we handed the turn over: just keep it
            self.stats.resumes += 1
            self._resumed_at = self._gate.last_onset
            self._close_queued = False
            return []
        if self._speaking or self._open_turn_end is None:
            return []
        # handed over in the last frame of the silence: take it back before the framework commits
        self.stats.resumes += 1
        self._resumed_at = self._gate.last_onset
        self._held_end = self._open_turn_end
        self._close_queued = False
        self._arm_stall_check()
        return [self._start(self._resumed_at)]

    def _on_close(self, why: str) -> list[lk_stt.SpeechEvent]:
        if self._held_end is None:
            return []
        if why == "reclose":
            if self._resumed_at is None or self._last_final is None:
                return []
            self.stats.recloses += 1  # the gate fired but no words followed: the words so far are the turn
        elif self._resumed_at is not None:
            return []  # a resume came in between
        return [self._end_held()]

    def _arm_stall_check(self) -> None:
        """A wall-clock backstop for when the caller's audio stops arriving altogether."""
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.options.audio_stall, self._check_stall)

    def _check_stall(self) -> None:
        self._timer = None
        if self._held_end is None:
            return
        if self._now() - self._last_frame_at >= self.options.audio_stall and not self._close_queued:
            self._close_queued = True
            self._queue.put_nowait(("timer", "reclose" if self._resumed_at is not None else "close"))
        else:
            self._arm_stall_check()


async def turn_taking_stt_node(
    stt: lk_stt.STT[Any],
    audio: AsyncIterable[rtc.AudioFrame],
    options: TurnTakingOptions,
    *,
    stats: TurnStats | None = None,
    vad: Any = None,
    conn_options: Any = None,
    on_final: Callable[[lk_stt.SpeechEvent], None] | None = None,
) -> AsyncIterator[lk_stt.SpeechEvent]:
    """An ``Agent.stt_node`` body: the STT stream with the TurnTaker around it.

    Mirrors the framework's default node (stream per run, frames forwarded as they come) but
    keeps the stream's ``start_time_offset`` at 0 so word times stay on our audio clock.
    ``on_final`` sees every non-empty ASR final before the framework does (language, confidence).
    """
    taker = TurnTaker(options, stats)
    taker.on_final = on_final
    adapter: lk_stt.StreamAdapter | None = None
    engine = stt
    if not stt.capabilities.streaming:
        if vad is None:
            raise RuntimeError(f"STT {stt.label} does not stream; a VAD is needed to wrap it")
        adapter = lk_stt.StreamAdapter(stt=stt, vad=vad)
        engine = adapter
    kwargs = {"conn_options": conn_options} if conn_options is not None else {}
    try:
        async with engine.stream(**kwargs) as stream:

            async def forward() -> None:
                async for frame in taker.tap(audio):
                    stream.push_frame(frame)
                stream.end_input()

            forward_task = asyncio.create_task(forward(), name="turn-taker-forward")
            try:
                async for ev in taker.process(stream):
                    yield ev
            finally:
                forward_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await forward_task
    finally:
        if adapter is not None:
            await adapter.aclose()
