"""Embedded local engines: offline ASR (pocketsphinx), TTS (eSpeak NG) and a dialogue policy.

They implement the livekit-agents STT/TTS/LLM interfaces, so the same AgentSession and
HotelAgent run on them: they are ``make demo``'s engines and the worker's fallback.

    from voicehive_worker.engines import local_models
    models = local_models(spec)            # stt, llm, tts for one HotelLine (see session.Models)
"""

from __future__ import annotations

from dataclasses import dataclass

from voicehive.api.models import HotelLineSpec
from voicehive_worker.language import first_language

from .espeak_tts import AGENT_VOICES, EspeakTTS, synthesize_pcm
from .pocketsphinx_stt import PocketsphinxSTT
from .policy import HotelPolicy
from .policy_llm import HotelPolicyLLM

__all__ = [
    "AGENT_VOICES",
    "EspeakTTS",
    "HotelPolicy",
    "HotelPolicyLLM",
    "LocalModels",
    "PocketsphinxSTT",
    "greeting",
    "local_models",
    "synthesize_pcm",
]


@dataclass
class LocalModels:
    """Same shape as ``voicehive_worker.session.Models``: pass ``stt``/``llm``/``tts`` to it."""

    stt: PocketsphinxSTT
    llm: HotelPolicyLLM
    tts: EspeakTTS


def local_models(spec: HotelLineSpec, *, language: str | None = None) -> LocalModels:
    """The three local engines for one line (the ASR biased to the line's facts)."""
    return LocalModels(
        stt=PocketsphinxSTT.for_line(spec),
        llm=HotelPolicyLLM(spec),
        tts=EspeakTTS(language=language or first_language(spec)),
    )


def greeting(spec: HotelLineSpec, language: str | None = None) -> str:
    """The greeting with AI disclosure, in the line's (or the given) language."""
    from voicehive_worker.agent import greeting as agent_greeting

    return agent_greeting(spec, language)
