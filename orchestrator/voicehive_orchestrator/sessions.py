"""VoiceSession creation with a durable retry queue, and the HotelLine directory.

WHY: the Kubernetes API may be unreachable (control-plane upgrade) or absent (a laptop). A
caller must not be lost because of that: the request to create a call's VoiceSession is written
to Redis in the same transaction as the ``participant_joined`` event (see CallManager), then
tried at once and retried in the background until it succeeds. Creation is idempotent: the
name comes from the room hash, so a 409 Conflict means "already done".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from voicehive import contract
from voicehive.api.models import LANGUAGE_PATTERN, LineRef, VoiceSession, VoiceSessionSpec
from voicehive.callmanager import PhaseChange, SessionRequest
from voicehive.callstore import CallStore, StoreUnavailable
from voicehive.contract import API_VERSION, GROUP, HOTELLINE_KIND, HOTELLINES, VERSION, VOICESESSIONS
from voicehive.lifecycle import CallPhase, EndReason, is_terminal
from voicehive.tracing import SPAN_SESSION_CREATE, Tracing, session_attributes, traceparent_annotations

log = logging.getLogger(__name__)

EXISTED = "existed"  # a create attempt that found the VoiceSession already there (409): done, not an error
LINE_REFRESH_SECONDS = 30.0  # how often the HotelLine directory (room prefixes, retention) is re-listed


class SessionSink(Protocol):
    """Where VoiceSessions live (Kubernetes in production; anything idempotent in tests)."""

    async def create(self, request: SessionRequest, namespace: str,
                     annotations: Mapping[str, str] | None = None) -> bool:
        """Create the VoiceSession (with ``annotations``): True; False if it already existed."""

    async def end(self, ending: SessionEnd) -> None:
        """Record a terminal phase on an existing VoiceSession (no-op if it does not exist)."""


@dataclass(frozen=True)
class SessionEnd:
    """A terminal phase to write onto a VoiceSession's status (queued while Kubernetes is down)."""

    room_hash: str
    namespace: str
    phase: CallPhase
    reason: EndReason | None
    at: float

    def to_json(self) -> dict[str, Any]:
        return {"room_hash": self.room_hash, "namespace": self.namespace, "phase": self.phase.value,
                "reason": self.reason.value if self.reason else None, "at": self.at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionEnd:
        reason = data.get("reason")
        return cls(str(data["room_hash"]), str(data["namespace"]), CallPhase(data["phase"]),
                   EndReason(reason) if reason else None, float(data["at"]))


class LineGone(Exception):
    """The HotelLine of a request no longer exists: the request can never succeed."""


def build_voice_session(request: SessionRequest, namespace: str, owner_uid: str | None,
                        annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The VoiceSession object for a request (pure; validated by the shared pydantic model).

    ``annotations``: the trace context (``contract.ANNOTATION_TRACEPARENT``) when tracing is on.
    """
    spec = VoiceSessionSpec(
        line_ref=LineRef(name=request.line),
        room_hash=request.room_hash,
        caller_hash=request.caller_hash,
        sealed_call_ref=request.sealed_call_ref,
        language=request.language if request.language and re.match(LANGUAGE_PATTERN, request.language) else None,
    )
    name = contract.session_name(request.room_hash)
    body = VoiceSession(spec=spec).to_wire()
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {
            contract.LABEL_LINE: request.line,
            contract.LABEL_CALLER_HASH: contract.caller_label(request.caller_hash),
            contract.LABEL_PART_OF: contract.PART_OF,
            contract.LABEL_MANAGED_BY: "voicehive-orchestrator",
        },
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    if owner_uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": API_VERSION,
                "kind": HOTELLINE_KIND,
                "name": request.line,
                "uid": owner_uid,
                "controller": True,
                "blockOwnerDeletion": False,
            }
        ]
    body["metadata"] = metadata
    return body


class KubeSessions:
    """:class:`SessionSink` on the synchronous ``kubernetes`` client, run in a thread."""

    def __init__(self, api_client: Any, timeout_s: float = 5.0, namespaces: tuple[str, ...] = ()) -> None:
        from kubernetes import client

        self._api: Any = client.CustomObjectsApi(api_client)
        self._timeout = timeout_s
        # The hotel namespaces: lines are listed there only (namespaced Roles, least privilege);
        # empty means every namespace (needs the cluster-wide role).
        self._namespaces = namespaces

    @classmethod
    def from_settings(cls, kubeconfig: str | None, in_cluster: bool, namespaces: tuple[str, ...] = ()) -> KubeSessions:
        from kubernetes import client, config

        if in_cluster:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            return cls(client.ApiClient(), namespaces=namespaces)
        configuration = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
        configuration.retries = 0
        return cls(client.ApiClient(configuration), namespaces=namespaces)

    async def create(self, request: SessionRequest, namespace: str,
                     annotations: Mapping[str, str] | None = None) -> bool:
        return await asyncio.to_thread(self._create, request, namespace, annotations)

    def _create(self, request: SessionRequest, namespace: str, annotations: Mapping[str, str] | None) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            line = self._api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, HOTELLINES, request.line, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                raise LineGone(f"HotelLine {namespace}/{request.line} not found") from None
            raise
        body = build_voice_session(request, namespace, line.get("metadata", {}).get("uid"), annotations)
        try:
            self._api.create_namespaced_custom_object(
                GROUP, VERSION, namespace, VOICESESSIONS, body, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
            return False
        return True

    async def end(self, ending: SessionEnd) -> None:
        await asyncio.to_thread(self._end, ending)

    def _end(self, ending: SessionEnd) -> None:
        from kubernetes.client.exceptions import ApiException

        status: dict[str, Any] = {"phase": ending.phase.value}
        if ending.reason is not None:
            status["endReason"] = ending.reason.value
        status["endedAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ending.at))
        try:
            self._api.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                ending.namespace,
                VOICESESSIONS,
                contract.session_name(ending.room_hash),
                {"status": status},
                _request_timeout=self._timeout,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def list_lines(self) -> list[dict[str, Any]]:
        if not self._namespaces:
            result: dict[str, Any] = await asyncio.to_thread(
                self._api.list_cluster_custom_object, GROUP, VERSION, HOTELLINES, _request_timeout=self._timeout
            )
            return list(result.get("items", []))
        items: list[dict[str, Any]] = []
        for namespace in self._namespaces:
            result = await asyncio.to_thread(
                self._api.list_namespaced_custom_object, GROUP, VERSION, namespace, HOTELLINES,
                _request_timeout=self._timeout,
            )
            items += result.get("items", [])
        return items


@dataclass
class LineInfo:
    namespace: str
    name: str
    retention_days: int


@dataclass
class LineDirectory:
    """HotelLines by room prefix and by name (refreshed from Kubernetes when reachable)."""

    by_prefix: dict[str, LineInfo] = field(default_factory=dict)
    by_name: dict[tuple[str | None, str], LineInfo] = field(default_factory=dict)

    def update(self, items: list[dict[str, Any]]) -> None:
        by_prefix: dict[str, LineInfo] = {}
        by_name: dict[tuple[str | None, str], LineInfo] = {}
        for item in items:
            meta = item.get("metadata", {})
            namespace, name = meta.get("namespace"), meta.get("name")
            if not namespace or not name:
                continue
            retention = item.get("spec", {}).get("retention", {}).get("metadataDays", 30)
            info = LineInfo(namespace, name, int(retention) if isinstance(retention, int) else 30)
            by_prefix[contract.room_prefix(namespace, name)] = info
            by_name[(namespace, name)] = info
            by_name[(None, name)] = info
        self.by_prefix, self.by_name = by_prefix, by_name

    def line_for_room(self, room_name: str) -> tuple[str, str] | None:
        for prefix, info in self.by_prefix.items():
            if room_name.startswith(prefix):
                return info.namespace, info.name
        return None

    def retention_days(self, namespace: str | None, name: str | None) -> int | None:
        if not name:
            return None
        info = self.by_name.get((namespace, name)) or self.by_name.get((None, name))
        return info.retention_days if info else None


class SessionCoordinator:
    """CallManager hook + background loop: VoiceSessions are created (and ended) eventually."""

    def __init__(
        self,
        store: CallStore,
        sink: SessionSink | None,
        default_namespace: str,
        retry_seconds: float = 5.0,
        directory: LineDirectory | None = None,
        list_lines: Any = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.store = store
        self.tracing = tracing or Tracing.disabled()
        self.sink = sink
        self.default_namespace = default_namespace
        self.retry_seconds = retry_seconds
        self.directory = directory or LineDirectory()
        self._list_lines = list_lines
        self._listed_at = -LINE_REFRESH_SECONDS
        self.last_error: str | None = None if sink is not None else "not configured"
        self.created = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._in_flight: set[str] = set()  # call refs being created now: the retry pass leaves them alone

    @property
    def kube_state(self) -> str:
        if self.sink is None:
            return "not configured"
        return "ok" if self.last_error is None else f"unreachable ({self.last_error})"

    async def on_change(self, change: PhaseChange) -> None:
        """CallManager hook: try a new request now, end VoiceSessions of ended calls."""
        if self.sink is None:
            return
        if change.session_request is not None:
            await self._try_create(change.session_request)
        elif is_terminal(change.to_phase) and change.from_phase is not None:
            ending = SessionEnd(
                room_hash=change.room_hash,
                namespace=change.namespace or self.default_namespace,
                phase=change.to_phase,
                reason=change.reason,
                at=change.at,
            )
            if not await self._try_end(ending):
                with contextlib.suppress(StoreUnavailable):
                    await self.store.queue_session_end(change.call_ref, ending.to_json(), change.record.retention_s)

    async def _try_end(self, ending: SessionEnd) -> bool:
        assert self.sink is not None
        try:
            await self.sink.end(ending)
        except Exception as exc:
            self._failed(exc)
            return False
        self.last_error = None
        return True

    async def _try_create(self, request: SessionRequest) -> bool:
        """One attempt, in its own span: the VoiceSession carries that span's trace context."""
        namespace = request.namespace or self.default_namespace
        self._in_flight.add(request.call_ref)
        try:
            return await self._traced_create(request, namespace)
        finally:
            self._in_flight.discard(request.call_ref)

    async def _traced_create(self, request: SessionRequest, namespace: str) -> bool:
        with self.tracing.tracer.start_as_current_span(
            SPAN_SESSION_CREATE, kind=trace.SpanKind.PRODUCER, record_exception=False, set_status_on_exception=False,
            attributes=session_attributes(namespace, request.line, contract.session_name(request.room_hash)),
        ) as span:
            error = await self._create(request, namespace, traceparent_annotations(span))
            if error == EXISTED:  # another attempt created it (and its annotation names that trace)
                span.set_attribute("voicehive.voicesession.existed", True)
            elif error is not None:  # the exception's type only: its text may quote what it failed on
                span.set_status(Status(StatusCode.ERROR, error))
        return error in (None, EXISTED)

    async def _create(self, request: SessionRequest, namespace: str, annotations: dict[str, str]) -> str | None:
        """Create the VoiceSession: None when created, EXISTED, or the error type (queued or dropped)."""
        assert self.sink is not None
        try:
            created = await self.sink.create(request, namespace, annotations)
        except (LineGone, ValueError) as exc:
            # Retrying cannot help: the line is gone, or the request does not make a valid
            # VoiceSession (pydantic's ValidationError is a ValueError). Drop it, say why.
            log.warning("VoiceSession not created; request dropped",
                        extra={"call_ref": request.call_ref, "error_type": type(exc).__name__})
            with contextlib.suppress(StoreUnavailable):
                await self.store.session_created(request.call_ref, marker="dropped")
            return type(exc).__name__
        except Exception as exc:
            self._failed(exc)
            return type(exc).__name__
        self.last_error = None
        self.created += 1
        # If Redis is down now, it stays queued; the next pass re-creates (409) and clears it.
        with contextlib.suppress(StoreUnavailable):
            await self.store.session_created(request.call_ref)
        return None if created is not False else EXISTED

    def _failed(self, exc: Exception) -> None:
        self.last_error = type(exc).__name__
        log.warning("Kubernetes API call failed; will retry", extra={"error_type": type(exc).__name__})

    async def retry_pending(self) -> int:
        """One pass over the queue; returns how many requests remain."""
        now = time.monotonic()
        if self._list_lines is not None and now - self._listed_at >= LINE_REFRESH_SECONDS:
            # Every replica runs this loop: a cluster-wide list every pass would load the API.
            try:
                self.directory.update(await self._list_lines())
                self._listed_at = now
            except Exception as exc:
                self._failed(exc)
        if self.sink is not None:
            for ref, payload in (await self.store.session_ends()).items():
                try:
                    ending = SessionEnd.from_json(payload)
                except (KeyError, TypeError, ValueError):
                    await self.store.session_end_done(ref)
                    continue
                if await self._try_end(ending):
                    await self.store.session_end_done(ref)
        pending = await self.store.pending_sessions()
        remaining = 0
        for ref, payload in pending.items():
            try:
                request = SessionRequest.from_json(payload)
            except (KeyError, TypeError, ValueError):
                await self.store.session_created(ref, marker="dropped")
                continue
            if request.call_ref in self._in_flight:  # the webhook's own attempt is under way
                remaining += 1
                continue
            record = await self.store.get(ref)
            if record is None or is_terminal(record.phase):
                await self.store.session_created(ref, marker="not needed")
                continue
            if self.sink is None or not await self._try_create(request):
                remaining += 1
        return remaining

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.retry_pending()
            except StoreUnavailable:
                pass
            except Exception:
                log.exception("session retry pass failed")
            # Wait for the retry period, or leave at once when asked to stop. (A flag, not only
            # Task.cancel(): the Redis client can swallow a cancellation mid-command.)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.retry_seconds)

    def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self.run(), name="voicesession-retry")

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
            except TimeoutError:
                self._task.cancel()
            self._task = None
