"""The session factory: a HotelLineSpec in, a configured livekit-agents AgentSession out.

Stable API (used by ``voicehive worker``, ``voicehive call``, the tests and the benchmark):

    endpoints = ProviderEndpoints.from_env(spec)          # where Riva/Azure/ElevenLabs are
    models    = provider_models(spec, endpoints)          # nvidia.STT, openai.LLM.with_azure, elevenlabs.TTS
    vad       = load_vad()                                # Silero, load once per process (prewarm)
    session   = create_session(spec, models, vad=vad)     # AgentSession with our turn taking
    agent     = create_agent(spec, actions, language=...) # HotelAgent (tools, greeting, DTMF)
    await start_session(session, agent, audio_input=..., audio_output=...)  # no room: custom IO
    # or: await session.start(agent, room=ctx.room)      # in the pod (LiveKit room)

Any STT/LLM/TTS implementing the livekit-agents interfaces can replace the provider models
(``Models(stt=..., llm=..., tts=...)``): that is how the local engines run the same session.
``create_session(..., turn_taking=None)`` keeps the framework's plain STT turn detection.

WHY explicit everything: livekit-agents picks defaults from the environment (dev mode, cloud
turn detector, adaptive interruption); a phone line must behave the same on every pod.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from livekit.agents import AgentSession, APIConnectOptions
from livekit.agents import llm as lk_llm
from livekit.agents import stt as lk_stt
from livekit.agents import tts as lk_tts
from livekit.agents import vad as lk_vad
from livekit.agents.voice.agent_session import SessionConnectOptions

from voicehive import contract
from voicehive.api.models import HotelLineSpec
from voicehive_worker.agent import CallActions, HotelAgent
from voicehive_worker.language import first_language
from voicehive_worker.pms import PmsAdapter
from voicehive_worker.turn_taking import TurnStats, TurnTakingOptions
from voicehive_worker.vad_reset import resetting

# Worker-only overrides (tests, benches, a self-hosted gateway); the spec stays the default.
ENV_LLM_ENDPOINT = "VOICEHIVE_LLM_ENDPOINT"
ENV_TTS_ENDPOINT = "VOICEHIVE_TTS_ENDPOINT"
ENV_NVIDIA_API_KEY = "NVIDIA_API_KEY"

TTS_ENCODING: Final = "pcm_16000"  # raw PCM: no mp3 decode on the hot path
LLM_TIMEOUT_S = 8.0
LLM_FIRST_BYTE_TIMEOUT_S = 1.0
TTS_TIMEOUT_S = 5.0


DEFAULT_TURN_TAKING = TurnTakingOptions()


class ProviderConfigError(ValueError):
    """A missing or bad provider setting, named in plain words (the pod reports it and exits)."""


@dataclass(frozen=True)
class ProviderEndpoints:
    """Where the three providers are and how to authenticate (keys come from Secrets via env)."""

    riva_server: str
    riva_tls: bool
    nvidia_api_key: str | None
    llm_endpoint: str
    llm_api_key: str
    tts_base_url: str
    tts_api_key: str
    # The CA the operator-managed Riva pool's TLS is verified against (VOICEHIVE_RIVA_CA_FILE);
    # set, the worker dials Riva over TLS and trusts only this CA.
    riva_ca_file: str | None = None

    @classmethod
    def from_env(cls, spec: HotelLineSpec, environ: Mapping[str, str] | None = None) -> ProviderEndpoints:
        env = os.environ if environ is None else environ
        riva = env.get(contract.ENV_RIVA_SERVER) or spec.asr.endpoint
        if not riva:
            raise ProviderConfigError(f"no Riva server: set {contract.ENV_RIVA_SERVER} or spec.asr.endpoint")
        llm_key = env.get(contract.ENV_AZURE_OPENAI_API_KEY, "")
        if not llm_key:
            raise ProviderConfigError(f"{contract.ENV_AZURE_OPENAI_API_KEY} is not set (from spec.llm.apiKeySecretRef)")
        tts_key = env.get(contract.ENV_ELEVEN_API_KEY, "")
        if not tts_key:
            raise ProviderConfigError(f"{contract.ENV_ELEVEN_API_KEY} is not set (from spec.tts.apiKeySecretRef)")
        riva_ca = env.get(contract.ENV_RIVA_CA_FILE) or None
        if riva_ca is not None and not os.access(riva_ca, os.R_OK):
            raise ProviderConfigError(
                f"{contract.ENV_RIVA_CA_FILE} names {riva_ca}, which cannot be read (the Riva pool's CA, "
                "mounted from the line's Secret)"
            )
        tts_base = (env.get(ENV_TTS_ENDPOINT) or spec.tts.endpoint).rstrip("/")
        if not tts_base.endswith("/v1"):
            tts_base += "/v1"
        return cls(
            riva_server=riva,
            riva_tls=spec.asr.use_tls or riva_ca is not None,
            nvidia_api_key=env.get(ENV_NVIDIA_API_KEY) or None,
            llm_endpoint=env.get(ENV_LLM_ENDPOINT) or spec.llm.endpoint,
            llm_api_key=llm_key,
            tts_base_url=tts_base,
            tts_api_key=tts_key,
            riva_ca_file=riva_ca,
        )


@dataclass
class Models:
    """The three streaming engines of one session (provider plugins or local engines)."""

    stt: lk_stt.STT[Any]
    llm: lk_llm.LLM[Any]
    tts: lk_tts.TTS[Any]


def provider_models(spec: HotelLineSpec, endpoints: ProviderEndpoints, *, fallback: bool = True) -> Models:
    """Riva ASR, Azure OpenAI and ElevenLabs, configured from the line's spec.

    With ``fallback`` (the default) the LLM is Azure OpenAI backed by the line's rule policy
    (:func:`with_policy_fallback`): when Azure errors, hangs or is gone, the policy answers
    from the hotel's facts and takes messages; the watchdog's apology is for when nothing can.
    """
    import httpx
    from livekit.plugins import elevenlabs, openai

    stt = riva_stt(spec, endpoints)
    llm = openai.LLM.with_azure(
        model=spec.llm.deployment,
        azure_endpoint=endpoints.llm_endpoint,
        azure_deployment=spec.llm.deployment,
        api_version=spec.llm.api_version,
        api_key=endpoints.llm_api_key,
        temperature=spec.llm.temperature,
        timeout=httpx.Timeout(connect=2.0, read=LLM_TIMEOUT_S, write=2.0, pool=2.0),  # type: ignore[arg-type]
    )
    tts = elevenlabs.TTS(
        voice_id=spec.tts.voice_id,
        model=spec.tts.model_id,
        encoding=TTS_ENCODING,
        api_key=endpoints.tts_api_key,
        base_url=endpoints.tts_base_url,
        language=first_language(spec),
        auto_mode=True,
    )
    return Models(stt=stt, llm=with_policy_fallback(spec, llm) if fallback else llm, tts=tts)


def riva_stt(spec: HotelLineSpec, endpoints: ProviderEndpoints, language: str | None = None) -> lk_stt.STT[Any]:
    """Riva streaming ASR for the line, in ``language`` (base code) with its model from ``asr.models``."""
    from voicehive_worker.language import asr_language_code
    from voicehive_worker.riva import RivaSTT

    code = spec.asr_language if language is None else asr_language_code(spec.languages, language)
    return RivaSTT(
        model=spec.asr.model if language is None else spec.asr.models[language],
        language_code=code,
        server=endpoints.riva_server,
        use_ssl=endpoints.riva_tls,
        api_key=endpoints.nvidia_api_key or "",
        punctuate=True,
        ca_file=endpoints.riva_ca_file,
    )


def asr_switcher(spec: HotelLineSpec, endpoints: ProviderEndpoints) -> Callable[[str], lk_stt.STT[Any] | None]:
    """For the agent: the ASR to switch to for a language, or None when the line has no model for it."""

    def for_language(language: str) -> lk_stt.STT[Any] | None:
        return riva_stt(spec, endpoints, language) if language in spec.asr.models else None

    return for_language


def with_policy_fallback(spec: HotelLineSpec, primary: lk_llm.LLM[Any]) -> lk_llm.LLM[Any]:
    """``primary`` first, the deterministic hotel policy when it fails (livekit-agents' FallbackAdapter).

    The adapter marks a failed primary unavailable, serves from the policy, and probes the
    primary in the background; once a probe succeeds the primary serves again. Its attempt
    timeout becomes the request's httpx timeout (connect, and each read: the wait for the
    response headers and between chunks), so a silent Azure is left after
    ``LLM_FIRST_BYTE_TIMEOUT_S``, before the watchdog's reply deadline.
    """
    from voicehive_worker.engines.policy_llm import HotelPolicyLLM

    policy = HotelPolicyLLM(spec)
    policy.prewarm()
    return lk_llm.FallbackAdapter(
        [primary, policy],
        attempt_timeout=LLM_FIRST_BYTE_TIMEOUT_S,
        max_retry_per_llm=0,
        retry_on_chunk_sent=False,
    )


def load_vad(options: TurnTakingOptions | None = None) -> lk_vad.VAD:
    """Silero VAD (ONNX model from the wheel, no network). Load once per process, in prewarm."""
    from livekit.plugins import silero

    opts = options or TurnTakingOptions()
    return silero.VAD.load(min_silence_duration=opts.vad_min_silence, min_speech_duration=0.05)


def connect_options() -> SessionConnectOptions:
    """Short, bounded retries: the watchdog speaks a fallback instead of a long silent retry."""
    return SessionConnectOptions(
        stt_conn_options=APIConnectOptions(max_retry=1, retry_interval=0.5, timeout=5.0),
        llm_conn_options=APIConnectOptions(max_retry=0, retry_interval=0.5, timeout=LLM_TIMEOUT_S),
        tts_conn_options=APIConnectOptions(max_retry=1, retry_interval=0.2, timeout=TTS_TIMEOUT_S),
        max_unrecoverable_errors=1000,  # the watchdog decides when a call is beyond saving
    )


def create_session(
    spec: HotelLineSpec,
    models: Models,
    *,
    vad: lk_vad.VAD | None = None,
    turn_taking: TurnTakingOptions | None = DEFAULT_TURN_TAKING,
    userdata: Any = None,
) -> AgentSession[Any]:
    """An AgentSession for one call on this line. ``turn_taking=None``: the framework's plain STT mode."""
    opts = turn_taking or TurnTakingOptions(speculative=False, resume_gate=False)
    handling = opts.turn_handling()
    if turn_taking is None:
        handling["preemptive_generation"] = {"enabled": False}
    kwargs: dict[str, Any] = {}
    if userdata is not None:
        kwargs["userdata"] = userdata
    return AgentSession(
        stt=models.stt,
        llm=models.llm,
        tts=models.tts,
        vad=resetting(vad if vad is not None else load_vad(opts)),
        turn_handling=handling,
        conn_options=connect_options(),
        max_tool_steps=4,
        user_away_timeout=None,
        # the framework ignores barge-in for the agent's first seconds of speech (echo-canceller
        # warm-up of a browser mic); a SIP leg has no such warm-up and callers interrupt greetings
        aec_warmup_duration=None,
        **kwargs,
    )


def create_agent(
    spec: HotelLineSpec,
    actions: CallActions,
    *,
    language: str | None = None,
    turn_taking: TurnTakingOptions | None = DEFAULT_TURN_TAKING,
    turn_stats: TurnStats | None = None,
    pms: PmsAdapter | None = None,
    greet: bool = True,
    asr_for: Callable[[str], lk_stt.STT[Any] | None] | None = None,
) -> HotelAgent:
    """The HotelAgent for one call; pass the same ``turn_taking`` as to :func:`create_session`."""
    return HotelAgent(
        spec,
        actions,
        pms=pms,
        language=language,
        turn_taking=turn_taking,
        turn_stats=turn_stats,
        greet=greet,
        asr_for=asr_for,
    )


async def start_session(
    session: AgentSession[Any],
    agent: HotelAgent,
    *,
    audio_input: Any = None,
    audio_output: Any = None,
    room: Any = None,
) -> None:
    """Starts the session with custom audio IO (no LiveKit server) or in a LiveKit room."""
    if room is None:
        if audio_input is None or audio_output is None:
            raise ValueError("without a room, both audio_input and audio_output are needed")
        session.input.audio = audio_input
        session.output.audio = audio_output
        await session.start(agent)
    else:
        await session.start(agent, room=room)
