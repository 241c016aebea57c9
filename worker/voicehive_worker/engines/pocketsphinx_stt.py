"""pocketsphinx as a streaming livekit-agents STT, biased to the hotel line's domain.

WHY streaming and its own endpointing: the session's turn-taking wants interim results, a
final transcript as soon as the caller stops, and word end times (the pipeline times the end
of turn from them, not from when the final arrives). pocketsphinx decodes incrementally, so
each 30 ms frame is decoded as it arrives and the final costs only the last pass.

Word and speech times are seconds since the stream started (plus ``start_time_offset``, as
the framework expects); ``SpeechEvent.speech_end_time`` is the wall-clock end of the last word.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pocketsphinx
from livekit import rtc
from livekit.agents import stt
from livekit.agents.language import LanguageCode
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.agents.utils import AudioBuffer, merge_frames
from livekit.agents.voice.io import TimedString

from voicehive.api.models import HotelLineSpec

from .lm import DomainModel, build_domain_model, model_path

# The compiled pocketsphinx module has no type information.
Decoder: Any = pocketsphinx.__dict__["Decoder"]
Vad: Any = pocketsphinx.__dict__["Vad"]

SAMPLE_RATE = 16000
VAD_FRAME_SECONDS = 0.03
VAD_FRAME_SAMPLES = int(SAMPLE_RATE * VAD_FRAME_SECONDS)
DECODER_FRAMES_PER_SECOND = 100  # pocketsphinx's 10 ms feature frames
_NON_WORDS = {"<s>", "</s>", "<sil>"}


@dataclass(frozen=True)
class EndpointOptions:
    """When speech starts and ends, in the stream's own voice-activity detection."""

    start_frames: int = 3  # voiced 30 ms frames (of the last ``start_window``) that start speech
    start_window: int = 5
    end_silence: float = 0.25  # seconds of non-speech that end an utterance
    pre_roll: float = 0.3  # seconds of audio before detected onset also decoded
    interim_interval: float = 0.2  # seconds between interim transcripts
    vad_mode: int = 1  # pocketsphinx.Vad aggressiveness 0..3


@dataclass(frozen=True)
class RecognizedWord:
    word: str
    start: float  # seconds since the audio given to the decoder started
    end: float


def _clean(word: str) -> str | None:
    if word in _NON_WORDS or word.startswith("[") or word.startswith("++"):
        return None
    return word.split("(")[0]


class _DecoderPool:
    """pocketsphinx decoders are not thread-safe and take ~0.2 s to create: reuse them."""

    def __init__(self, model: DomainModel, language_weight: float) -> None:
        self._model = model
        self._language_weight = language_weight
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def _create(self) -> Any:
        return Decoder(
            hmm=str(model_path() / "en-us" / "en-us"),
            lm=str(self._model.lm_path),
            dict=str(self._model.dict_path),
            samprate=SAMPLE_RATE,
            lw=self._language_weight,
            loglevel="FATAL",
        )

    def acquire(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._create()

    def release(self, decoder: Any) -> None:
        with self._lock:
            self._idle.append(decoder)


def decode_utterance(decoder: Any, pcm: bytes) -> tuple[str, list[RecognizedWord]]:
    """Decode one whole utterance of 16 kHz int16 mono."""
    decoder.start_utt()
    decoder.process_raw(pcm, no_search=False, full_utt=True)
    decoder.end_utt()
    return _result(decoder)


def _result(decoder: Any) -> tuple[str, list[RecognizedWord]]:
    words: list[RecognizedWord] = []
    for segment in decoder.seg():
        word = _clean(segment.word)
        if word is None:
            continue
        words.append(
            RecognizedWord(
                word,
                segment.start_frame / DECODER_FRAMES_PER_SECOND,
                (segment.end_frame + 1) / DECODER_FRAMES_PER_SECOND,
            )
        )
    return " ".join(w.word for w in words), words


class PocketsphinxSTT(stt.STT[Any]):
    """Offline English ASR. ``PocketsphinxSTT.for_line(spec)`` biases it to one hotel line."""

    def __init__(
        self,
        *,
        model: DomainModel | None = None,
        language_weight: float = 6.0,
        endpoint: EndpointOptions | None = None,
    ) -> None:
        super().__init__(
            capabilities=stt.STTCapabilities(
                streaming=True, interim_results=True, aligned_transcript="word", offline_recognize=True
            )
        )
        self._model = model or build_domain_model()
        self._pool = _DecoderPool(self._model, language_weight)
        self._endpoint = endpoint or EndpointOptions()

    @classmethod
    def for_line(cls, spec: HotelLineSpec, **kwargs: object) -> PocketsphinxSTT:
        model = build_domain_model(spec.facts, spec.display_name)
        return cls(model=model, **kwargs)  # type: ignore[arg-type]

    @property
    def model(self) -> str:
        return "pocketsphinx-en-us-hotel"

    @property
    def provider(self) -> str:
        return "voicehive-local"

    @property
    def domain_model(self) -> DomainModel:
        return self._model

    @property
    def endpoint_options(self) -> EndpointOptions:
        return self._endpoint

    def prewarm(self) -> None:
        """Create one decoder up front so the first call does not pay for loading the model."""
        self._pool.release(self._pool.acquire())

    def transcribe_pcm(self, pcm: bytes) -> tuple[str, list[RecognizedWord]]:
        """Blocking whole-utterance decode of 16 kHz int16 mono (benchmarks, tests)."""
        decoder = self._pool.acquire()
        try:
            return decode_utterance(decoder, pcm)
        finally:
            self._pool.release(decoder)

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        frame = merge_frames(buffer) if isinstance(buffer, list) else buffer
        pcm = _to_mono_16k(frame)
        text, words = await asyncio.to_thread(self.transcribe_pcm, pcm)
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=uuid.uuid4().hex,
            alternatives=[_speech_data(text, words, 0.0)],
        )

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> PocketsphinxStream:
        return PocketsphinxStream(stt=self, conn_options=conn_options)


def _to_mono_16k(frame: rtc.AudioFrame) -> bytes:
    samples = np.frombuffer(bytes(frame.data), dtype=np.int16)
    if frame.num_channels > 1:
        samples = samples.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
    if frame.sample_rate != SAMPLE_RATE:
        resampler = rtc.AudioResampler(frame.sample_rate, SAMPLE_RATE, quality=rtc.AudioResamplerQuality.HIGH)
        out = resampler.push(rtc.AudioFrame(samples.tobytes(), frame.sample_rate, 1, samples.size))
        out += resampler.flush()
        return b"".join(bytes(f.data) for f in out)
    return samples.tobytes()


def _speech_data(text: str, words: list[RecognizedWord], offset: float) -> stt.SpeechData:
    return stt.SpeechData(
        language=LanguageCode("en"),
        text=text,
        start_time=(words[0].start + offset) if words else offset,
        end_time=(words[-1].end + offset) if words else offset,
        confidence=1.0 if words else 0.0,
        words=[TimedString(w.word, start_time=w.start + offset, end_time=w.end + offset) for w in words],
    )


class PocketsphinxStream(stt.RecognizeStream):
    """Voice activity -> incremental decode -> interim, final (with word times), end of speech."""

    def __init__(self, *, stt: PocketsphinxSTT, conn_options: APIConnectOptions) -> None:
        super().__init__(stt=stt, conn_options=conn_options, sample_rate=SAMPLE_RATE)
        self._engine = stt
        self._opts = stt.endpoint_options

    async def _run(self) -> None:
        decoder = await asyncio.to_thread(self._engine._pool.acquire)
        try:
            await self._listen(decoder)
        finally:
            with contextlib.suppress(Exception):  # an utterance cut short by cancellation
                decoder.end_utt()
            self._engine._pool.release(decoder)

    async def _listen(self, decoder: Any) -> None:
        opts = self._opts
        vad = Vad(opts.vad_mode, SAMPLE_RATE, VAD_FRAME_SECONDS)
        frame_bytes = vad.frame_bytes
        pre_roll_frames = max(1, int(opts.pre_roll / VAD_FRAME_SECONDS))
        end_frames = max(1, round(opts.end_silence / VAD_FRAME_SECONDS))
        history: collections.deque[bool] = collections.deque(maxlen=opts.start_window)
        pre_roll: collections.deque[bytes] = collections.deque(maxlen=pre_roll_frames)
        pending = b""
        samples_seen = 0  # 16 kHz samples consumed since the stream started
        in_speech = False
        utt_start_sample = 0
        silent_run = 0
        last_interim = 0
        request_id = uuid.uuid4().hex
        utt_samples = 0

        async for item in self._input_ch:
            if isinstance(item, self._FlushSentinel):
                if in_speech:
                    in_speech, request_id = False, await self._final(decoder, request_id, utt_start_sample, utt_samples)
                continue
            pending += _frame_mono(item)
            while len(pending) >= frame_bytes:
                chunk, pending = pending[:frame_bytes], pending[frame_bytes:]
                voiced = vad.is_speech(chunk)
                samples_seen += VAD_FRAME_SAMPLES
                if not in_speech:
                    history.append(voiced)
                    pre_roll.append(chunk)
                    if sum(history) >= opts.start_frames:
                        in_speech = True
                        silent_run = 0
                        history.clear()
                        audio = b"".join(pre_roll)
                        pre_roll.clear()
                        utt_start_sample = samples_seen - len(audio) // 2
                        utt_samples = len(audio) // 2
                        last_interim = utt_samples
                        decoder.start_utt()
                        await asyncio.to_thread(decoder.process_raw, audio, False, False)
                        self._event_ch.send_nowait(
                            stt.SpeechEvent(
                                type=stt.SpeechEventType.START_OF_SPEECH,
                                request_id=request_id,
                                speech_start_time=self.start_time + utt_start_sample / SAMPLE_RATE,
                            )
                        )
                    continue
                await asyncio.to_thread(decoder.process_raw, chunk, False, False)
                utt_samples += VAD_FRAME_SAMPLES
                silent_run = 0 if voiced else silent_run + 1
                if silent_run >= end_frames:
                    in_speech, request_id = False, await self._final(decoder, request_id, utt_start_sample, utt_samples)
                    continue
                # interim results by audio time, so they do not depend on how fast audio arrives
                if (utt_samples - last_interim) / SAMPLE_RATE >= opts.interim_interval:
                    last_interim = utt_samples
                    self._interim(decoder, request_id, utt_start_sample)
        if in_speech:
            await self._final(decoder, request_id, utt_start_sample, utt_samples)

    async def _final(self, decoder: Any, request_id: str, utt_start_sample: int, utt_samples: int) -> str:
        """End the utterance: final transcript (if any words), end of speech, usage. Returns the
        request id of the next utterance."""
        await asyncio.to_thread(decoder.end_utt)
        text, words = _result(decoder)
        offset = utt_start_sample / SAMPLE_RATE + self.start_time_offset
        if text:
            data = _speech_data(text, words, offset)
            self._event_ch.send_nowait(
                stt.SpeechEvent(
                    type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                    request_id=request_id,
                    alternatives=[data],
                    speech_end_time=self.start_time + (data.end_time - self.start_time_offset),
                )
            )
        self._event_ch.send_nowait(stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH, request_id=request_id))
        self._event_ch.send_nowait(
            stt.SpeechEvent(
                type=stt.SpeechEventType.RECOGNITION_USAGE,
                request_id=request_id,
                recognition_usage=stt.RecognitionUsage(audio_duration=utt_samples / SAMPLE_RATE),
            )
        )
        return uuid.uuid4().hex

    def _interim(self, decoder: Any, request_id: str, utt_start_sample: int) -> None:
        hyp = decoder.hyp()
        if hyp is not None and hyp.hypstr:
            offset = utt_start_sample / SAMPLE_RATE + self.start_time_offset
            self._event_ch.send_nowait(
                stt.SpeechEvent(
                    type=stt.SpeechEventType.INTERIM_TRANSCRIPT,
                    request_id=request_id,
                    alternatives=[stt.SpeechData(language=LanguageCode("en"), text=hyp.hypstr, start_time=offset)],
                )
            )


def _frame_mono(frame: rtc.AudioFrame) -> bytes:
    if frame.num_channels == 1:
        return bytes(frame.data)
    samples = np.frombuffer(bytes(frame.data), dtype=np.int16).reshape(-1, frame.num_channels)
    return bytes(samples.mean(axis=1).astype(np.int16).tobytes())
