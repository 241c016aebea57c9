# Kopf types handler callbacks as Protocols with every kwarg (namespace: str | None, ...); our
# handlers take the subset they use, which mypy cannot match structurally.
# mypy: disable-error-code="arg-type,dict-item"
"""Thin Kopf handlers: pick fields out of the event, call ``lines``/``sessions``, post Events.

Handlers are module-level functions (importable and testable alone), registered into a fresh
:class:`kopf.OperatorRegistry` per operator instance (``build_registry``), so tests can run, kill
and restart operators in one process, and timer intervals come from the operator's settings.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import kopf

from voicehive import contract, transfer
from voicehive.api.models import HotelLineSpec
from voicehive.contract import API_VERSION, GROUP, HOTELLINES, VERSION, VOICESESSION_KIND, VOICESESSIONS
from voicehive_operator import backstop, lines, pool, recordings, sessions, transfers
from voicehive_operator.kube import KUBE_THREADS
from voicehive_operator.runtime import Runtime
from voicehive_operator.settings import OperatorSettings

log = logging.getLogger(__name__)

HL = (GROUP, VERSION, HOTELLINES)
VS = (GROUP, VERSION, VOICESESSIONS)
PODS = ("", "v1", "pods")
FINALIZER = f"{GROUP}/operator"
KOPF_PREFIX = f"kopf.{GROUP}"
WORKER_POD_LABELS = contract.WORKER_POD_LABELS

LineEntry = tuple[str, HotelLineSpec | None]  # (uid, parsed spec or None when invalid)


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


def _remember(memo: Any, **indexes: Any) -> None:
    """Kopf passes indexes to event and change handlers but not to timers; keep the (live,
    long-lived) index objects on the runtime so timers can read them too."""
    _runtime(memo).indexes.update(indexes)


def _line(line_specs: Mapping[Any, Iterable[LineEntry]], namespace: str, name: str) -> LineEntry | None:
    for entry in line_specs.get((namespace, name), ()):
        return entry
    return None


def _lines_in(runtime: Runtime, namespace: str) -> list[tuple[str, HotelLineSpec]]:
    """Every valid line of a namespace, from the line_specs index."""
    index = runtime.indexes.get("line_specs") or {}
    return [(key[1], entry[1]) for key, entries in index.items() if key[0] == namespace
            for entry in entries if entry[1] is not None]


def _post(body: Any, outcome_changes: list[str], events: list[dict[str, Any]]) -> None:
    """One Kubernetes Event per change and per condition that flipped (plain words only)."""
    for change in outcome_changes:
        kopf.info(body, reason="Reconciled", message=change[:1000])
    for cond in events:
        message = f"{cond['type']} is {cond['status']}: {cond.get('message', '')}"[:1000]
        if cond["status"] == "False":
            kopf.warn(body, reason=cond["reason"], message=message)
        else:
            kopf.info(body, reason=cond["reason"], message=message)


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    """A fresh registry of the handlers below; timer intervals come from ``settings``."""
    registry = kopf.OperatorRegistry()
    kopf.on.startup(registry=registry, id="configure")(configure)
    kopf.on.startup(registry=registry, id="start_backstop")(start_backstop)
    kopf.index(*HL, registry=registry, id="asr_users")(index_asr_users)
    kopf.index(*HL, registry=registry, id="line_specs")(index_line_specs)
    kopf.index(*VS, registry=registry, id="sessions_by_line")(index_sessions_by_line)
    kopf.index(*PODS, registry=registry, id="idle_pods", labels=WORKER_POD_LABELS)(index_idle_pods)
    for on in (kopf.on.update, kopf.on.create, kopf.on.resume):
        on(*HL, registry=registry, id="reconcile_line")(reconcile_line)
    kopf.timer(*HL, registry=registry, id="resync_line", interval=settings.resync_interval_s,
               initial_delay=settings.resync_interval_s)(resync_line)
    kopf.on.delete(*HL, registry=registry, id="delete_line")(delete_line)
    kopf.timer(*HL, registry=registry, id="sweep_sessions", interval=settings.sweep_interval_s,
               initial_delay=settings.sweep_interval_s)(sweep_sessions)
    # resync pace, not sweep pace: recordings live for days, and each pass lists the bucket
    kopf.timer(*HL, registry=registry, id="recording_retention", interval=settings.resync_interval_s,
               initial_delay=settings.sweep_interval_s)(recording_retention)
    kopf.on.event(*HL, registry=registry, id="erase_request",
                  annotations={contract.ANNOTATION_ERASE: kopf.PRESENT})(erase_request)
    # An event handler, not on.create: it also covers sessions that exist when the operator starts,
    # and Kopf persists nothing for it (no annotation patch on the binding path). Binding is
    # idempotent (status + an in-memory record of bound sessions), so repeated events are no-ops.
    kopf.on.event(*VS, registry=registry, id="bind_session")(bind_session)
    kopf.on.event(*VS, registry=registry, id="transfer_request")(transfer_request)
    kopf.on.event(*PODS, registry=registry, id="worker_pod_event", labels=WORKER_POD_LABELS)(worker_pod_event)
    return registry


async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Thread pool for the sync Kubernetes client; Kopf keeps its state in annotations."""
    # Every Kubernetes call runs in a thread (sync client); the default pool of cpu+4 threads
    # would cap the operator at a few concurrent calls under a burst of new sessions.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=KUBE_THREADS, thread_name_prefix="voicehive-kube")
    )
    # Annotations only: our CRDs' structural schemas would prune a status.kopf field.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.execution.max_workers = 16


async def start_backstop(memo: Any, **_: Any) -> None:
    """Touch lines Kopf never handed to a handler (the start-up overlap: backstop.py)."""
    runtime = _runtime(memo)
    runtime.keep_running("backstop", lambda: backstop.run(runtime))


# ------------------------------------------------------------------ indexes

def index_asr_users(namespace: str, name: str, uid: str, spec: Any, meta: Any, memo: Any, **_: Any) -> Any:
    return lines.pool_user(namespace, name, uid, spec, meta, _runtime(memo))


def index_line_specs(namespace: str, name: str, uid: str, spec: Any, meta: Any, memo: Any, **_: Any) -> Any:
    if meta.get("deletionTimestamp"):
        return None
    return {(namespace, name): (uid, lines.usable_spec(spec, _runtime(memo).settings))}


def index_sessions_by_line(namespace: str, name: str, body: Any, spec: Any, **_: Any) -> Any:
    line = (spec.get("lineRef") or {}).get("name")
    if not line:
        return None
    snapshot = {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": body["metadata"].get("uid"),
            "creationTimestamp": body["metadata"].get("creationTimestamp"),
            # a bind retried by the sweep joins the call's trace too (docs/tracing.md)
            "annotations": {k: v for k, v in (body["metadata"].get("annotations") or {}).items()
                            if k == contract.ANNOTATION_TRACEPARENT},
        },
        "spec": {"lineRef": {"name": line}, "roomHash": spec.get("roomHash"), "callerHash": spec.get("callerHash"),
                 "sealedCallRef": spec.get("sealedCallRef")},  # sealed; a retried bind mints the token
        "status": dict(body.get("status") or {}),
    }
    return {(namespace, line): snapshot}


def index_idle_pods(namespace: str, body: Any, **_: Any) -> Any:
    """Idle worker pods by line: a claim picks from memory instead of listing pods."""
    snapshot = sessions.idle_snapshot(body)
    line = (body.get("metadata", {}).get("labels") or {}).get(contract.LABEL_LINE)
    return None if snapshot is None or not line else {(namespace, line): snapshot}


# ------------------------------------------------------------------ HotelLine

async def _reconcile(body: Any, namespace: str, name: str, uid: str, meta: Any, spec: Any, status: Any,
                     patch: kopf.Patch, memo: Any, asr_users: Any) -> None:
    runtime = _runtime(memo)
    by_line = runtime.indexes.get("sessions_by_line")
    outcome = await lines.reconcile(
        runtime, namespace=namespace, name=name, uid=uid, generation=meta.get("generation"),
        raw_spec=dict(spec), status=dict(status or {}), asr_users=asr_users,
        line_sessions=None if by_line is None else list(by_line.get((namespace, name), ())),
    )
    patch.status.update(outcome.status)
    _post(body, outcome.changes, outcome.events)


async def reconcile_line(body: Any, namespace: str, name: str, uid: str, meta: Any, spec: Any, status: Any,
                         patch: kopf.Patch, memo: Any, asr_users: Any, line_specs: Any, sessions_by_line: Any,
                         idle_pods: Any, **_: Any) -> None:
    _remember(memo, asr_users=asr_users, line_specs=line_specs, sessions_by_line=sessions_by_line,
              idle_pods=idle_pods)
    await _reconcile(body, namespace, name, uid, meta, spec, status, patch, memo, asr_users)


async def resync_line(body: Any, namespace: str, name: str, uid: str, meta: Any, spec: Any, status: Any,
                      patch: kopf.Patch, memo: Any, **_: Any) -> None:
    """Drift check: trunk deleted behind our back, lost pods, provider re-checks."""
    asr_users = _runtime(memo).indexes.get("asr_users")
    if meta.get("deletionTimestamp") or asr_users is None:
        return
    await _reconcile(body, namespace, name, uid, meta, spec, status, patch, memo, asr_users)


async def delete_line(body: Any, namespace: str, name: str, uid: str, spec: Any, memo: Any, asr_users: Any,
                      **_: Any) -> None:
    changes = await lines.teardown(_runtime(memo), namespace=namespace, name=name, uid=uid, raw_spec=dict(spec),
                                   asr_users=asr_users)
    for change in changes:
        log.info("hotelline %s/%s: %s", namespace, name, change)


async def sweep_sessions(namespace: str, name: str, meta: Any, memo: Any, **_: Any) -> None:
    """Start timeouts, max call duration and retention for every session of this line."""
    runtime = _runtime(memo)
    line_specs = runtime.indexes.get("line_specs")
    sessions_by_line = runtime.indexes.get("sessions_by_line")
    if meta.get("deletionTimestamp") or line_specs is None or sessions_by_line is None:
        return
    entry = _line(line_specs, namespace, name)
    spec = entry[1] if entry else None
    retention = spec.retention.metadata_days if spec else None
    idle = runtime.indexes.get("idle_pods")
    # Bounded concurrency: a line whose workers all fail to start times out hundreds of calls
    # at once, and one API round trip after the other would outlast the sweep interval.
    limit = asyncio.Semaphore(max(1, runtime.settings.sweep_concurrency))

    async def check(snapshot: Any) -> None:
        async with limit:
            vs_name = snapshot["metadata"]["name"]
            if entry is not None and idle is not None and snapshot["metadata"]["uid"] not in runtime.bound:
                # A bind that failed on a transient error (event handlers are not retried).
                await sessions.bind(runtime, namespace=namespace, name=vs_name, uid=snapshot["metadata"]["uid"],
                                    body=snapshot, line_spec=spec, line_uid=entry[0],
                                    idle=list(idle.get((namespace, name), ())))
            verdict = await sessions.enforce(runtime, namespace=namespace, name=vs_name, body=snapshot,
                                             line_spec=spec, retention_days=retention)
            if verdict.action in {"fail", "end"}:
                kopf.warn(_vs_ref(snapshot), reason=str(verdict.reason), message=verdict.message)
            elif verdict.action == "delete":
                log.info("voicesession %s/%s deleted: %s", namespace, vs_name, verdict.message)

    results = await asyncio.gather(*(check(s) for s in list(sessions_by_line.get((namespace, name), ()))),
                                   return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:  # the others were handled; Kopf logs this one and the next sweep retries
        raise errors[0]


async def recording_retention(body: Any, namespace: str, name: str, meta: Any, memo: Any, **_: Any) -> None:
    """Lifecycle rule on the line's bucket and a sweep of recordings past their expiry."""
    entry = _line(_runtime(memo).indexes.get("line_specs") or {}, namespace, name)
    if meta.get("deletionTimestamp") or entry is None or entry[1] is None or entry[1].recording is None:
        return
    outcome = await recordings.enforce_line(_runtime(memo), namespace, name, entry[1])
    if outcome.rule_written:
        kopf.info(body, reason="RecordingRetention",
                  message=f"Bucket lifecycle rule set: recordings expire after {entry[1].retention.recording_days} day(s).")
    if outcome.expired:
        log.info("hotelline %s/%s: %d recording(s) past retention deleted", namespace, name, len(outcome.expired))


async def erase_request(body: Any, namespace: str, name: str, meta: Any, memo: Any, **_: Any) -> None:
    """Erasure by caller hash: delete every trace, then drop the annotation (idempotent)."""
    runtime = _runtime(memo)
    value = meta.get("annotations", {}).get(contract.ANNOTATION_ERASE)
    hashes = sessions.parse_erase_annotation(value)
    erased = await sessions.erase_callers(runtime, namespace, hashes)
    await recordings.erase_callers(runtime, namespace, hashes, _lines_in(runtime, namespace))
    await runtime.kube.patch_custom(namespace, HOTELLINES, name,
                                    {"metadata": {"annotations": {contract.ANNOTATION_ERASE: None}}})
    if hashes:
        kopf.info(body, reason="Erased",
                  message=f"Erased {erased} call(s) of {len(hashes)} caller(s) on request.")
    else:
        kopf.warn(body, reason="EraseIgnored",
                  message=f"{contract.ANNOTATION_ERASE} held no 64-hex caller hash; nothing erased.")


# ------------------------------------------------------------------ VoiceSession

async def bind_session(event: Any, body: Any, namespace: str, name: str, uid: str, spec: Any, status: Any,
                       memo: Any, line_specs: Any, asr_users: Any, sessions_by_line: Any, idle_pods: Any,
                       **_: Any) -> None:
    _remember(memo, asr_users=asr_users, line_specs=line_specs, sessions_by_line=sessions_by_line,
              idle_pods=idle_pods)
    runtime = _runtime(memo)
    if event.get("type") == "DELETED":
        runtime.bound.pop(uid, None)
        return
    if uid in runtime.bound or (status or {}).get("workerPod") or (status or {}).get("phase") not in (
        None, "Pending"
    ):
        return
    line = (spec.get("lineRef") or {}).get("name", "")
    entry = _line(line_specs, namespace, line)
    if entry is None and line:  # the line's watch event may trail the session's
        found = await runtime.kube.get_custom(namespace, HOTELLINES, line)
        if found is not None and not found["metadata"].get("deletionTimestamp"):
            entry = (found["metadata"]["uid"], lines.parse_spec(found.get("spec") or {})[0])
    result = await sessions.bind(runtime, namespace=namespace, name=name, uid=uid, body=body,
                                 line_spec=entry[1] if entry else None, line_uid=entry[0] if entry else None,
                                 idle=list(idle_pods.get((namespace, line), ())))
    if result is None:
        return
    reason, message = result
    if reason != "WorkerBound":  # success is in status.conditions; an Event per call is only noise
        kopf.warn(body, reason=reason, message=message)
    if entry is not None and entry[1] is not None:
        _refill(runtime, namespace, line, entry)


# ------------------------------------------------------------------ worker pods

async def transfer_request(event: Any, body: Any, namespace: str, name: str, uid: str, spec: Any, status: Any,
                           memo: Any, line_specs: Any, **_: Any) -> None:
    """A worker asked for a front-desk transfer (it holds no SIP grant): do it, report back."""
    if event.get("type") == "DELETED" or transfer.state(status) != transfer.REQUESTED:
        return
    entry = _line(line_specs, namespace, (spec.get("lineRef") or {}).get("name", ""))
    outcome = await transfers.perform(_runtime(memo), namespace=namespace, name=name, uid=uid, body=body,
                                      line_spec=entry[1] if entry else None)
    if outcome == transfer.FAILED:
        kopf.warn(body, reason="TransferFailed", message="The front-desk transfer failed; see the condition.")


async def worker_pod_event(event: Any, body: Any, namespace: str, memo: Any, line_specs: Any,
                           **_: Any) -> None:
    runtime = _runtime(memo)
    deleted = event.get("type") == "DELETED"
    labels = body.get("metadata", {}).get("labels") or {}
    # watched at last: from now on the idle index (or its absence there) tells its state
    runtime.starting.get(f"{namespace}/{labels.get(contract.LABEL_LINE)}", set()).discard(body["metadata"]["name"])
    finished = (body.get("status") or {}).get("phase") in pool.FINISHED_PHASES
    if not (deleted or finished):
        return
    if deleted:
        runtime.reserved.discard(body["metadata"]["name"])
    state = labels.get(contract.LABEL_WORKER_STATE)
    line = labels.get(contract.LABEL_LINE)
    entry = _line(line_specs, namespace, line) if line else None
    if state == contract.WORKER_CLAIMED:
        session = await sessions.worker_gone(runtime, namespace=namespace, pod=body, deleted=deleted,
                                             line_spec=entry[1] if entry else None)
        if session:
            kopf.warn({"apiVersion": API_VERSION, "kind": VOICESESSION_KIND,
                       "metadata": {"name": session, "namespace": namespace}},
                      reason="WorkerLost", message=f"Worker pod {body['metadata']['name']} ended before the call.")
        if finished and not deleted:
            await runtime.kube.delete_pod(namespace, body["metadata"]["name"])
    if line and entry is not None and entry[1] is not None:
        _refill(runtime, namespace, line, entry)


def _refill(runtime: Runtime, namespace: str, line: str, entry: LineEntry) -> None:
    """Top the line's pool up from the idle-pod index (no LIST: this runs after every claim)."""
    uid, spec = entry
    if spec is None:
        return

    async def work() -> None:
        index = runtime.indexes.get("idle_pods")
        if index is None:  # no index yet (before the first event handler ran): the authoritative pass
            await pool.reconcile(runtime, namespace, line, uid, spec)
        else:
            await pool.top_up(runtime, namespace, line, uid, spec, lambda: list(index.get((namespace, line), ())))

    runtime.kick(f"refill:{namespace}/{line}", work)


def _vs_ref(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": VOICESESSION_KIND, "metadata": dict(snapshot["metadata"])}
