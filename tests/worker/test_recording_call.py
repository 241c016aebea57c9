"""Calls that are recorded: through our AgentSession, into moto's S3 server over TLS, read back
with ``voicehive recording get`` and checked by the local ASR; an objection by voice and by key;
a worker killed mid-call."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.fixtures.s3 import S3Server
from tests.worker.callrig import line_spec, provider_fakes, running_call
from tests.worker.speech import espeak_available, speak
from tests.worker.test_recording_units import CALLER_HASH, poll, recording_block
from voicehive import recording_store as store
from voicehive.api.models import HotelLineSpec
from voicehive.lifecycle import EndReason
from voicehive_worker.entrypoint import CallRunner
from voicehive_worker.recording import SAMPLE_RATE, CallRecording, RecordingTarget, recording_key

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not espeak_available(), reason="espeak-ng is needed for caller speech"),
]

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE, LINE = "hotels", "lindenhof-main"
QUESTION = "what time is check in"


class _NoFakes:
    """running_call without provider fakes: the local engines need none."""

    def spec_for(self, spec: HotelLineSpec) -> HotelLineSpec:
        return spec


def _recording(s3: S3Server, bucket: str, master: bytes, statuses: list[dict[str, Any]] | None = None,
               ) -> CallRecording:
    import datetime as dt

    async def report(status: dict[str, Any]) -> None:
        if statuses is not None:
            statuses.append(status)

    target = RecordingTarget(NAMESPACE, LINE, f"vs-{secrets.token_hex(10)}", CALLER_HASH,
                             dt.datetime.now(dt.UTC) + dt.timedelta(days=7))
    return CallRecording(s3.client(), bucket, target, recording_key(master, NAMESPACE, LINE), report=report)


def _staff_env(s3: S3Server, master: bytes) -> dict[str, str]:
    return {**os.environ, "VOICEHIVE_TRANSCRIPT_KEY": base64.b64encode(master).decode(),
            store.ENV_ACCESS_KEY_ID: s3.access_key_id, store.ENV_SECRET_ACCESS_KEY: s3.secret_access_key,
            "AWS_CA_BUNDLE": s3.ca_file, "VOICEHIVE_USER": "frontdesk-anna"}


def _get(s3: S3Server, master: bytes, spec: HotelLineSpec, session: str, tmp: Path) -> tuple[Path, str]:
    """``voicehive recording get`` as staff run it (a subprocess); returns the WAV and stderr."""
    line_file = tmp / "line.yaml"
    line_file.write_text(yaml.safe_dump({"apiVersion": "voicehive.io/v1alpha1", "kind": "HotelLine",
                                         "metadata": {"name": LINE}, "spec": spec.to_wire()}))
    out = tmp / f"{session}.wav"
    done = subprocess.run([str(Path(sys.executable).parent / "voicehive"), "recording", "get", session, "--out",
                           str(out), "-n", NAMESPACE, "--line-file", str(line_file)],
                          env=_staff_env(s3, master), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return out, done.stderr


def _channels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with wave.open(str(path)) as handle:
        assert (handle.getnchannels(), handle.getsampwidth(), handle.getframerate()) == (2, 2, SAMPLE_RATE)
        stereo = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").reshape(-1, 2)
    return stereo[:, 0].copy(), stereo[:, 1].copy()


def _correlation(haystack: np.ndarray, needle: np.ndarray) -> np.ndarray:
    """Normalised correlation of ``needle`` at every offset of ``haystack`` (FFT)."""
    a, b = haystack.astype(np.float64), needle.astype(np.float64)
    n = len(a) + len(b)
    corr = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)[: len(a)]
    sums = np.concatenate(([0.0], np.cumsum(np.concatenate((a * a, np.zeros(len(b)))))))
    energy = np.sqrt(np.maximum(sums[len(b) : len(b) + len(a)] - sums[: len(a)], 0.0)) + 1e-9
    return np.asarray(corr / (energy * np.sqrt(np.sum(b * b)) + 1e-9))


def _best_match(haystack: np.ndarray, needle: np.ndarray) -> float:
    """Highest normalised correlation of ``needle`` anywhere in ``haystack``."""
    return float(np.max(_correlation(haystack, needle)))


def _span_of(haystack: np.ndarray, needle: np.ndarray, slack_s: float = 0.5) -> np.ndarray:
    """The part of ``haystack`` where ``needle`` lies (found by correlation), with some slack."""
    at = int(np.argmax(_correlation(haystack, needle[: 2 * SAMPLE_RATE])))
    slack = round(slack_s * SAMPLE_RATE)
    return haystack[max(0, at - slack) : at + len(needle) + slack]


async def test_a_call_is_recorded_on_two_channels_each_with_what_that_side_said(
    s3_server: S3Server, tmp_path: Path
) -> None:
    from voicehive_worker.engines import local_models
    from voicehive_worker.engines.pocketsphinx_stt import PocketsphinxSTT

    bucket = s3_server.new_bucket()
    master = os.urandom(32)
    spec = line_spec(recording=recording_block(s3_server, bucket))
    local = local_models(spec)
    from voicehive_worker.session import Models

    statuses: list[dict[str, Any]] = []
    rec = _recording(s3_server, bucket, master, statuses)
    caller_pcm = speak(QUESTION, voice="en-us+f5", words_per_minute=150)
    async with running_call(_NoFakes(), spec, models=Models(stt=local.stt, llm=local.llm, tts=local.tts),  # type: ignore[arg-type]
                            recording=rec) as call:
        runner = CallRunner(session=call.session, agent=call.agent, state=None,  # type: ignore[arg-type]
                            turn_stats=call.stats, recording=rec).attach()
        await call.wait_for(lambda: call.sink.segments, 20, "the greeting")
        await call.wait_quiet(60)
        utt = call.say(caller_pcm, "question")
        await call.wait_reply(utt, 30)
        await call.wait_quiet(60)
        await runner.finish(EndReason.CALLER_HANGUP)
        heard = np.frombuffer(b"".join(bytes(s.pcm) for s in call.sink.segments), dtype="<i2")
        greeting = np.frombuffer(bytes(call.sink.segments[0].pcm), dtype="<i2")
    assert statuses[-1]["state"] == "Complete" and statuses[-1]["exists"] is True

    wav, stderr = _get(s3_server, master, spec, rec.target.session, tmp_path)
    caller, agent = _channels(wav)
    audit = [json.loads(line) for line in stderr.splitlines() if '"recording_access"' in line]
    assert audit and audit[0]["actor"] == "frontdesk-anna" and audit[0]["session"] == rec.target.session

    # each channel holds its side's audio (correlation with what each side sent) ...
    assert _best_match(caller, np.frombuffer(caller_pcm, dtype="<i2")) > 0.9
    assert _best_match(agent, heard[: 2 * SAMPLE_RATE]) > 0.9  # the greeting's first two seconds
    assert _best_match(caller, heard[: 2 * SAMPLE_RATE]) < 0.3  # and not the other side's
    # ... and says what that side said, as the local ASR hears it
    asr = PocketsphinxSTT.for_line(spec)
    caller_text, _ = asr.transcribe_pcm(caller.tobytes())
    # the greeting's own span: the whole channel (greeting, notice, reply and the silences between)
    # is a long run for pocketsphinx, whose guesses on it vary with where the turns fall
    agent_text, _ = asr.transcribe_pcm(_span_of(agent, greeting).tobytes())
    assert "check in" in caller_text, caller_text
    greeting_words = {"thank", "calling", "hotel", "help", "assistant", "recorded", "record"}
    assert len(greeting_words & set(agent_text.split())) >= 2, agent_text
    assert not greeting_words & set(caller_text.split()), caller_text


async def test_a_caller_objecting_by_voice_stops_and_deletes_the_recording(s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    rec = _recording(s3_server, bucket, os.urandom(32))
    spec = line_spec(recording=recording_block(s3_server, bucket))
    async with provider_fakes(["please do not record this call"]) as fakes, \
            running_call(fakes, spec, recording=rec) as call:
        runner = CallRunner(session=call.session, agent=call.agent, state=None,  # type: ignore[arg-type]
                            turn_stats=call.stats, recording=rec).attach()
        await call.wait_for(lambda: call.sink.segments, 60, "the greeting")
        await call.wait_quiet(60)
        await poll(lambda: any("chunk-" in k for k in s3_server.keys(bucket, rec.target.prefix)),
                   "a chunk uploaded mid-call", timeout=60)
        utt = call.say(speak("please do not record this call"), "objection")
        await call.wait_reply(utt, 60)
        await call.wait_for(lambda: rec.state == "Objected", 60, "the objection")
        await call.wait_for(lambda: "recording is stopped and deleted" in _spoken(fakes), 60, "the confirmation")
        await runner.finish(EndReason.CALLER_HANGUP)
    assert s3_server.keys(bucket, rec.target.prefix) == []
    assert "This call is recorded" in _spoken(fakes) and "press 9" in _spoken(fakes)


async def test_the_objection_key_stops_and_deletes_the_recording(s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    rec = _recording(s3_server, bucket, os.urandom(32))
    spec = line_spec(recording=recording_block(s3_server, bucket, objectionKey="7"), languages=["de", "en"])
    async with provider_fakes() as fakes, running_call(fakes, spec, recording=rec) as call:
        runner = CallRunner(session=call.session, agent=call.agent, state=None,  # type: ignore[arg-type]
                            turn_stats=call.stats, recording=rec, objection_key="7").attach()
        await call.wait_for(lambda: call.sink.segments, 60, "the greeting")
        await call.wait_quiet(60)
        await poll(lambda: s3_server.keys(bucket, rec.target.prefix), "the recording's first objects", timeout=60)
        runner.on_dtmf("7")
        await call.wait_for(lambda: rec.state == "Objected", 60, "the objection")
        await runner.finish(EndReason.CALLER_HANGUP)
    assert s3_server.keys(bucket, rec.target.prefix) == []
    assert "aufgezeichnet" in _spoken(fakes) and "die 7" in _spoken(fakes)  # the notice in the greeting's language


def test_a_worker_killed_mid_call_leaves_a_playable_recording(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket()
    master = os.urandom(32)
    session = f"vs-{secrets.token_hex(10)}"
    caller_file = tmp_path / "caller.pcm"
    caller_file.write_bytes(speak("I would like to book a double room for two nights"))
    config = {"bucket": bucket, "region": s3_server.region, "endpoint": s3_server.endpoint,
              "access_key_id": s3_server.access_key_id, "secret_access_key": s3_server.secret_access_key,
              "ca_file": s3_server.ca_file, "namespace": NAMESPACE, "line": LINE, "session": session,
              "caller_hash": CALLER_HASH, "master_key": base64.b64encode(master).decode(),
              "caller_pcm": str(caller_file)}
    proc = subprocess.Popen([sys.executable, "-m", "tests.worker.record_and_die", json.dumps(config)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": _pythonpath()})
    fed = 0.0
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    while fed < 13.0 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        fed = float(line.split()[1])
    proc.send_signal(signal.SIGKILL)  # no goodbye, no finish(), nothing flushed
    proc.wait(10)
    assert fed >= 13.0

    prefix = store.recording_prefix(NAMESPACE, LINE, session)
    assert prefix + store.END not in s3_server.keys(bucket, prefix)
    spec = line_spec(recording=recording_block(s3_server, bucket))
    wav, _stderr = _get(s3_server, master, spec, session, tmp_path)
    caller, agent = _channels(wav)
    seconds = len(caller) / SAMPLE_RATE
    assert fed - 5.0 - 1.0 <= seconds <= fed + 0.5, (fed, seconds)  # all but the chunk in progress
    pcm = np.frombuffer(caller_file.read_bytes(), dtype="<i2")
    assert _best_match(caller[: 3 * SAMPLE_RATE], pcm[: 2 * SAMPLE_RATE]) > 0.9
    assert np.abs(agent[3 * SAMPLE_RATE : 4 * SAMPLE_RATE]).max() > 1000  # the first agent "reply"


def _spoken(fakes: Any) -> str:
    """Everything the agent sent to the ElevenLabs fake to say."""
    return " ".join(c.text for s in fakes.eleven.sockets for c in s.contexts.values())


def _pythonpath() -> str:
    parts = [str(ROOT), str(ROOT / "operator"), str(ROOT / "orchestrator"), str(ROOT / "worker")]
    return os.pathsep.join([*parts, os.environ.get("PYTHONPATH", "")])
