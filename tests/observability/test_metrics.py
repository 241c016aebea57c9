"""Metrics of the operator and the worker: served over real loopback sockets, fed by the events
they listen to, named by Prometheus conventions, and free of call, room or caller labels."""

from __future__ import annotations

import asyncio
import re
import time
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from livekit import rtc
from livekit.agents.metrics import EOUMetrics, LLMMetrics, TTSMetrics
from livekit.agents.voice.events import MetricsCollectedEvent
from prometheus_client.parser import text_string_to_metric_families

from tests.observability.registered import registries
from voicehive.lifecycle import EndReason
from voicehive_operator import lines, metrics, pool, riva, sessions
from voicehive_operator.metrics import OperatorMetrics
from voicehive_worker.entrypoint import serve_readiness
from voicehive_worker.metrics import WorkerMetrics

FORBIDDEN_LABELS = {"call", "call_sid", "call_ref", "room", "room_name", "caller", "phone", "number", "session",
                    "voicesession", "pod", "participant"}
# a phone number (E.164 or digits), a LiveKit room (call_sid), a hash or a sealed ref: never a label value
PERSONAL = re.compile(r"\+?\d{7,}|_\+|[0-9a-f]{32,}|^vh-|[A-Za-z0-9+/]{24,}")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


# --- conventions --------------------------------------------------------------------------


@pytest.mark.parametrize("component", ["operator", "orchestrator", "worker"])
def test_names_follow_prometheus_conventions(component: str) -> None:
    for family in registries()[component].collect():
        assert family.name.startswith(f"voicehive_{component}_"), family.name
        assert re.fullmatch(r"[a-z][a-z0-9_]*", family.name), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), f"{family.name}: a duration in base units"
        if family.type == "counter":
            assert not family.name.endswith("_total"), "prometheus_client appends _total itself"
        for sample in family.samples:
            assert not FORBIDDEN_LABELS & set(sample.labels), (family.name, sample.labels)


# --- operator -----------------------------------------------------------------------------


def test_operator_functions_are_instrumented() -> None:
    """One decorator line per function; the Kopf handlers stay untouched."""
    for fn in (lines.reconcile, lines.teardown, sessions.bind, sessions.enforce, pool.reconcile, riva.availability):
        assert hasattr(fn, "__wrapped__"), fn


async def test_operator_metrics_from_passes_and_served_over_http() -> None:
    m = OperatorMetrics()
    runtime = SimpleNamespace(metrics=m)

    @metrics.reconciled("HotelLine")
    async def reconcile(rt: Any, *, namespace: str, name: str) -> Any:
        return SimpleNamespace(status={"conditions": [
            {"type": "Ready", "status": "False", "reason": "ComponentsNotReady"},
            {"type": "AsrReady", "status": "False", "reason": "RivaUnreachable"},
            {"type": "SipTrunkReady", "status": "True", "reason": "TrunkReady"},
        ]})

    @metrics.reconciled("HotelLine")
    async def broken(rt: Any, *, namespace: str, name: str) -> None:
        raise RuntimeError("apiserver went away")

    @metrics.claimed
    async def bind(rt: Any, *, namespace: str, name: str) -> tuple[str, str]:
        return ("WorkerBound", "Call served by a warm pod.")

    @metrics.swept
    async def enforce(rt: Any, *, namespace: str, name: str) -> Any:
        return SimpleNamespace(action="fail")

    @metrics.pooled
    async def pool_reconcile(rt: Any, namespace: str, line: str, *, count_claimed: bool = False) -> Any:
        return SimpleNamespace(idle_current=3, ready=2, claimed=4), []

    @metrics.riva_observed
    async def availability(rt: Any, pool: Any) -> tuple[int, int]:
        return 0, 1

    await reconcile(runtime, namespace="hotels", name="lindenhof-main")
    with pytest.raises(RuntimeError):
        await broken(runtime, namespace="hotels", name="lindenhof-main")
    await bind(runtime, namespace="hotels", name="vs-1")
    await enforce(runtime, namespace="hotels", name="vs-1")
    await pool_reconcile(runtime, "hotels", "lindenhof-main", count_claimed=True)
    await availability(runtime, SimpleNamespace(namespace="voicehive", name="riva-asr-en"))

    server = m.serve(0, host="127.0.0.1")
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            text = (await client.get(f"http://127.0.0.1:{server.port}/metrics")).text
    finally:
        server.stop()
    assert value(text, "voicehive_operator_reconcile_duration_seconds_count", kind="HotelLine") == 2
    assert value(text, "voicehive_operator_reconcile_errors_total", kind="HotelLine") == 1
    assert value(text, "voicehive_operator_reconcile_duration_seconds_count", kind="VoiceSession") == 1
    assert value(text, "voicehive_operator_claim_duration_seconds_count") == 1
    assert value(text, "voicehive_operator_sweep_sessions_total", action="fail") == 1
    assert value(text, "voicehive_operator_api_errors_total", api="riva") == 1
    assert value(text, "voicehive_operator_api_errors_total", api="livekit") == 0
    assert value(text, "voicehive_operator_hotelline_ready", namespace="hotels", line="lindenhof-main") == 0
    pods = {s: value(text, "voicehive_operator_worker_pods", namespace="hotels", line="lindenhof-main", state=s)
            for s in ("warm", "starting", "claimed")}
    assert pods == {"warm": 2, "starting": 1, "claimed": 4}
    assert value(text, "voicehive_operator_riva_replicas", namespace="voicehive", pool="riva-asr-en",
                 state="desired") == 1
    assert_no_personal_labels(m.registry)  # after use: still no call, room or caller
    m.forget_line("hotels", "lindenhof-main")
    assert not any(s.labels.get("line") for f in m.registry.collect() for s in f.samples)


# --- worker -------------------------------------------------------------------------------


class Actions:
    def __init__(self, fail: bool) -> None:
        self.fail = fail

    async def transfer_to_front_desk(self, to: str) -> None:
        if self.fail:
            raise ConnectionError("SIP REFER refused")


def fake_runner(fail_transfer: bool = False) -> Any:
    return SimpleNamespace(
        session=rtc.EventEmitter(), agent=SimpleNamespace(actions=Actions(fail_transfer)),
        turn_stats=SimpleNamespace(speech_ends=[]), watchdog=SimpleNamespace(report=SimpleNamespace(fallbacks=[])),
        ended=asyncio.Event(), end_reason=None,
    )


async def test_worker_metrics_from_session_events_on_the_probe_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEHIVE_READY_HOST", "127.0.0.1")
    readiness = await serve_readiness(None, 0)
    try:
        runner = fake_runner()
        readiness.state["metrics"].observe_call(runner)
        s = runner.session
        s.emit("metrics_collected", MetricsCollectedEvent(metrics=EOUMetrics(
            timestamp=time.time(), end_of_utterance_delay=0.4, transcription_delay=0.05, on_user_turn_completed_delay=0)))
        s.emit("metrics_collected", SimpleNamespace(metrics=LLMMetrics.model_construct(ttft=0.35, cancelled=False)))
        s.emit("metrics_collected", SimpleNamespace(metrics=TTSMetrics.model_construct(ttfb=0.12, cancelled=False)))
        runner.turn_stats.speech_ends.append(time.time() - 0.7)
        s.emit("agent_state_changed", SimpleNamespace(new_state="speaking"))
        s.emit("agent_state_changed", SimpleNamespace(new_state="speaking"))  # same turn: measured once
        s.emit("user_state_changed", SimpleNamespace(new_state="speaking"))  # over the agent: a barge-in
        s.emit("error", SimpleNamespace(error=SimpleNamespace(type="tts_error", recoverable=False)))
        runner.watchdog.report.fallbacks.append((time.monotonic(), "tts_error"))
        await runner.agent.actions.transfer_to_front_desk("+493012345670")
        runner.end_reason = EndReason.TRANSFERRED
        runner.ended.set()
        async with httpx.AsyncClient(timeout=30) as client:
            for _ in range(100):  # the outcome is recorded by a task once the call has ended
                text = (await client.get(f"http://127.0.0.1:{readiness.port}/metrics")).text
                if value(text, "voicehive_worker_calls_total", outcome="transferred"):
                    break
                await asyncio.sleep(0.05)
        assert_no_personal_labels(readiness.state["metrics"].registry)  # the call's room/caller never leak
    finally:
        await readiness.cleanup()
    assert value(text, "voicehive_worker_calls_total", outcome="transferred") == 1
    assert value(text, "voicehive_worker_voice_to_voice_seconds_count") == 1
    assert value(text, "voicehive_worker_voice_to_voice_seconds_sum") >= 0.7
    for stage, seconds in {"end_of_turn": 0.4, "asr_final": 0.05, "llm_first_token": 0.35, "tts_first_byte": 0.12}.items():
        assert value(text, "voicehive_worker_turn_stage_seconds_sum", stage=stage) == pytest.approx(seconds), stage
    assert value(text, "voicehive_worker_barge_ins_total") == 1
    assert value(text, "voicehive_worker_provider_errors_total", provider="elevenlabs", recoverable="false") == 1
    assert value(text, "voicehive_worker_fallback_utterances_total", cause="tts_error") == 1
    assert value(text, "voicehive_worker_transfers_total", result="completed") == 1


async def test_a_failed_transfer_is_counted_and_still_raises() -> None:
    m = WorkerMetrics()
    runner = fake_runner(fail_transfer=True)
    m.observe_call(runner)
    with pytest.raises(ConnectionError):
        await runner.agent.actions.transfer_to_front_desk("+493012345670")
    text = m.exposition()[0].decode()
    assert value(text, "voicehive_worker_transfers_total", result="failed") == 1
    runner.ended.set()
    await asyncio.sleep(0)


def assert_no_personal_labels(registry: Any) -> None:
    for family in registry.collect():
        for sample in family.samples:
            assert not FORBIDDEN_LABELS & set(sample.labels), (family.name, sample.labels)
            for key, label in sample.labels.items():
                assert not PERSONAL.search(label), (family.name, key, label)


def test_no_label_value_names_a_call_room_or_caller_at_rest() -> None:
    for registry in registries().values():
        assert_no_personal_labels(registry)


def test_operator_serves_metrics_only_when_a_port_is_set() -> None:
    from voicehive_operator.settings import OperatorSettings

    assert OperatorSettings().metrics_port == 0  # a local `voicehive operator` opens no port
    assert OperatorSettings.from_env({"VOICEHIVE_OPERATOR_METRICS_PORT": "9090"}).metrics_port == 9090
