"""Prometheus metrics of one operator instance (on its Runtime: tests run several per process).

WHY decorators: the reconcile, bind, sweep, pool and Riva functions each take the Runtime first,
so one decorator line per function measures it without touching the Kopf handlers (which only
pick fields out of events). Labels are closed sets or object names an administrator chose
(namespace, line, Riva pool): never a call, room or caller.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

P = ParamSpec("P")
R = TypeVar("R")

KINDS = ("HotelLine", "VoiceSession")
SWEEP_ACTIONS = ("none", "fail", "end", "delete")
# Which API a HotelLine condition reports on, and the reasons that mean "the API failed"
# (not "the line is misconfigured"): livekit_sip.SipError and voicehive_operator.providers.
API_OF_CONDITION = {"SipTrunkReady": "livekit", "AsrReady": "riva", "LlmReady": "azure_openai", "TtsReady": "elevenlabs"}
API_FAILURES = frozenset({
    "LiveKitUnreachable", "LiveKitError", "LiveKitRejected",
    "RivaUnreachable", "RivaTimeout", "RivaNoAsr",
    "LlmUnreachable", "LlmError", "TtsUnreachable", "TtsError",
})
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CLAIM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class OperatorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.reconcile = Histogram(
            "voicehive_operator_reconcile_duration_seconds", "One reconcile pass of an object, by kind.",
            ["kind"], buckets=DURATION_BUCKETS, registry=r,
        )
        self.errors = Counter(
            "voicehive_operator_reconcile_errors", "Reconcile passes that raised (Kopf retries them), by kind.",
            ["kind"], registry=r,
        )
        self.claim = Histogram(
            "voicehive_operator_claim_duration_seconds",
            "Pending VoiceSession seen by the operator to a worker pod bound to it.",
            buckets=CLAIM_BUCKETS, registry=r,
        )
        self.pods = Gauge(
            "voicehive_operator_worker_pods", "Worker pods of a line by state (warm, starting, claimed).",
            ["namespace", "line", "state"], registry=r,
        )
        self.line_ready = Gauge(
            "voicehive_operator_hotelline_ready", "1 when the HotelLine's Ready condition is True.",
            ["namespace", "line"], registry=r,
        )
        self.riva = Gauge(
            "voicehive_operator_riva_replicas", "Replicas of a shared Riva ASR Deployment (available, desired).",
            ["namespace", "pool", "state"], registry=r,
        )
        self.api_errors = Counter(
            "voicehive_operator_api_errors", "Reconcile passes that found an API failing (livekit, riva, azure_openai, "
            "elevenlabs).", ["api"], registry=r,
        )
        self.sweeps = Counter(
            "voicehive_operator_sweep_sessions", "VoiceSessions checked by the periodic sweep, by action taken.",
            ["action"], registry=r,
        )
        for kind in KINDS:
            self.reconcile.labels(kind)
            self.errors.labels(kind)
        for api in API_OF_CONDITION.values():
            self.api_errors.labels(api)
        for action in SWEEP_ACTIONS:
            self.sweeps.labels(action)

    def line_conditions(self, namespace: str, line: str, conditions: list[Mapping[str, Any]]) -> None:
        """Ready gauge and API failures from one reconcile pass's conditions."""
        for cond in conditions:
            if cond.get("type") == "Ready":
                self.line_ready.labels(namespace, line).set(1 if cond.get("status") == "True" else 0)
            api = API_OF_CONDITION.get(str(cond.get("type")))
            if api is not None and cond.get("status") == "False" and cond.get("reason") in API_FAILURES:
                self.api_errors.labels(api).inc()

    def forget_line(self, namespace: str, line: str) -> None:
        """A deleted line leaves no stale series behind."""
        for state in ("warm", "starting", "claimed"):
            _remove(self.pods, namespace, line, state)
        _remove(self.line_ready, namespace, line)

    def serve(self, port: int, host: str = "0.0.0.0") -> MetricsServer:  # all interfaces: scraped over the pod IP
        """Serve ``/metrics`` on ``port`` (0: any free port) in a thread until ``stop()``."""
        from prometheus_client import start_http_server

        server, thread = start_http_server(port, addr=host, registry=self.registry)
        return MetricsServer(port=int(server.server_port), server=server, thread=thread)


@dataclass
class MetricsServer:
    port: int
    server: Any
    thread: Any

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _remove(metric: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


def _metrics_of(args: tuple[Any, ...]) -> OperatorMetrics | None:
    metrics = getattr(args[0], "metrics", None) if args else None
    return metrics if isinstance(metrics, OperatorMetrics) else None


def reconciled(kind: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Time a reconcile pass of ``kind`` and count it when it raises; HotelLine passes also
    update the line's Ready gauge and API failures from the conditions they return."""

    def wrap(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            metrics = _metrics_of(args)
            started = time.perf_counter()
            try:
                result = await fn(*args, **kwargs)
            except Exception:
                if metrics is not None:
                    metrics.errors.labels(kind).inc()
                raise
            finally:
                if metrics is not None:
                    metrics.reconcile.labels(kind).observe(time.perf_counter() - started)
            status = getattr(result, "status", None)
            if metrics is not None and isinstance(status, Mapping) and "conditions" in status:
                metrics.line_conditions(str(kwargs.get("namespace")), str(kwargs.get("name")), status["conditions"])
            return result

        return timed

    return wrap


def forgotten(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """lines.teardown: drop the deleted line's series."""

    @functools.wraps(fn)
    async def forget(*args: P.args, **kwargs: P.kwargs) -> R:
        result = await fn(*args, **kwargs)
        metrics = _metrics_of(args)
        if metrics is not None:
            metrics.forget_line(str(kwargs.get("namespace")), str(kwargs.get("name")))
        return result

    return forget


def claimed(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """sessions.bind: a VoiceSession pass; a bound worker (``("WorkerBound", ...)``) is a claim."""
    inner = reconciled("VoiceSession")(fn)

    @functools.wraps(fn)
    async def timed(*args: P.args, **kwargs: P.kwargs) -> R:
        started = time.perf_counter()
        result = await inner(*args, **kwargs)
        metrics = _metrics_of(args)
        if metrics is not None and isinstance(result, tuple) and result and result[0] == "WorkerBound":
            metrics.claim.observe(time.perf_counter() - started)
        return result

    return timed


def swept(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """sessions.enforce: count the sweep's verdict per session."""

    @functools.wraps(fn)
    async def counted(*args: P.args, **kwargs: P.kwargs) -> R:
        result = await fn(*args, **kwargs)
        metrics = _metrics_of(args)
        action = getattr(result, "action", None)
        if metrics is not None and action in SWEEP_ACTIONS:
            metrics.sweeps.labels(action).inc()
        return result

    return counted


def pooled(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """pool.reconcile: warm (idle and Ready), starting (idle, not Ready yet) and claimed pods."""

    @functools.wraps(fn)
    async def gauged(*args: P.args, **kwargs: P.kwargs) -> R:
        result = await fn(*args, **kwargs)
        metrics = _metrics_of(args)
        plan = result[0] if isinstance(result, tuple) and result else None
        if metrics is not None and plan is not None and len(args) >= 3:
            namespace, line = str(args[1]), str(args[2])
            metrics.pods.labels(namespace, line, "warm").set(plan.ready)
            metrics.pods.labels(namespace, line, "starting").set(max(0, plan.idle_current - plan.ready))
            if kwargs.get("count_claimed"):
                metrics.pods.labels(namespace, line, "claimed").set(plan.claimed)
        return result

    return gauged


def riva_observed(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """riva.availability: (available, desired) replicas of a shared Riva pool."""

    @functools.wraps(fn)
    async def gauged(*args: P.args, **kwargs: P.kwargs) -> R:
        result = await fn(*args, **kwargs)
        metrics = _metrics_of(args)
        pool: Any = args[1] if len(args) > 1 else kwargs.get("pool")
        if metrics is not None and pool is not None and isinstance(result, tuple) and len(result) == 2:
            metrics.riva.labels(pool.namespace, pool.name, "available").set(result[0])
            metrics.riva.labels(pool.namespace, pool.name, "desired").set(result[1])
        return result

    return gauged

