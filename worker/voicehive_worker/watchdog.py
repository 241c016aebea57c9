"""Never dead air: notice a stuck pipeline and speak a local fallback within 2 s.

WHY a watchdog and not only error events: the nvidia plugin fails silently (its recognition
thread logs and dies, no ``error`` event, no retry), and a hung LLM produces nothing at all
until its read timeout. So the watchdog watches *outcomes* on the session's public events:

* caller spoke (VAD) but no transcript came within ``asr_deadline`` after the speech ended;
* the agent started thinking but no reply audio came within ``reply_deadline``;
* an unrecoverable LLM/TTS error event.

The fallback is pre-rendered at start-up with the local espeak-ng engine (no provider
involved) and played with ``session.say(audio=...)``, so it works when Riva, Azure and
ElevenLabs are all gone. It offers the front desk (DTMF 0 works regardless); after
``max_consecutive`` failures in a row the call is handed to ``on_give_up`` (transfer or end).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from livekit import rtc

from voicehive_worker import phrases

log = logging.getLogger("voicehive.worker.watchdog")

SAMPLE_RATE = 16000

FALLBACK_TEXT = phrases.FALLBACK
GIVE_UP_TEXT = phrases.GIVE_UP


async def local_voice_pcm(text: str, language: str) -> bytes:
    """16 kHz mono s16 speech from the local eSpeak NG engine (``engines.espeak_tts``)."""
    from voicehive_worker.engines.espeak_tts import EspeakOptions, synthesize_pcm

    audio = await synthesize_pcm(text, EspeakOptions(language=language, sample_rate=SAMPLE_RATE))
    pcm: bytes = audio.astype("<i2").tobytes()
    if not pcm:
        raise RuntimeError(f"the local voice produced no audio for language {language!r}")
    return pcm


async def frames_of(pcm: bytes, frame_ms: int = 20) -> AsyncIterator[rtc.AudioFrame]:
    step = SAMPLE_RATE * frame_ms // 1000 * 2
    for i in range(0, len(pcm), step):
        chunk = pcm[i : i + step]
        if len(chunk) < step:
            chunk += b"\x00" * (step - len(chunk))
        yield rtc.AudioFrame(data=chunk, sample_rate=SAMPLE_RATE, num_channels=1, samples_per_channel=step // 2)


@dataclass(frozen=True)
class WatchdogOptions:
    asr_deadline: float = 0.6
    """After the VAD says the caller stopped (≈0.65 s after the real end), wait this long for any transcript."""
    reply_deadline: float = 1.3
    """From 'thinking' (turn committed or speculation started) to the first reply audio."""
    max_consecutive: int = 2
    error_grace: float = 0.6
    """After an unrecoverable LLM/TTS error, how long a framework retry may take before the fallback."""
    playout_margin: float = 3.0
    """Beyond its own length, how long the fallback may take to be heard before the agent's audio
    output counts as stuck (then the call is handed over at once: nothing we say is heard)."""


@dataclass
class FallbackVoice:
    """Pre-rendered local audio for the fallback lines of one language."""

    language: str
    fallback: bytes = b""
    give_up: bytes = b""

    @classmethod
    async def render(
        cls, language: str, render: Callable[[str, str], Awaitable[bytes]] = local_voice_pcm
    ) -> FallbackVoice:
        lang = language.split("-")[0].lower()
        fb = FALLBACK_TEXT.get(lang, FALLBACK_TEXT["en"])
        gu = GIVE_UP_TEXT.get(lang, GIVE_UP_TEXT["en"])
        voice_lang = lang if lang in FALLBACK_TEXT else "en"
        return cls(language=language, fallback=await render(fb, voice_lang), give_up=await render(gu, voice_lang))

    @classmethod
    async def render_all(
        cls, languages: list[str], render: Callable[[str, str], Awaitable[bytes]] = local_voice_pcm
    ) -> dict[str, FallbackVoice]:
        """One pre-rendered voice per language of the line (keyed by base code)."""
        voices: dict[str, FallbackVoice] = {}
        for language in languages:
            key = phrases.base(language)
            if key not in voices:
                voices[key] = await cls.render(language, render)
        return voices


@dataclass
class WatchdogReport:
    """What happened, for the call status and tests (no transcript content)."""

    fallbacks: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, cause)
    gave_up: str | None = None


class Watchdog:
    """Attach to a started AgentSession; see the module docstring."""

    def __init__(
        self,
        session: Any,
        voice: FallbackVoice,
        *,
        options: WatchdogOptions | None = None,
        on_give_up: Callable[[str], Awaitable[None]] | None = None,
        voices: Mapping[str, FallbackVoice] | None = None,
        language: Callable[[], str] | None = None,
    ) -> None:
        self.session = session
        self.voice = voice
        self.voices = dict(voices or {})
        self.language = language  # the call's current language, to apologise in it
        self.options = options or WatchdogOptions()
        self.on_give_up = on_give_up
        self.report = WatchdogReport()
        self._asr_timer: asyncio.TimerHandle | None = None
        self._reply_timer: asyncio.TimerHandle | None = None
        self._transcript_since_speech = False
        self._consecutive = 0
        self._playing_fallback = False
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_error: str | None = None

    def attach(self) -> Watchdog:
        s = self.session
        s.on("user_state_changed", self._on_user_state)
        s.on("user_input_transcribed", self._on_transcript)
        s.on("agent_state_changed", self._on_agent_state)
        s.on("error", self._on_error)
        s.on("close", lambda _ev: self.close())
        return self

    def expect_speech(self, within: float = 1.5) -> None:
        """The agent must be heard within ``within`` seconds (the greeting right after answering)."""
        self._arm("reply", within)

    def current_voice(self) -> FallbackVoice:
        """The apology in the call's current language (the line's first when not pre-rendered)."""
        if self.language is None:
            return self.voice
        return self.voices.get(phrases.base(self.language()), self.voice)

    def close(self) -> None:
        self._closed = True
        for timer in (self._asr_timer, self._reply_timer):
            if timer is not None:
                timer.cancel()

    # -- events --------------------------------------------------------------------------

    def _on_user_state(self, ev: Any) -> None:
        if ev.new_state == "speaking":
            self._transcript_since_speech = False
            self._cancel("reply")  # the caller talks: a late reply is not dead air
            self._cancel("asr")
        elif ev.old_state == "speaking" and ev.new_state == "listening" and not self._transcript_since_speech:
            self._arm("asr", self.options.asr_deadline)

    def _on_transcript(self, ev: Any) -> None:
        if getattr(ev, "transcript", "").strip():
            self._transcript_since_speech = True
            self._cancel("asr")

    def _on_agent_state(self, ev: Any) -> None:
        if ev.new_state == "thinking":
            self._arm("reply", self.options.reply_deadline)
        elif ev.new_state == "speaking":
            self._cancel("reply")
            if not self._playing_fallback:
                self._consecutive = 0
                self._last_error = None

    def _on_error(self, ev: Any) -> None:
        """An unrecoverable provider error: give the framework a moment to retry, then speak.

        WHY not at once: a failed *speculative* request is retried by the framework when the
        turn commits, and a fallback played 100 ms after the caller paused would cut them off.
        """
        error = getattr(ev, "error", None)
        if bool(getattr(error, "recoverable", True)):
            return
        source = type(getattr(ev, "source", None)).__module__
        self._last_error = "llm_error" if "llm" in source else "tts_error" if "tts" in source else "stt_error"
        if self._reply_timer is None or self._reply_timer.when() - asyncio.get_running_loop().time() > self.options.error_grace:
            self._arm("reply", self.options.error_grace)

    # -- timers --------------------------------------------------------------------------

    def _arm(self, which: str, delay: float) -> None:
        if self._closed:
            return
        self._cancel(which)
        handle = asyncio.get_running_loop().call_later(delay, self._fire_timer, which)
        if which == "asr":
            self._asr_timer = handle
        else:
            self._reply_timer = handle

    def _cancel(self, which: str) -> None:
        timer = self._asr_timer if which == "asr" else self._reply_timer
        if timer is not None:
            timer.cancel()
        if which == "asr":
            self._asr_timer = None
        else:
            self._reply_timer = None

    def _fire_timer(self, which: str) -> None:
        if which == "asr":
            self._fire("asr_silent")
        else:
            self._fire(self._last_error or "reply_overdue")

    def _fire(self, cause: str) -> None:
        if self._closed or self._playing_fallback:
            return
        self._cancel("asr")
        self._cancel("reply")
        self._consecutive += 1
        self.report.fallbacks.append((time.monotonic(), cause))
        log.warning("pipeline fault, speaking the local fallback", extra={"cause": cause, "consecutive": self._consecutive})
        task = asyncio.get_running_loop().create_task(self._speak(cause))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _speak(self, cause: str) -> None:
        give_up = self._consecutive >= self.options.max_consecutive
        self._playing_fallback = True
        try:
            try:
                self.session.interrupt(force=True)
            except RuntimeError:
                log.debug("nothing to interrupt before the fallback")
            voice = self.current_voice()
            pcm = voice.give_up if give_up else voice.fallback
            handle = self.session.say("", audio=frames_of(pcm), allow_interruptions=not give_up, add_to_chat_ctx=False)
            heard = await self._played_out(handle, len(pcm) / 2 / SAMPLE_RATE)
        except RuntimeError:
            return  # session closing
        finally:
            self._playing_fallback = False
        if not heard:  # WHY: waiting on would leave the caller in silence with the watchdog disarmed
            log.warning("the fallback was not played out: the agent's audio output is stuck", extra={"cause": cause})
            cause, give_up = "audio_output_stuck", True
        if give_up and self.report.gave_up is None:
            self.report.gave_up = cause
            if self.on_give_up is not None:
                await self.on_give_up(cause)

    async def _played_out(self, handle: Any, seconds: float) -> bool:
        """Whether the speech played out within its length plus the margin."""
        try:
            await asyncio.wait_for(handle.wait_for_playout(), seconds + self.options.playout_margin)
        except TimeoutError:
            return False
        return True
