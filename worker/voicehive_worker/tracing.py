"""Spans of one call in the worker: the call, each turn, and the turn's ASR, LLM and TTS.

WHY from the session's ``metrics_collected`` events, after the fact: livekit-agents reports each
stage's timing when the stage ends (end of utterance with the ASR's final delay, the LLM request,
the TTS request), keyed by the speech it belongs to. Spans are written with those times, so
nothing is timed twice and nothing runs on the audio path. Names and attributes carry timings,
providers and outcomes only, never text (docs/tracing.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context

from voicehive.lifecycle import EndReason
from voicehive.tracing import (
    ATTR_POD,
    SPAN_ASR,
    SPAN_CALL,
    SPAN_LLM,
    SPAN_TTS,
    SPAN_TURN,
    Tracing,
    parent_from_annotations,
    seconds_to_ns,
    session_attributes,
)
from voicehive_worker.metrics import PROVIDER_OF_ERROR


@dataclass(frozen=True)
class Stage:
    """One timed stage of a turn (epoch seconds), with the attributes of its span."""

    name: str
    start: float
    end: float
    attributes: dict[str, Any]


def _provider(m: Any, default: str) -> str:
    meta = getattr(m, "metadata", None)
    return str(getattr(meta, "model_provider", None) or default)


def stage_of(m: Any) -> Stage | None:
    """The span a livekit-agents metrics record stands for (pure); None for other records.

    ASR: from the caller's end of speech (VAD) to the final transcript. LLM and TTS: the
    request, from its start to its last chunk (``timestamp`` is taken when the stage ends).
    """
    kind = getattr(m, "type", "")
    if kind == "eou_metrics" and m.end_of_utterance_delay > 0:
        speech_end = m.timestamp - m.end_of_utterance_delay
        return Stage(SPAN_ASR, speech_end, speech_end + max(m.transcription_delay, 0.0), {
            "voicehive.provider": "riva",
            "voicehive.asr.final_delay_seconds": max(m.transcription_delay, 0.0),
            "voicehive.turn.end_of_turn_delay_seconds": m.end_of_utterance_delay,
        })
    if kind == "llm_metrics":
        return Stage(SPAN_LLM, m.timestamp - max(m.duration, 0.0), m.timestamp, {
            "voicehive.provider": _provider(m, "azure_openai"),
            "voicehive.llm.first_token_seconds": m.ttft,
            "voicehive.cancelled": bool(m.cancelled),
        })
    if kind == "tts_metrics":
        return Stage(SPAN_TTS, m.timestamp - max(m.duration, 0.0), m.timestamp, {
            "voicehive.provider": _provider(m, "elevenlabs"),
            "voicehive.tts.first_byte_seconds": m.ttfb,
            "voicehive.tts.audio_seconds": m.audio_duration,
            "voicehive.cancelled": bool(m.cancelled),
        })
    return None


@dataclass
class CallTracer:
    """Listens to one CallRunner's session; writes the call span and its turns' spans."""

    tracing: Tracing
    runner: Any
    parent: Context | None
    attributes: dict[str, Any]
    turns: dict[str, list[Stage]] = field(default_factory=dict)  # speech id -> its stages so far
    written: int = 0  # turns written
    _call: trace.Span | None = None
    _unkeyed: int = 0
    _done: asyncio.Future[None] | None = None

    @property
    def call_open(self) -> bool:
        """The call span has not ended yet."""
        return self._call is not None

    def attach(self) -> CallTracer:
        self._call = self.tracing.tracer.start_span(SPAN_CALL, context=self.parent, kind=trace.SpanKind.SERVER,
                                                    attributes=self.attributes)
        self.runner.session.on("metrics_collected", self.on_metrics)
        self.runner.session.on("error", self.on_error)
        self._done = asyncio.ensure_future(self._end())
        self.tracing.closers.append(self.close)  # a call cut short by an error still gets its span
        return self

    def on_metrics(self, ev: Any) -> None:
        stage = stage_of(ev.metrics)
        if stage is None:
            return
        key = getattr(ev.metrics, "speech_id", None)
        if not key:
            self._unkeyed += 1
            key = f"-{self._unkeyed}"
        if stage.name == SPAN_ASR:  # the caller's next turn: earlier replies that were spoken are complete
            self._write([k for k, stages in self.turns.items() if k != key and any(s.name == SPAN_TTS for s in stages)])
        self.turns.setdefault(key, []).append(stage)

    def on_error(self, ev: Any) -> None:
        provider = PROVIDER_OF_ERROR.get(str(getattr(ev.error, "type", "")))
        if provider is not None and self._call is not None:  # the provider and whether it recovers, no message
            self._call.add_event("provider_error", {"voicehive.provider": provider,
                                                    "voicehive.recoverable": bool(getattr(ev.error, "recoverable", False))})

    def _write(self, keys: list[str]) -> None:
        """One turn span per key, from its first stage's start to its last stage's end."""
        assert self._call is not None
        parent = trace.set_span_in_context(self._call)
        for key in sorted(keys, key=lambda k: min(s.start for s in self.turns[k])):
            stages = self.turns.pop(key)
            self.written += 1
            turn = self.tracing.tracer.start_span(
                SPAN_TURN, context=parent, start_time=seconds_to_ns(min(s.start for s in stages)),
                attributes={"voicehive.turn.index": self.written,
                            "voicehive.turn.caller": any(s.name == SPAN_ASR for s in stages)},
            )
            inside = trace.set_span_in_context(turn)
            for stage in stages:
                span = self.tracing.tracer.start_span(stage.name, context=inside, start_time=seconds_to_ns(stage.start),
                                                      attributes=stage.attributes)
                span.end(end_time=seconds_to_ns(stage.end))
            turn.end(end_time=seconds_to_ns(max(s.end for s in stages)))

    async def _end(self) -> None:
        await self.runner.ended.wait()
        self.close()

    def close(self) -> None:
        """Write what is left and end the call span with the outcome (once)."""
        if self._call is None:
            return
        self._write(list(self.turns))
        reason = self.runner.end_reason
        self._call.set_attribute("voicehive.call.outcome",
                                 reason.value if isinstance(reason, EndReason) else EndReason.UNKNOWN.value)
        self._call.set_attribute("voicehive.call.turns", self.written)
        self._call.end()
        self._call = None


def trace_call(tracing: Tracing, runner: Any, *, namespace: str, line: str, session: str, pod: str,
               annotations: Mapping[str, Any] | None) -> CallTracer | None:
    """Trace one call as a child of the VoiceSession's trace context (None when tracing is off)."""
    if not tracing.enabled:
        return None
    attributes: dict[str, Any] = {**session_attributes(namespace, line, session), ATTR_POD: pod}
    return CallTracer(tracing, runner, parent_from_annotations(annotations), attributes).attach()
