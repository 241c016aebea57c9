"""Prometheus metrics of one orchestrator app (own registry, so tests can run several apps)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

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
        self.intents = Counter(
            "voicehive_orchestrator_intents", "Intents detected in transcriptions.", ["intent"], registry=self.registry
        )
