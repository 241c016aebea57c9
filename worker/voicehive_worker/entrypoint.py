"""``voicehive worker``: the per-call pod. Start warm, wait for a call, serve exactly one, drain, exit.

Sequence (each step is a small function so tests can drive the parts without a cluster):

1. :func:`warm_up` — line spec (``VOICEHIVE_LINE_SPEC`` or ``--line``), keys, Silero VAD, the
   provider plugins (LLM prewarm opens the HTTP pool), the pre-rendered local fallback voice;
   then the readiness endpoint answers 200 on ``/readyz``.
2. :func:`wait_for_assignment` — watch VoiceSessions in our namespace with
   ``voicehive.io/worker=<pod name>`` (the operator binds a call by labelling it).
3. open ``spec.sealedCallRef`` (room name + SIP identity), mint an agent token from
   ``LIVEKIT_API_KEY/SECRET``, join the room, start the session linked to the SIP participant.
4. :class:`CallRunner` — CallManager in-process (Active → Ended), per-turn transcripts (sealed),
   intents, latency, watchdog, DTMF 0, caller hang-up; then drain and exit 0.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicehive import contract, heap
from voicehive.api.models import HotelLine, HotelLineSpec, VoiceSession
from voicehive.lifecycle import EndReason
from voicehive.tracing import Tracing
from voicehive_worker.agent import HotelAgent
from voicehive_worker.credentials import RoomAccess, request_transfer, room_access
from voicehive_worker.drain import Drain, grace_seconds, serve_until_end, unless_stopped
from voicehive_worker.metrics import WorkerMetrics
from voicehive_worker.metrics import add_route as add_metrics_route
from voicehive_worker.recording import CallRecording, is_objection, recording_stopped
from voicehive_worker.state import CallState
from voicehive_worker.turn_taking import TurnStats
from voicehive_worker.watchdog import Watchdog

log = logging.getLogger("voicehive.worker")

AGENT_IDENTITY_PREFIX = contract.AGENT_IDENTITY_PREFIX
WORKER_SERVICE = "voicehive-worker"  # service.name of its spans


def load_line_spec(line_file: Path | None, environ: Mapping[str, str] | None = None) -> HotelLineSpec:
    """The HotelLine spec from a YAML/JSON file (a HotelLine or a bare spec) or the environment."""
    import json

    import yaml

    env = os.environ if environ is None else environ
    if line_file is not None:
        docs = [d for d in yaml.safe_load_all(line_file.read_text()) if d]
        for doc in docs:
            if doc.get("kind") == contract.HOTELLINE_KIND:
                return HotelLine.model_validate(doc).spec
        if len(docs) == 1 and "kind" not in docs[0]:
            return HotelLineSpec.model_validate(docs[0])
        raise ValueError(f"{line_file}: no HotelLine found")
    raw = env.get(contract.ENV_LINE_SPEC)
    if not raw:
        raise ValueError(f"no line configuration: set {contract.ENV_LINE_SPEC} or pass --line FILE")
    return HotelLineSpec.model_validate(json.loads(raw))


@dataclass
class CallRunner:
    """Connects one AgentSession's events to call state, the watchdog and the hang-up.

    Per-turn latency here is the pod's own view: end of the caller's last recognised word
    (from the turn-taker) to the agent entering "speaking" (first audio pushed to the room).
    """

    session: Any
    agent: HotelAgent
    state: CallState | None
    turn_stats: TurnStats
    watchdog: Watchdog | None = None
    recording: CallRecording | None = None
    objection_key: str = "9"
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_reason: EndReason | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _measured_ends: int = 0

    def attach(self) -> CallRunner:
        if self.state is not None:
            self.state.language = self.agent.language
        self.agent.language_listeners.append(self._on_language)
        s = self.session
        s.on("conversation_item_added", self._on_item)
        s.on("agent_state_changed", self._on_agent_state)
        s.on("close", self._on_close)
        if self.watchdog is not None:
            self.watchdog.attach()
        return self

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_item(self, ev: Any) -> None:
        """One committed caller turn (the whole sentence, however many ASR finals it took)."""
        item = ev.item
        if getattr(item, "type", None) != "message" or getattr(item, "role", None) != "user":
            return
        text = (item.text_content or "").strip()
        # the framework's mean confidence of the turn's ASR finals; typed text has none
        confidence = getattr(item, "transcript_confidence", None)
        confidence = 1.0 if confidence is None else float(confidence)
        if text and self.recording is not None and is_objection(text):
            self._spawn(self._objection())
        if text and self.state is not None:
            self._spawn(self._record_turn(text, self.agent.language, confidence))

    def _on_language(self, language: str) -> None:
        """The caller switched language: the VoiceSession status shows the new one."""
        if self.state is not None:
            self.state.language = language
            self._spawn(self.state.flush())

    async def _record_turn(self, text: str, language: Any, confidence: float) -> None:
        assert self.state is not None
        try:
            await self.state.caller_turn(text, str(language) if language else None, confidence)
        except Exception as err:  # error texts may quote what they failed on: log the type only
            log.warning("could not record a caller turn", extra={"call_ref": self.state.ref, "error": type(err).__name__})

    def _on_agent_state(self, ev: Any) -> None:
        if ev.new_state != "speaking":
            return
        ends = self.turn_stats.speech_ends
        if len(ends) > self._measured_ends:
            latency_ms = (time.time() - ends[-1]) * 1000
            self._measured_ends = len(ends)
            if self.state is not None and 0 <= latency_ms < 30_000:
                self.state.add_latency(latency_ms)
                self._spawn(self.state.flush())

    def _on_close(self, ev: Any) -> None:
        reason = self.end_reason or EndReason.CALLER_HANGUP
        error = getattr(ev, "error", None)
        if error is not None and self.end_reason is None:
            reason = EndReason.PIPELINE_ERROR
        self._spawn(self.finish(reason))

    async def finish(self, reason: EndReason) -> None:
        """Ends the call once (state first, then the session); later calls are no-ops."""
        if self.end_reason is None:
            self.end_reason = reason
        if self.state is not None:
            try:
                await self.state.ended(self.end_reason)
            except Exception as err:
                log.warning("could not record the end of the call", extra={"error": type(err).__name__})
        if self.recording is not None:  # the last chunk is uploaded before the pod may exit
            try:
                await self.recording.finish()
            except Exception as err:
                log.warning("recording not finished", extra={"error": type(err).__name__})
        self.ended.set()

    def on_dtmf(self, digit: str) -> None:
        if self.recording is not None and digit == self.objection_key:
            self._spawn(self._objection())
            return
        self._spawn(self.agent.on_dtmf(digit))

    async def _objection(self) -> None:
        """The caller objected to the recording: delete it, then say so."""
        assert self.recording is not None
        try:
            if await self.recording.object():  # the caller must hear it in full: not interruptible
                self.session.say(recording_stopped(str(self.agent.language)), allow_interruptions=False)
        except Exception as err:
            log.error("recording could not be deleted on objection", extra={"error": type(err).__name__})

    def on_caller_left(self) -> None:
        self._spawn(self.finish(EndReason.CALLER_HANGUP))


# ---------------------------------------------------------------------------------------
# the pod
# ---------------------------------------------------------------------------------------


@dataclass
class Warm:
    """Everything prepared before a call arrives."""

    spec: HotelLineSpec
    vad: Any
    privacy: Any
    endpoints: Any
    voice: Any
    ready: bool = False
    pms: Any = None  # the line's PMS adapter (voicehive_worker.backoffice)
    voices: dict[str, Any] = field(default_factory=dict)
    """The fallback voice pre-rendered in each of the line's languages."""
    tracing: Tracing = field(default_factory=Tracing.disabled)
    """OTLP export of the call's spans (OTEL_EXPORTER_OTLP_*, set by the operator); off by default."""


async def warm_up(line_file: Path | None) -> Warm:
    # livekit plugins register themselves on import and insist on the main thread
    import livekit.plugins.elevenlabs
    import livekit.plugins.nvidia
    import livekit.plugins.openai
    import livekit.plugins.silero  # noqa: F401

    from voicehive.privacy import Privacy
    from voicehive_worker.backoffice import build_pms
    from voicehive_worker.language import first_language, line_languages
    from voicehive_worker.session import ProviderEndpoints, load_vad
    from voicehive_worker.watchdog import FallbackVoice

    spec = load_line_spec(line_file)
    privacy = Privacy.from_env()
    endpoints = ProviderEndpoints.from_env(spec)
    vad = await asyncio.to_thread(load_vad)  # ONNX load off the event loop (readiness stays responsive)
    voices = await FallbackVoice.render_all(list(line_languages(spec.languages)))  # the ones we speak
    voice = voices[first_language(spec)]
    pms = build_pms(spec, os.environ)  # a PMS line without its credentials exits 2 here, before any call
    tracing = Tracing.from_env(WORKER_SERVICE)  # a malformed endpoint exits 2 here too
    return Warm(spec=spec, vad=vad, privacy=privacy, endpoints=endpoints, voice=voice, ready=True, pms=pms,
                voices=voices, tracing=tracing)


@dataclass
class Readiness:
    """The probe server and what it reports (``state["warm"]`` flips /readyz to 200)."""

    runner: Any
    state: dict[str, Any]

    @property
    def port(self) -> int:
        port: int = self.runner.addresses[0][1]
        return port

    async def cleanup(self) -> None:
        await self.runner.cleanup()

    def stop(self, stopping: asyncio.Event) -> None:
        """SIGTERM: /readyz answers 503 from now on (no new call), then ``stopping`` is set
        (an idle worker exits, a live call drains: voicehive_worker.drain)."""
        warm = self.state["warm"]
        if warm is not None:
            warm.ready = False
        stopping.set()


async def serve_readiness(warm: Warm | None, port: int) -> Readiness:
    """``/healthz`` (alive) and ``/readyz`` (warm and idle or serving), plain HTTP for kubelet probes."""
    from aiohttp import web

    state: dict[str, Any] = {"warm": warm, "metrics": WorkerMetrics()}

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        w = state["warm"]
        return web.Response(text="ready" if w and w.ready else "warming", status=200 if w and w.ready else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    add_metrics_route(app, state["metrics"])  # Prometheus scrapes the probe port
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # probes come from the kubelet over the pod IP; bind all interfaces only in the pod
    host = os.environ.get("VOICEHIVE_READY_HOST", "0.0.0.0")
    await web.TCPSite(runner, host, port).start()
    return Readiness(runner=runner, state=state)


def _watch_assignment(namespace: str, pod: str, stop: Callable[[], bool]) -> dict[str, Any] | None:
    """Blocking: the first VoiceSession labelled for this pod (list, then watch)."""
    import kubernetes
    from kubernetes import client, watch

    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        # outside a cluster (development, tests): $KUBECONFIG, read now (the library reads it at import)
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
    api = client.CustomObjectsApi()
    selector = f"{contract.LABEL_WORKER}={pod}"
    from voicehive.contract import GROUP, VERSION, VOICESESSIONS

    while not stop():
        listing: Any = api.list_namespaced_custom_object(
            GROUP, VERSION, namespace, VOICESESSIONS, label_selector=selector
        )
        for item in listing.get("items", []):
            return dict(item)
        version = listing.get("metadata", {}).get("resourceVersion")
        w = watch.Watch()  # type: ignore[no-untyped-call]
        for event in w.stream(  # type: ignore[no-untyped-call]
            api.list_namespaced_custom_object, GROUP, VERSION, namespace, VOICESESSIONS,
            label_selector=selector, resource_version=version, timeout_seconds=30,
        ):
            if event.get("type") in ("ADDED", "MODIFIED"):
                w.stop()  # type: ignore[no-untyped-call]
                return dict(event["object"])
    return None


async def run_pod(line_file: Path | None) -> int:
    """The whole pod life; returns the process exit code."""
    from voicehive_worker.staff import StaffDelivery, start_staff_delivery

    env = os.environ
    namespace = env.get(contract.ENV_NAMESPACE, "default")
    pod = env.get(contract.ENV_POD_NAME, "")
    if not pod:
        log.error("missing %s", contract.ENV_POD_NAME)
        return 2
    port = int(env.get(contract.ENV_READY_PORT, contract.WORKER_PROBE_PORT))
    readiness = await serve_readiness(None, port)
    stopping = asyncio.Event()
    staff: StaffDelivery | None = None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, readiness.stop, stopping)
    try:
        try:
            warm = await warm_up(line_file)
            line = env.get(contract.ENV_LINE_NAME, "")
            staff = start_staff_delivery(warm.spec, env, warm.privacy.transcripts, namespace, line)
        except (ValueError, OSError) as err:  # bad/missing configuration: say what, exit 2
            log.error("worker configuration: %s", err)
            return 2
        heap.freeze_startup_heap()  # no full-GC stalls of the caller's audio (voicehive.heap)
        readiness.state["warm"] = warm
        if staff is not None:  # staff-delivery counters (dead letters are the alert) on the same /metrics
            readiness.state["metrics"].extra.append(staff.metrics.registry)
        log.info("worker warm and idle", extra={"pod": pod})
        # an idle warm worker exits at once on SIGTERM, without waiting out the watch
        vs_raw = await unless_stopped(functools.partial(_watch_assignment, namespace, pod, stopping.is_set), stopping)
        if vs_raw is None:
            return 0
        await _serve_call(warm, VoiceSession.model_validate(vs_raw), namespace, pod, stopping, staff,
                          readiness.state["metrics"])
        return 0
    except Exception as err:
        # no traceback text: provider and LiveKit errors can quote the room name (the caller's number)
        log.error("worker failed", extra={"error": type(err).__name__})
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if staff is not None:
            await staff.stop()
        if readiness.state["warm"] is not None:  # the call's spans are exported before the pod exits
            await asyncio.to_thread(readiness.state["warm"].tracing.shutdown)
        await readiness.cleanup()


async def _serve_call(warm: Warm, vs: VoiceSession, namespace: str, pod: str, stopping: asyncio.Event,
                      staff: Any = None, metrics: WorkerMetrics | None = None) -> None:
    """Open the sealed call reference, join the room as the agent, serve the call to its end."""
    from livekit.agents.utils import http_context

    from voicehive_worker.state import VoiceSessionStatus, worker_store

    env = os.environ
    secret = warm.privacy.open_call_ref(vs.spec.sealed_call_ref)
    store = worker_store(env[contract.ENV_REDIS_URL])
    from kubernetes import client as kclient

    state = CallState.of_line(
        store, warm.privacy, call_sid=secret.room, line=vs.spec.line_ref.name, namespace=namespace, worker_pod=pod,
        retention_days=warm.spec.retention.metadata_days,
        status=VoiceSessionStatus(kclient.ApiClient(), namespace, vs.metadata.name or ""),
    )
    url = env[contract.ENV_LIVEKIT_URL]
    # the operator's sealed room token (no API secret in the Pod); a lab worker mints its own
    access = room_access(env, vs.model_dump(mode="json", by_alias=True), room=secret.room, pod=pod)
    async with http_context.open(), access.api(url) as livekit:
        await _in_room(warm, vs, state, livekit, url, access, secret.participant_identity, stopping, staff, metrics)
        await store.close()


async def _in_room(warm: Warm, vs: VoiceSession, state: CallState, livekit: Any, url: str, access: RoomAccess,
                   sip_identity: str, stopping: asyncio.Event, staff: Any = None,
                   metrics: WorkerMetrics | None = None) -> None:
    """Connect, start the agent session, answer, and wait for the end of the call or SIGTERM."""
    from livekit import rtc
    from livekit.agents.voice.room_io import RoomOptions

    from voicehive_worker.session import asr_switcher, create_agent, create_session, provider_models
    from voicehive_worker.state import WorkerCallActions
    from voicehive_worker.tracing import trace_call
    from voicehive_worker.turn_taking import TurnTakingOptions

    room = rtc.Room()
    await room.connect(url, access.token)
    turn = TurnTakingOptions()
    stats = TurnStats()
    models = provider_models(warm.spec, warm.endpoints)
    session = create_session(warm.spec, models, vad=warm.vad, turn_taking=turn)
    actions = WorkerCallActions(state=state, livekit=livekit, room=state.call_sid, sip_identity=sip_identity)
    agent = create_agent(
        warm.spec, staff.wrap(actions) if staff else actions, language=vs.spec.language,
        turn_taking=turn, turn_stats=stats, pms=warm.pms, asr_for=asr_switcher(warm.spec, warm.endpoints),
    )
    runner = CallRunner(session=session, agent=agent, state=state, turn_stats=stats)
    runner.watchdog = Watchdog(
        session, warm.voice, on_give_up=lambda cause: _give_up(agent, runner),
        voices=warm.voices, language=lambda: agent.language,
    )
    actions.hangup = runner.finish
    if access.api_key is None:  # room token only: the operator does the SIP transfer
        actions.request_transfer = lambda: request_transfer(state.status)
    runner.attach()
    if metrics is not None:
        metrics.observe_call(runner)
    trace_call(warm.tracing, runner, namespace=state.namespace, line=vs.spec.line_ref.name,
               session=vs.metadata.name or "", pod=state.worker_pod, annotations=vs.metadata.annotations)
    recording = _call_recording(warm, state.namespace, vs, state)

    @room.on("sip_dtmf_received")
    def _dtmf(ev: Any) -> None:
        runner.on_dtmf(str(getattr(ev, "digit", "")))

    @room.on("participant_disconnected")
    def _left(p: Any) -> None:
        if p.identity == sip_identity:
            runner.on_caller_left()

    @room.on("disconnected")  # the room closed (or the server dropped us): no caller can hear us
    def _room_gone(*_: Any) -> None:
        if not runner.ended.is_set():  # not our own disconnect after the call
            runner.on_caller_left()

    room_io = await _start_session(session, agent, room, RoomOptions(participant_identity=sip_identity), runner,
                                   recording, warm)
    runner.watchdog.expect_speech()  # no greeting (TTS down at answer time) is dead air too
    await state.answered()
    # SIGTERM mid-call: the call runs on to its natural end; a goodbye only before SIGKILL
    drain = Drain(grace_seconds(os.environ), float(warm.spec.workers.max_call_duration_seconds))
    await serve_until_end(runner.ended, stopping, drain, agent.say_goodbye_and_end, answered_at=time.monotonic(),
                          caller_present=lambda: sip_identity in room.remote_participants)
    await session.aclose()
    if room_io is not None:
        await room_io.aclose()
    await room.disconnect()


async def _start_session(session: Any, agent: Any, room: Any, room_options: Any, runner: CallRunner,
                         recording: Any, warm: Warm) -> Any:
    """Start the agent session; with a recording, on our own RoomIO so its audio is tapped
    before the greeting plays. Returns that RoomIO (None without a recording)."""
    if recording is None:
        await session.start(agent, room=room, room_options=room_options)
        return None
    from livekit.agents.voice.room_io import RoomIO

    from voicehive_worker.recording import announce, tap

    room_io = RoomIO(session, room, options=room_options)
    await room_io.start()
    tap(session, recording)
    announce(agent, warm.spec)
    runner.recording = recording
    runner.objection_key = warm.spec.recording.objection_key if warm.spec.recording else "9"
    await recording.start()
    await session.start(agent)
    return room_io


def _call_recording(warm: Warm, namespace: str, vs: VoiceSession, state: CallState) -> CallRecording | None:
    """The call's recording if the line records; a bad recording set-up never stops the call."""
    from voicehive.privacy import TRANSCRIPT_KEY_ENV, decode_key, load_key
    from voicehive_worker.recording import open_call_recording, recording_key

    line = vs.spec.line_ref.name
    try:
        direct = os.environ.get(contract.ENV_RECORDING_LINE_KEY)  # the line Secret's (issue 11)
        key = (decode_key(contract.ENV_RECORDING_LINE_KEY, direct) if direct
               else recording_key(load_key(TRANSCRIPT_KEY_ENV), namespace, line))  # lab: the master key
        return open_call_recording(
            warm.spec, namespace=namespace, line=line, session=vs.metadata.name or "",
            caller_hash=vs.spec.caller_hash, line_key=key,
            report=lambda status: state.report({"recording": status}),
        )
    except (ValueError, OSError) as err:
        log.error("call not recorded: recording set-up failed", extra={"error": type(err).__name__})
        return None


async def _give_up(agent: HotelAgent, runner: CallRunner) -> None:
    """The pipeline failed repeatedly: a person if the desk is open, otherwise a polite end."""
    result = await agent.to_front_desk(reason="watchdog")
    if result is not None:  # desk closed or transfer failed
        await runner.finish(EndReason.PIPELINE_ERROR)


class DropLiveKitPii(logging.Filter):
    """Removes livekit-agents' ``lk.pii.*`` log extras (user transcripts, tool arguments).

    WHY: the framework tags personal data in its log records instead of leaving it out; our JSON
    formatter writes every extra, so without this a WARNING such as "skipping user input"
    would put a caller's words into the pod log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for key in [k for k in vars(record) if k.startswith("lk.pii")]:
            delattr(record, key)
        if record.name.startswith("livekit"):
            _redact_rooms(record)
        return True


# LiveKit names a caller's room and SIP identity after the number (``<prefix>_<number>_<id>``,
# ``sip_<number>``); livekit-agents and the Rust SDK log both, as extras and inside messages
# (found by tests/e2e: "closing agent session due to participant disconnect", "Disconnected
# from room ..."). Keep the line's prefix, drop the rest.
_LIVEKIT_PII_EXTRAS = ("room", "room_name", "participant", "participant_identity", "identity")
_LIVEKIT_PII_TEXT = re.compile(r"(vh-[0-9a-z-]*)_[^\"'\s,)]+|sip_[^\"'\s,)]+|\+\d{6,15}")


def _redact_text(text: str) -> str:
    return _LIVEKIT_PII_TEXT.sub(lambda m: f"{m.group(1)}_[redacted]" if m.group(1) else "[redacted]", text)


def _redact_rooms(record: logging.LogRecord) -> None:
    for key in _LIVEKIT_PII_EXTRAS:
        value = getattr(record, key, None)
        if isinstance(value, str):
            setattr(record, key, _redact_text(value))
    message = record.getMessage()
    if _LIVEKIT_PII_TEXT.search(message):
        record.msg, record.args = _redact_text(message), ()


def install_log_privacy(logger: logging.Logger | None = None) -> None:
    """Attach :class:`DropLiveKitPii` to every handler of ``logger`` (default: root), once."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, DropLiveKitPii) for f in handler.filters):
            handler.addFilter(DropLiveKitPii())


def main(line_file: Path | None = None) -> None:
    from voicehive.audit import configure_json_logging

    configure_json_logging()
    install_log_privacy()
    raise SystemExit(asyncio.run(run_pod(line_file)))
