"""Prometheus metrics of one orchestrator app (own registry, so tests can run several apps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _children: dict[tuple[int, tuple[str, ...]], Any] = field(default_factory=dict, repr=False)

    def child(self, metric: MetricWrapperBase, *values: str) -> Any:
        """``metric.labels(*values)``, kept: prometheus_client checks the labels on every
        ``labels`` call (a few microseconds, several times per webhook)."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def __post_init__(self) -> None:
        self.events = Counter(
            "voicehive_orchestrator_events",
            "Webhook deliveries by event type and outcome.",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "voicehive_orchestrator_handling_seconds",
            "Time to handle one webhook delivery, by endpoint.",
            ["endpoint"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.active_calls = Gauge(
            "voicehive_orchestrator_active_calls", "Calls not yet ended (from Redis).", registry=self.registry
        )
        self.pending_sessions = Gauge(
            "voicehive_orchestrator_pending_voicesessions",
            "VoiceSession creations queued until the Kubernetes API answers.",
            registry=self.registry,
        )
        self.responses = Counter(
            "voicehive_orchestrator_http_responses",
            "HTTP responses by route template (never the raw path: it may hold a call id) and status code.",
            ["handler", "code"],
            registry=self.registry,
        )
        self.intents = Counter(
            "voicehive_orchestrator_intents", "Intents detected in transcriptions.", ["intent"], registry=self.registry
        )


class ResponseCodes:
    """ASGI middleware: count every response by route template and status code (webhook 5xx alert).

    The Metrics come from ``app.state.orch`` at request time (the app builds them in its lifespan).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        codes: list[int] = []

        async def capture(message: Any) -> None:
            if message.get("type") == "http.response.start":
                codes.append(int(message.get("status", 0)))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            self._count(scope, codes[0] if codes else 500)

    @staticmethod
    def _count(scope: Any, code: int) -> None:
        orch = getattr(getattr(scope.get("app"), "state", None), "orch", None)
        metrics = getattr(orch, "metrics", None)
        if isinstance(metrics, Metrics):
            route = scope.get("route")
            handler = getattr(route, "path", None) or "other"
            metrics.child(metrics.responses, handler, str(code)).inc()
