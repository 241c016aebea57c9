"""Pure logic of issue 17: language detection and hysteresis, fixed phrases in every language,
the model-text guard, the policy's message flow and caller-facing tool results."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from livekit.plugins import elevenlabs

from tests.worker.callrig import line_spec
from voicehive_worker.agent import switch_tts_language
from voicehive_worker.engines import EspeakTTS, HotelPolicy
from voicehive_worker.engines.policy import Turn
from voicehive_worker.language import LanguageTracker, detect, line_languages, replay
from voicehive_worker.phrases import AI_DISCLOSURE, FIXED_PHRASES, GREETING, SUPPORTED, is_model_instruction

FIVE = ["en", "de", "fr", "es", "it"]
SENTENCES = {
    "en": ["Do you have a double room for two nights", "What time is check in", "Can I bring my dog"],
    "de": ["Ich möchte ein Zimmer für zwei Nächte buchen", "Wann ist der Check-in?", "Haben Sie einen Parkplatz"],
    "fr": ["Je voudrais réserver une chambre pour deux nuits", "À quelle heure est l'arrivée ?", "Avez-vous un parking"],
    "es": ["Quisiera reservar una habitación doble para tres noches", "¿A qué hora es la entrada?", "¿Tienen aparcamiento para el coche?"],
    "it": ["Vorrei prenotare una camera doppia per due notti", "A che ora è il check-in?", "Avete un parcheggio per la macchina?"],
}


@pytest.mark.parametrize("language", FIVE)
def test_each_line_language_is_detected_on_phone_length_sentences(language: str) -> None:
    for sentence in SENTENCES[language]:
        assert detect(sentence) == (language, True), sentence


@pytest.mark.parametrize("word", ["Danke", "Merci", "Grazie", "Gracias", "Doppelzimmer", "Hallo", "okay"])
def test_a_single_word_is_never_clear(word: str) -> None:
    assert detect(word)[1] is False


def test_hysteresis_one_clear_sentence_switches_one_foreign_word_does_not() -> None:
    tracker = LanguageTracker.for_line(FIVE)
    assert tracker.current == "en"
    assert not tracker.observe("I would like a Doppelzimmer for two nights please")
    assert not tracker.observe("Danke")
    assert tracker.current == "en"
    assert tracker.observe("Je voudrais réserver une chambre pour deux nuits")
    assert tracker.current == "fr"
    assert not tracker.observe("Merci, c'est parfait, grazie")  # a foreign word inside French
    assert tracker.observe("Vorrei prenotare una camera doppia per due notti")  # within one turn
    assert tracker.current == "it" and tracker.switches == ["fr", "it"]


def test_two_weak_utterances_in_a_row_switch() -> None:
    tracker = LanguageTracker.for_line(FIVE)
    assert not tracker.observe("Danke")
    assert tracker.observe("Danke schön")
    assert tracker.current == "de"


def test_only_the_lines_languages_are_candidates() -> None:
    tracker = LanguageTracker.for_line(["en-US", "de-DE"])
    assert tracker.candidates == ("en", "de")
    assert not tracker.observe("Vorrei prenotare una camera doppia per due notti")
    assert tracker.current == "en"
    assert line_languages(["fi", "de-DE", "de"]) == ("de",)
    assert LanguageTracker.for_line(FIVE, "it-IT").current == "it"


def test_an_asr_language_tag_is_evidence_but_not_enough_alone() -> None:
    tracker = LanguageTracker.for_line(FIVE)
    assert not tracker.observe("okay", asr_language="de-DE")  # a tag on a word with no cue
    assert tracker.observe("Danke bitte", asr_language="de-DE")  # tag + two function words
    assert tracker.current == "de"


def test_replay_is_what_the_stateless_policy_uses() -> None:
    assert replay(FIVE, ["Hello", "Je voudrais une chambre pour deux nuits", "Merci"]) == "fr"
    assert replay(FIVE, []) == "en"


def test_every_fixed_phrase_exists_in_every_supported_language() -> None:
    assert SUPPORTED == ("en", "de", "fr", "es", "it")
    for name, table in FIXED_PHRASES.items():
        missing = [lang for lang in SUPPORTED if not table.get(lang, "").strip()]
        assert not missing, f"{name} has no {missing}"
    for lang in SUPPORTED:
        greeting = GREETING[lang].format(hotel="Hotel Lindenhof")
        assert "Hotel Lindenhof" in greeting and AI_DISCLOSURE[lang] in greeting


def test_fixed_phrases_are_caller_facing_and_the_old_leaks_are_caught() -> None:
    for table in FIXED_PHRASES.values():
        for text in table.values():
            assert not is_model_instruction(text), text
    for leaked in (
        "The hotel facts do not answer this; offer the front desk or a message.",
        "The front desk is closed now: offer to take a message instead (take_message).",
        "The transfer failed: apologise and offer to take a message (take_message).",
        "Message recorded with reference R0001; staff will get back to the caller.",
    ):
        assert is_model_instruction(leaked), leaked


def _policy(languages: list[str] = FIVE) -> HotelPolicy:
    return HotelPolicy(line_spec(languages=languages), today=dt.date(2026, 11, 25))


def test_policy_takes_a_message_in_one_go_or_after_asking() -> None:
    tools = frozenset({"take_message"})
    said = "I would like to leave a message for the manager, please call me back about my invoice. My name is Anna Schmidt"
    decision = _policy().decide([Turn("user", said)], tools)
    assert decision.tool is not None and decision.tool.name == "take_message"
    assert decision.tool.arguments["message"] == said
    ask = _policy().decide([Turn("user", "Ich möchte eine Nachricht hinterlassen")], tools)
    assert ask.tool is None and "Nachricht" in ask.text and ask.language == "de"
    conversation = [Turn("user", "Ich möchte eine Nachricht hinterlassen"), Turn("assistant", ask.text),
                    Turn("user", "Bitte rufen Sie mich wegen der Rechnung zurück")]
    taken = _policy().decide(conversation, tools)
    assert taken.tool is not None and taken.tool.name == "take_message"


def test_policy_offers_a_message_and_takes_it_after_a_yes() -> None:
    from voicehive_worker.phrases import DESK_CLOSED

    conversation = [Turn("user", "Can I speak to a person"), Turn("assistant", DESK_CLOSED["en"]), Turn("user", "Yes please")]
    decision = _policy().decide(conversation, frozenset({"take_message"}))
    assert decision.tool is None and "your name and your message" in decision.text


def test_policy_never_speaks_a_tool_output_written_for_a_model() -> None:
    conversation = [
        Turn("user", "Is there a casino?"),
        Turn("tool_call", "", tool="answer_question", arguments={"question": "casino"}),
        Turn("tool_output", "The hotel facts do not answer this; offer the front desk or a message.", tool="answer_question"),
    ]
    decision = _policy().decide(conversation, frozenset({"answer_question"}))
    assert not is_model_instruction(decision.text) and "front desk" in decision.text


def test_tts_follows_the_language_with_the_lines_voice_for_it() -> None:
    spec = line_spec(languages=FIVE)
    spec = spec.model_copy(update={"tts": spec.tts.model_copy(update={"voices": {"de": "GermanVoice01"}})})
    eleven = elevenlabs.TTS(voice_id=spec.tts.voice_id, api_key="test-key", model=spec.tts.model_id)
    switch_tts_language(eleven, spec, "de")
    assert eleven._opts.voice_id == "GermanVoice01" and eleven._opts.language == "de"
    switch_tts_language(eleven, spec, "fr")  # no French voice listed: the line's default voice
    assert eleven._opts.voice_id == spec.tts.voice_id and eleven._opts.language == "fr"
    espeak = EspeakTTS(language="en")
    switch_tts_language(espeak, spec, "it")
    assert espeak.options.language == "it"


def test_the_watchdog_apologises_in_the_calls_current_language() -> None:
    from voicehive_worker.watchdog import FallbackVoice, Watchdog

    rendered: list[tuple[str, str]] = []

    async def render(text: str, language: str) -> bytes:
        rendered.append((language, text))
        return text.encode()

    voices = asyncio.run(FallbackVoice.render_all(["en-GB", "de-DE", "it"], render))
    assert sorted(voices) == ["de", "en", "it"] and {lang for lang, _ in rendered} == {"en", "de", "it"}
    current = ["en"]
    dog = Watchdog(session=None, voice=voices["en"], voices=voices, language=lambda: current[0])
    assert b"technical problem" in dog.current_voice().fallback
    current[0] = "it-IT"
    assert b"problema tecnico" in dog.current_voice().fallback
    current[0] = "fr"  # not a line language: the line's first
    assert dog.current_voice() is voices["en"]


def test_a_line_whose_first_language_we_do_not_speak_is_greeted_and_closed_in_its_first_one_we_do() -> None:
    """Found by tests/worker_engines/test_every_line_takes_a_call (2026-12-03): languages
    ["aa", "de"]. The agent greeted in German (the line's first language we speak) while
    ``greeting(spec)`` said English; every default must be that one language."""
    from voicehive_worker.agent import HotelAgent, LocalCallActions, goodbye, greeting
    from voicehive_worker.language import first_language

    spec = line_spec(languages=["aa", "de-AT", "en-US"])
    assert first_language(spec) == "de"
    assert HotelAgent(spec, LocalCallActions()).language == "de"
    assert greeting(spec) == greeting(spec, "de") and "KI-Assistent" in greeting(spec)
    assert goodbye(spec) == goodbye(spec, "de")
    only = line_spec(languages=["aa"], asr={**line_spec().asr.model_dump(by_alias=True, exclude_none=True), "language": "aa"})
    assert first_language(only) == "en" == HotelAgent(only, LocalCallActions()).language  # none we speak
