"""A whole call without a LiveKit server: the three provider fakes, our session, a caller.

Used by the worker tests and by ``bench/pipeline.py`` (plain asyncio, no pytest inside).
Everything crosses real sockets: the nvidia plugin speaks gRPC to the Riva fake, the openai
plugin SSE to the Azure fake, the elevenlabs plugin WebSocket to the ElevenLabs fake.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from livekit.agents import Agent, AgentSession
from livekit.agents.utils import http_context

from tests.fakes.azure_openai import AzureOpenAIFake, Responder, ResponderResult
from tests.fakes.elevenlabs import ElevenLabsFake
from tests.fakes.riva import RivaFake, RivaModel, ScriptedTranscriber
from voicehive.api.models import HotelLineSpec
from voicehive_worker.agent import CallActions, LocalCallActions
from voicehive_worker.audio_io import AgentAudioSink, CallerAudioInput, Segment, Utterance
from voicehive_worker.pms import PmsAdapter
from voicehive_worker.session import (
    DEFAULT_TURN_TAKING,
    Models,
    ProviderEndpoints,
    asr_switcher,
    create_agent,
    create_session,
    provider_models,
)
from voicehive_worker.turn_taking import TurnStats, TurnTakingOptions
from voicehive_worker.watchdog import FallbackVoice, Watchdog, WatchdogOptions

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hotelline.yaml"


def line_spec(**overrides: Any) -> HotelLineSpec:
    """The example HotelLine's spec (front desk always open unless ``frontDesk`` is overridden)."""
    for doc in yaml.safe_load_all(EXAMPLE.read_text()):
        if doc and doc.get("kind") == "HotelLine":
            data = dict(doc["spec"])
            data["frontDesk"] = {**data["frontDesk"], "hours": []}
            data.update(overrides)
            return HotelLineSpec.model_validate(data)
    raise RuntimeError(f"no HotelLine in {EXAMPLE}")


@dataclass
class ProviderFakes:
    """The three loopback fakes with fixed latencies (the issue's numbers by default)."""

    riva: RivaFake
    azure: AzureOpenAIFake
    eleven: ElevenLabsFake
    transcriber: ScriptedTranscriber

    def endpoints(self) -> ProviderEndpoints:
        return ProviderEndpoints(
            riva_server=self.riva.address,
            riva_tls=False,
            nvidia_api_key=None,
            llm_endpoint=self.azure.endpoint,
            llm_api_key=self.azure.api_key,
            tts_base_url=self.eleven.base_url_v1,
            tts_api_key=self.eleven.api_key,
        )

    def spec_for(self, spec: HotelLineSpec) -> HotelLineSpec:
        """The line with the fakes' deployment and voice."""
        return spec.model_copy(
            update={
                "llm": spec.llm.model_copy(update={"deployment": self.azure.deployment}),
                "tts": spec.tts.model_copy(update={"voice_id": self.eleven.voice_id}),  # the fake's first voice
                "asr": spec.asr.model_copy(update={"model": self.riva.models[0].name}),
            }
        )


class provider_fakes:
    """Starts Riva, Azure OpenAI and ElevenLabs fakes on 127.0.0.1."""

    def __init__(
        self,
        transcripts: Iterable[str] = (),
        responder: Responder | Iterable[ResponderResult] | None = None,
        *,
        asr_final_delay: float = 0.100,
        llm_ttft: float = 0.200,
        tts_first_audio: float = 0.100,
        language_tags: dict[str, str] | None = None,
        voices: dict[str, str] | None = None,
        asr_confidence: float = 0.95,
        riva_models: tuple[RivaModel, ...] = (RivaModel(),),
    ) -> None:
        self.transcriber = ScriptedTranscriber(transcripts)
        self.riva = RivaFake(
            self.transcriber, final_delay=asr_final_delay, language_tags=language_tags, confidence=asr_confidence,
            models=riva_models,
        )
        self.azure = AzureOpenAIFake(responder, ttft=llm_ttft)
        self.eleven = ElevenLabsFake(first_audio_delay=tts_first_audio, **({"voices": voices} if voices else {}))

    async def __aenter__(self) -> ProviderFakes:
        await self.riva.start()
        await self.azure.start()
        await self.eleven.start()
        return ProviderFakes(self.riva, self.azure, self.eleven, self.transcriber)

    async def __aexit__(self, *exc: object) -> None:
        await self.eleven.stop()
        await self.azure.stop()
        await self.riva.stop()


@dataclass
class Call:
    """One running call: the caller's side (input), what the caller hears (sink), the session."""

    session: AgentSession[Any]
    agent: Agent
    caller: CallerAudioInput
    sink: AgentAudioSink
    actions: Any
    stats: TurnStats
    events: list[tuple[float, str, Any]] = field(default_factory=list)
    watchdog: Watchdog | None = None

    def say(self, pcm: bytes, label: str = "") -> Utterance:
        return self.caller.say(pcm, label)

    def reply_after(self, utt: Utterance) -> Segment | None:
        """The first reply segment that started after the utterance's last voiced sample."""
        if utt.last_voiced_at is None:
            return None
        for seg in self.sink.segments:
            if seg.first_frame_at > utt.last_voiced_at:
                return seg
        return None

    async def wait_for(
        self, predicate: Callable[[], Any], timeout: float, what: str,  # noqa: ASYNC109
        state: Callable[[], str] | None = None,
    ) -> Any:
        """Polls (no bare sleeps for synchronisation); raises with ``what`` (and ``state()``) on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            await asyncio.sleep(0.01)
        seen = f" ({state()})" if state is not None else ""
        raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}{seen}")

    async def wait_reply(self, utt: Utterance, timeout: float = 30.0) -> Segment:  # noqa: ASYNC109
        seg: Segment = await self.wait_for(lambda: self.reply_after(utt), timeout, f"a reply to {utt.label!r}")
        return seg

    async def wait_quiet(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        """Until the agent's audio has finished playing and the caller's queue is empty."""
        await self.wait_for(
            lambda: self.caller.idle and all(s.finished_at is not None for s in self.sink.segments),
            timeout,
            "the agent to finish speaking",
            state=self.playout_state,
        )

    def playout_state(self) -> str:
        """What the caller's side and the earpiece were doing (for a timeout's message)."""
        sink = self.sink
        segments = [(round(s.duration, 2), round(s.played, 2), s.finished_at is not None) for s in sink.segments]
        return (f"caller idle={self.caller.idle}; segments (length, played, finished)={segments}; "
                f"queued frames={len(sink._queue)}; paused at={sink.paused_at}; cleared at={sink.cleared_at}; "
                f"playing={sink._paused.is_set()}; agent/user states={self.events[-6:]}")


class running_call:
    """Our worker's session (or a bare AgentSession when ``bare=True``) on the fakes."""

    def __init__(
        self,
        fakes: ProviderFakes,
        spec: HotelLineSpec,
        *,
        actions: CallActions | None = None,
        bare: bool = False,
        turn_taking: TurnTakingOptions | None = DEFAULT_TURN_TAKING,
        models: Models | None = None,
        llm_fallback: bool = True,
        vad: Any = None,
        greet: bool = True,
        pms: PmsAdapter | None = None,
        watchdog: bool = False,
        watchdog_options: WatchdogOptions | None = None,
        recording: Any = None,
        sink: AgentAudioSink | None = None,
    ) -> None:
        self.fakes = fakes
        self.spec = fakes.spec_for(spec)
        self.actions = actions or LocalCallActions()
        self.bare = bare
        self.turn_taking = turn_taking
        self.models = models
        self.llm_fallback = llm_fallback
        self.vad = vad
        self.greet = greet
        self.pms = pms
        self.watchdog = watchdog
        self.watchdog_options = watchdog_options
        self.recording = recording  # a voicehive_worker.recording.CallRecording taps the call's audio
        self.sink = sink  # the agent's audio output (default: a sink that plays in real time)
        self._http: Any = None
        self.call: Call | None = None

    async def __aenter__(self) -> Call:
        self._http = http_context.open()
        await self._http.__aenter__()
        # the bare baseline is a stock session: Azure alone, no policy fallback
        fallback = self.llm_fallback and not self.bare
        models = self.models or provider_models(self.spec, self.fakes.endpoints(), fallback=fallback)
        stats = TurnStats()
        if self.bare:
            from livekit.plugins import silero

            session: AgentSession[Any] = AgentSession(
                stt=models.stt,
                llm=models.llm,
                tts=models.tts,
                vad=self.vad or silero.VAD.load(),
                turn_handling={
                    "turn_detection": "stt",
                    "endpointing": {"min_delay": 0.3, "max_delay": 3.0},
                    "interruption": {"mode": "vad"},
                },
            )
            agent: Agent = Agent(instructions=f"You answer the phone for {self.spec.display_name}.")
        else:
            session = create_session(self.spec, models, vad=self.vad, turn_taking=self.turn_taking)
            agent = create_agent(
                self.spec, self.actions, turn_taking=self.turn_taking, turn_stats=stats, greet=self.greet,
                pms=self.pms, asr_for=None if self.models else asr_switcher(self.spec, self.fakes.endpoints()),
            )
        caller = CallerAudioInput()
        sink = self.sink or AgentAudioSink()
        session.input.audio = caller
        session.output.audio = sink
        call = Call(session=session, agent=agent, caller=caller, sink=sink, actions=self.actions, stats=stats)
        session.on("agent_state_changed", lambda ev: call.events.append((time.monotonic(), "agent", ev.new_state)))
        session.on("user_state_changed", lambda ev: call.events.append((time.monotonic(), "user", ev.new_state)))
        if self.recording is not None:
            from voicehive_worker.recording import announce, tap

            tap(session, self.recording)
            announce(agent, self.spec)
            await self.recording.start()
        if self.watchdog:
            voice = await FallbackVoice.render(self.spec.languages[0])
            call.watchdog = Watchdog(session, voice, options=self.watchdog_options).attach()
        await session.start(agent)
        if call.watchdog is not None and self.greet:
            call.watchdog.expect_speech()
        self.call = call
        return call

    async def __aexit__(self, *exc: object) -> None:
        if self.call is not None:
            self.call.caller.close()
            try:
                await asyncio.wait_for(self.call.session.aclose(), 10)
            finally:
                await self.call.sink.aclose()
        await self._http.__aexit__(None, None, None)
