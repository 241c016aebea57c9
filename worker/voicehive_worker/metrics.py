"""Prometheus metrics of one worker pod (one call), served on the probe port at ``/metrics``.

WHY here and not in the entrypoint: the entrypoint wires a call; this module only listens to
the AgentSession's events and the CallRunner's outcome, so ``run_pod`` needs one line to attach it.
Labels are closed sets (stage, provider, outcome, result): never a call, room or caller, whose
values are personal data and would make one time series per call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from voicehive.lifecycle import EndReason

# Voice-to-voice budgets sit between 0.5 s (state of the art) and 1.5 s (phone p95): fine buckets there.
VOICE_TO_VOICE_BUCKETS = (0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0, 10.0)
STAGE_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
STAGES = ("end_of_turn", "asr_final", "llm_first_token", "tts_first_byte")
# livekit-agents error types -> the provider behind that stage of the pipeline.
PROVIDER_OF_ERROR = {"stt_error": "riva", "llm_error": "azure_openai", "tts_error": "elevenlabs"}
# The watchdog's causes (voicehive_worker.watchdog); anything else counts as "other".
FALLBACK_CAUSES = ("asr_silent", "reply_overdue", "stt_error", "llm_error", "tts_error")
OUTCOMES = tuple(reason.value for reason in EndReason)


@dataclass
class WorkerMetrics:
    """The worker's metric families, on their own registry (tests run several in one process)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.voice_to_voice = Histogram(
            "voicehive_worker_voice_to_voice_seconds",
            "Caller's last recognised word to the agent's first reply audio, per turn.",
            buckets=VOICE_TO_VOICE_BUCKETS, registry=r,
        )
        self.stage = Histogram(
            "voicehive_worker_turn_stage_seconds",
            "Parts of a turn: end_of_turn (VAD end to turn decision), asr_final, llm_first_token, tts_first_byte.",
            ["stage"], buckets=STAGE_BUCKETS, registry=r,
        )
        self.barge_ins = Counter("voicehive_worker_barge_ins", "Caller started speaking over the agent.", registry=r)
        self.provider_errors = Counter(
            "voicehive_worker_provider_errors", "Errors reported by a provider plugin.", ["provider", "recoverable"],
            registry=r,
        )
        self.fallbacks = Counter(
            "voicehive_worker_fallback_utterances", "Local fallback lines the watchdog spoke, by cause.", ["cause"],
            registry=r,
        )
        self.transfers = Counter(
            "voicehive_worker_transfers", "Front-desk transfers, by result (completed, failed).", ["result"], registry=r,
        )
        self.calls = Counter("voicehive_worker_calls", "Calls ended, by outcome (EndReason).", ["outcome"], registry=r)
        for stage in STAGES:
            self.stage.labels(stage)
        for provider in PROVIDER_OF_ERROR.values():
            for recoverable in ("true", "false"):
                self.provider_errors.labels(provider, recoverable)
        for result in ("completed", "failed"):
            self.transfers.labels(result)
        for outcome in OUTCOMES:
            self.calls.labels(outcome)
        for cause in (*FALLBACK_CAUSES, "other"):
            self.fallbacks.labels(cause)

    extra: list[CollectorRegistry] = field(default_factory=list)
    """Other registries served on the same /metrics (the staff-delivery outbox's)."""

    def exposition(self) -> tuple[bytes, str]:
        return b"".join(generate_latest(r) for r in (self.registry, *self.extra)), CONTENT_TYPE_LATEST

    def observe_call(self, runner: Any) -> CallObserver:
        """Listen to one CallRunner's session, turn stats, watchdog and outcome (one line in run_pod)."""
        return CallObserver(self, runner).attach()


@dataclass
class CallObserver:
    """Turns one call's AgentSession events into the pod's metrics."""

    metrics: WorkerMetrics
    runner: Any
    _agent_state: str = "initializing"
    _measured_ends: int = 0
    _counted_fallbacks: int = 0
    _done: asyncio.Future[None] | None = None

    def attach(self) -> CallObserver:
        s = self.runner.session
        s.on("metrics_collected", self.on_metrics)
        s.on("agent_state_changed", self.on_agent_state)
        s.on("user_state_changed", self.on_user_state)
        s.on("error", self.on_error)
        actions = getattr(self.runner.agent, "actions", None)
        if actions is not None and hasattr(actions, "transfer_to_front_desk"):
            actions.transfer_to_front_desk = self._counted_transfer(actions.transfer_to_front_desk)
        self._done = asyncio.ensure_future(self._outcome())
        return self

    def on_metrics(self, ev: Any) -> None:
        m = ev.metrics
        kind = getattr(m, "type", "")
        if kind == "eou_metrics" and m.end_of_utterance_delay > 0:
            self.metrics.stage.labels("end_of_turn").observe(m.end_of_utterance_delay)
            self.metrics.stage.labels("asr_final").observe(max(m.transcription_delay, 0.0))
        elif kind == "llm_metrics" and m.ttft >= 0 and not m.cancelled:
            self.metrics.stage.labels("llm_first_token").observe(m.ttft)
        elif kind == "tts_metrics" and m.ttfb >= 0 and not m.cancelled:
            self.metrics.stage.labels("tts_first_byte").observe(m.ttfb)

    def on_agent_state(self, ev: Any) -> None:
        self._agent_state = str(ev.new_state)
        if ev.new_state == "speaking":
            ends = self.runner.turn_stats.speech_ends
            if len(ends) > self._measured_ends:
                self._measured_ends = len(ends)
                seconds = time.time() - ends[-1]
                if 0 <= seconds < 30:
                    self.metrics.voice_to_voice.observe(seconds)
        self._count_fallbacks()

    def on_user_state(self, ev: Any) -> None:
        if ev.new_state == "speaking" and self._agent_state == "speaking":
            self.metrics.barge_ins.inc()

    def on_error(self, ev: Any) -> None:
        provider = PROVIDER_OF_ERROR.get(str(getattr(ev.error, "type", "")))
        if provider is not None:
            recoverable = "true" if getattr(ev.error, "recoverable", False) else "false"
            self.metrics.provider_errors.labels(provider, recoverable).inc()

    def _count_fallbacks(self) -> None:
        watchdog = getattr(self.runner, "watchdog", None)
        spoken = watchdog.report.fallbacks if watchdog is not None else []
        for _, cause in spoken[self._counted_fallbacks:]:
            self.metrics.fallbacks.labels(cause if cause in FALLBACK_CAUSES else "other").inc()
        self._counted_fallbacks = len(spoken)

    def _counted_transfer(self, transfer: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await transfer(*args, **kwargs)
            except Exception:
                self.metrics.transfers.labels("failed").inc()
                raise
            self.metrics.transfers.labels("completed").inc()
            return result

        return counted

    async def _outcome(self) -> None:
        await self.runner.ended.wait()
        self._count_fallbacks()
        reason = self.runner.end_reason
        outcome = reason.value if isinstance(reason, EndReason) else EndReason.UNKNOWN.value
        self.metrics.calls.labels(outcome).inc()


def add_route(app: Any, metrics: WorkerMetrics) -> None:
    """``GET /metrics`` on the worker's aiohttp probe server."""
    from aiohttp import web

    async def handler(_: web.Request) -> web.Response:
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app.router.add_get("/metrics", handler)
