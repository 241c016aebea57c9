"""Call recording in the worker: both sides, two channels, sealed ~5 s chunks in the line's bucket.

WHY in the worker: it already has both audio streams (LiveKit Egress is a paid, separate
service). The caller goes on channel 0 as it arrives, the agent on channel 1 at the moment it
was *played* (what the caller heard: an interrupted reply stops where it was cut). Every
``CHUNK_SECONDS`` the settled part of the timeline becomes one chunk: interleaved PCM16 at
16 kHz, sealed with AES-GCM under the recording's random data key and uploaded as its own
object (layout: ``voicehive.recording_store``). The data key is stored only wrapped by the
line's recording key (HKDF of the master key, ``voicehive.privacy.derive_line_key``). A
worker killed mid-call therefore loses only the chunk in progress: every uploaded chunk
decrypts on its own and carries its position on the timeline.

An objection (the caller says so, or presses the line's key) stops the recording and deletes
every object of it, including what was already uploaded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import io
import json
import logging
import os
import re
import secrets
import struct
import time
import wave
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from livekit import rtc
from livekit.agents.voice import io as lk_io

from voicehive import recording_store as store
from voicehive.api.models import HotelLineSpec, RecordingSpec
from voicehive.privacy import SealError, derive_line_key

log = logging.getLogger("voicehive.worker.recording")

SAMPLE_RATE = 16000
CHANNELS = 2  # 0: caller, 1: agent
CHUNK_SECONDS = 5.0
SETTLE_SECONDS = 0.3  # audio younger than this may still be placed (jitter, resampler delay)
RESYNC_SECONDS = 0.2  # a caller frame this far off its run starts a new run
RECORDING_PURPOSE = store.RECORDING_PURPOSE
_WRAP_CONTEXT = b"voicehive.io/recording-data-key\x00"
_CHUNK_CONTEXT = b"voicehive.io/recording-chunk\x00"
_NONCE = 12
FORMAT: dict[str, Any] = {"codec": "pcm_s16le", "sampleRate": SAMPLE_RATE, "channels": CHANNELS,
                          "channelLayout": ["caller", "agent"]}

StatusReport = Callable[[dict[str, Any]], Awaitable[None]]


# --------------------------------------------------------------------------- keys and sealing


def recording_key(master_key: bytes, namespace: str, line: str) -> bytes:
    """The line's key that wraps recording data keys."""
    return derive_line_key(master_key, namespace, line, purpose=RECORDING_PURPOSE)


def recording_id(namespace: str, line: str, session: str) -> bytes:
    return f"{namespace}/{line}/{session}".encode()


def wrap_data_key(line_key: bytes, data_key: bytes, rec_id: bytes) -> str:
    nonce = secrets.token_bytes(_NONCE)
    sealed = AESGCM(line_key).encrypt(nonce, data_key, _WRAP_CONTEXT + rec_id)
    return base64.b64encode(nonce + sealed).decode("ascii")


def unwrap_data_key(line_key: bytes, wrapped: str, rec_id: bytes) -> bytes:
    raw = base64.b64decode(wrapped)
    try:
        return AESGCM(line_key).decrypt(raw[:_NONCE], raw[_NONCE:], _WRAP_CONTEXT + rec_id)
    except InvalidTag:
        raise SealError("the recording's data key does not open with this line key") from None


def seal_chunk(data_key: bytes, rec_id: bytes, index: int, start_sample: int, pcm: bytes) -> bytes:
    """``nonce | AES-GCM(start sample (8 bytes) | PCM)``; AAD binds recording and chunk index."""
    nonce = secrets.token_bytes(_NONCE)
    aad = _CHUNK_CONTEXT + rec_id + struct.pack(">I", index)
    return nonce + AESGCM(data_key).encrypt(nonce, struct.pack(">Q", start_sample) + pcm, aad)


def open_chunk(data_key: bytes, rec_id: bytes, index: int, blob: bytes) -> tuple[int, bytes]:
    aad = _CHUNK_CONTEXT + rec_id + struct.pack(">I", index)
    try:
        plain = AESGCM(data_key).decrypt(blob[:_NONCE], blob[_NONCE:], aad)
    except InvalidTag:
        raise SealError(f"recording chunk {index} failed authentication") from None
    return struct.unpack(">Q", plain[:8])[0], plain[8:]


# --------------------------------------------------------------------------- the timeline


def _mono16(frame: rtc.AudioFrame) -> np.ndarray:
    data = np.frombuffer(bytes(frame.data.cast("b")), dtype="<i2").reshape(-1, frame.num_channels)
    return data.mean(axis=1).astype("<i2") if frame.num_channels > 1 else data[:, 0].copy()


@dataclass
class Track:
    """One channel: runs of 16 kHz samples placed at absolute sample positions since the start."""

    placed: list[tuple[int, np.ndarray]] = field(default_factory=list)
    _resampler: Any = None
    _source_rate: int | None = None

    def resample(self, frame: rtc.AudioFrame) -> np.ndarray:
        mono = _mono16(frame)
        if frame.sample_rate == SAMPLE_RATE:
            return mono
        if self._resampler is None or self._source_rate != frame.sample_rate:
            self._source_rate = frame.sample_rate
            self._resampler = rtc.AudioResampler(input_rate=frame.sample_rate, output_rate=SAMPLE_RATE, num_channels=1)
        out = self._resampler.push(rtc.AudioFrame(mono.tobytes(), frame.sample_rate, 1, len(mono)))
        return np.concatenate([_mono16(f) for f in out]) if out else np.zeros(0, dtype="<i2")

    def place(self, start: int, samples: np.ndarray) -> None:
        if len(samples):
            self.placed.append((start, samples))

    def take(self, start: int, end: int) -> np.ndarray:
        """The channel over ``[start, end)``, silent where nothing was placed; older runs dropped."""
        block = np.zeros(max(0, end - start), dtype=np.int32)
        keep: list[tuple[int, np.ndarray]] = []
        for pos, samples in self.placed:
            stop = pos + len(samples)
            if pos >= end:
                keep.append((pos, samples))
                continue
            if stop <= start:
                continue
            lo, hi = max(pos, start), min(stop, end)
            block[lo - start : hi - start] += samples[lo - pos : hi - pos]
            if stop > end:
                keep.append((end, samples[end - pos :]))
        self.placed = keep
        return np.clip(block, -32768, 32767).astype("<i2")


@dataclass
class Timeline:
    """Both channels on one clock (``time.time`` seconds since ``t0``), cut into chunks."""

    t0: float
    caller: Track = field(default_factory=Track)
    agent: Track = field(default_factory=Track)
    flushed: int = 0  # samples already cut into chunks
    _caller_end: int | None = None

    def at(self, when: float) -> int:
        return max(0, round((when - self.t0) * SAMPLE_RATE))

    def add_caller(self, frame: rtc.AudioFrame, arrived_at: float) -> None:
        samples = self.caller.resample(frame)
        start = self.at(arrived_at - frame.duration)
        if self._caller_end is not None and abs(start - self._caller_end) <= RESYNC_SECONDS * SAMPLE_RATE:
            start = self._caller_end  # contiguous with the run: no clicks from arrival jitter
        self.caller.place(max(start, self.flushed), samples[max(0, self.flushed - start) :])
        self._caller_end = start + len(samples)

    def add_agent(self, started_at: float, samples: np.ndarray) -> None:
        start = self.at(started_at)
        self.agent.place(max(start, self.flushed), samples[max(0, self.flushed - start) :])

    def cut(self, end: int) -> tuple[int, bytes] | None:
        """Interleaved stereo PCM of ``[flushed, end)`` and its start sample (None when empty)."""
        if end <= self.flushed:
            return None
        start = self.flushed
        stereo = np.empty((end - start) * CHANNELS, dtype="<i2")
        stereo[0::2] = self.caller.take(start, end)
        stereo[1::2] = self.agent.take(start, end)
        self.flushed = end
        return start, stereo.tobytes()


# --------------------------------------------------------------------------- one call's recording


@dataclass(frozen=True)
class RecordingTarget:
    """Whose recording this is: the bucket path parts, the caller hash (erasure) and the expiry."""

    namespace: str
    line: str
    session: str
    caller_hash: str
    expires_at: dt.datetime

    @property
    def prefix(self) -> str:
        return store.recording_prefix(self.namespace, self.line, self.session)

    @property
    def rec_id(self) -> bytes:
        return recording_id(self.namespace, self.line, self.session)


class CallRecording:
    """Records one call into sealed chunk objects; ``object()`` deletes it, ``finish()`` closes it.

    The S3 client is boto3's (blocking): every call runs in a thread, one upload at a time and
    in order, so the audio path only appends to in-memory tracks.
    """

    def __init__(self, client: Any, bucket: str, target: RecordingTarget, line_key: bytes, *,
                 chunk_seconds: float = CHUNK_SECONDS, report: StatusReport | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.bucket = bucket
        self.target = target
        self._line_key = line_key
        self._data_key = AESGCM.generate_key(bit_length=256)
        self._chunk_samples = int(chunk_seconds * SAMPLE_RATE)
        self._report = report
        self.clock = clock
        self.timeline = Timeline(t0=clock())
        self.active = False
        self.state: str | None = None
        self.chunks = 0
        self.agent_pending_since: float | None = None  # an agent segment in flight holds the cut back
        self._queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._uploaded_samples = 0

    # -- life cycle

    async def start(self) -> None:
        header = {"version": 1, "format": FORMAT, "startedAt": store.rfc3339(dt.datetime.now(dt.UTC)),
                  "wrappedKey": wrap_data_key(self._line_key, self._data_key, self.target.rec_id)}
        self.timeline = Timeline(t0=self.clock())
        self.active = True
        self._queue.put_nowait((self.target.prefix + store.HEADER, json.dumps(header).encode()))
        self._tasks = [asyncio.create_task(self._uploader(), name="recording-upload"),
                       asyncio.create_task(self._cutter(), name="recording-cut")]
        await self._set_state("Recording", exists=True)

    async def finish(self) -> None:
        """The call ended: cut the rest, upload it and the end marker, report Complete."""
        if not self.active:
            return
        self.active = False
        self._tasks[1].cancel()
        now = self.timeline.at(self.clock())
        self._enqueue_cut(now)
        end = {"chunks": self.chunks, "seconds": round(self.timeline.flushed / SAMPLE_RATE, 2)}
        self._queue.put_nowait((self.target.prefix + store.END, json.dumps(end).encode()))
        self._queue.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._set_state("Complete", exists=True)

    async def object(self) -> bool:
        """The caller objected: stop, then delete every object of this recording. Idempotent."""
        if self.state == "Objected":
            return False
        self.active = False
        if self._tasks:
            self._tasks[1].cancel()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)  # the upload in flight lands first
        deleted = await asyncio.to_thread(store.delete_recording, self.client, self.bucket, self.target.prefix)
        log.info("recording deleted on the caller's objection", extra={"objects": deleted})
        self.state = "Objected"
        await self._report_status({"exists": False, "state": "Objected"})
        return True

    # -- audio in

    def caller_frame(self, frame: rtc.AudioFrame) -> None:
        if self.active:
            self.timeline.add_caller(frame, self.clock())

    def agent_played(self, started_at: float, samples: np.ndarray) -> None:
        if self.active:
            self.timeline.add_agent(started_at, samples)

    # -- cutting and uploading

    def settled(self) -> int:
        """Up to where both channels are final: not the last moments, not an agent segment in flight."""
        horizon = self.clock() - SETTLE_SECONDS
        if self.agent_pending_since is not None:
            horizon = min(horizon, self.agent_pending_since)
        return self.timeline.at(horizon)

    async def _cutter(self) -> None:
        while self.active:
            await asyncio.sleep(0.25)
            settled = self.settled()
            while settled - self.timeline.flushed >= self._chunk_samples:
                self._enqueue_cut(self.timeline.flushed + self._chunk_samples)

    def _enqueue_cut(self, end: int) -> None:
        cut = self.timeline.cut(end)
        if cut is None:
            return
        start, pcm = cut
        self.chunks += 1
        blob = seal_chunk(self._data_key, self.target.rec_id, self.chunks, start, pcm)
        self._queue.put_nowait((store.chunk_key(self.target.prefix, self.chunks), blob))

    async def _uploader(self) -> None:
        meta = store.object_metadata(self.target.expires_at, self.target.caller_hash)
        while (item := await self._queue.get()) is not None:
            key, body = item
            for attempt in range(3):  # boto3 retries each request too; this covers longer outages
                try:
                    await asyncio.to_thread(self.client.put_object, Bucket=self.bucket, Key=key,
                                            Body=body, Metadata=meta, ContentType="application/octet-stream")
                    break
                except Exception as err:
                    log.warning("recording upload failed", extra={"attempt": attempt + 1, "error": type(err).__name__})
                    await asyncio.sleep(0.5 * 2**attempt)

    async def _set_state(self, state: str, *, exists: bool) -> None:
        self.state = state
        seconds = round(self.timeline.flushed / SAMPLE_RATE, 1)
        await self._report_status({"exists": exists, "state": state, "seconds": seconds,
                                   "expiresAt": store.rfc3339(self.target.expires_at)})

    async def _report_status(self, status: dict[str, Any]) -> None:
        if self._report is None:
            return
        try:
            await self._report(status)
        except Exception as err:
            log.warning("recording status not reported", extra={"error": type(err).__name__})


# --------------------------------------------------------------------------- audio IO taps


class RecordingAudioInput(lk_io.AudioInput):
    """Passes the caller's frames through, recording each on channel 0."""

    def __init__(self, recording: CallRecording, source: lk_io.AudioInput) -> None:
        super().__init__(label="voicehive-recording", source=source)
        self._recording = recording
        self._source = source

    async def __anext__(self) -> rtc.AudioFrame:
        frame = await self._source.__anext__()
        self._recording.caller_frame(frame)
        return frame


class RecordingAudioOutput(lk_io.AudioOutput):
    """Passes the agent's audio on; records on channel 1 what was played, when it was played.

    A segment is placed once playback finished (up to the reported position, so an interrupted
    reply ends where the caller stopped hearing it); while it plays, the recording's cut waits.
    """

    def __init__(self, recording: CallRecording, sink: lk_io.AudioOutput) -> None:
        super().__init__(label="voicehive-recording", next_in_chain=sink,
                         capabilities=lk_io.AudioOutputCapabilities(pause=True))
        self._recording = recording
        self._frames: list[np.ndarray] = []
        self._track = Track()
        self._started_at: float | None = None

    @property
    def sample_rate(self) -> int | None:
        return self._sample_rate or (self.next_in_chain.sample_rate if self.next_in_chain else None)

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        if self.next_in_chain:
            await self.next_in_chain.capture_frame(frame)
        await super().capture_frame(frame)
        if not self._frames:
            self._recording.agent_pending_since = self._recording.clock()
        self._frames.append(self._track.resample(frame))

    def on_playback_started(self, *, created_at: float) -> None:
        super().on_playback_started(created_at=created_at)
        if self._started_at is None:
            self._started_at = created_at

    def on_playback_finished(self, *, playback_position: float, interrupted: bool,
                             synchronized_transcript: str | None = None) -> None:
        super().on_playback_finished(playback_position=playback_position, interrupted=interrupted,
                                     synchronized_transcript=synchronized_transcript)
        if self._frames:
            played = np.concatenate(self._frames)[: round(playback_position * SAMPLE_RATE)]
            started = self._started_at if self._started_at is not None else self._recording.clock() - playback_position
            self._recording.agent_played(started, played)
        self._frames, self._started_at = [], None
        self._recording.agent_pending_since = None

    def flush(self) -> None:
        super().flush()
        if self.next_in_chain:
            self.next_in_chain.flush()

    def clear_buffer(self) -> None:
        if self.next_in_chain:
            self.next_in_chain.clear_buffer()


# --------------------------------------------------------------------------- consent


_NOTICES: dict[str, str] = {
    "en": "This call is recorded. If you do not want that, say: do not record, or press {key}.",
    "de": "Dieses Gespräch wird aufgezeichnet. Wenn Sie das nicht möchten, sagen Sie: nicht aufnehmen, "
          "oder drücken Sie die {key}.",
    "fr": "Cet appel est enregistré. Si vous ne le souhaitez pas, dites : ne pas enregistrer, "
          "ou appuyez sur {key}.",
    "es": "Esta llamada se graba. Si no lo desea, diga: no grabar, o pulse el {key}.",
    "it": "Questa chiamata viene registrata. Se non lo desidera, dica: non registrare, oppure prema il {key}.",
}
_STOPPED: dict[str, str] = {
    "en": "Understood, the recording is stopped and deleted.",
    "de": "Verstanden, die Aufzeichnung ist gestoppt und gelöscht.",
    "fr": "Entendu, l'enregistrement est arrêté et supprimé.",
    "es": "Entendido, la grabación se ha detenido y borrado.",
    "it": "Capito, la registrazione è stata interrotta e cancellata.",
}
# What counts as an objection, per language (lower-case, accents kept): a small local matcher.
_OBJECTION = re.compile(
    r"\b(do not|don'?t|dont|stop|no)\s+(record|recording)|\bobject\b.*\brecord|\brecording\b.*\b(off|stop)"
    r"|nicht\s+(auf(nehmen|zeichnen)|mitschneiden)|aufzeichnung\s+(stoppen|beenden)|widerspreche"
    r"|ne\s+pas\s+enregistrer|pas\s+d'enregistrement|arr[eê]te[rz]?\s+l'enregistrement"
    r"|no\s+grab(ar|e|en)|no\s+quiero\s+que\s+(se\s+)?grab|det[eé]n(ga|er)?\s+la\s+grabaci[oó]n"
    r"|non\s+registrare|non\s+voglio\s+(essere\s+)?registrat|interromp\w*\s+la\s+registrazione",
    re.IGNORECASE,
)


def _lang(language: str) -> str:
    base = language.split("-")[0].lower()
    return base if base in _NOTICES else "en"


def recording_notice(language: str, objection_key: str) -> str:
    """What the greeting adds when the line records: that it does, and how to object."""
    return _NOTICES[_lang(language)].format(key=objection_key)


def recording_stopped(language: str) -> str:
    return _STOPPED[_lang(language)]


def is_objection(text: str) -> bool:
    """Whether a caller's words object to the recording (en, de, fr, es, it)."""
    return bool(_OBJECTION.search(text))


# --------------------------------------------------------------------------- reading back


@dataclass
class Opened:
    """A decrypted recording: interleaved stereo PCM16 at 16 kHz and what was found."""

    pcm: bytes
    chunks: int
    complete: bool
    seconds: float


def read_recording(client: Any, bucket: str, namespace: str, line: str, session: str, line_key: bytes) -> Opened:
    """Fetches and decrypts one recording; a missing chunk becomes silence at its place."""
    prefix = store.recording_prefix(namespace, line, session)
    keys = store.list_recordings(client, bucket, prefix).get(prefix, [])
    if not keys:
        raise FileNotFoundError(f"no recording of {session} on line {namespace}/{line}")
    header = json.loads(client.get_object(Bucket=bucket, Key=prefix + store.HEADER)["Body"].read())
    rec_id = recording_id(namespace, line, session)
    data_key = unwrap_data_key(line_key, header["wrappedKey"], rec_id)
    out = bytearray()
    chunks = sorted((i, k) for k in keys if (i := store.chunk_index(k)) is not None)
    for index, key in chunks:
        start, pcm = open_chunk(data_key, rec_id, index, client.get_object(Bucket=bucket, Key=key)["Body"].read())
        offset = start * CHANNELS * 2
        if len(out) < offset:
            out.extend(bytes(offset - len(out)))
        out[offset : offset + len(pcm)] = pcm
    complete = prefix + store.END in keys
    return Opened(bytes(out), len(chunks), complete, len(out) / (CHANNELS * 2 * SAMPLE_RATE))


def wav_bytes(pcm: bytes) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(CHANNELS)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(pcm)
    return buffer.getvalue()



# --------------------------------------------------------------------------- wiring into a call


def bucket_access(rec: RecordingSpec, environ: Mapping[str, str] | None = None) -> store.BucketAccess:
    """The line's bucket with the credentials the operator put into the pod (from its Secrets)."""
    env = os.environ if environ is None else environ
    key_id, secret = env.get(store.ENV_ACCESS_KEY_ID, ""), env.get(store.ENV_SECRET_ACCESS_KEY, "")
    if not key_id or not secret:
        raise ValueError(f"{store.ENV_ACCESS_KEY_ID} and {store.ENV_SECRET_ACCESS_KEY} must be set "
                         "(from spec.recording's Secret references)")
    return store.BucketAccess(bucket=rec.bucket, region=str(rec.region), endpoint=rec.endpoint,
                              access_key_id=key_id, secret_access_key=secret)


def open_call_recording(spec: HotelLineSpec, *, namespace: str, line: str, session: str, caller_hash: str,
                        line_key: bytes, environ: Mapping[str, str] | None = None,
                        report: StatusReport | None = None) -> CallRecording | None:
    """The recording of one call, or None when the line does not record (or keeps nothing)."""
    rec = spec.recording
    if rec is None or not rec.enabled or spec.retention.recording_days < 1:
        return None
    access = bucket_access(rec, environ)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=spec.retention.recording_days)
    target = RecordingTarget(namespace, line, session, caller_hash, expires)
    return CallRecording(store.s3_client(access), rec.bucket, target, line_key,
                         report=report)


def tap(session: Any, recording: CallRecording) -> None:
    """Puts the recording between the session and its audio IO (before ``session.start``)."""
    session.input.audio = RecordingAudioInput(recording, session.input.audio)
    session.output.audio = RecordingAudioOutput(recording, session.output.audio)


def announce(agent: Any, spec: HotelLineSpec) -> None:
    """Adds the recording notice to the agent's greeting, in the call's language."""
    key = spec.recording.objection_key if spec.recording else "9"
    agent.greeting_extra = recording_notice(str(agent.language), key)
