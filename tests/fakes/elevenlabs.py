"""A loopback ElevenLabs TTS server: the WebSocket streaming protocols and the HTTP API.

Speaks what ``livekit.plugins.elevenlabs.TTS`` and the ``elevenlabs`` SDK send:

- ``WS /v1/text-to-speech/{voice}/multi-stream-input`` (contexts): client messages
  ``{"text", "context_id", "voice_settings"?, "flush"?}``, ``{"context_id", "close_context": true}``,
  ``{"close_socket": true}``; server messages ``{"audio": b64, "alignment", "normalizedAlignment",
  "contextId"}`` and ``{"isFinal": true, "contextId"}`` once a closed context has played out.
- ``WS /v1/text-to-speech/{voice}/stream-input`` (one context): ``{"text": " ", ...}`` first,
  ``{"text", "flush"?}``, ``{"text": ""}`` ends input; server ``{"audio", ...}`` then
  ``{"isFinal": true}`` and closes.
- ``POST /v1/text-to-speech/{voice}/stream`` and ``POST /v1/text-to-speech/{voice}``: raw audio.
- ``GET /v1/voices``, ``GET /v1/voices/{voice_id}`` (404 ``voice_not_found``), ``GET /v1/models``.

Authentication: ``xi-api-key`` header (or ``xi_api_key`` in the first stream-input message);
a wrong key gets 401 ``invalid_api_key``. Audio is 16-bit PCM at the requested
``output_format`` (``pcm_8000`` ... ``pcm_48000``): a deterministic tone whose duration is
``ms_per_char`` per character of text (capped), so tests can detect which text produced it.
The first audio of a flushed text leaves ``first_audio_delay`` seconds after the flush
arrived (``time.monotonic``); further chunks follow every ``chunk_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import secrets
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from tests.fakes._http import AiohttpFake

JSON = dict[str, Any]
PCM_RATES = {8000, 16000, 22050, 24000, 44100, 48000}
DEFAULT_VOICES = {"21m00Tcm4TlvDq8ikWAM": "Rachel", "EXAVITQu4vr4xnSDxMaL": "Sarah"}
DEFAULT_OUTPUT_FORMAT = "mp3_44100_128"  # ElevenLabs' default; this fake refuses it (PCM only)
DEFAULT_MODELS = ("eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_multilingual_v2")


def sample_rate_of(output_format: str) -> int | None:
    """16-bit PCM rate of an ElevenLabs output_format (``pcm_16000`` -> 16000), else None."""
    m = re.fullmatch(r"pcm_(\d+)", output_format)
    if m and int(m.group(1)) in PCM_RATES:
        return int(m.group(1))
    return None


@dataclass
class Generation:
    """One piece of audio generated for a flushed (or scheduled) text."""

    text: str
    requested_at: float  # monotonic: the flush / close that triggered it
    first_audio_at: float | None = None
    done_at: float | None = None
    audio_bytes: int = 0
    chunks: int = 0
    interrupted: bool = False


@dataclass
class RecordedContext:
    context_id: str
    voice_settings: JSON | None = None
    texts: list[str] = field(default_factory=list)  # text messages as received (without the init " ")
    flushes: int = 0
    closed: bool = False
    final_sent_at: float | None = None
    generations: list[Generation] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.texts)


@dataclass
class RecordedSocket:
    kind: str  # multi | single
    voice_id: str
    query: dict[str, str]
    opened_at: float
    messages: list[JSON] = field(default_factory=list)
    contexts: dict[str, RecordedContext] = field(default_factory=dict)
    closed_at: float | None = None
    dropped: bool = False


@dataclass
class RecordedHttpRequest:
    method: str
    path: str
    query: dict[str, str]
    body: JSON | None
    status: int
    received_at: float


class _Ctx:
    """Server-side state of one context: its unflushed buffer and its generation queue."""

    def __init__(self, rec: RecordedContext) -> None:
        self.rec = rec
        self.buffer = ""
        self.schedule: list[int] = []  # generation_config.chunk_length_schedule of the init message
        self.queue: asyncio.Queue[Generation | None] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None


class ElevenLabsFake(AiohttpFake):
    """ElevenLabs on 127.0.0.1. ``async with ElevenLabsFake(api_key=...) as el:``.

    Use ``el.base_url_v1`` for the livekit plugin's ``base_url`` and ``el.url`` for the SDK's.
    Records: ``sockets`` (RecordedSocket), ``http_requests``, ``auth_failures``.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        voices: Mapping[str, str] | None = None,
        models: Sequence[str] = DEFAULT_MODELS,
        first_audio_delay: float = 0.100,
        ms_per_char: float = 60.0,
        max_seconds: float = 10.0,
        chunk_ms: int = 100,
        chunk_interval: float = 0.010,
        tone_hz: float = 220.0,
        speech: Callable[[str, int], bytes] | None = None,
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(port=port, ssl_context=ssl_context)
        self.api_key = api_key if api_key is not None else secrets.token_urlsafe(24)
        self.voices: dict[str, str] = dict(voices or DEFAULT_VOICES)
        self.models = list(models)
        self.first_audio_delay = first_audio_delay
        self.ms_per_char = ms_per_char
        self.max_seconds = max_seconds
        self.chunk_ms = chunk_ms
        self.chunk_interval = chunk_interval
        self.tone_hz = tone_hz
        self.speech = speech  # fn(text, rate) -> PCM instead of the tone (tests/e2e/voices.py)
        self.sockets: list[RecordedSocket] = []
        self.http_requests: list[RecordedHttpRequest] = []
        self.auth_failures = 0
        self._drops: deque[int] = deque()
        self._resume = asyncio.Event()
        self._resume.set()
        self._http_faults: deque[int] = deque()
        self._live: set[web.WebSocketResponse] = set()
        self._ids = itertools.count(1)

    @property
    def base_url_v1(self) -> str:
        """What ``livekit.plugins.elevenlabs.TTS(base_url=...)`` takes."""
        return f"{self.url}/v1"

    @property
    def voice_id(self) -> str:
        return next(iter(self.voices))

    # -- audio ------------------------------------------------------------------------

    def audio_for(self, text: str, sample_rate: int) -> bytes:
        """The deterministic PCM the fake speaks for ``text`` (also handy in assertions)."""
        chars = len(text.strip())
        if not chars:
            return b""
        if self.speech is not None:
            return self.speech(text.strip(), sample_rate)
        seconds = min(self.max_seconds, chars * self.ms_per_char / 1000)
        t = np.arange(round(seconds * sample_rate)) / sample_rate
        return (np.sin(2 * np.pi * self.tone_hz * t) * 0.3 * 32767).astype("<i2").tobytes()

    def expected_seconds(self, text: str) -> float:
        return min(self.max_seconds, len(text.strip()) * self.ms_per_char / 1000) if text.strip() else 0.0

    # -- faults -----------------------------------------------------------------------

    def drop_next(self, *, after_chunks: int = 1, count: int = 1) -> None:
        """The next ``count`` generations cut the socket (TCP abort) after ``after_chunks`` audio chunks."""
        self._drops.extend([after_chunks] * count)

    async def drop_all(self) -> None:
        """Cut every open socket now."""
        for ws in list(self._live):
            await _abort(ws)

    def fail_next_http(self, status: int = 500, *, count: int = 1) -> None:
        """The next ``count`` HTTP requests (not WS) answer ``status``."""
        self._http_faults.extend([status] * count)

    def stall(self) -> None:
        """Sockets stay open and accept text, but no audio (and no isFinal) is sent until unstall()."""
        self._resume.clear()

    def unstall(self) -> None:
        self._resume.set()

    def clear_faults(self) -> None:
        self._drops.clear()
        self._http_faults.clear()
        self._resume.set()

    # -- app --------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/text-to-speech/{voice}/multi-stream-input", self._ws_multi)
        app.router.add_get("/v1/text-to-speech/{voice}/stream-input", self._ws_single)
        app.router.add_post("/v1/text-to-speech/{voice}/stream", self._http_tts)
        app.router.add_post("/v1/text-to-speech/{voice}", self._http_tts)
        app.router.add_get("/v1/voices", self._list_voices)
        app.router.add_get("/v1/voices/{voice}", self._get_voice)
        app.router.add_get("/v1/models", self._list_models)
        app.on_shutdown.append(self._close_sockets)
        return app

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in list(self._live):
            with contextlib.suppress(Exception):
                await ws.close()

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("xi-api-key") == self.api_key

    def _unauthorized(self) -> web.Response:
        self.auth_failures += 1
        return web.json_response(
            {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}, status=401
        )

    def _record_http(self, request: web.Request, body: JSON | None, status: int) -> None:
        self.http_requests.append(
            RecordedHttpRequest(
                request.method, request.path, dict(request.query), body, status, time.monotonic()
            )
        )

    def _http_fault(self) -> int | None:
        return self._http_faults.popleft() if self._http_faults else None

    def _voice_json(self, vid: str) -> JSON:
        return {
            "voice_id": vid,
            "name": self.voices[vid],
            "category": "premade",
            "labels": {},
            "description": None,
            "preview_url": None,
            "available_for_tiers": [],
            "settings": None,
            "high_quality_base_model_ids": list(self.models),
        }

    async def _list_voices(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            self._record_http(request, None, 401)
            return self._unauthorized()
        if (status := self._http_fault()) is not None:
            self._record_http(request, None, status)
            return web.json_response(
                {"detail": {"status": "error", "message": "injected fault"}}, status=status
            )
        self._record_http(request, None, 200)
        return web.json_response({"voices": [self._voice_json(v) for v in self.voices]})

    async def _get_voice(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            self._record_http(request, None, 401)
            return self._unauthorized()
        if (status := self._http_fault()) is not None:
            self._record_http(request, None, status)
            return web.json_response(
                {"detail": {"status": "error", "message": "injected fault"}}, status=status
            )
        vid = request.match_info["voice"]
        if vid not in self.voices:
            self._record_http(request, None, 404)
            return web.json_response(
                {
                    "detail": {
                        "status": "voice_not_found",
                        "message": f"A voice with the voice_id {vid} was not found.",
                    }
                },
                status=404,
            )
        self._record_http(request, None, 200)
        return web.json_response(self._voice_json(vid))

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            self._record_http(request, None, 401)
            return self._unauthorized()
        if (status := self._http_fault()) is not None:
            self._record_http(request, None, status)
            return web.json_response(
                {"detail": {"status": "error", "message": "injected fault"}}, status=status
            )
        self._record_http(request, None, 200)
        return web.json_response(
            [
                {
                    "model_id": m,
                    "name": m.replace("_", " ").title(),
                    "can_do_text_to_speech": True,
                    "can_do_voice_conversion": False,
                    "can_use_style": True,
                    "can_use_speaker_boost": True,
                    "serves_pro_voices": False,
                    "token_cost_factor": 1.0,
                    "description": "",
                    "requires_alpha_access": False,
                    "max_characters_request_free_user": 2500,
                    "max_characters_request_subscribed_user": 10000,
                    "maximum_text_length_per_request": 40000,
                    "languages": [
                        {"language_id": "en", "name": "English"},
                        {"language_id": "de", "name": "German"},
                        {"language_id": "fr", "name": "French"},
                        {"language_id": "es", "name": "Spanish"},
                    ],
                }
                for m in self.models
            ]
        )

    def _check_synthesis_params(
        self, voice: str, model: str | None, output_format: str
    ) -> tuple[int, str] | None:
        """Returns (status, message) when the request cannot be served, else None."""
        if voice not in self.voices:
            return 404, f"A voice with the voice_id {voice} was not found."
        if model and model not in self.models:
            return 400, f"A model with model ID {model} does not exist."
        if sample_rate_of(output_format) is None:
            return 422, f"This fake only produces PCM (pcm_8000 ... pcm_48000), not {output_format!r}."
        return None

    async def _http_tts(self, request: web.Request) -> web.StreamResponse:
        received = time.monotonic()
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not self._authorized(request):
            self._record_http(request, body, 401)
            return self._unauthorized()
        if (status := self._http_fault()) is not None:
            self._record_http(request, body, status)
            return web.json_response(
                {"detail": {"status": "error", "message": "injected fault"}}, status=status
            )
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            self._record_http(request, body, 422)
            return web.json_response(
                {
                    "detail": [
                        {"loc": ["body", "text"], "msg": "field required", "type": "value_error.missing"}
                    ]
                },
                status=422,
            )
        output_format = request.query.get("output_format", DEFAULT_OUTPUT_FORMAT)
        problem = self._check_synthesis_params(
            request.match_info["voice"], body.get("model_id"), output_format
        )
        if problem is not None:
            self._record_http(request, body, problem[0])
            return web.json_response(
                {"detail": {"status": "invalid_request", "message": problem[1]}}, status=problem[0]
            )
        self._record_http(request, body, 200)
        rate = sample_rate_of(output_format) or 16000
        audio = self.audio_for(body["text"], rate)
        await _sleep_until(received + self.first_audio_delay)
        resp = web.StreamResponse(headers={"Content-Type": "audio/pcm", "request-id": secrets.token_hex(8)})
        await resp.prepare(request)
        step = rate * 2 * self.chunk_ms // 1000
        for i in range(0, len(audio), step):
            if i:
                await asyncio.sleep(self.chunk_interval)
            await resp.write(audio[i : i + step])
        await resp.write_eof()
        return resp

    # -- websockets -------------------------------------------------------------------

    async def _open_ws(
        self, request: web.Request, kind: str
    ) -> tuple[web.WebSocketResponse, RecordedSocket, int] | web.Response:
        voice = request.match_info["voice"]
        query = dict(request.query)
        header_key = request.headers.get("xi-api-key")
        if header_key is not None and header_key != self.api_key:
            return self._unauthorized()
        if header_key is None and kind == "multi":
            return self._unauthorized()
        problem = self._check_synthesis_params(
            voice, query.get("model_id"), query.get("output_format", DEFAULT_OUTPUT_FORMAT)
        )
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        rec = RecordedSocket(kind, voice, query, time.monotonic())
        self.sockets.append(rec)
        if problem is not None:
            await ws.send_json({"error": "invalid_request", "message": problem[1]})
            await ws.close(code=1008, message=problem[1][:120].encode())
            rec.closed_at = time.monotonic()
            return ws, rec, 0
        return ws, rec, sample_rate_of(query.get("output_format", DEFAULT_OUTPUT_FORMAT)) or 16000

    async def _ws_multi(self, request: web.Request) -> web.StreamResponse:
        opened = await self._open_ws(request, "multi")
        if isinstance(opened, web.Response):
            return opened
        ws, rec, rate = opened
        if not rate:
            return ws
        self._live.add(ws)
        ctxs: dict[str, _Ctx] = {}
        auto_mode = rec.query.get("auto_mode", "false") == "true"
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                rec.messages.append(data)
                if data.get("close_socket"):
                    for open_ctx in ctxs.values():
                        self._close_context(ws, open_ctx, rate)
                    await asyncio.gather(
                        *(c.worker for c in ctxs.values() if c.worker), return_exceptions=True
                    )
                    await ws.close()
                    break
                cid = str(data.get("context_id") or data.get("contextId") or "default")
                ctx = ctxs.get(cid)
                if ctx is None:
                    if data.get("close_context"):
                        continue
                    ctx = ctxs[cid] = _Ctx(RecordedContext(cid, voice_settings=data.get("voice_settings")))
                    ctx.schedule = list(
                        (data.get("generation_config") or {}).get("chunk_length_schedule") or []
                    )
                    rec.contexts[cid] = ctx.rec
                    ctx.worker = asyncio.create_task(self._speak(ws, rec, ctx, rate, context_key="contextId"))
                    if data.get("text") == " ":
                        continue  # the initialisation message
                if data.get("close_context"):
                    self._close_context(ws, ctx, rate)
                    continue
                text = data.get("text")
                if isinstance(text, str) and text:
                    ctx.rec.texts.append(text)
                    ctx.buffer += text
                if data.get("flush"):
                    ctx.rec.flushes += 1
                    self._generate(ctx, ctx.buffer)
                    ctx.buffer = ""
                elif (auto_mode and re.search(r"[.!?]\s*$", ctx.buffer)) or self._schedule_due(ctx):
                    self._generate(ctx, ctx.buffer)
                    ctx.buffer = ""
        finally:
            self._live.discard(ws)
            for ctx in ctxs.values():
                if ctx.worker is not None and not ctx.worker.done():
                    ctx.worker.cancel()
            rec.closed_at = time.monotonic()
        return ws

    @staticmethod
    def _schedule_due(ctx: _Ctx) -> bool:
        """chunk_length_schedule: generate once the buffer holds the next threshold of characters."""
        if not ctx.schedule:
            return False
        threshold = ctx.schedule[min(len(ctx.rec.generations), len(ctx.schedule) - 1)]
        return len(ctx.buffer) >= threshold and ctx.buffer.endswith(" ")

    def _generate(self, ctx: _Ctx, text: str) -> None:
        if text.strip():
            gen = Generation(text=text, requested_at=time.monotonic())
            ctx.rec.generations.append(gen)
            ctx.queue.put_nowait(gen)

    def _close_context(self, ws: web.WebSocketResponse, ctx: _Ctx, rate: int) -> None:
        """Unflushed text is discarded; flushed audio plays out, then isFinal."""
        if ctx.rec.closed:
            return
        ctx.rec.closed = True
        ctx.buffer = ""
        ctx.queue.put_nowait(None)

    async def _speak(
        self, ws: web.WebSocketResponse, rec: RecordedSocket, ctx: _Ctx, rate: int, context_key: str | None
    ) -> None:
        """Sends the context's generations in order, then isFinal when it was closed."""
        step = rate * 2 * self.chunk_ms // 1000
        while True:
            gen = await ctx.queue.get()
            if gen is None:
                break
            audio = self.audio_for(gen.text, rate)
            await _sleep_until(gen.requested_at + self.first_audio_delay)
            drop_after = self._drops.popleft() if self._drops else None
            offset_ms = 0.0
            for n, i in enumerate(range(0, len(audio), step)):
                if drop_after is not None and n >= drop_after:
                    gen.interrupted = True
                    rec.dropped = True
                    await _abort(ws)
                    return
                piece = audio[i : i + step]
                msg: JSON = {"audio": base64.b64encode(piece).decode(), "isFinal": None}
                align = self._alignment(
                    gen.text, offset_ms, len(piece) / 2 / rate * 1000, len(audio) / 2 / rate * 1000
                )
                msg["alignment"] = msg["normalizedAlignment"] = align
                if context_key:
                    msg[context_key] = ctx.rec.context_id
                if n:
                    await asyncio.sleep(self.chunk_interval)
                await self._resume.wait()
                if ws.closed:
                    return
                await ws.send_json(msg)
                if gen.first_audio_at is None:
                    gen.first_audio_at = time.monotonic()
                gen.audio_bytes += len(piece)
                gen.chunks += 1
                offset_ms += len(piece) / 2 / rate * 1000
            gen.done_at = time.monotonic()
        final: JSON = {"isFinal": True}
        if context_key:
            final[context_key] = ctx.rec.context_id
        await self._resume.wait()
        if not ws.closed:
            await ws.send_json(final)
            ctx.rec.final_sent_at = time.monotonic()

    def _alignment(self, text: str, offset_ms: float, chunk_ms: float, total_ms: float) -> JSON:
        """Characters whose start falls in this chunk, times in ms since the generation's first audio."""
        per_char = total_ms / max(1, len(text))
        chars, starts, durs = [], [], []
        for i, ch in enumerate(text):
            start = i * per_char
            if offset_ms <= start < offset_ms + chunk_ms:
                chars.append(ch)
                starts.append(round(start))
                durs.append(round(per_char))
        return {"chars": chars, "charStartTimesMs": starts, "charDurationsMs": durs}

    async def _ws_single(self, request: web.Request) -> web.StreamResponse:
        opened = await self._open_ws(request, "single")
        if isinstance(opened, web.Response):
            return opened
        ws, rec, rate = opened
        if not rate:
            return ws
        self._live.add(ws)
        ctx = _Ctx(RecordedContext("single"))
        rec.contexts["single"] = ctx.rec
        authed = request.headers.get("xi-api-key") == self.api_key
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                rec.messages.append({k: ("<redacted>" if k == "xi_api_key" else v) for k, v in data.items()})
                if not authed:
                    if data.get("xi_api_key") != self.api_key:
                        self.auth_failures += 1
                        await ws.send_json(
                            {"message": "Invalid API key", "error": "invalid_api_key", "code": 1008}
                        )
                        await ws.close(code=1008, message=b"Invalid API key")
                        break
                    authed = True
                if ctx.worker is None:
                    ctx.rec.voice_settings = data.get("voice_settings")
                    ctx.schedule = list(
                        (data.get("generation_config") or {}).get("chunk_length_schedule") or []
                    )
                    ctx.worker = asyncio.create_task(self._speak(ws, rec, ctx, rate, context_key=None))
                    if data.get("text") == " ":
                        continue
                text = data.get("text")
                if text == "":  # end of input: speak what is left, then isFinal and close
                    self._generate(ctx, ctx.buffer)
                    ctx.buffer = ""
                    ctx.rec.closed = True
                    ctx.queue.put_nowait(None)
                    await ctx.worker
                    await ws.close()
                    break
                if isinstance(text, str):
                    ctx.rec.texts.append(text)
                    ctx.buffer += text
                if data.get("flush") or self._schedule_due(ctx):
                    ctx.rec.flushes += bool(data.get("flush"))
                    self._generate(ctx, ctx.buffer)
                    ctx.buffer = ""
        finally:
            self._live.discard(ws)
            if ctx.worker is not None and not ctx.worker.done():
                ctx.worker.cancel()
            rec.closed_at = time.monotonic()
        return ws


async def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _abort(ws: web.WebSocketResponse) -> None:
    """Cut the TCP connection without a close frame (what a crashed server looks like)."""
    req: Any = getattr(ws, "_req", None)
    transport = req.transport if req is not None else None
    if transport is not None:
        transport.abort()
    else:  # pragma: no cover - aiohttp internals changed
        await ws.close(code=1011)
