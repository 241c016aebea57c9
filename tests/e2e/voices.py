"""Local speech for the installed product's provider fakes (test infrastructure).

WHY: the e2e caller must *hear* the greeting and the answers, and the agent must *hear* the
caller, through the installed Pods. The cloud providers are fakes on the rig, so the ElevenLabs
fake speaks with eSpeak NG (instead of its deterministic tone) and the Riva fake recognises
with pocketsphinx on the example line's vocabulary (instead of a script), the same local
engines the repo's `voicehive call` demo uses. Both are loaded lazily, so a fake without them
falls back to its defaults.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import yaml

from tests.worker.speech import RATE, espeak_available, speak

EXAMPLE_LINE = "examples/hotelline.yaml"


def resample(pcm: bytes, src: int, dst: int) -> bytes:
    """Linear resampling of mono s16le (good enough for speech between 8/16/24/48 kHz)."""
    if src == dst or not pcm:
        return pcm
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    n = int(len(x) * dst / src)
    y = np.interp(np.arange(n) * src / dst, np.arange(len(x)), x)
    return np.clip(y, -32768, 32767).astype("<i2").tobytes()


def agent_voice(text: str, sample_rate: int) -> bytes:
    """What the ElevenLabs fake says for ``text``: eSpeak NG speech at the requested rate."""
    return resample(speak(text, voice="en-us", words_per_minute=150, max_gap=0.3), RATE, sample_rate)


def tts_speech() -> Callable[[str, int], bytes] | None:
    return agent_voice if espeak_available() else None


@cache
def _recogniser(repo: str) -> Any:
    from pathlib import Path

    from voicehive.api.models import HotelLineSpec
    from voicehive_worker.engines.pocketsphinx_stt import PocketsphinxSTT

    for doc in yaml.safe_load_all((Path(repo) / EXAMPLE_LINE).read_text()):
        if doc and doc.get("kind") == "HotelLine":
            return PocketsphinxSTT.for_line(HotelLineSpec.model_validate(doc["spec"]))
    raise RuntimeError(f"no HotelLine in {EXAMPLE_LINE}")


_LOAD_LOCK = threading.Lock()


def recogniser(repo: str) -> Any:
    """pocketsphinx on the example line's vocabulary (the one the caller's side uses too).

    Loaded under a lock: calls dialled at once ask for it from their threads, and each would
    otherwise build the language model (seconds of CPU) at the same time."""
    with _LOAD_LOCK:
        return _recogniser(repo)


_SPOT_LOCK = threading.Lock()
SPOT_THRESHOLD = 1e-25  # tuned on eSpeak NG en-us at 150 wpm: every phrase below found, none invented


@cache
def _spotter(phrases: tuple[str, ...]) -> Any:
    import tempfile

    import pocketsphinx

    decoder_class: Any = pocketsphinx.__dict__["Decoder"]  # not re-exported in its stubs
    with tempfile.NamedTemporaryFile("w", suffix=".kws", delete=False) as f:
        f.write("".join(f"{p} /{SPOT_THRESHOLD}/\n" for p in phrases))
    return decoder_class(samprate=RATE, kws=f.name, logfn="/dev/null")


def spot(pcm: bytes, phrases: tuple[str, ...]) -> set[str]:
    """Which of ``phrases`` pocketsphinx's keyword spotting hears in 16 kHz speech.

    WHY spotting: the line's language model is made for callers' requests, so a full decode of
    the agent's sentences is poor; spotting a few phrases is what a listener checks anyway."""
    with _SPOT_LOCK:  # one decoder, used by concurrent calls' threads
        decoder = _spotter(phrases)
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        return {seg.word.strip() for seg in (decoder.seg() or [])}


class LocalTranscriber:
    """The Riva fake's Transcriber on pocketsphinx: finals, and an interim about once a second.

    WHY interims: pocketsphinx on these 2 CPUs takes about a second per utterance, where Riva's
    final comes in tens of milliseconds; the worker's watchdog (0.6 s without a transcript after
    speech) would apologise on every turn. Interims during speech, as Riva streams them, keep the
    pipeline's timing honest; voice-to-voice still includes the slower final.
    """

    def __init__(self, fn: Callable[[bytes, int], str]) -> None:
        self.fn = fn

    def partial(self, audio: bytes, sample_rate: int, language: str) -> str:
        seconds = len(audio) / 2 / sample_rate
        return self.fn(audio, sample_rate) if seconds >= 0.5 and seconds % 1.0 < 0.1 else ""

    def final(self, audio: bytes, sample_rate: int, language: str) -> str:
        return self.fn(audio, sample_rate)


def riva_transcriber(repo: str) -> LocalTranscriber | None:
    """The Riva fake's transcriber, or None when pocketsphinx is missing."""
    try:
        asr = recogniser(repo)
    except Exception:
        return None

    def transcribe(pcm: bytes, sample_rate: int) -> str:
        text, _ = asr.transcribe_pcm(resample(pcm, sample_rate, RATE))
        return str(text)

    return LocalTranscriber(transcribe)


def phone_rules() -> list[tuple[str, Any]]:
    """What the LLM fake answers on the e2e line (regex on the caller's words, as recognised).

    A scripted model: the e2e proves the Pods carry a call (speech in, tool call, speech out),
    not the model's wording. The front-desk request is a real tool call the worker executes.
    """
    from tests.fakes.azure_openai import ToolCall

    return [
        (r"\b(front|desk|reception|person|human)\b", ToolCall("transfer_to_front_desk", {"reason": "caller asked"})),
        (r"\b(room|rooms|available|availability|double|night|nights|have|book)\b",
         "Yes, we have a double room available on those dates, for one hundred and twenty euros a night."),
    ]
