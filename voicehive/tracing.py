"""One OpenTelemetry trace per call: set-up from the standard ``OTEL_*`` variables, and the W3C
trace context that travels on the VoiceSession (``contract.ANNOTATION_TRACEPARENT``).

WHY our own TracerProvider, never the global one: livekit-agents traces into the global provider
and puts transcripts and room names on its spans; installing a global provider would export
them. Our spans go through this provider only and carry no caller number, room name or
transcript (docs/tracing.md lists every span and attribute).

Off by default: without an OTLP endpoint the tracer is OpenTelemetry's no-op tracer (no exporter,
no thread, no annotation written). Only OTLP over HTTP/protobuf is spoken (collector port 4318).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from voicehive import contract

HTTP_PROTOBUF = "http/protobuf"
TRACES_PATH = "/v1/traces"
INSTRUMENTATION = "voicehive"
TRACEPARENT = "traceparent"  # the W3C header name the propagator reads and writes


@dataclass(frozen=True)
class TracingConfig:
    """Where spans go: the full OTLP/HTTP traces URL, and the service they come from."""

    endpoint: str
    service: str


def tracing_config(service: str, environ: Mapping[str, str] | None = None) -> TracingConfig | None:
    """The exporter settings from the standard variables; ``None`` when tracing is off.

    Raises ValueError naming the variable when it cannot work (a protocol we do not speak, an
    endpoint that is not an http(s) URL), so a component refuses to start instead of dropping
    spans in silence.
    """
    env = os.environ if environ is None else environ
    if env.get(contract.ENV_OTEL_SDK_DISABLED, "").strip().lower() == "true":
        return None
    traces = env.get(contract.ENV_OTLP_TRACES_ENDPOINT, "").strip()
    base = env.get(contract.ENV_OTLP_ENDPOINT, "").strip()
    if not traces and not base:
        return None
    name = contract.ENV_OTLP_TRACES_ENDPOINT if traces else contract.ENV_OTLP_ENDPOINT
    endpoint = traces or base.rstrip("/") + TRACES_PATH
    if not endpoint.startswith(("http://", "https://")):
        raise ValueError(f"{name}: must be an http:// or https:// URL (OTLP over HTTP, port 4318)")
    for var in (contract.ENV_OTLP_TRACES_PROTOCOL, contract.ENV_OTLP_PROTOCOL):
        protocol = env.get(var, "").strip()
        if protocol and protocol != HTTP_PROTOBUF:
            raise ValueError(f"{var}: {protocol!r} is not supported; VoiceHive exports traces as {HTTP_PROTOBUF}")
        if protocol:
            break
    return TracingConfig(endpoint=endpoint, service=env.get("OTEL_SERVICE_NAME", "").strip() or service)


@dataclass
class Tracing:
    """A component's tracer and, when exporting, the provider to flush at shutdown."""

    tracer: trace.Tracer
    provider: Any = None  # opentelemetry.sdk.trace.TracerProvider when enabled
    closers: list[Callable[[], None]] = field(default_factory=list)
    """End long spans still open at shutdown (a call cut short by an error), so they are exported."""

    @classmethod
    def disabled(cls) -> Tracing:
        return cls(trace.NoOpTracer())

    @classmethod
    def start(cls, config: TracingConfig | None) -> Tracing:
        """A batching OTLP/HTTP exporter for ``config``; the no-op tracer for ``None``."""
        if config is None:
            return cls.disabled()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # the sampler comes from OTEL_TRACES_SAMPLER (default: parent-based, always on)
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: config.service}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=config.endpoint)))
        return cls(provider.get_tracer(INSTRUMENTATION), provider)

    @classmethod
    def from_env(cls, service: str, environ: Mapping[str, str] | None = None) -> Tracing:
        return cls.start(tracing_config(service, environ))

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Export every finished span now (blocking); True when done in time or nothing to do."""
        if self.provider is None:
            return True
        done: bool = self.provider.force_flush(int(timeout_s * 1000))
        return done

    def shutdown(self) -> None:
        """End what is still open, flush and stop the exporter (blocking: from a thread in async
        code, once the spans' producers have stopped)."""
        for close in self.closers:
            close()
        self.closers.clear()
        if self.provider is not None:
            self.provider.shutdown()


def traceparent_annotations(span: trace.Span) -> dict[str, str]:
    """``{ANNOTATION_TRACEPARENT: "00-<trace>-<span>-<flags>"}`` for a recording span, else ``{}``."""
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(span))
    value = carrier.get(TRACEPARENT)
    return {contract.ANNOTATION_TRACEPARENT: value} if value else {}


def parent_from_annotations(annotations: Mapping[str, Any] | None) -> Context | None:
    """The span context a VoiceSession carries, or None (no, or a malformed, annotation)."""
    value = (annotations or {}).get(contract.ANNOTATION_TRACEPARENT)
    if not isinstance(value, str) or not value:
        return None
    context = TraceContextTextMapPropagator().extract({TRACEPARENT: value})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def seconds_to_ns(epoch_seconds: float) -> int:
    """A ``time.time()`` timestamp as OpenTelemetry's nanoseconds since the epoch."""
    return int(epoch_seconds * 1_000_000_000)


# Span names and attribute keys (docs/tracing.md). Attributes name the line, the namespace, the
# VoiceSession (``vs-`` + keyed room hash) and the pod: never a caller number, room or transcript.
SPAN_SESSION_CREATE = "orchestrator.voicesession.create"
SPAN_BIND = "operator.voicesession.bind"
SPAN_CALL = "worker.call"
SPAN_TURN = "worker.turn"
SPAN_ASR = "worker.turn.asr"
SPAN_LLM = "worker.turn.llm"
SPAN_TTS = "worker.turn.tts"
ATTR_NAMESPACE = "k8s.namespace.name"  # OpenTelemetry semantic conventions
ATTR_POD = "k8s.pod.name"
ATTR_LINE = "voicehive.line"
ATTR_SESSION = "voicehive.session"


def session_attributes(namespace: str, line: str, session: str) -> dict[str, str]:
    """The attributes every span of a call carries, so a backend can find the call's trace."""
    return {ATTR_NAMESPACE: namespace, ATTR_LINE: line, ATTR_SESSION: session}
