"""A loopback NVIDIA Riva ASR server speaking the real gRPC protocol.

It implements ``nvidia.riva.asr.RivaSpeechRecognition`` from the protos shipped in
``nvidia-riva-client`` (StreamingRecognize, Recognize, GetRivaSpeechRecognitionConfig)
on a ``grpc.aio`` server bound to 127.0.0.1, port 0.

WHAT was said comes from a pluggable :class:`Transcriber` (default: a scripted queue of
texts, one per detected utterance). WHEN it was said comes from the audio itself: an
energy detector on 10 ms frames of the 16-bit PCM finds speech start/end exactly to a
frame, so word timings and the final's latency are faithful to the audio the client
really sent. The final of an utterance is sent ``final_delay`` seconds (wall clock,
``time.monotonic``) after the chunk holding its last voiced sample arrived.

The fake runs on the event loop that enters it. Synchronous clients (``riva.client``,
the nvidia plugin's recognition thread) must therefore run in another thread, which the
nvidia plugin does by itself; in a test call ``riva.client`` through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import grpc
import numpy as np
from riva.client.proto import riva_asr_pb2, riva_asr_pb2_grpc, riva_audio_pb2

# The generated Riva modules carry no type information: treat them as dynamic.
rasr: Any = riva_asr_pb2
rasr_grpc: Any = riva_asr_pb2_grpc
raudio: Any = riva_audio_pb2
RivaMessage = Any  # a message of those modules (documentation only)

DEFAULT_MODEL = "parakeet-1.1b-en-US-asr-streaming-silero-vad-sortformer"


# ---------------------------------------------------------------------------------------
# What was said: transcribers
# ---------------------------------------------------------------------------------------


@runtime_checkable
class Transcriber(Protocol):
    """Decides the text of an utterance; the fake decides its timing from the audio."""

    def partial(self, audio: bytes, sample_rate: int, language: str) -> str:
        """Text of an utterance still in progress (interim result); '' sends no interim."""
        ...

    def final(self, audio: bytes, sample_rate: int, language: str) -> str:
        """Text of a finished utterance; called exactly once per detected utterance."""
        ...


_CLAUSE_END = re.compile(r"(?<=[,.;:!?])\s+")


def split_clauses(text: str) -> list[str]:
    """Splits at punctuation followed by a space: where synthetic speech pauses.

    eSpeak NG pauses ~150 ms at a comma and ~300 ms at a sentence end, longer than the
    default endpoint silence (100 ms), so the fake hears one utterance per clause.
    """
    return [c for c in _CLAUSE_END.split(text.strip()) if c]


class ScriptedTranscriber:
    """Consumes one expected text per detected utterance, in order.

    A detected utterance is speech between pauses of at least ``endpoint_silence``: with
    the default 100 ms a comma pause of synthetic speech already ends one. Script one
    text per such segment, or pass ``clauses=True`` to split each scripted text with
    :func:`split_clauses` (or raise the fake's ``endpoint_silence`` to merge segments).

    Interims reveal the next scripted text word by word (one word per ``word_seconds``
    of speech, never the whole text), like a streaming recogniser would. When the
    script is exhausted an utterance is transcribed as ``exhausted_text`` (default '',
    i.e. no transcript, as a real recogniser does for noise) and counted in
    ``unscripted``.
    """

    def __init__(
        self,
        texts: Iterable[str] = (),
        *,
        clauses: bool = False,
        word_seconds: float = 0.25,
        exhausted_text: str = "",
    ) -> None:
        self.clauses = clauses
        self.queue: deque[str] = deque()
        self.word_seconds = word_seconds
        self.exhausted_text = exhausted_text
        self.consumed: list[str] = []
        self.unscripted = 0
        self.push(*texts)

    def push(self, *texts: str) -> None:
        """Add expected utterances to the end of the script."""
        for text in texts:
            self.queue.extend(split_clauses(text) if self.clauses else [text])

    def partial(self, audio: bytes, sample_rate: int, language: str) -> str:
        if not self.queue:
            return ""
        words = self.queue[0].split()
        seconds = len(audio) / 2 / sample_rate
        shown = min(len(words) - 1, max(1, int(seconds / self.word_seconds)))
        return " ".join(words[:shown]) if shown > 0 else ""

    def final(self, audio: bytes, sample_rate: int, language: str) -> str:
        if self.queue:
            text = self.queue.popleft()
            self.consumed.append(text)
            return text
        self.unscripted += 1
        return self.exhausted_text


class CallableTranscriber:
    """Adapts ``fn(pcm16: bytes, sample_rate: int) -> str`` (e.g. a local recogniser).

    With ``interim=True`` the function also runs on the audio so far for interims;
    otherwise only finals are sent.
    """

    def __init__(self, fn: Callable[[bytes, int], str], *, interim: bool = False) -> None:
        self.fn = fn
        self.interim = interim

    def partial(self, audio: bytes, sample_rate: int, language: str) -> str:
        return self.fn(audio, sample_rate) if self.interim else ""

    def final(self, audio: bytes, sample_rate: int, language: str) -> str:
        return self.fn(audio, sample_rate)


def as_transcriber(value: Transcriber | Callable[[bytes, int], str] | Iterable[str] | None) -> Transcriber:
    """Accepts a Transcriber, a plain callable, or an iterable of scripted texts."""
    if value is None:
        return ScriptedTranscriber()
    if isinstance(value, Transcriber):
        return value
    if callable(value):
        return CallableTranscriber(value)
    return ScriptedTranscriber(value)


# ---------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RivaModel:
    """A model the fake serves, as GetRivaSpeechRecognitionConfig reports it."""

    name: str = DEFAULT_MODEL
    language_code: str = "en-US"
    streaming: bool = True
    sample_rate: int = 16000


@dataclass
class WordTiming:
    word: str
    start_ms: int
    end_ms: int
    confidence: float


@dataclass
class Utterance:
    """One detected utterance of a stream (or of a Recognize call)."""

    index: int
    start_ms: int  # first voiced frame, relative to the first audio sample of the stream
    end_ms: int  # end of the last voiced frame
    text: str = ""
    words: list[WordTiming] = field(default_factory=list)
    speech_end_received_at: float = 0.0  # monotonic: arrival of the chunk with the last voiced sample
    final_sent_at: float | None = None  # monotonic: when the final left the fake (None: never)
    interims_sent: int = 0


@dataclass
class RecordedStream:
    """What one StreamingRecognize call received and sent."""

    stream_id: int
    metadata: dict[str, str]
    config: RivaMessage | None = None
    started_at: float = field(default_factory=time.monotonic)
    ended_at: float | None = None
    audio: bytearray = field(default_factory=bytearray)
    chunks: int = 0
    utterances: list[Utterance] = field(default_factory=list)
    responses: list[tuple[float, RivaMessage]] = field(default_factory=list)
    status: str = "open"  # open | ok | cancelled | aborted:<CODE>

    @property
    def finals(self) -> list[Utterance]:
        return [u for u in self.utterances if u.final_sent_at is not None]


# ---------------------------------------------------------------------------------------
# Speech detection
# ---------------------------------------------------------------------------------------


class _SpeechDetector:
    """Frame energy detector: exact speech start/end to one frame, on the audio clock."""

    def __init__(
        self, sample_rate: int, frame_ms: int, threshold_dbfs: float, endpoint_ms: int, min_speech_ms: int
    ) -> None:
        self.sample_rate = sample_rate
        self.frame_samples = max(1, sample_rate * frame_ms // 1000)
        self.frame_ms = frame_ms
        self.threshold_rms = 32768.0 * 10 ** (threshold_dbfs / 20)
        self.endpoint_frames = max(1, math.ceil(endpoint_ms / frame_ms))
        self.min_speech_frames = max(1, math.ceil(min_speech_ms / frame_ms))
        self._pending = b""
        self.frame_index = 0  # frames analysed so far
        self.in_speech = False
        self.start_frame = 0
        self.last_voiced_frame = -1
        self._voiced_run = 0

    def feed(self, pcm: bytes) -> list[tuple[str, int, int]]:
        """Returns events ('start', start_frame, _) and ('end', start_frame, end_frame_exclusive)."""
        data = self._pending + pcm
        usable = len(data) - len(data) % (self.frame_samples * 2)
        self._pending = data[usable:]
        if not usable:
            return []
        samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.float64)
        frames = samples.reshape(-1, self.frame_samples)
        rms = np.sqrt(np.mean(frames * frames, axis=1))
        events: list[tuple[str, int, int]] = []
        for voiced in (rms > self.threshold_rms).tolist():
            idx = self.frame_index
            self.frame_index += 1
            if voiced:
                self._voiced_run += 1
                self.last_voiced_frame = idx
                if not self.in_speech and self._voiced_run >= self.min_speech_frames:
                    self.in_speech = True
                    self.start_frame = idx - self._voiced_run + 1
                    events.append(("start", self.start_frame, 0))
            else:
                self._voiced_run = 0
                if self.in_speech and idx - self.last_voiced_frame >= self.endpoint_frames:
                    self.in_speech = False
                    events.append(("end", self.start_frame, self.last_voiced_frame + 1))
        return events

    def flush(self) -> tuple[int, int] | None:
        """At end of audio: the utterance still open, if any."""
        if self.in_speech:
            self.in_speech = False
            return self.start_frame, self.last_voiced_frame + 1
        return None

    def ms(self, frame: int) -> int:
        return frame * self.frame_ms


def _word_timings(text: str, start_ms: int, end_ms: int, confidence: float) -> list[WordTiming]:
    """Spreads words over the voiced span in proportion to their length; exact ends."""
    words = text.split()
    if not words:
        return []
    total = sum(len(w) for w in words)
    span = max(end_ms - start_ms, len(words))
    out: list[WordTiming] = []
    cursor = float(start_ms)
    for i, w in enumerate(words):
        nxt = end_ms if i == len(words) - 1 else cursor + span * len(w) / total
        out.append(WordTiming(w, round(cursor), round(nxt), confidence))
        cursor = nxt
    return out


def _alternative(
    text: str, words: Sequence[WordTiming], confidence: float, language: str, with_words: bool
) -> RivaMessage:
    alt = rasr.SpeechRecognitionAlternative(transcript=text, confidence=confidence, language_code=[language])
    if with_words:
        for w in words:
            alt.words.append(
                rasr.WordInfo(
                    start_time=w.start_ms,
                    end_time=w.end_ms,
                    word=w.word,
                    confidence=w.confidence,
                    language_code=language,
                )
            )
    return alt


# ---------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------

_CLOSE = object()


class _Abort:
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details


class RivaFake(rasr_grpc.RivaSpeechRecognitionServicer):  # type: ignore[misc]
    """Riva ASR over gRPC on 127.0.0.1. Use ``async with RivaFake(...) as riva:``.

    Attributes after start: ``port``, ``address`` ("127.0.0.1:PORT", what
    ``riva.client.Auth(uri=...)`` and ``nvidia.STT(server=...)`` take), ``url``.
    Records: ``streams`` (RecordedStream per StreamingRecognize), ``recognize_requests``,
    ``config_requests``, ``metadata_seen``. ``language_tags`` (text -> BCP-47) makes finals of
    those texts carry that language, as a multilingual model's language identification does.
    """

    def __init__(
        self,
        transcriber: Transcriber | Callable[[bytes, int], str] | Iterable[str] | None = None,
        *,
        models: Sequence[RivaModel] = (RivaModel(),),
        final_delay: float = 0.100,
        endpoint_silence: float | None = None,
        interim_interval: float = 0.100,
        silence_threshold_dbfs: float = -45.0,
        frame_ms: int = 10,
        min_speech_ms: int = 20,
        confidence: float = 0.95,
        api_key: str | None = None,
        tls: tuple[bytes, bytes] | None = None,
        port: int = 0,
        language_tags: Mapping[str, str] | None = None,
    ) -> None:
        self.transcriber = as_transcriber(transcriber)
        # transcript text -> the language a multilingual model would tag it with (else the stream's)
        self.language_tags: dict[str, str] = dict(language_tags or {})
        self.models = list(models)
        self.final_delay = final_delay
        # Silence (audio time) that ends an utterance; defaults to final_delay so the final
        # can leave exactly final_delay after the speech end when audio comes in real time.
        self.endpoint_silence = final_delay if endpoint_silence is None else endpoint_silence
        self.interim_interval = interim_interval
        self.silence_threshold_dbfs = silence_threshold_dbfs
        self.frame_ms = frame_ms
        self.min_speech_ms = min_speech_ms
        self.confidence = confidence
        self.api_key = api_key
        self.tls = tls  # (private key PEM, certificate chain PEM): serve TLS (see tests.fakes.tls)
        self.port = port
        self.streams: list[RecordedStream] = []
        self.recognize_requests: list[RivaMessage] = []
        self.config_requests: list[RivaMessage] = []
        self.metadata_seen: list[dict[str, str]] = []
        self._server: grpc.aio.Server | None = None
        self._ids = itertools.count(1)
        self._queues: dict[int, asyncio.Queue[object]] = {}
        self._stalled = False
        self._error: tuple[grpc.StatusCode, str] | None = None

    # -- lifecycle --------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'grpcs' if self.tls else 'grpc'}://{self.address}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> RivaFake:
        server = grpc.aio.server()
        rasr_grpc.add_RivaSpeechRecognitionServicer_to_server(self, server)
        if self.tls is not None:
            creds = grpc.ssl_server_credentials([self.tls])
            self.port = server.add_secure_port(f"127.0.0.1:{self.port}", creds)
        else:
            self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        if not self.port:
            raise RuntimeError("could not bind the Riva fake on 127.0.0.1")
        await server.start()
        self._server = server
        return self

    async def stop(self, grace: float | None = None) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)

    async def __aenter__(self) -> RivaFake:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- faults -----------------------------------------------------------------------

    async def kill(self, details: str = "Riva server went away") -> None:
        """Like a crashed server: open streams end UNAVAILABLE, new connections are refused."""
        for q in list(self._queues.values()):
            q.put_nowait(_Abort(grpc.StatusCode.UNAVAILABLE, details))
        await asyncio.sleep(0)
        await self.stop(grace=0.2)

    async def restart(self) -> None:
        """Serve again on the same port after :meth:`kill`."""
        if self._server is None:
            await self.start()

    def stall(self) -> None:
        """Keep consuming audio but send no more results (a hung recogniser)."""
        self._stalled = True

    def unstall(self) -> None:
        self._stalled = False

    def fail(
        self,
        code: grpc.StatusCode = grpc.StatusCode.INTERNAL,
        details: str = "injected fault",
        *,
        active: bool = True,
        new_calls: bool = True,
    ) -> None:
        """Error status: abort open streams (``active``) and/or every new call (``new_calls``)."""
        if active:
            for q in list(self._queues.values()):
                q.put_nowait(_Abort(code, details))
        self._error = (code, details) if new_calls else None

    def clear_faults(self) -> None:
        self._stalled = False
        self._error = None

    # -- helpers ----------------------------------------------------------------------

    def served(self, *, streaming: bool) -> list[RivaModel]:
        return [m for m in self.models if m.streaming == streaming]

    async def _check_call(self, context: grpc.aio.ServicerContext) -> dict[str, str]:
        md = {k: (v if isinstance(v, str) else v.decode()) for k, v in context.invocation_metadata() or ()}
        self.metadata_seen.append(md)
        if self._error is not None:
            await context.abort(*self._error)
        if self.api_key is not None and md.get("authorization") != f"Bearer {self.api_key}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid or missing API key")
        return md

    async def _select_model(
        self, config: RivaMessage, streaming: bool, context: grpc.aio.ServicerContext
    ) -> RivaModel:
        kind = "online" if streaming else "offline"
        if config.encoding not in (raudio.LINEAR_PCM, raudio.ENCODING_UNSPECIFIED):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Error: this fake only decodes LINEAR_PCM, got encoding={config.encoding}",
            )
        if config.audio_channel_count > 1:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Error: only mono audio is supported")
        for m in self.served(streaming=streaming):
            if (not config.model or config.model == m.name) and (
                not config.language_code or config.language_code == m.language_code
            ):
                return m
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            "Error: Unavailable model requested given these parameters: "
            f"language_code={config.language_code}; sample_rate={config.sample_rate_hertz}; "
            f"type={kind}; model={config.model}",
        )
        raise AssertionError("unreachable")

    def _detector(self, sample_rate: int) -> _SpeechDetector:
        return _SpeechDetector(
            sample_rate,
            self.frame_ms,
            self.silence_threshold_dbfs,
            round(self.endpoint_silence * 1000),
            self.min_speech_ms,
        )

    # -- RPCs -------------------------------------------------------------------------

    async def GetRivaSpeechRecognitionConfig(
        self, request: RivaMessage, context: grpc.aio.ServicerContext
    ) -> RivaMessage:
        await self._check_call(context)
        self.config_requests.append(request)
        resp = rasr.RivaSpeechRecognitionConfigResponse()
        for m in self.models:
            if request.model_name and request.model_name != m.name:
                continue
            cfg = resp.model_config.add()
            cfg.model_name = m.name
            cfg.parameters.update(
                {
                    "type": "online" if m.streaming else "offline",
                    "language_code": m.language_code,
                    "sample_rate": str(m.sample_rate),
                    "streaming": str(m.streaming).lower(),
                }
            )
        return resp

    async def Recognize(self, request: RivaMessage, context: grpc.aio.ServicerContext) -> RivaMessage:
        await self._check_call(context)
        self.recognize_requests.append(request)
        cfg = request.config
        model = await self._select_model(cfg, False, context)
        rate = cfg.sample_rate_hertz or model.sample_rate
        lang = cfg.language_code or model.language_code
        det = self._detector(rate)
        spans = [(s, e) for kind, s, e in det.feed(request.audio) if kind == "end"]
        tail = det.flush()
        if tail:
            spans.append(tail)
        resp = rasr.RecognizeResponse()
        total = len(request.audio) / 2 / rate
        for s, e in spans:
            s_ms, e_ms = det.ms(s), det.ms(e)
            pcm = request.audio[s * det.frame_samples * 2 : e * det.frame_samples * 2]
            text = self.transcriber.final(pcm, rate, lang)
            if not text:
                continue
            words = _word_timings(text, s_ms, e_ms, self.confidence)
            res = resp.results.add(audio_processed=total)
            res.alternatives.append(
                _alternative(text, words, self.confidence, lang, cfg.enable_word_time_offsets)
            )
        return resp

    async def StreamingRecognize(
        self,
        request_iterator: AsyncIterator[RivaMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[RivaMessage]:
        md = await self._check_call(context)
        rec = RecordedStream(stream_id=next(self._ids), metadata=md)
        self.streams.append(rec)
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._queues[rec.stream_id] = queue
        reader = asyncio.create_task(self._read_stream(rec, request_iterator, queue, context))
        try:
            while True:
                item = await queue.get()
                if item is _CLOSE:
                    break
                if isinstance(item, _Abort):
                    rec.status = f"aborted:{item.code.name}"
                    await context.abort(item.code, item.details)
                if isinstance(item, rasr.StreamingRecognizeResponse):
                    if self._stalled:
                        continue
                    rec.responses.append((time.monotonic(), item))
                    yield item
            rec.status = "ok"
        except asyncio.CancelledError:
            if rec.status == "open":
                rec.status = "cancelled"
            raise
        finally:
            rec.ended_at = time.monotonic()
            self._queues.pop(rec.stream_id, None)
            reader.cancel()

    async def _read_stream(
        self,
        rec: RecordedStream,
        requests: AsyncIterator[RivaMessage],
        out: asyncio.Queue[object],
        context: grpc.aio.ServicerContext,
    ) -> None:
        """Consumes the client's messages; schedules interims and finals onto ``out``."""
        loop = asyncio.get_running_loop()
        pending_finals: list[asyncio.TimerHandle] = []
        try:
            first = True
            det: _SpeechDetector | None = None
            cfg = rasr.RecognitionConfig()
            rate = 16000
            lang = "en-US"
            interim = False
            utt: Utterance | None = None
            last_interim_frame = 0
            async for req in requests:
                if first:
                    first = False
                    if not req.HasField("streaming_config"):
                        out.put_nowait(
                            _Abort(
                                grpc.StatusCode.INVALID_ARGUMENT,
                                "Error: the first message must carry streaming_config",
                            )
                        )
                        return
                    rec.config = req.streaming_config
                    cfg = req.streaming_config.config
                    try:
                        model = await self._select_model(cfg, True, _AbortCollector(out))
                    except _Aborted:
                        return
                    rate = cfg.sample_rate_hertz or model.sample_rate
                    lang = cfg.language_code or model.language_code
                    interim = req.streaming_config.interim_results
                    det = self._detector(rate)
                    continue
                if det is None or not req.audio_content:
                    continue
                arrived = time.monotonic()
                rec.audio += req.audio_content
                rec.chunks += 1
                first_new_frame = det.frame_index
                for kind, s, e in det.feed(req.audio_content):
                    if kind == "start":
                        utt = Utterance(
                            index=len(rec.utterances),
                            start_ms=det.ms(s),
                            end_ms=det.ms(s),
                            speech_end_received_at=arrived,
                        )
                        rec.utterances.append(utt)
                        last_interim_frame = s
                    elif utt is not None:
                        if e - 1 >= first_new_frame:  # the last voiced sample came in this chunk
                            utt.speech_end_received_at = arrived
                        handle = self._finish(rec, utt, det, s, e, rate, lang, cfg, out, loop, eos=False)
                        if handle is not None:
                            pending_finals.append(handle)
                        utt = None
                if det.in_speech and utt is not None:
                    utt.end_ms = det.ms(det.last_voiced_frame + 1)
                    if det.last_voiced_frame >= first_new_frame:
                        utt.speech_end_received_at = arrived
                    frames_per_interim = max(1, round(self.interim_interval * 1000 / det.frame_ms))
                    if interim and det.frame_index - last_interim_frame >= frames_per_interim:
                        last_interim_frame = det.frame_index
                        pcm = bytes(rec.audio[det.start_frame * det.frame_samples * 2 :])
                        text = self.transcriber.partial(pcm, rate, lang)
                        if text:
                            utt.interims_sent += 1
                            out.put_nowait(self._response(text, [], False, cfg, lang, rec, rate, 0.5))
            # client half-closed: finalise what is open now, then end the call after the finals
            if det is not None:
                tail = det.flush()
                if tail is not None and utt is not None:
                    self._finish(rec, utt, det, tail[0], tail[1], rate, lang, cfg, out, loop, eos=True)
            if pending_finals:
                await asyncio.sleep(max(0.0, max(h.when() for h in pending_finals) - loop.time()) + 0.001)
            out.put_nowait(_CLOSE)
        except asyncio.CancelledError:
            for h in pending_finals:
                h.cancel()
            raise
        except Exception as exc:  # a broken client stream: end the call like a server would
            out.put_nowait(_Abort(grpc.StatusCode.INTERNAL, f"Error: {type(exc).__name__}: {exc}"))

    def _finish(
        self,
        rec: RecordedStream,
        utt: Utterance,
        det: _SpeechDetector,
        s: int,
        e: int,
        rate: int,
        lang: str,
        cfg: RivaMessage,
        out: asyncio.Queue[object],
        loop: asyncio.AbstractEventLoop,
        *,
        eos: bool,
    ) -> asyncio.TimerHandle | None:
        utt.start_ms, utt.end_ms = det.ms(s), det.ms(e)
        pcm = bytes(rec.audio[s * det.frame_samples * 2 : e * det.frame_samples * 2])
        utt.text = self.transcriber.final(pcm, rate, lang)
        utt.words = _word_timings(utt.text, utt.start_ms, utt.end_ms, self.confidence)
        if not utt.text:
            return None
        resp = self._response(utt.text, utt.words, True, cfg, self.language_tags.get(utt.text, lang), rec, rate, 1.0)

        def send() -> None:
            if not self._stalled:
                utt.final_sent_at = time.monotonic()
            out.put_nowait(resp)

        if eos:
            send()
            return None
        due = utt.speech_end_received_at + self.final_delay
        delay = due - time.monotonic()
        if delay <= 0:
            send()
            return None
        return loop.call_later(delay, send)

    def _response(
        self,
        text: str,
        words: Sequence[WordTiming],
        final: bool,
        cfg: RivaMessage,
        lang: str,
        rec: RecordedStream,
        rate: int,
        stability: float,
    ) -> RivaMessage:
        resp = rasr.StreamingRecognizeResponse()
        res = resp.results.add(is_final=final, stability=stability, audio_processed=len(rec.audio) / 2 / rate)
        res.alternatives.append(
            _alternative(
                text, words, self.confidence if final else 0.0, lang, final and cfg.enable_word_time_offsets
            )
        )
        return resp


class _Aborted(Exception):
    pass


class _AbortCollector:
    """Lets _select_model abort a stream from the reader task via the response queue."""

    def __init__(self, out: asyncio.Queue[object]) -> None:
        self.out = out

    async def abort(self, code: grpc.StatusCode, details: str) -> Any:
        self.out.put_nowait(_Abort(code, details))
        raise _Aborted


def pcm_tone(
    seconds: float, *, sample_rate: int = 16000, freq: float = 440.0, amplitude: float = 0.3
) -> bytes:
    """Voiced test audio (a sine tone), 16-bit little-endian mono."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (np.sin(2 * np.pi * freq * t) * amplitude * 32767).astype("<i2").tobytes()


def pcm_silence(seconds: float, *, sample_rate: int = 16000) -> bytes:
    return b"\x00\x00" * round(seconds * sample_rate)
