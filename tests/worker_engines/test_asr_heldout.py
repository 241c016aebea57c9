"""Held-out recognition: synthetic caller phrases the language model never saw -> WER, intent accuracy.

The numbers are written to bench/results/local_engines.json (the bench reads the same file).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time

from voicehive.api.models import HotelLineSpec
from voicehive.intents import classify
from voicehive_worker.engines import PocketsphinxSTT
from voicehive_worker.engines.lm import build_corpus
from voicehive_worker.engines.text import spoken_words, word_errors
from voicehive_worker.simulate import CALLER_VOICES, CALLER_WPM, caller_audio

from .conftest import HELDOUT, ROOT, heldout_phrases

RESULTS = ROOT / "bench" / "results" / "local_engines.json"
# The aim is <= 0.10; measured on this held-out set: ~0.20 (dev set ~0.14; see docs/local-engines.md).
# These limits only catch regressions; the measured values go to bench/results/local_engines.json.
WER_LIMIT = 0.25
INTENT_ACCURACY_MIN = 0.75


def test_heldout_phrases_are_not_in_the_lm_corpus(spec: HotelLineSpec) -> None:
    corpus = set(build_corpus(spec.facts, spec.display_name))
    rows = heldout_phrases(HELDOUT)
    assert len(rows) >= 30
    leaked = [text for _, text in rows if " ".join(spoken_words(text)) in corpus]
    assert leaked == []


def test_heldout_word_error_rate_and_intent_accuracy(spec: HotelLineSpec) -> None:
    engine = PocketsphinxSTT.for_line(spec)
    engine.prewarm()
    rows = heldout_phrases()
    errors = words = intents_ok = intents_ok_ref = 0
    decode_ms: list[float] = []
    audio_s = 0.0
    misses: list[dict[str, str]] = []
    for intent, text in rows:
        pcm = asyncio.run(caller_audio(text, spec))
        audio_s += len(pcm) / 16000
        started = time.perf_counter()
        hypothesis, words_timed = engine.transcribe_pcm(pcm.tobytes())
        decode_ms.append((time.perf_counter() - started) * 1000)
        reference = spoken_words(text)
        hyp_words = hypothesis.split()
        errors += word_errors(reference, hyp_words)
        words += len(reference)
        intents_ok += classify(hypothesis, "en").intent.value == intent
        intents_ok_ref += classify(text, "en").intent.value == intent
        if hyp_words != reference:
            misses.append({"said": " ".join(reference), "heard": hypothesis})
        assert all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(words_timed))
    wer = errors / words
    accuracy = intents_ok / len(rows)
    decode_ms.sort()
    result = {
        "set": str(HELDOUT.relative_to(ROOT)),
        "phrases": len(rows),
        "words": words,
        "word_error_rate": round(wer, 4),
        "intent_accuracy_on_asr_text": round(accuracy, 4),
        "intent_accuracy_on_reference_text": round(intents_ok_ref / len(rows), 4),
        "decode_ms_p50": round(decode_ms[len(decode_ms) // 2], 1),
        "decode_ms_max": round(decode_ms[-1], 1),
        "audio_seconds": round(audio_s, 1),
        "real_time_factor": round(sum(decode_ms) / 1000 / audio_s, 3),
        "caller_voice": f"espeak-ng {CALLER_VOICES['en']} @{CALLER_WPM} wpm",
        "misrecognised": misses,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "misrecognised"}))
    assert wer <= WER_LIMIT, result
    assert accuracy >= INTENT_ACCURACY_MIN, result


def test_streaming_recognition_reports_word_times(spec: HotelLineSpec) -> None:
    """The streaming path: interim results, one final with word times inside the speech, end of speech."""
    import numpy as np
    from livekit import rtc
    from livekit.agents import stt

    async def run() -> list[stt.SpeechEvent]:
        engine = PocketsphinxSTT.for_line(spec)
        pcm = await caller_audio("What time is check out", spec)
        silence = np.zeros(16000, dtype=np.int16)
        audio = np.concatenate([silence, pcm, silence])
        stream = engine.stream()
        for i in range(0, len(audio), 320):  # 20 ms frames; the stream paces nothing itself
            stream.push_frame(rtc.AudioFrame(audio[i : i + 320].tobytes(), 16000, 1, len(audio[i : i + 320])))
        stream.end_input()
        return [ev async for ev in stream]

    events = asyncio.run(run())
    kinds = [ev.type for ev in events]
    assert kinds[0] == stt.SpeechEventType.START_OF_SPEECH
    assert stt.SpeechEventType.INTERIM_TRANSCRIPT in kinds
    finals = [ev for ev in events if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT]
    assert len(finals) == 1
    data = finals[0].alternatives[0]
    assert data.text == "what time is check out"
    assert data.words and [str(w) for w in data.words] == data.text.split()
    # speech starts after the leading second of silence and ends before the trailing one
    assert 0.8 <= data.start_time < data.end_time <= 1.0 + 3.0
    assert kinds.index(stt.SpeechEventType.END_OF_SPEECH) > kinds.index(stt.SpeechEventType.FINAL_TRANSCRIPT)
