"""VoiceSession handling: bind a call to a worker pod, end stuck calls, retention and erasure.

Worker assignment contract (the worker implements the other side; docs/operator.md):

1. The operator claims an idle pod of the line by patching its labels
   ``worker-state=claimed`` and ``session=<VoiceSession name>`` and replacing its
   ownerReferences with the VoiceSession (garbage collection then ends the pod with the call),
   guarded by the pod's resourceVersion so two claims never win the same pod.
2. It writes the VoiceSession status ``phase=Starting``, ``workerPod=<pod>`` and condition
   ``WorkerBound``, and only then labels the VoiceSession ``worker=<pod>``: the worker watches
   VoiceSessions with that label selector, so it never sees a session before Starting is stored.
3. The worker opens ``spec.sealedCallRef``, joins the room and moves the phase to Active and
   Ended (or Failed) itself. The operator fails a session stuck in Pending/Starting past
   ``workers.startTimeoutSeconds``, whose pod died, and ends one past the max call duration.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from voicehive import contract
from voicehive.api.models import HotelLineSpec
from voicehive.callstore import CallStore
from voicehive.contract import VOICESESSIONS
from voicehive.lifecycle import CallPhase, EndReason, can_transition, is_terminal
from voicehive.privacy import call_ref_of, is_hash
from voicehive.tracing import ATTR_POD, SPAN_BIND, parent_from_annotations, session_attributes
from voicehive_operator import builders, conditions, metrics, pool, tokens, transfers
from voicehive_operator.kube import Conflict
from voicehive_operator.runtime import Runtime

log = logging.getLogger(__name__)

WORKER_BOUND = "WorkerBound"


def phase_of(status: Mapping[str, Any] | None) -> CallPhase:
    try:
        return CallPhase((status or {}).get("phase") or CallPhase.PENDING.value)
    except ValueError:
        return CallPhase.PENDING


def _condition(type_: str, ok: bool, reason: str, message: str, now: dt.datetime) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": conditions.rfc3339(now),
    }


@dataclass(frozen=True)
class Binding:
    pod: str
    from_pool: bool


def idle_snapshot(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the claim path needs to know about an idle worker pod (kept in a Kopf index)."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(contract.LABEL_WORKER_STATE) != contract.WORKER_IDLE or pool.is_gone(dict(pod)):
        return None
    return {
        "name": meta.get("name"),
        "resourceVersion": meta.get("resourceVersion"),
        "specHash": labels.get(contract.LABEL_SPEC_HASH),
        "ready": pool.is_ready(dict(pod)),
        "created": meta.get("creationTimestamp") or "",
    }


async def _claim_idle(runtime: Runtime, namespace: str, spec_hash: str, session: str, owner: dict[str, Any],
                      idle: Iterable[Mapping[str, Any]]) -> str | None:
    """Claim one idle pod without a lock and without a LIST.

    Candidates come from the in-memory index of idle pods; ``runtime.reserved`` (checked and set
    without an ``await`` in between, so atomically for asyncio) keeps two concurrent claims off the
    same pod, and the resourceVersion precondition keeps a stale index entry from winning.
    """
    candidates = sorted(
        (p for p in idle if p.get("specHash") == spec_hash and p.get("name") not in runtime.reserved),
        key=lambda p: (not p.get("ready"), p.get("created") or "", p.get("name") or ""),
    )
    for pod in candidates:
        name = str(pod["name"])
        if name in runtime.reserved:
            continue
        runtime.reserved.add(name)
        patch = {
            "metadata": {
                "resourceVersion": pod.get("resourceVersion"),
                "labels": {contract.LABEL_WORKER_STATE: contract.WORKER_CLAIMED, contract.LABEL_SESSION: session},
                "ownerReferences": [owner],
            }
        }
        try:
            if await runtime.kube.patch_pod(namespace, name, patch) is not None:
                return name
        except Conflict:
            runtime.reserved.discard(name)  # changed since indexed; it may be claimable later
            continue
    return None


@metrics.claimed
async def bind(runtime: Runtime, *, namespace: str, name: str, uid: str, body: Mapping[str, Any],
               line_spec: HotelLineSpec | None, line_uid: str | None,
               idle: Iterable[Mapping[str, Any]] = ()) -> tuple[str, str] | None:
    """Bind a Pending session to a worker pod; returns (event reason, message) or None (no-op)."""
    status = body.get("status") or {}
    phase = phase_of(status)
    if phase is not CallPhase.PENDING or status.get("workerPod") or uid in runtime.bound:
        return None  # already bound or already past binding (duplicate/out-of-order event)
    runtime.bound[uid] = ""  # claimed by this call before the first await: a racing event skips it
    line = str(((body.get("spec") or {}).get("lineRef") or {}).get("name", ""))
    # a child of the orchestrator's span whose context the VoiceSession carries (docs/tracing.md)
    with runtime.tracing.tracer.start_as_current_span(
        SPAN_BIND, context=parent_from_annotations((body.get("metadata") or {}).get("annotations")),
        kind=trace.SpanKind.CONSUMER, record_exception=False, set_status_on_exception=False,
        attributes=session_attributes(namespace, line, name),
    ) as span:
        try:
            result = await _bind(runtime, namespace=namespace, name=name, uid=uid, body=body, status=status,
                                 phase=phase, line_spec=line_spec, line_uid=line_uid, idle=idle)
        except BaseException as exc:
            runtime.bound.pop(uid, None)  # not bound: the next event or the sweep retries
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        if result is not None:
            span.set_attribute("voicehive.bind.result", result[0])
            if result[0] != "WorkerBound":
                span.set_status(Status(StatusCode.ERROR, result[0]))
        if runtime.bound.get(uid):
            span.set_attribute(ATTR_POD, runtime.bound[uid])
        return result


async def _bind(runtime: Runtime, *, namespace: str, name: str, uid: str, body: Mapping[str, Any],
                status: Mapping[str, Any], phase: CallPhase, line_spec: HotelLineSpec | None, line_uid: str | None,
                idle: Iterable[Mapping[str, Any]]) -> tuple[str, str] | None:
    line = (body.get("spec") or {}).get("lineRef", {}).get("name", "")
    now = runtime.settings.clock.now()
    if line_spec is None or line_uid is None:
        await fail(runtime, namespace, name, status, EndReason.UNKNOWN,
                   f"HotelLine {line} does not exist, or its spec is invalid or refused; no worker can serve this call.")
        return ("BindFailed", f"HotelLine {line} is missing or invalid")
    owner = builders.session_owner(name, uid)
    spec_hash = builders.worker_spec_hash(namespace, line, line_spec, runtime.settings)
    pod = await _claim_idle(runtime, namespace, spec_hash, name, owner, idle)
    from_pool = pod is not None
    if pod is None:
        body_pod = builders.worker_pod(namespace=namespace, line_name=line, line_uid=line_uid, spec=line_spec,
                                       settings=runtime.settings)
        body_pod["metadata"]["labels"].update(
            {contract.LABEL_WORKER_STATE: contract.WORKER_CLAIMED, contract.LABEL_SESSION: name}
        )
        body_pod["metadata"]["ownerReferences"] = [owner]
        created = await runtime.kube.create_pod(namespace, body_pod)
        pod = str(created["metadata"]["name"])
    trace.get_current_span().set_attribute("voicehive.worker.from_pool", from_pool)
    how = "a warm pod" if from_pool else "a new pod (the warm pool was empty)"
    new_status: dict[str, Any] = {
        "workerPod": pod,
        "conditions": [_condition(WORKER_BOUND, True, "Claimed" if from_pool else "Started",
                                  f"Served by {how}: {pod}.", now)],
    }
    if can_transition(phase, CallPhase.STARTING):
        new_status["phase"] = CallPhase.STARTING.value
    if not status.get("createdAt"):
        new_status["createdAt"] = body.get("metadata", {}).get("creationTimestamp") or conditions.rfc3339(now)
    winner = await _record_binding(runtime, namespace, name, body, new_status, pod)
    runtime.bound[uid] = winner or ""
    if winner != pod:
        return None
    labels = {contract.LABEL_WORKER: pod, contract.LABEL_LINE: line}
    caller = (body.get("spec") or {}).get("callerHash")
    if isinstance(caller, str) and caller:
        labels[contract.LABEL_CALLER_HASH] = contract.caller_label(caller)
    metadata: dict[str, Any] = {"labels": labels}
    sealed = tokens.sealed_room_token(runtime.settings, namespace=namespace, line=line, session=name, pod=pod,
                                      sealed_call_ref=(body.get("spec") or {}).get("sealedCallRef"),
                                      spec=line_spec)
    if sealed is not None:  # written with the label the worker selects on: it never sees one without the other
        metadata["annotations"] = {contract.ANNOTATION_SEALED_TOKEN: sealed}
    await runtime.kube.patch_custom(namespace, VOICESESSIONS, name, {"metadata": metadata})
    return ("WorkerBound", f"Call served by {how}: {pod}.")


async def _record_binding(runtime: Runtime, namespace: str, name: str, body: Mapping[str, Any],
                          new_status: dict[str, Any], pod: str) -> str | None:
    """Write ``pod`` into the session unless someone bound it first; returns the session's pod.

    Guarded by the session's resourceVersion: while two operator replicas overlap at start-up,
    both bind the same new session, each with a warm Pod of its own. The loser deletes the Pod
    it claimed (no worker was told about it) and the pool refills, so a call never has two
    workers and no Pod stays claimed for a call it will never serve."""
    version = (body.get("metadata") or {}).get("resourceVersion")
    for _ in range(3):  # a conflict may also be an unrelated write (labels, annotations): re-read
        try:
            await runtime.kube.patch_custom_status(namespace, VOICESESSIONS, name,
                                                   {"metadata": {"resourceVersion": version}, "status": new_status}
                                                   if version else {"status": new_status})
            return pod
        except Conflict:
            current = await runtime.kube.get_custom(namespace, VOICESESSIONS, name) or {}
            status = current.get("status") or {}
            if status.get("workerPod") or not current or is_terminal(phase_of(status)):
                await runtime.kube.delete_pod(namespace, pod)
                log.info("session %s was bound by another replica; released worker pod %s", name, pod)
                return status.get("workerPod")
            version = (current.get("metadata") or {}).get("resourceVersion")
    raise Conflict(f"VoiceSession {name} kept changing while being bound")


async def fail(runtime: Runtime, namespace: str, name: str, status: Mapping[str, Any], reason: EndReason,
               message: str, *, target: CallPhase = CallPhase.FAILED) -> bool:
    """Move a session to Failed/Ended with a reason, unless it is already terminal."""
    phase = phase_of(status)
    if not can_transition(phase, target):
        return False
    now = conditions.rfc3339(runtime.settings.clock.now())
    await runtime.kube.patch_custom_status(
        namespace, VOICESESSIONS, name,
        {"status": {"phase": target.value, "endReason": f"{reason.value}: {message}"[:1024], "endedAt": now}},
    )
    return True


@dataclass(frozen=True)
class Verdict:
    """What the periodic check decided for one session."""

    action: str  # "none" | "fail" | "end" | "delete"
    reason: EndReason | None = None
    message: str = ""


def _started_at(status: Mapping[str, Any]) -> dt.datetime | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == WORKER_BOUND:
            return conditions.parse_time(cond.get("lastTransitionTime"))
    return None


def judge(body: Mapping[str, Any], line_spec: HotelLineSpec | None, now: dt.datetime,
          retention_days: int | None) -> Verdict:
    """Pure decision for one session: timeouts, max duration, retention."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    phase = phase_of(status)
    created = conditions.parse_time(status.get("createdAt")) or conditions.parse_time(meta.get("creationTimestamp"))
    if created is not None and retention_days is not None and now - created > dt.timedelta(days=retention_days):
        return Verdict("delete", None, f"older than the line's retention of {retention_days} day(s)")
    if is_terminal(phase) or line_spec is None:
        return Verdict("none")
    workers = line_spec.workers
    if phase in (CallPhase.PENDING, CallPhase.STARTING):
        since = _started_at(status) if phase is CallPhase.STARTING else created
        since = since or created
        if since is not None and now - since > dt.timedelta(seconds=workers.start_timeout_seconds):
            where = "bound to a worker" if phase is CallPhase.STARTING else "waiting for a worker"
            return Verdict(
                "fail", EndReason.START_TIMEOUT,
                f"the worker did not answer within {workers.start_timeout_seconds} s ({where})",
            )
    if phase is CallPhase.ACTIVE:
        answered = conditions.parse_time(status.get("answeredAt")) or _started_at(status) or created
        if answered is not None and now - answered > dt.timedelta(seconds=workers.max_call_duration_seconds):
            return Verdict(
                "end", EndReason.MAX_DURATION,
                f"the call passed the line's maximum duration of {workers.max_call_duration_seconds} s",
            )
    return Verdict("none")


@metrics.swept
async def enforce(runtime: Runtime, *, namespace: str, name: str, body: Mapping[str, Any],
                  line_spec: HotelLineSpec | None, retention_days: int | None) -> Verdict:
    verdict = judge(body, line_spec, runtime.settings.clock.now(), retention_days)
    status = body.get("status") or {}
    if verdict.action == "fail" and verdict.reason is not None:
        if await fail(runtime, namespace, name, status, verdict.reason, verdict.message):
            await _release_pod(runtime, namespace, status)
            if verdict.reason is EndReason.START_TIMEOUT:  # the caller heard nobody: not left there
                handed = await transfers.hand_over(runtime, namespace=namespace, name=name, body=body,
                                                   line_spec=line_spec, why=transfers.NO_ANSWER)
                return replace(verdict, message=f"{verdict.message}. {handed}")
            return verdict
        return Verdict("none")
    if verdict.action == "end" and verdict.reason is not None:
        if await fail(runtime, namespace, name, status, verdict.reason, verdict.message, target=CallPhase.ENDED):
            await _release_pod(runtime, namespace, status)  # SIGTERM: the worker says goodbye and hangs up
            return verdict
        return Verdict("none")
    if verdict.action == "delete":
        await delete_session(runtime, namespace, name, body)
    return verdict


async def _release_pod(runtime: Runtime, namespace: str, status: Mapping[str, Any]) -> None:
    pod = status.get("workerPod")
    if pod:
        await runtime.kube.delete_pod(namespace, str(pod))


async def erase_redis_call(runtime: Runtime, room_hash: str | None, caller_hash: str | None) -> None:
    """Delete one call's Redis state (retention); the keys also expire by TTL on their own."""
    if runtime.redis is None or not room_hash:
        return
    await CallStore(runtime.redis).delete_call(call_ref_of(room_hash), caller_hash)


async def delete_session(runtime: Runtime, namespace: str, name: str, body: Mapping[str, Any]) -> None:
    spec = body.get("spec") or {}
    await erase_redis_call(runtime, spec.get("roomHash"), spec.get("callerHash"))
    await _release_pod(runtime, namespace, body.get("status") or {})
    await runtime.kube.delete_custom(namespace, VOICESESSIONS, name)


async def worker_gone(runtime: Runtime, *, namespace: str, pod: Mapping[str, Any], deleted: bool,
                      line_spec: HotelLineSpec | None) -> str | None:
    """A claimed worker pod exited or vanished: fail its session if the call was not over, and
    hand its caller over (the room has no agent any more)."""
    labels = pod.get("metadata", {}).get("labels") or {}
    session = labels.get(contract.LABEL_SESSION)
    if not session:
        return None
    body = await runtime.kube.get_custom(namespace, VOICESESSIONS, session)
    if body is None:
        return None
    status = body.get("status") or {}
    if is_terminal(phase_of(status)):
        return None
    pod_phase = (pod.get("status") or {}).get("phase")
    what = "was deleted" if deleted else f"exited ({pod_phase})"
    if await fail(runtime, namespace, session, status, EndReason.WORKER_LOST,
                  f"worker pod {pod['metadata']['name']} {what} before the call ended"):
        await transfers.hand_over(runtime, namespace=namespace, name=session, body=body, line_spec=line_spec,
                                  why=transfers.WORKER_STOPPED)
        return str(session)
    return None


def parse_erase_annotation(value: str | None) -> list[str]:
    """Caller hashes from the erase annotation: comma/space separated 64-hex values."""
    if not value:
        return []
    return [item for item in value.replace(",", " ").split() if is_hash(item)]


async def erase_callers(runtime: Runtime, namespace: str, caller_hashes: list[str]) -> int:
    """Delete every trace of these callers: their VoiceSessions, worker pods and Redis state."""
    erased = 0
    for caller in caller_hashes:
        # By spec, not by label: a session not bound yet carries no caller label.
        everything = await runtime.kube.list_custom(namespace, VOICESESSIONS)
        names = {s["metadata"]["name"]: s for s in everything if (s.get("spec") or {}).get("callerHash") == caller}
        for name, body in names.items():
            await delete_session(runtime, namespace, name, body)
            erased += 1
        if runtime.redis is not None:
            await CallStore(runtime.redis).erase_caller(caller)
    return erased
