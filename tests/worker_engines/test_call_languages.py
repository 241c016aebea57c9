"""`voicehive call` on the local engines in each line language: what is and is not covered.

eSpeak NG speaks all five languages: a call on a line whose first language is de, fr, es or
it is greeted (with the AI disclosure) in that language, synthesised by eSpeak NG in that
language's voice, through the same session as the pod. The local ASR (pocketsphinx, English
acoustic model) understands English only, so a caller *speaking* another language is covered
on the provider path (tests/worker/test_language_calls.py) and in text mode (test_policy.py),
not here; an English caller on a German-first line switches the call to English.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from voicehive.api.models import HotelLineSpec
from voicehive_worker.phrases import AI_DISCLOSURE
from voicehive_worker.simulate import caller_audio, simulate_call

pytestmark = pytest.mark.slow

FIVE = ["en", "de", "fr", "es", "it"]


@pytest.mark.parametrize("first", FIVE)
def test_each_language_is_greeted_and_spoken_by_espeak(spec: HotelLineSpec, first: str) -> None:
    line = spec.model_copy(update={"languages": [first, *[code for code in FIVE if code != first]]})
    reports = asyncio.run(simulate_call(line, []))
    greeting = reports[0]
    assert greeting.language == first
    assert AI_DISCLOSURE[first] in greeting.reply and line.display_name in greeting.reply


def test_an_english_caller_on_a_german_first_line_is_answered_in_english(spec: HotelLineSpec) -> None:
    line = spec.model_copy(update={"languages": ["de", "en"]})

    async def run() -> list[object]:
        pcm: np.ndarray = await caller_audio("What time is check in?", line)
        return list(await simulate_call(line, [("What time is check in?", pcm)]))

    reports = asyncio.run(run())
    assert reports[0].language == "de" and "KI-Assistent" in reports[0].reply  # type: ignore[attr-defined]
    turn = reports[1]
    assert turn.language == "en", turn  # type: ignore[attr-defined]
    assert "Check-in" in turn.reply and "Uhr" not in turn.reply, turn  # type: ignore[attr-defined]
