"""`voicehive call` on the providers: with Riva/Azure/ElevenLabs settings in the environment the
same simulated call runs through the real nvidia/openai/elevenlabs plugins (here: loopback fakes)."""

from __future__ import annotations

import asyncio

import pytest

from tests.worker.callrig import line_spec, provider_fakes
from voicehive import contract
from voicehive_worker.session import ENV_LLM_ENDPOINT, ENV_TTS_ENDPOINT
from voicehive_worker.simulate import build_models, caller_audio, simulate_call

pytestmark = pytest.mark.slow


def test_call_uses_provider_plugins_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    async def run() -> tuple[list[object], object]:
        async with provider_fakes(transcripts=["what time is check in"]) as fakes:
            endpoints = fakes.endpoints()
            monkeypatch.delenv("VOICEHIVE_CALL_ENGINES", raising=False)
            monkeypatch.setenv(contract.ENV_RIVA_SERVER, endpoints.riva_server)
            monkeypatch.setenv(contract.ENV_AZURE_OPENAI_API_KEY, endpoints.llm_api_key)
            monkeypatch.setenv(contract.ENV_ELEVEN_API_KEY, endpoints.tts_api_key)
            monkeypatch.setenv(ENV_LLM_ENDPOINT, endpoints.llm_endpoint)
            monkeypatch.setenv(ENV_TTS_ENDPOINT, endpoints.tts_base_url)
            spec = fakes.spec_for(line_spec())
            models = build_models(spec)
            pcm = await caller_audio("What time is check in?", spec)
            reports = await simulate_call(spec, [("What time is check in?", pcm)], models=models)
            return list(reports), models

    reports, models = asyncio.run(run())
    from livekit.agents.llm import FallbackAdapter
    from livekit.plugins import nvidia

    assert isinstance(models.stt, nvidia.STT)  # type: ignore[attr-defined]  # RivaSTT: plus language tags
    llm = models.llm  # type: ignore[attr-defined]
    assert isinstance(llm, FallbackAdapter)  # Azure first, the hotel policy when it fails
    assert type(llm._llm_instances[0]).__module__.startswith("livekit.plugins.openai")
    assert type(models.tts).__module__.startswith("livekit.plugins.elevenlabs")  # type: ignore[attr-defined]
    turn = reports[1]
    assert turn.recognised == "what time is check in"  # type: ignore[attr-defined]
    assert turn.intent == "request_info"  # type: ignore[attr-defined]
    assert turn.reply  # type: ignore[attr-defined]
    assert turn.latency_ms["voice_to_voice"] is not None  # type: ignore[attr-defined]


def test_call_rejects_an_unknown_engine_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    from voicehive_worker.simulate import CallError

    monkeypatch.setenv("VOICEHIVE_CALL_ENGINES", "cloud")
    with pytest.raises(CallError, match="VOICEHIVE_CALL_ENGINES"):
        build_models(line_spec())
