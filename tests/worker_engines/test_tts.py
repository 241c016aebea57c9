"""eSpeak NG TTS: every line language speaks, audibly, for about as long as the text needs."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from voicehive_worker.engines import EspeakTTS

SENTENCES = {
    "en": "Check-in is from 15:00 and the double room is 129 EUR per night.",
    "de": "Der Check-in ist ab 15:00, das Doppelzimmer kostet 129 EUR pro Nacht.",
    "fr": "L'arrivée se fait à partir de 15:00, la chambre double coûte 129 EUR la nuit.",
    "es": "La entrada es a partir de las 15:00 y la habitación doble cuesta 129 EUR por noche.",
    "it": "Il check-in è dalle 15:00 e la camera doppia costa 129 EUR a notte.",
}


async def _synthesize(engine: EspeakTTS, text: str) -> tuple[np.ndarray, int, int]:
    frames = [ev.frame async for ev in engine.synthesize(text)]
    pcm = np.concatenate([np.frombuffer(bytes(f.data), dtype=np.int16) for f in frames])
    return pcm, frames[0].sample_rate, frames[0].num_channels


@pytest.mark.parametrize("language", sorted(SENTENCES))
def test_speech_is_audible_and_plausibly_long(language: str) -> None:
    text = SENTENCES[language]
    pcm, rate, channels = asyncio.run(_synthesize(EspeakTTS(language=language), text))
    assert (rate, channels) == (16000, 1)
    seconds = len(pcm) / rate
    words = len(text.split())
    assert 0.2 * words <= seconds <= 0.9 * words, seconds
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) / 32768)
    assert rms_dbfs > -35, rms_dbfs
    # not one long tone: speech has pauses and loud parts (10 ms frame energy varies)
    frames = pcm[: len(pcm) // 160 * 160].reshape(-1, 160).astype(np.float64)
    energy = np.sqrt(np.mean(frames**2, axis=1))
    assert energy.max() > 20 * max(energy.min(), 1.0)


def test_clock_times_are_spoken_as_times_not_digits() -> None:
    """'15:00' must not be read as 'fifteen zero zero': the spoken form is shorter."""
    engine = EspeakTTS(language="en")
    as_time, _, _ = asyncio.run(_synthesize(engine, "from 15:00"))
    as_words, _, _ = asyncio.run(_synthesize(engine, "from fifteen zero zero"))
    assert len(as_time) < 0.85 * len(as_words)


def test_empty_text_gives_no_audio_and_no_error() -> None:
    async def run() -> int:
        return len([ev async for ev in EspeakTTS().synthesize("   ")])

    assert asyncio.run(run()) == 0
