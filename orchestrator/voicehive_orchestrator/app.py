"""The orchestrator's HTTP API (FastAPI): the seed's webhook contract in front of the CallManager.

Handlers stay thin: authenticate, read a bounded body, validate, hand a CallEvent to the
CallManager, map the outcome to a status code. Every error is JSON that names the problem;
Redis being down is a 503 with ``Retry-After`` and nothing written (see CallStore.apply).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from voicehive.callmanager import CallEvent, CallManager, EventKind, Transcript, parse_end_reason
from voicehive.callstore import CallRecord, CallStore, Outcome, StoreUnavailable
from voicehive.privacy import is_call_ref, is_hash
from voicehive.tracing import Tracing

from . import auth
from .livekit_events import LiveKitVerifier, WebhookAuthError, WebhookFormatError, translate
from .metrics import Metrics, ResponseCodes
from .models import (
    AgentEvent,
    AgentReadyEvent,
    CallEndedEvent,
    CallStartedEvent,
    CallView,
    ErasureRequest,
    ErasureResponse,
    ErrorBody,
    TranscriptionRequest,
    TranscriptionResponse,
    WebhookResponse,
)
from .ratelimit import RateLimiter, RateLimitMiddleware, app_tokens, too_many
from .sessions import KubeSessions, SessionCoordinator, SessionSink
from .settings import Settings

log = logging.getLogger(__name__)

WEBHOOK_CONTENT_TYPE = "application/webhook+json"
_AGENT_EVENT: TypeAdapter[AgentEvent] = TypeAdapter(AgentEvent)
_TRANSCRIPTION = TypeAdapter(TranscriptionRequest)
_ERASURE = TypeAdapter(ErasureRequest)
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 503)}


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, errors: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail
        self.errors = errors or []
        self.headers = headers


def _json(body: BaseModel) -> Response:
    """A response body straight from its model (pydantic-core writes the JSON bytes)."""
    return Response(body.model_dump_json(), media_type="application/json")


def _error(status: int, error: str, detail: str, errors: list[dict[str, str]] | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": error, "detail": detail, "errors": errors or []}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as ``{"field": "data.reason", "problem": ...}`` (never echoing input)."""
    items: list[dict[str, str]] = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] in ("agent_ready", "call_started", "call_ended"):
            loc = loc[1:]  # the discriminator tag pydantic prefixes
        kind = err.get("type", "")
        if kind in ("union_tag_not_found", "union_tag_invalid"):
            field = "event_type"
            problem = (
                "missing" if kind == "union_tag_not_found"
                else "unknown event type; expected one of agent_ready, call_started, call_ended"
            )
        else:
            field = ".".join(loc) or "body"
            problem = str(err.get("msg", "invalid"))
        items.append({"field": field, "problem": problem})
    return items


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise ApiError(413, "body_too_large", f"request body exceeds {limit} bytes")
        except ValueError:
            raise ApiError(400, "bad_content_length", "Content-Length is not a number") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise ApiError(400, "empty_body", "request body is empty; expected a JSON object")
    try:
        data = json.loads(body)
    except UnicodeDecodeError:
        raise ApiError(400, "malformed_json", "request body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_body", "request body must be a JSON object",
                       [{"field": "body", "problem": "expected a JSON object"}])
    return data


class Orchestrator:
    """The app's state: settings, store, manager, coordinator, metrics."""

    def __init__(self, settings: Settings, store: CallStore, sink: SessionSink | None,
                 list_lines: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.metrics = Metrics()
        self.tracing = Tracing.start(settings.tracing)  # the no-op tracer unless an OTLP endpoint is set
        self.coordinator = SessionCoordinator(
            store, sink, settings.namespace, settings.session_retry_seconds, list_lines=list_lines,
            tracing=self.tracing,
        )
        self.manager = CallManager(
            store, settings.privacy, hooks=[self.coordinator], retention=self.coordinator.directory.retention_days
        )
        self.verifier = (
            LiveKitVerifier(settings.livekit_api_key or "", settings.livekit_api_secret or "")
            if settings.livekit_configured else None
        )

        self.tokens = auth.token_store(settings.agent_token, settings.admin_token, settings.tokens_dir)

    def check_agent(self, request: Request, allowed: frozenset[auth.Scope] = auth.AGENT_ENDPOINTS) -> None:
        """Scoped bearer credentials (auth.py): 401 unknown, 403 wrong scope. The client was
        usually found already, by the rate limiter, for the same request."""
        try:
            auth.permit(auth.client_of(request.scope, self.tokens), allowed)
        except auth.Denied as exc:
            raise ApiError(exc.status, exc.error, exc.detail, headers=exc.headers) from None


class OrchestratorApp(FastAPI):
    """FastAPI, with the two webhook routes dispatched straight to their handlers.

    WHY: on a webhook, FastAPI's middleware layers, routing and dependency solving cost about as
    much CPU as the handler's own work (py-spy, issue 16). The routes stay in the router (OpenAPI,
    other methods: 405); a ``POST`` to one of them runs the same handler with the same error
    handlers and the same response-code metric, without those layers.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        orch = getattr(self.state, "orch", None)
        if scope["type"] != "http" or scope["method"] != "POST" or orch is None:
            await super().__call__(scope, receive, send)
            return
        handler = _HOT_ROUTES.get(scope["path"])
        if handler is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        retry = self.state.limiter.retry_after(scope)
        if retry is not None:
            await too_many(send, retry)
            orch.metrics.child(orch.metrics.responses, scope["path"], "429").inc()
            return
        request = Request(scope, receive, send)
        try:
            response = await handler(request, orch)
        except Exception as exc:
            response = await _handle_error(request, exc)
        await response(scope, receive, send)
        orch.metrics.child(orch.metrics.responses, scope["path"], str(response.status_code)).inc()


def create_app(
    settings: Settings,
    *,
    store: CallStore | None = None,
    sink: SessionSink | None = None,
    run_background: bool = True,
) -> FastAPI:
    """Build the ASGI app. ``store``/``sink`` override what ``settings`` would create (tests).

    Handlers are module-level functions that find the :class:`Orchestrator` on ``app.state``
    (dependency :func:`orch_of`), so each can be read and tested alone.
    """
    app = OrchestratorApp(
        title="VoiceHive orchestrator",
        version="0.1.0",
        description="The seed's LiveKit webhook contract, call state and intents. No personal data in clear.",
        lifespan=_lifespan(settings, store, sink, run_background),
        # /docs, /redoc and /openapi.json only when VOICEHIVE_API_DOCS is set (not in production).
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
        openapi_url="/openapi.json" if settings.api_docs else None,
    )
    for error_type, handler in _EXCEPTION_HANDLERS:
        app.add_exception_handler(error_type, handler)
    app.state.limiter = RateLimiter(settings.rate_limits, app_tokens)
    app.add_middleware(RateLimitMiddleware, limiter=app.state.limiter)
    app.add_middleware(ResponseCodes)  # voicehive_orchestrator_http_responses_total (webhook 5xx alert)
    app.include_router(build_router())
    app.openapi = functools.partial(_openapi_schema, app)  # type: ignore[method-assign]
    return app


def _lifespan(settings: Settings, store: CallStore | None, sink: SessionSink | None,
              run_background: bool) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start-up and shut-down: open Redis and Kubernetes, run the VoiceSession retry loop."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_store = store is None
        the_store = store or CallStore.from_url(settings.redis_url)
        the_sink, list_lines = _session_sink(settings, sink)
        orch = Orchestrator(settings, the_store, the_sink, list_lines)
        app.state.orch = orch
        if run_background:
            orch.coordinator.start()
        try:
            yield
        finally:
            await orch.coordinator.stop()
            await asyncio.to_thread(orch.tracing.shutdown)  # the last spans are exported before exit
            if own_store:
                await the_store.close()

    return lifespan


def _session_sink(settings: Settings, sink: SessionSink | None) -> tuple[
    SessionSink | None, Callable[[], Awaitable[list[dict[str, Any]]]] | None
]:
    """Where VoiceSessions go and where HotelLines are listed from (None: Redis only)."""
    if sink is None and settings.kube_configured:
        try:
            kube = KubeSessions.from_settings(settings.kubeconfig, settings.in_cluster, settings.hotel_namespaces)
            return kube, kube.list_lines
        except Exception as exc:  # bad kubeconfig: serve from Redis, say so in /readyz
            log.warning("Kubernetes API not usable; VoiceSessions stay queued",
                        extra={"error_type": type(exc).__name__})
            return None, None
    if isinstance(sink, KubeSessions):
        return sink, sink.list_lines
    return sink, None


async def orch_of(request: Request) -> Orchestrator:
    """Dependency: the app's :class:`Orchestrator` (set by the lifespan). Async because FastAPI
    runs a plain ``def`` dependency in its thread pool: a thread hop on every request."""
    orch: Orchestrator = request.app.state.orch
    return orch


Orch = Annotated[Orchestrator, Depends(orch_of)]
T = TypeVar("T")


async def read_valid(request: Request, orch: Orchestrator, schema: TypeAdapter[T], *, error: str, detail: str,
                     metric: str | None = None) -> T:
    """Read a bounded JSON object and validate it; a mismatch is a 422 naming every field.

    ``metric``: the event label counted as ``rejected`` when the body does not validate.
    """
    body = await _read_body(request, orch.settings.max_body_bytes)
    try:  # bytes to model in one pass (pydantic-core's JSON parser): the usual case
        return schema.validate_json(body)
    except ValidationError:
        pass  # the slower path below says what is wrong, in the contract's words
    data = _parse_json_object(body)
    try:
        return schema.validate_python(data)
    except ValidationError as exc:
        if metric is not None:
            orch.metrics.child(orch.metrics.events, metric, "rejected").inc()
        raise ApiError(422, error, detail, _validation_errors(exc)) from None


# ---------------------------------------------------------------------- error handlers


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _error(exc.status, exc.error, exc.detail, exc.errors, exc.headers)


async def _store_down(_request: Request, _exc: Exception) -> JSONResponse:
    retry = str(StoreUnavailable.retry_after_seconds)
    return _error(503, "state_store_unavailable", "Redis is unreachable; nothing was stored, retry later",
                  headers={"Retry-After": retry})


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    names = {404: "not_found", 405: "method_not_allowed"}
    return _error(exc.status_code, names.get(exc.status_code, "http_error"), str(exc.detail),
                  headers=getattr(exc, "headers", None))


async def _request_invalid(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"field": ".".join(str(p) for p in e.get("loc", ())), "problem": str(e.get("msg"))}
              for e in exc.errors()]
    return _error(422, "invalid_request", "request parameters are invalid", errors)


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error", extra={"error_type": type(exc).__name__})
    return _error(500, "internal_error", "unexpected error; it has been logged")


_EXCEPTION_HANDLERS: tuple[tuple[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]], ...] = (
    (ApiError, _api_error),
    (StoreUnavailable, _store_down),
    (StarletteHTTPException, _http_error),
    (RequestValidationError, _request_invalid),
    (Exception, _unexpected),
)


async def _handle_error(request: Request, exc: Exception) -> Response:
    """The response the app's exception handlers give ``exc`` (the hot routes' error path)."""
    for error_type, handler in _EXCEPTION_HANDLERS:
        if isinstance(exc, error_type):
            return await handler(request, exc)
    raise exc  # not an Exception subclass we handle (unreachable: Exception is last)


# ---------------------------------------------------------------------- webhooks


# (Route handlers carry comments, not docstrings: FastAPI would publish a docstring in the OpenAPI.)


async def webhook(request: Request, orch: Orch) -> Response:
    # Agent events (JSON, bearer token) and LiveKit server webhooks (signed JWT), by content type.
    started = time.perf_counter()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == WEBHOOK_CONTENT_TYPE:
        result = await _livekit_webhook(orch, request)
    else:
        result = await _agent_event(orch, request)
    orch.metrics.child(orch.metrics.latency, "webhook").observe(time.perf_counter() - started)
    return result


async def _agent_event(orch: Orchestrator, request: Request) -> Response:
    orch.check_agent(request)
    event = await read_valid(request, orch, _AGENT_EVENT, error="invalid_event",
                             detail="the event does not match the webhook contract", metric="invalid")
    result = await orch.manager.handle(_agent_call_event(event))
    orch.metrics.child(orch.metrics.events, event.event_type, result.outcome.value).inc()
    return _json(
        WebhookResponse(
            status="duplicate" if result.outcome is Outcome.DUPLICATE else "processed",
            call_sid=event.call_sid,
            call_ref=result.call_ref,
            outcome=result.outcome.value,
            phase=result.phase.value if result.phase else None,
        )
    )


async def _livekit_webhook(orch: Orchestrator, request: Request) -> Response:
    if orch.verifier is None:
        raise ApiError(401, "unauthorized", "LiveKit webhook verification is not configured "
                       "(set LIVEKIT_API_KEY and LIVEKIT_API_SECRET)")
    body = await _read_body(request, orch.settings.max_body_bytes)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "malformed_body", "webhook body is not UTF-8") from None
    try:
        lk_event = orch.verifier.verify(text, request.headers.get("authorization"))
    except WebhookAuthError as exc:
        orch.metrics.events.labels("livekit", "unauthorized").inc()
        raise ApiError(401, "unauthorized", f"LiveKit webhook rejected: {exc}") from None
    except WebhookFormatError as exc:
        raise ApiError(400, "malformed_webhook", str(exc)) from None
    translation = translate(lk_event, orch.coordinator.directory.line_for_room)
    event_name = (lk_event.event or "unknown")[:64]
    if translation.event is None:
        orch.metrics.events.labels(f"livekit.{event_name}", "ignored").inc()
        return _json(WebhookResponse(status="ignored", outcome="ignored"))
    result = await orch.manager.handle(translation.event)
    orch.metrics.events.labels(f"livekit.{event_name}", result.outcome.value).inc()
    status: Literal["processed", "duplicate", "ignored"] = (
        "ignored" if result.outcome is Outcome.NOT_FOUND
        else "duplicate" if result.outcome is Outcome.DUPLICATE
        else "processed"
    )
    return _json(WebhookResponse(status=status, call_ref=result.call_ref, outcome=result.outcome.value,
                                 phase=result.phase.value if result.phase else None))


async def transcription(request: Request, orch: Orch) -> Response:
    # One ASR segment from the agent: sealed into the call, answered with the detected intent.
    started = time.perf_counter()
    orch.check_agent(request)
    segment = await read_valid(request, orch, _TRANSCRIPTION, error="invalid_transcription",
                               detail="the transcription does not match the contract", metric="transcription")
    result = await orch.manager.record_transcript(
        Transcript(segment.call_sid, segment.text, segment.language, segment.confidence, segment.is_final,
                   actor="agent", event_id=segment.event_id)
    )
    metrics = orch.metrics
    metrics.child(metrics.events, "transcription", result.event.outcome.value).inc()
    metrics.child(metrics.latency, "transcription").observe(time.perf_counter() - started)
    if result.event.outcome is Outcome.NOT_FOUND:
        raise ApiError(404, "unknown_call", "no call with this call_sid; send agent_ready first",
                       [{"field": "call_sid", "problem": "unknown call"}])
    metrics.child(metrics.intents, result.intent.intent.value).inc()
    return _json(TranscriptionResponse(call_sid=segment.call_sid, intent_detected=result.intent.intent.value,
                                       intent_confidence=result.intent.confidence))


_HOT_ROUTES: dict[str, Callable[[Request, Orchestrator], Awaitable[Response]]] = {
    "/v1/livekit/webhook": webhook,
    "/v1/livekit/transcription": transcription,
}


# ---------------------------------------------------------------------- reads and erasure


async def get_call(call_sid: str, request: Request, orch: Orch) -> JSONResponse:
    orch.check_agent(request, auth.READ_ENDPOINTS)
    if not call_sid or len(call_sid) > 256:
        raise ApiError(422, "invalid_call_sid", "call_sid must be 1-256 characters",
                       [{"field": "call_sid", "problem": "length"}])
    return _call_view(await orch.manager.get(call_sid), "call_sid")


async def get_call_by_ref(call_ref: str, request: Request, orch: Orch) -> JSONResponse:
    orch.check_agent(request, auth.READ_ENDPOINTS)
    if not is_call_ref(call_ref):
        raise ApiError(422, "invalid_call_ref", "call_ref must look like c-<20 hex characters>",
                       [{"field": "call_ref", "problem": "not a call reference"}])
    return _call_view(await orch.store.get(call_ref), "call_ref")


async def erasure(request: Request, orch: Orch) -> JSONResponse:
    orch.check_agent(request, auth.ADMIN_ENDPOINTS)
    req = await read_valid(request, orch, _ERASURE, error="invalid_erasure", detail="give caller_hash or phone_number")
    if req.caller_hash is not None and not is_hash(req.caller_hash):
        raise ApiError(422, "invalid_erasure", "caller_hash must be 64 lowercase hex characters",
                       [{"field": "caller_hash", "problem": "not a caller hash"}])
    refs = await orch.manager.erase_caller(caller_number=req.phone_number, caller_hash=req.caller_hash)
    return JSONResponse(ErasureResponse(erased_calls=len(refs), call_refs=refs).model_dump())


# ---------------------------------------------------------------------- operations


async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def readyz(orch: Orch) -> JSONResponse:
    redis_ok = await orch.store.ping()
    degraded: list[str] = []
    pending: int | None = None
    if redis_ok:
        try:
            pending = await orch.store.session_pending_count()
        except StoreUnavailable:
            redis_ok = False
    kube = orch.coordinator.kube_state
    if kube != "ok":
        degraded.append(f"kubernetes: {kube}; VoiceSessions are queued in Redis and retried")
    if orch.verifier is None:
        degraded.append("livekit webhooks: not configured (LIVEKIT_API_KEY/LIVEKIT_API_SECRET)")
    body = {
        "status": "ready" if redis_ok else "unavailable",
        "redis": "ok" if redis_ok else "unreachable",
        "kubernetes": kube,
        "pending_voicesessions": pending,
        "degraded": degraded,
    }
    return JSONResponse(body, status_code=200 if redis_ok else 503,
                        headers=None if redis_ok else {"Retry-After": "2"})


async def metrics(orch: Orch) -> Response:
    try:
        orch.metrics.active_calls.set(await orch.store.active_count())
        orch.metrics.pending_sessions.set(await orch.store.session_pending_count())
    except StoreUnavailable:
        pass  # serve the counters we have; readiness reports Redis
    return Response(generate_latest(orch.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _body_schema(name: str, **more: Any) -> dict[str, Any]:
    """OpenAPI extra of a route whose JSON body is the named component (read by hand, bounded)."""
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}, **more}
    return {"requestBody": {"required": True, "content": content}}


_AGENT_ONLY: dict[str, Any] = {"security": [{"AgentToken": []}]}


def build_router() -> APIRouter:
    """Every route of the API (paths, summaries and OpenAPI extras; the handlers are above)."""
    router = APIRouter()
    router.add_api_route(
        "/v1/livekit/webhook", webhook, methods=["POST"], response_model=WebhookResponse, responses=_ERRORS,
        summary="Agent events (bearer token) and LiveKit server webhooks (signed JWT)",
        openapi_extra={
            **_body_schema("AgentEvent", **{WEBHOOK_CONTENT_TYPE: {
                "schema": {"type": "object", "description": "livekit.WebhookEvent"}}}),
            "security": [{"AgentToken": []}, {"LiveKitWebhook": []}],
        },
    )
    router.add_api_route(
        "/v1/livekit/transcription", transcription, methods=["POST"], response_model=TranscriptionResponse,
        responses=_ERRORS, summary="One ASR segment from the agent; answers with the detected intent",
        openapi_extra={**_body_schema("TranscriptionRequest"), **_AGENT_ONLY},
    )
    router.add_api_route("/v1/calls/{call_sid}", get_call, methods=["GET"], response_model=CallView,
                         responses=_ERRORS, summary="State of one call, without personal data",
                         openapi_extra=_AGENT_ONLY)
    router.add_api_route("/v1/calls/by-ref/{call_ref}", get_call_by_ref, methods=["GET"], response_model=CallView,
                         responses=_ERRORS,
                         summary="State of one call by its reference (c-...), as audit logs and metrics name it",
                         openapi_extra=_AGENT_ONLY)
    router.add_api_route("/v1/erasure", erasure, methods=["POST"], response_model=ErasureResponse, responses=_ERRORS,
                         summary="Erase every call of one caller (GDPR), by number or by caller hash",
                         openapi_extra={**_body_schema("ErasureRequest"), **_AGENT_ONLY})
    router.add_api_route("/healthz", healthz, methods=["GET"], summary="Liveness: the process serves requests")
    router.add_api_route("/readyz", readyz, methods=["GET"],
                         summary="Readiness: Redis reachable; lists what is degraded")
    router.add_api_route("/metrics", metrics, methods=["GET"], summary="Prometheus metrics", response_class=Response)
    return router


def _openapi_schema(app: FastAPI) -> dict[str, Any]:
    """The generated schema plus the bodies the handlers read by hand and the two auth schemes."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    ref = "#/components/schemas/{model}"
    agent = _AGENT_EVENT.json_schema(ref_template=ref)
    schemas.update(agent.pop("$defs", {}))
    schemas["AgentEvent"] = agent
    for model in (TranscriptionRequest, ErasureRequest):
        js = model.model_json_schema(ref_template=ref)
        schemas.update(js.pop("$defs", {}))
        schemas[model.__name__] = js
    components["securitySchemes"] = {
        "AgentToken": {"type": "http", "scheme": "bearer", "description": "VOICEHIVE_AGENT_TOKEN"},
        "LiveKitWebhook": {"type": "apiKey", "in": "header", "name": "Authorization",
                           "description": "LiveKit webhook JWT (HS256, sha256 claim = body hash)"},
    }
    app.openapi_schema = schema
    return schema


def _call_view(record: CallRecord | None, field: str) -> JSONResponse:
    """A call's public state, or 404 naming the path field that found nothing."""
    if record is None:
        raise ApiError(404, "unknown_call", f"no call with this {field}", [{"field": field, "problem": "unknown call"}])
    return JSONResponse(record.public())


def _agent_call_event(event: AgentReadyEvent | CallStartedEvent | CallEndedEvent) -> CallEvent:
    if isinstance(event, AgentReadyEvent):
        return CallEvent(
            call_sid=event.call_sid, kind=EventKind.AGENT_READY, actor="agent", event_id=event.event_id,
            hotel_id=event.data.hotel_id, line=event.data.line, namespace=event.data.namespace,
            language=event.data.language,
        )
    if isinstance(event, CallStartedEvent):
        return CallEvent(call_sid=event.call_sid, kind=EventKind.CALL_STARTED, actor="agent",
                         event_id=event.event_id,
                         content=(("is_sip", str(event.data.is_sip)),
                                  ("participant_sid", event.data.participant_sid or "")))
    return CallEvent(
        call_sid=event.call_sid, kind=EventKind.CALL_ENDED, actor="agent", event_id=event.event_id,
        reason=parse_end_reason(event.data.reason),
    )

