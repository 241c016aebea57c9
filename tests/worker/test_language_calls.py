"""Calls that change language, through the worker on the provider fakes.

The Riva fake tags some finals with the language a multilingual model would report, the
Azure fake answers in whatever language its system prompt names (so the prompt switch is
seen on the wire), and the ElevenLabs fake records which voice each reply was synthesised
with. The call is recorded through the CallManager into redis-server and the VoiceSession
status in the kube API (KMock, or the rig's apiserver), like the pod does.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.fakes.azure_openai import JSON, message_text
from tests.fakes.riva import RivaModel
from tests.fixtures.kube import KubeAPI
from tests.worker.callrig import Call, ProviderFakes, line_spec, provider_fakes, running_call
from tests.worker.speech import espeak_available, speak
from voicehive import contract
from voicehive.api.models import API_VERSION, GROUP, VERSION, HotelLineSpec
from voicehive.callmanager import CallEvent, CallManager, EventKind
from voicehive.callstore import CallStore
from voicehive.intents import classify
from voicehive.privacy import Privacy
from voicehive_worker.entrypoint import CallRunner
from voicehive_worker.state import CallState, VoiceSessionStatus

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not espeak_available(), reason="espeak-ng is needed for caller speech"),
]

FIVE = ["en", "de", "fr", "es", "it"]
DEFAULT_VOICE = "VoiceDefault001"
VOICES = {"de": "VoiceGerman0001", "fr": "VoiceFrench0001", "it": "VoiceItalian001"}
CANNED = {
    "English": "Certainly, I can help with that.",
    "German": "Gern, dabei helfe ich Ihnen.",
    "French": "Bien sûr, je vous aide volontiers.",
    "Spanish": "Claro, le ayudo con gusto.",
    "Italian": "Certo, la aiuto volentieri.",
}
ESPEAK = {"en": "en-us", "de": "de", "fr": "fr-fr", "es": "es", "it": "it"}


def answer_in_prompt_language(messages: list[JSON], tools: list[JSON]) -> str:
    """The Azure fake's model: a canned sentence in the language its system prompt asks for."""
    system = " ".join(message_text(m) for m in messages if m.get("role") in ("system", "developer"))
    match = re.search(r"The caller speaks (\w+)", system)
    return CANNED[match.group(1) if match else "English"]


GERMAN_MODEL = "parakeet-ctc-1.1b-de-DE-asr-streaming"


def five_language_line() -> HotelLineSpec:
    spec = line_spec(languages=FIVE)
    return spec.model_copy(update={
        "tts": spec.tts.model_copy(update={"voices": VOICES}),
        "asr": spec.asr.model_copy(update={"models": {"de": GERMAN_MODEL}}),
    })


def spoken_with(fakes: ProviderFakes, text: str) -> set[str]:
    """The ElevenLabs voices a reply text was synthesised with."""
    return {s.voice_id for s in fakes.eleven.sockets for c in s.contexts.values() if text in c.text}


async def _turn(call: Call, text: str, language: str) -> None:
    await call.wait_quiet()
    await asyncio.sleep(0.3)
    utt = call.say(speak(text, voice=ESPEAK[language]), text)
    await call.wait_reply(utt, timeout=10)
    await call.wait_quiet()


class _Recorded:
    """The pod's call state on redis-server and the VoiceSession in the kube API."""

    def __init__(self, manager: CallManager, state: CallState, custom: Any, namespace: str, name: str) -> None:
        self.manager, self.state, self.custom, self.namespace, self.name = manager, state, custom, namespace, name

    def status(self) -> dict[str, Any]:
        obj: Any = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "voicesessions", self.name)
        return dict(obj.get("status") or {})


@pytest.fixture
async def recorded(redis_url: str, kube: KubeAPI, namespace: str) -> AsyncIterator[_Recorded]:
    import kubernetes

    privacy = Privacy.from_keys(os.urandom(32), os.urandom(32))
    room, identity = "vh-test-lang-room", "sip-caller"
    api_client = kube.api_client()
    custom = kubernetes.client.CustomObjectsApi(api_client)
    name = contract.session_name(privacy.hasher.room(room))
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "voicesessions", {
        "apiVersion": API_VERSION, "kind": "VoiceSession", "metadata": {"name": name},
        "spec": {"lineRef": {"name": "lindenhof-main"}, "roomHash": privacy.hasher.room(room),
                 "callerHash": privacy.hasher.phone("+4915112345678"),
                 "sealedCallRef": privacy.seal_call_ref(room, identity)},
    })
    store = CallStore.from_url(redis_url)
    manager = CallManager(store=store, privacy=privacy)
    await manager.handle(CallEvent(room, EventKind.SIP_JOINED, "livekit", line="lindenhof-main", namespace=namespace,
                                   caller_number="+4915112345678", participant_identity=identity))
    state = CallState(manager=manager, call_sid=room, line="lindenhof-main", namespace=namespace,
                      worker_pod="worker-0", status=VoiceSessionStatus(api_client, namespace, name))
    yield _Recorded(manager, state, custom, namespace, name)
    await store.close()


GERMAN_1 = "Guten Tag, ich möchte ein Zimmer für zwei Nächte buchen"
GERMAN_2 = "Wann ist der Check-in bei Ihnen?"


async def test_greeted_in_english_answered_in_german_continues_in_german(recorded: _Recorded) -> None:
    async with (
        provider_fakes([GERMAN_1, GERMAN_2], answer_in_prompt_language, language_tags={GERMAN_1: "de-DE"},
                       voices={DEFAULT_VOICE: "Default", **{v: k for k, v in VOICES.items()}},
                       asr_confidence=0.83,
                       riva_models=(RivaModel(), RivaModel(name=GERMAN_MODEL, language_code="de-DE"))) as fakes,
        running_call(fakes, five_language_line()) as call,
    ):
        runner = CallRunner(session=call.session, agent=call.agent, state=recorded.state,  # type: ignore[arg-type]
                            turn_stats=call.stats).attach()
        await recorded.state.answered()
        await call.wait_for(lambda: call.sink.segments, 15, "the greeting")
        await call.wait_quiet()
        assert spoken_with(fakes, "automated AI assistant") == {DEFAULT_VOICE}
        await _turn(call, GERMAN_1, "de")
        assert call.agent.language == "de"  # type: ignore[attr-defined]
        await _turn(call, GERMAN_2, "de")
        assert spoken_with(fakes, CANNED["German"]) == {VOICES["de"]}
        # after the first German turn the ASR listens with the line's German model
        german = [r for r in fakes.riva.streams if r.config is not None and r.config.config.language_code == "de-DE"]
        assert german and german[0].config.config.model == GERMAN_MODEL
        assert [u.text for u in german[0].finals] == [GERMAN_2]
        assert not spoken_with(fakes, CANNED["English"])
        prompts = [message_text(m) for r in fakes.azure.requests for m in r.messages if m.get("role") in ("system", "developer")]
        assert any("The caller speaks German" in p for p in prompts)
        await call.wait_for(lambda: recorded.status().get("language") == "de", 10, "the status to show German")
        await call.wait_for(lambda: recorded.state.turns == 2, 10, "both turns recorded")
        del runner
    record = await recorded.manager.get(recorded.state.call_sid)
    assert record is not None
    segments = await recorded.manager.store.transcript(record.ref)
    assert [s["language"] for s in segments] == ["de", "de"]
    assert [s["confidence"] for s in segments] == ["0.8300", "0.8300"]  # the ASR's, not 1.0
    # the recorded intent is only as sure as the words it was read from (voicehive.intents.with_asr_confidence)
    for said, segment in zip((GERMAN_1, GERMAN_2), segments, strict=True):
        classifier = classify(said, "de")
        assert segment["intent"] == classifier.intent.value
        assert float(segment["intent_confidence"]) == pytest.approx(classifier.confidence * 0.83, abs=0.001)


FRENCH = "Bonjour, je voudrais réserver une chambre pour deux nuits"
ITALIAN = "Vorrei prenotare una camera doppia per due notti dal tre aprile"


async def test_french_to_italian_mid_call_switches_within_one_turn() -> None:
    async with (
        provider_fakes([FRENCH, ITALIAN], answer_in_prompt_language,
                       voices={DEFAULT_VOICE: "Default", **{v: k for k, v in VOICES.items()}}) as fakes,
        running_call(fakes, five_language_line(), greet=False) as call,
    ):
        await asyncio.sleep(0.3)
        await _turn(call, FRENCH, "fr")
        assert call.agent.language == "fr"  # type: ignore[attr-defined]
        assert spoken_with(fakes, CANNED["French"]) == {VOICES["fr"]}
        await _turn(call, ITALIAN, "it")
        assert call.agent.language == "it"  # type: ignore[attr-defined]
        # the reply to the first Italian sentence is already Italian, in the Italian voice
        assert spoken_with(fakes, CANNED["Italian"]) == {VOICES["it"]}
        assert call.agent.languages.switches == ["fr", "it"]  # type: ignore[attr-defined]


async def test_a_single_foreign_word_does_not_switch() -> None:
    said = ["I would like a Doppelzimmer for two nights please", "Danke"]
    async with (
        provider_fakes(said, answer_in_prompt_language,
                       voices={DEFAULT_VOICE: "Default", **{v: k for k, v in VOICES.items()}}) as fakes,
        running_call(fakes, five_language_line(), greet=False) as call,
    ):
        await asyncio.sleep(0.3)
        await _turn(call, said[0], "en")
        await _turn(call, said[1], "de")
        assert call.agent.language == "en" and call.agent.languages.switches == []  # type: ignore[attr-defined]
        assert {s.voice_id for s in fakes.eleven.sockets} == {DEFAULT_VOICE}
        assert not spoken_with(fakes, CANNED["German"])
