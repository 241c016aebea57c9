"""eSpeak NG as a livekit-agents TTS: offline speech in en/de/fr/es/it, first audio in milliseconds.

WHY: the demo and the fallback path must speak with no cloud key and no GPU. eSpeak NG is a
Debian package, starts in ~10 ms and streams PCM on stdout as it synthesises, so the first
frame reaches the caller long before the sentence is done. It is a ChunkedStream TTS (one
request per sentence); AgentSession wraps it in its sentence-splitting StreamAdapter.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import tts
from livekit.agents._exceptions import APIConnectionError
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions

from .text import base_language, for_speech

ESPEAK_SAMPLE_RATE = 22050
WAV_HEADER_BYTES = 44
READ_BYTES = 4410  # 100 ms of 22.05 kHz 16-bit mono

# Agent voices per language (eSpeak NG voice + variant). The simulated caller uses others.
AGENT_VOICES: dict[str, str] = {
    "en": "en-gb-x-rp+f3",
    "de": "de+f3",
    "fr": "fr-fr+f3",
    "es": "es+f3",
    "it": "it+f3",
}


class EspeakNotInstalled(RuntimeError):
    """eSpeak NG is a system package; say how to get it instead of failing obscurely."""

    def __init__(self) -> None:
        super().__init__("espeak-ng is not installed: run `apt-get install -y espeak-ng` (or `make system-deps`)")


def espeak_binary() -> str:
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise EspeakNotInstalled
    return binary


@dataclass
class EspeakOptions:
    language: str = "en"
    voice: str | None = None
    words_per_minute: int = 165
    pitch: int = 50
    sample_rate: int = 16000
    extra_args: list[str] = field(default_factory=list)

    @property
    def voice_name(self) -> str:
        return self.voice or AGENT_VOICES[base_language(self.language)]


async def synthesize_pcm(text: str, options: EspeakOptions) -> np.ndarray:
    """Whole utterance as int16 mono at ``options.sample_rate`` (for the simulated caller, tests)."""
    chunks: list[np.ndarray] = []
    async for chunk in _espeak_chunks(text, options):
        chunks.append(chunk)
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    return resample(audio, ESPEAK_SAMPLE_RATE, options.sample_rate)


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample int16 mono with LiveKit's resampler (the same code path the session uses)."""
    if source_rate == target_rate or audio.size == 0:
        return audio
    resampler = rtc.AudioResampler(source_rate, target_rate, quality=rtc.AudioResamplerQuality.HIGH)
    frames = resampler.push(rtc.AudioFrame(audio.astype(np.int16).tobytes(), source_rate, 1, audio.size))
    frames += resampler.flush()
    if not frames:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([np.frombuffer(bytes(f.data), dtype=np.int16) for f in frames])


async def _espeak_chunks(text: str, options: EspeakOptions) -> AsyncIterator[np.ndarray]:
    """Yield int16 chunks at 22.05 kHz as eSpeak NG produces them."""
    spoken = for_speech(text, options.language)
    process = await asyncio.create_subprocess_exec(
        espeak_binary(),
        "--stdout",
        "-v",
        options.voice_name,
        "-s",
        str(options.words_per_minute),
        "-p",
        str(options.pitch),
        *options.extra_args,
        "--",
        spoken,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        header = await process.stdout.readexactly(WAV_HEADER_BYTES)
        if header[:4] != b"RIFF":
            raise APIConnectionError("espeak-ng did not produce WAV audio")
        leftover = b""
        while True:
            data = await process.stdout.read(READ_BYTES)
            if not data:
                break
            data = leftover + data
            usable = len(data) - len(data) % 2
            leftover = data[usable:]
            if usable:
                yield np.frombuffer(data[:usable], dtype=np.int16).copy()
        await process.wait()
        if process.returncode:
            stderr = (await process.stderr.read()).decode(errors="replace") if process.stderr else ""
            raise APIConnectionError(f"espeak-ng failed ({process.returncode}): {stderr.strip()[:200]}")
    except asyncio.IncompleteReadError as exc:
        raise APIConnectionError("espeak-ng produced no audio") from exc
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


class EspeakTTS(tts.TTS[Any]):
    """Local TTS: ``EspeakTTS(language="de")``; PCM at ``sample_rate`` (16 kHz by default)."""

    def __init__(
        self,
        *,
        language: str = "en",
        voice: str | None = None,
        words_per_minute: int = 165,
        pitch: int = 50,
        sample_rate: int = 16000,
    ) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False), sample_rate=sample_rate, num_channels=1)
        espeak_binary()
        self._opts = EspeakOptions(
            language=language, voice=voice, words_per_minute=words_per_minute, pitch=pitch, sample_rate=sample_rate
        )

    @property
    def model(self) -> str:
        return "espeak-ng"

    @property
    def provider(self) -> str:
        return "voicehive-local"

    @property
    def options(self) -> EspeakOptions:
        return self._opts

    def update_options(self, *, language: str | None = None, voice: str | None = None) -> None:
        """Switch language (e.g. when the caller switches); the voice follows unless given."""
        if language is not None:
            self._opts.language = language
            self._opts.voice = voice
        elif voice is not None:
            self._opts.voice = voice

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> EspeakChunkedStream:
        return EspeakChunkedStream(tts=self, input_text=text, conn_options=conn_options)


class EspeakChunkedStream(tts.ChunkedStream):
    def __init__(self, *, tts: EspeakTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._opts = EspeakOptions(**vars(tts.options))

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=uuid.uuid4().hex,
            sample_rate=self._opts.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
            frame_size_ms=20,
        )
        if not self.input_text.strip():
            output_emitter.flush()
            return
        resampler = (
            rtc.AudioResampler(ESPEAK_SAMPLE_RATE, self._opts.sample_rate, quality=rtc.AudioResamplerQuality.MEDIUM)
            if self._opts.sample_rate != ESPEAK_SAMPLE_RATE
            else None
        )
        async for chunk in _espeak_chunks(self.input_text, self._opts):
            if resampler is None:
                output_emitter.push(chunk.tobytes())
                continue
            for frame in resampler.push(rtc.AudioFrame(chunk.tobytes(), ESPEAK_SAMPLE_RATE, 1, chunk.size)):
                output_emitter.push(bytes(frame.data))
        if resampler is not None:
            for frame in resampler.flush():
                output_emitter.push(bytes(frame.data))
        output_emitter.flush()
