"""Intent recognition accuracy per language on the committed labelled set.

The set has two splits: ``tuning`` (the lexicon was written and corrected while looking at
it: the first 225 utterances, then a first held-out batch of 135 whose errors were analysed)
and ``held_out`` (90 utterances written after the last lexicon change and never used to adjust
it). Both must reach 90 % per language; the held-out number is the honest one, printed with
``-s`` and quoted in docs/orchestrator.md.

Rows with ``"phenomenon": "negation"`` (150) test negation scope and corrections ("do not
cancel", "not Friday, Saturday", "I don't need a room, I have a question"). Their tuning rows
are two batches written before the negation engine was tuned (first run: en .92, de .83,
fr .75, es .83, it .92; second batch: de and it .875, the rest 1.0); their 50 held-out rows
were written after the last change and scored 1.0 in every language on first run.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from voicehive.intents import SUPPORTED_LANGUAGES, Intent, classify, guess_language, with_asr_confidence

DATA = Path(__file__).parent / "data" / "intents.jsonl"
ROWS = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]


def _accuracy(split: str, use_hint: bool, phenomenon: str | None = None) -> dict[str, float]:
    total: Counter[str] = Counter()
    right: Counter[str] = Counter()
    for row in ROWS:
        if row["split"] != split or (phenomenon is not None and row.get("phenomenon") != phenomenon):
            continue
        result = classify(row["text"], row["language"] if use_hint else None)
        total[row["language"]] += 1
        right[row["language"]] += result.intent.value == row["intent"]
    return {lang: right[lang] / total[lang] for lang in total}


def test_dataset_is_large_varied_and_labelled() -> None:
    assert len(ROWS) >= 300
    assert len({row["text"] for row in ROWS}) == len(ROWS)  # no duplicates
    cells = Counter((row["language"], row["intent"], row["split"]) for row in ROWS)
    for lang in SUPPORTED_LANGUAGES:
        for intent in Intent:
            assert cells[(lang, intent.value, "tuning")] >= 3, (lang, intent)
            assert cells[(lang, intent.value, "held_out")] >= 2, (lang, intent)


@pytest.mark.parametrize("split", ["tuning", "held_out"])
def test_accuracy_per_language_with_asr_language_tag(split: str) -> None:
    accuracy = _accuracy(split, use_hint=True)
    print(f"\nintent accuracy ({split}, with language tag): " + ", ".join(f"{k}={v:.3f}" for k, v in accuracy.items()))
    assert set(accuracy) == set(SUPPORTED_LANGUAGES)
    assert all(value >= 0.9 for value in accuracy.values()), accuracy


def test_held_out_accuracy_without_language_tag() -> None:
    accuracy = _accuracy("held_out", use_hint=False)
    print(f"\nintent accuracy (held_out, no language tag): {accuracy}")
    assert all(value >= 0.85 for value in accuracy.values()), accuracy


def test_confidence_and_determinism() -> None:
    for row in ROWS[:50]:
        first, second = classify(row["text"], row["language"]), classify(row["text"], row["language"])
        assert first == second
        assert 0.0 < first.confidence <= 1.0
    strong = classify("Please cancel my reservation", "en")
    weak = classify("room for next week", "en")
    assert strong.confidence > weak.confidence
    assert classify("", "en").intent is Intent.UNKNOWN
    assert classify("qwertz uiop", None).intent is Intent.UNKNOWN


def test_asr_confidence_scales_the_intent_confidence() -> None:
    """The intent is only as sure as the words it was read from; nothing else of the result changes."""
    result = classify("Please cancel my reservation", "en")
    heard = [with_asr_confidence(result, asr) for asr in (1.0, 0.83, 0.4, 0.0)]
    assert heard[0] == result
    assert [h.confidence for h in heard] == sorted((h.confidence for h in heard), reverse=True)
    assert heard[1].confidence == pytest.approx(result.confidence * 0.83, abs=0.001)
    assert heard[-1].confidence == 0.0
    assert all(h.intent is result.intent and h.matched == result.matched for h in heard)
    # out-of-range confidences (a sender bug) are clamped, never amplify or go negative
    assert with_asr_confidence(result, 1.7) == result
    assert with_asr_confidence(result, -0.2).confidence == 0.0
    assert with_asr_confidence(result, float("nan")) == result


def test_spelling_variants_fold_to_one_form() -> None:
    assert classify("ICH MÖCHTE STORNIEREN", "de").intent is Intent.CANCEL_BOOKING
    assert classify("ich mochte stornieren", "de").intent is Intent.CANCEL_BOOKING
    assert classify("Je veux annuler", "fr-FR").intent is Intent.CANCEL_BOOKING


def test_language_guess() -> None:
    assert guess_language("Ich möchte ein Zimmer für die Woche") == "de"
    assert guess_language("Je voudrais une chambre pour la semaine") == "fr"
    assert guess_language("Quisiera una habitación para la semana por favor") == "es"
    assert guess_language("Vorrei una camera per la settimana per favore") == "it"
    assert guess_language("I would like a room for the week please") == "en"


@pytest.mark.parametrize("split", ["tuning", "held_out"])
def test_negation_and_correction_accuracy_per_language(split: str) -> None:
    accuracy = _accuracy(split, use_hint=True, phenomenon="negation")
    print(f"\nnegation/correction accuracy ({split}): " + ", ".join(f"{k}={v:.3f}" for k, v in accuracy.items()))
    assert set(accuracy) == set(SUPPORTED_LANGUAGES)
    assert all(value >= 0.9 for value in accuracy.values()), accuracy


def test_negated_intents_are_reported_not_acted_on() -> None:
    result = classify("Please do not cancel my booking", "en")
    assert result.intent is not Intent.CANCEL_BOOKING and "cancel_booking" in result.negated
    assert classify("Bitte stornieren Sie meine Buchung nicht", "de").intent is not Intent.CANCEL_BOOKING
    assert classify("I don't need a room, I have a question", "en").intent is Intent.REQUEST_INFO
    # lexicalised negations keep their meaning
    assert classify("the shower is not working", "en").intent is Intent.COMPLAINT
    assert classify("we won't be coming, please call it off", "en").intent is Intent.CANCEL_BOOKING
    assert classify("no, nothing else, goodbye", "en").intent is Intent.GOODBYE
