"""Traces: set-up from the standard OTEL_* variables, the W3C trace context on the VoiceSession, and
one trace per call from the orchestrator through the operator to the worker's turns, exported by
the real OTLP/HTTP exporter to a loopback receiver that decodes the real protobuf messages."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from tests.fakes.otlp import OtlpReceiver, ReceivedSpan
from tests.fakes.threaded import InThread
from voicehive import contract, tracing
from voicehive.tracing import Tracing, TracingConfig, parent_from_annotations, traceparent_annotations, tracing_config

# --- configuration ------------------------------------------------------------------------


def test_off_by_default_and_then_a_no_op_tracer_that_writes_no_annotation() -> None:
    assert tracing_config("svc", {}) is None
    assert tracing_config("svc", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}) is None
    off = Tracing.from_env("svc", {})
    assert not off.enabled and off.flush()
    with off.tracer.start_as_current_span("x") as span:
        assert not span.is_recording()
        assert traceparent_annotations(span) == {}
    off.shutdown()


def test_endpoint_from_the_standard_variables() -> None:
    base = tracing_config("voicehive-operator", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert base == TracingConfig("http://collector:4318/v1/traces", "voicehive-operator")
    both = tracing_config("svc", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
                                  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://b/otlp/traces",
                                  "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_SERVICE_NAME": "vh-eu"})
    assert both == TracingConfig("https://b/otlp/traces", "vh-eu")


@pytest.mark.parametrize(("env", "named"), [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "grpc://c:4317"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
     "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
     "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
])
def test_an_endpoint_that_cannot_work_is_refused_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        tracing_config("svc", env)


def test_components_refuse_to_start_on_a_bad_endpoint(redis_url: str) -> None:
    from tests.orchestrator.helpers import orchestrator_env
    from voicehive_operator.settings import OperatorSettings, SettingsError
    from voicehive_orchestrator.settings import SettingsError as OrchestratorSettingsError
    from voicehive_orchestrator.settings import load_settings

    bad = {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}
    with pytest.raises(OrchestratorSettingsError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        load_settings(orchestrator_env(redis_url, **bad))
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        OperatorSettings.from_env(bad)
    assert load_settings(orchestrator_env(redis_url)).tracing is None
    assert OperatorSettings.from_env({}).tracing is None


# --- inject / extract ---------------------------------------------------------------------


def test_traceparent_annotation_round_trip() -> None:
    tracer = TracerProvider().get_tracer("test")  # no exporter: pure propagation logic
    with tracer.start_as_current_span("orchestrator") as span:
        annotations = traceparent_annotations(span)
    ctx = span.get_span_context()
    value = annotations[contract.ANNOTATION_TRACEPARENT]
    assert value == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}" and ctx.trace_flags.sampled
    parent = parent_from_annotations({"other": "x", **annotations})
    assert parent is not None
    child = tracer.start_span("operator", context=parent)
    assert child.get_span_context().trace_id == ctx.trace_id
    assert child.parent is not None and child.parent.span_id == ctx.span_id  # type: ignore[attr-defined]
    child.end()


@pytest.mark.parametrize("value", [None, "", "garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", 42,
                                   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"])
def test_a_missing_or_malformed_annotation_starts_a_new_trace(value: Any) -> None:
    annotations = None if value is None else {contract.ANNOTATION_TRACEPARENT: value}
    assert parent_from_annotations(annotations) is None


def test_no_annotation_unless_tracing_is_on() -> None:
    from voicehive.callmanager import SessionRequest
    from voicehive_orchestrator.sessions import build_voice_session

    request = SessionRequest("c" * 64, "a" * 64, "lindenhof-main", "hotels", "b" * 64, "s" * 40, None)
    assert "annotations" not in build_voice_session(request, "hotels", None)["metadata"]
    on = build_voice_session(request, "hotels", None, {contract.ANNOTATION_TRACEPARENT: "00-x"})
    assert on["metadata"]["annotations"] == {contract.ANNOTATION_TRACEPARENT: "00-x"}


# --- export over the wire -----------------------------------------------------------------


def _wait(predicate: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)  # polling interval
    raise AssertionError("condition not met in time")


def test_the_otlp_exporter_reaches_a_loopback_receiver() -> None:
    with InThread(OtlpReceiver()) as otlp:
        on = Tracing.start(TracingConfig(otlp.traces_url, "voicehive-test"))
        assert on.enabled
        with on.tracer.start_as_current_span(tracing.SPAN_SESSION_CREATE, attributes={tracing.ATTR_LINE: "l"}):
            pass
        assert on.flush()
        on.shutdown()
        (span,) = _wait(lambda: otlp.spans)
        assert otlp.rejected == []
    assert span.name == tracing.SPAN_SESSION_CREATE and span.service == "voicehive-test"
    assert span.scope == tracing.INSTRUMENTATION and span.attributes == {tracing.ATTR_LINE: "l"}
    assert trace.get_tracer_provider().__class__.__name__ == "ProxyTracerProvider"  # never the global one


def test_worker_stage_spans_from_livekit_metrics() -> None:
    from livekit.agents.metrics import EOUMetrics, LLMMetrics, TTSMetrics

    from voicehive_worker.tracing import stage_of

    now = time.time()
    asr = stage_of(EOUMetrics(timestamp=now, end_of_utterance_delay=0.4, transcription_delay=0.05,
                              on_user_turn_completed_delay=0.0, speech_id="s1"))
    assert asr is not None and asr.name == tracing.SPAN_ASR
    assert asr.start == pytest.approx(now - 0.4) and asr.end == pytest.approx(now - 0.35)
    llm = stage_of(LLMMetrics.model_construct(type="llm_metrics", timestamp=now, duration=0.6, ttft=0.3,
                                              cancelled=False))
    assert llm is not None and (llm.name, llm.start, llm.end) == (tracing.SPAN_LLM, pytest.approx(now - 0.6), now)
    tts = stage_of(TTSMetrics.model_construct(type="tts_metrics", timestamp=now, duration=0.5, ttfb=0.1,
                                              audio_duration=1.2, cancelled=True))
    assert tts is not None and tts.attributes["voicehive.cancelled"] is True
    assert stage_of(EOUMetrics(timestamp=now, end_of_utterance_delay=0.0, transcription_delay=0.0,
                               on_user_turn_completed_delay=0.0)) is None  # no end of speech: no ASR span


def scan_for_personal_data(spans: list[ReceivedSpan], forbidden: list[str]) -> None:
    """No span name, attribute, event or resource attribute holds any of ``forbidden``."""
    for span in spans:
        text = repr((span.name, span.attributes, span.events, span.resource)).lower()
        for item in forbidden:
            assert item.lower() not in text, (span.name, item)


# --- one trace per call: orchestrator -> VoiceSession -> operator -> worker ---------------

CALLER = "+4915799912345"
ASKED = "Do you have a quiet room for two nights"  # what the Riva fake recognises
REPLY = "Yes we have a quiet courtyard room"  # what the Azure OpenAI fake answers


async def _orchestrator_creates_the_session(otlp: OtlpReceiver, redis_url: str, kube: Any, namespace: str
                                            ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The real app over a loopback socket: a signed SIP join creates the VoiceSession in KMock."""
    import httpx

    from tests.orchestrator.helpers import orchestrator_env, run_app
    from tests.orchestrator.test_livekit_sessions import _create_line, _joined, _room, _sessions
    from voicehive_orchestrator.app import create_app
    from voicehive_orchestrator.sessions import KubeSessions
    from voicehive_orchestrator.settings import load_settings

    line = await asyncio.to_thread(_create_line, kube, namespace)
    settings = load_settings(orchestrator_env(redis_url, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url))
    with run_app(create_app(settings, sink=KubeSessions(kube.api_client()))) as server:
        from tests.orchestrator.helpers import post_livekit, sign_livekit

        body = _joined(namespace)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert post_livekit(client, body, sign_livekit(body)).status_code == 200
        found = await asyncio.to_thread(_wait, lambda: _sessions(kube, namespace))
    return line, found[0], _room(namespace)  # leaving run_app shut the app down: its spans are exported


async def _operator_binds_a_worker(otlp: OtlpReceiver, kube: Any, namespace: str, line: dict[str, Any],
                                   vs: dict[str, Any]) -> str:
    from voicehive.api.models import HotelLineSpec
    from voicehive_operator import sessions
    from voicehive_operator.kube import Kube
    from voicehive_operator.main import build_runtime
    from voicehive_operator.settings import OperatorSettings

    settings = OperatorSettings(tracing=TracingConfig(otlp.traces_url, "voicehive-operator"))
    runtime = build_runtime(settings, Kube(kube.api_client()))
    try:
        result = await sessions.bind(runtime, namespace=namespace, name=vs["metadata"]["name"],
                                     uid=vs["metadata"]["uid"], body=vs,
                                     line_spec=HotelLineSpec.model_validate(line["spec"]),
                                     line_uid=line["metadata"]["uid"])
        assert result is not None and result[0] == "WorkerBound", result
        return runtime.bound[vs["metadata"]["uid"]]
    finally:
        await runtime.close()  # flushes the operator's spans


async def _worker_serves_the_call(otlp: OtlpReceiver, namespace: str, pod: str) -> None:
    """The worker learns its VoiceSession from the API, then one real turn on the provider fakes."""
    from tests.worker.callrig import line_spec, provider_fakes, running_call
    from tests.worker.speech import speak
    from voicehive.api.models import VoiceSession
    from voicehive.lifecycle import EndReason
    from voicehive_worker.entrypoint import CallRunner, _watch_assignment
    from voicehive_worker.tracing import trace_call

    raw = await asyncio.to_thread(_watch_assignment, namespace, pod, lambda: False)
    assert raw is not None
    vs = VoiceSession.model_validate(raw)
    worker = Tracing.start(TracingConfig(otlp.traces_url, "voicehive-worker"))
    async with provider_fakes([ASKED], lambda m, t: REPLY) as fakes, running_call(fakes, line_spec()) as call:
        runner = CallRunner(session=call.session, agent=call.agent, state=None,  # type: ignore[arg-type]
                            turn_stats=call.stats).attach()
        tracer = trace_call(worker, runner, namespace=namespace, line=vs.spec.line_ref.name,
                            session=vs.metadata.name or "", pod=pod, annotations=vs.metadata.annotations)
        assert tracer is not None
        await call.wait_for(lambda: call.sink.segments, 15, "the greeting")
        await call.wait_quiet()
        asked = call.say(speak(ASKED), "question")
        await call.wait_reply(asked)
        await call.wait_quiet()
        await runner.finish(EndReason.CALLER_HANGUP)
        await call.wait_for(lambda: tracer.written >= 2 and not tracer.call_open, 15, "the call span to end")
    await asyncio.to_thread(worker.shutdown)


def _one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    named = [s for s in spans if s.name == name]
    assert len(named) == 1, (name, [s.name for s in spans])
    return named[0]


@pytest.mark.slow
async def test_one_trace_per_call_across_orchestrator_operator_and_worker(
    redis_url: str, kube: Any, namespace: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.worker.speech import espeak_available

    if not espeak_available():
        pytest.skip("espeak-ng is needed for the caller's speech")
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))  # the worker's API client outside a cluster
    async with InThread(OtlpReceiver()) as otlp:
        line, vs, room = await _orchestrator_creates_the_session(otlp, redis_url, kube, namespace)
        traceparent = vs["metadata"]["annotations"][contract.ANNOTATION_TRACEPARENT]
        pod = await _operator_binds_a_worker(otlp, kube, namespace, line, vs)
        await _worker_serves_the_call(otlp, namespace, pod)
        spans = await asyncio.to_thread(_wait, lambda: len(otlp.spans) >= 6 and list(otlp.spans))
        assert otlp.rejected == []

    attempts = [s for s in spans if s.name == tracing.SPAN_SESSION_CREATE]
    (created,) = [s for s in attempts if traceparent.split("-")[1:3] == [s.trace_id, s.span_id]]
    # the retry loop may race the webhook's own attempt: a 409, marked, in a trace of its own
    assert all(s.attributes.get("voicehive.voicesession.existed") is True for s in attempts if s is not created)
    spans = [s for s in spans if s.name != tracing.SPAN_SESSION_CREATE or s is created]
    assert {s.trace_id for s in spans} == {created.trace_id}, "one trace per call"
    assert {s.service for s in spans} == {"voicehive-orchestrator", "voicehive-operator", "voicehive-worker"}
    assert {s.scope for s in spans} == {tracing.INSTRUMENTATION}  # livekit-agents' own spans never leave
    bound, served = _one(spans, tracing.SPAN_BIND), _one(spans, tracing.SPAN_CALL)
    assert created.parent_span_id == "" and bound.parent_span_id == served.parent_span_id == created.span_id
    assert bound.attributes[tracing.ATTR_POD] == pod == served.attributes[tracing.ATTR_POD]
    assert served.attributes["voicehive.call.outcome"] == "caller_hangup"
    for span in (created, bound, served):
        assert span.attributes[tracing.ATTR_SESSION] == vs["metadata"]["name"]
        assert span.attributes[tracing.ATTR_LINE] == "lindenhof-main"
    turns = {s.span_id: s for s in spans if s.name == tracing.SPAN_TURN}
    assert len(turns) >= 2 and all(t.parent_span_id == served.span_id for t in turns.values())  # greeting + answer
    stages = [s for s in spans if s.name in (tracing.SPAN_ASR, tracing.SPAN_LLM, tracing.SPAN_TTS)]
    assert all(s.parent_span_id in turns for s in stages)
    answered = [t for t in turns.values() if t.attributes["voicehive.turn.caller"]]
    assert answered, "the caller's turn"
    inside = [s for s in stages if s.parent_span_id == answered[0].span_id]
    assert {s.name for s in inside} == {tracing.SPAN_ASR, tracing.SPAN_LLM, tracing.SPAN_TTS}
    for stage in inside:  # the turn spans its stages
        assert answered[0].start_ns <= stage.start_ns <= stage.end_ns <= answered[0].end_ns, stage.name
    scan_for_personal_data(spans, [CALLER, CALLER.lstrip("+"), room, ASKED, REPLY, "quiet"])


async def test_turns_grouped_by_speech_and_a_call_cut_short_still_exported() -> None:
    """Stages of one speech make one turn; a call whose runner never ended is closed at shutdown."""
    from types import SimpleNamespace

    from livekit import rtc
    from livekit.agents.metrics import EOUMetrics, LLMMetrics, TTSMetrics
    from livekit.agents.voice.events import MetricsCollectedEvent

    from voicehive_worker.tracing import trace_call

    async with InThread(OtlpReceiver()) as otlp:
        worker = Tracing.start(TracingConfig(otlp.traces_url, "voicehive-worker"))
        runner = SimpleNamespace(session=rtc.EventEmitter(), ended=asyncio.Event(), end_reason=None)
        tracer = trace_call(worker, runner, namespace="hotels", line="l", session="vs-1", pod="l-w-1", annotations=None)
        assert tracer is not None and trace_call(Tracing.disabled(), runner, namespace="hotels", line="l",
                                                 session="vs-1", pod="l-w-1", annotations=None) is None
        now = time.time()

        def emit(m: Any) -> None:
            runner.session.emit("metrics_collected", MetricsCollectedEvent(metrics=m))

        emit(TTSMetrics.model_construct(type="tts_metrics", timestamp=now - 5, duration=1.0, ttfb=0.1,
                                        audio_duration=2.0, cancelled=False, speech_id="greeting"))
        emit(EOUMetrics(timestamp=now - 2, end_of_utterance_delay=0.5, transcription_delay=0.1,
                        on_user_turn_completed_delay=0.0, speech_id="answer"))  # writes the greeting's turn
        emit(LLMMetrics.model_construct(type="llm_metrics", timestamp=now - 1, duration=0.8, ttft=0.3,
                                        cancelled=False, speech_id="answer"))
        runner.session.emit("error", SimpleNamespace(error=SimpleNamespace(type="tts_error", recoverable=False)))
        assert tracer.written == 1 and list(tracer.turns) == ["answer"]
        await asyncio.to_thread(worker.shutdown)  # the call never ended: the span is closed here
        spans = await asyncio.to_thread(_wait, lambda: len(otlp.spans) >= 6 and list(otlp.spans))
    call = _one(spans, tracing.SPAN_CALL)
    assert call.parent_span_id == "" and call.attributes["voicehive.call.outcome"] == "unknown"
    assert call.events == [("provider_error", {"voicehive.provider": "elevenlabs", "voicehive.recoverable": False})]
    turns = sorted((s for s in spans if s.name == tracing.SPAN_TURN), key=lambda s: s.start_ns)
    assert [t.attributes["voicehive.turn.caller"] for t in turns] == [False, True]
    children = {t.span_id: sorted(s.name for s in spans if s.parent_span_id == t.span_id) for t in turns}
    assert children == {turns[0].span_id: [tracing.SPAN_TTS], turns[1].span_id: [tracing.SPAN_ASR, tracing.SPAN_LLM]}
    # from the end of the caller's speech (EOU time - delay) to the LLM's last chunk
    assert turns[1].start_ns == pytest.approx(tracing.seconds_to_ns(now - 2.5), abs=1000)
    assert turns[1].end_ns == pytest.approx(tracing.seconds_to_ns(now - 1), abs=1000)


def test_the_sweep_snapshot_keeps_the_trace_context_only() -> None:
    from voicehive_operator.handlers import index_sessions_by_line

    value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    body = {"metadata": {"uid": "u", "annotations": {contract.ANNOTATION_TRACEPARENT: value, "note": "x"}}}
    snapshot = index_sessions_by_line("hotels", "vs-1", body, {"lineRef": {"name": "l"}})[("hotels", "l")]
    assert snapshot["metadata"]["annotations"] == {contract.ANNOTATION_TRACEPARENT: value}


async def test_a_failed_bind_is_an_error_span_in_the_call_trace(kube: Any, namespace: str) -> None:
    """The operator alone: a VoiceSession whose line is gone; its bind span joins the annotated trace."""
    from kubernetes import client

    from voicehive_operator import sessions
    from voicehive_operator.kube import Kube
    from voicehive_operator.main import build_runtime
    from voicehive_operator.settings import OperatorSettings

    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    body = {"apiVersion": contract.API_VERSION, "kind": contract.VOICESESSION_KIND,
            "metadata": {"name": "vs-gone", "namespace": namespace,
                         "annotations": {contract.ANNOTATION_TRACEPARENT: f"00-{trace_id}-{parent_id}-01"}},
            "spec": {"lineRef": {"name": "gone"}, "roomHash": "a" * 64, "callerHash": "b" * 64,
                     "sealedCallRef": "s" * 40}}
    api = client.CustomObjectsApi(kube.api_client())
    vs = await asyncio.to_thread(api.create_namespaced_custom_object, contract.GROUP, contract.VERSION, namespace,
                                 contract.VOICESESSIONS, body)
    async with InThread(OtlpReceiver()) as otlp:
        runtime = build_runtime(OperatorSettings(tracing=TracingConfig(otlp.traces_url, "voicehive-operator")),
                                Kube(kube.api_client()))
        try:
            result = await sessions.bind(runtime, namespace=namespace, name="vs-gone", uid=vs["metadata"]["uid"],
                                         body=vs, line_spec=None, line_uid=None)
        finally:
            await runtime.close()
        (span,) = await asyncio.to_thread(_wait, lambda: list(otlp.spans))
    assert result is not None and result[0] == "BindFailed"
    assert (span.name, span.trace_id, span.parent_span_id) == (tracing.SPAN_BIND, trace_id, parent_id)
    assert span.status_code == 2 and span.attributes["voicehive.bind.result"] == "BindFailed"  # STATUS_CODE_ERROR


async def test_a_create_that_finds_the_session_there_is_marked_not_failed(
    redis_url: str, kube: Any, namespace: str,
) -> None:
    from tests.orchestrator.test_livekit_sessions import _create_line
    from voicehive.callmanager import SessionRequest
    from voicehive.callstore import CallStore
    from voicehive_orchestrator.sessions import KubeSessions, SessionCoordinator

    await asyncio.to_thread(_create_line, kube, namespace)
    request = SessionRequest("c" * 64, "a" * 64, "lindenhof-main", namespace, "b" * 64, "s" * 40, None)
    store = CallStore.from_url(redis_url)
    async with InThread(OtlpReceiver()) as otlp:
        on = Tracing.start(TracingConfig(otlp.traces_url, "voicehive-orchestrator"))
        coordinator = SessionCoordinator(store, KubeSessions(kube.api_client()), namespace, tracing=on)
        try:
            assert await coordinator._try_create(request) and await coordinator._try_create(request)
        finally:
            await asyncio.to_thread(on.shutdown)
            await store.close()
        first, again = sorted(await asyncio.to_thread(_wait, lambda: len(otlp.spans) == 2 and list(otlp.spans)),
                              key=lambda s: s.start_ns)
    assert "voicehive.voicesession.existed" not in first.attributes and first.status_code == 0
    assert again.attributes["voicehive.voicesession.existed"] is True and again.status_code == 0
