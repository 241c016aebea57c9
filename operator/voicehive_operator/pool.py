"""The warm pool: idle, started worker pods per line, so a call never waits for a pod start.

``plan`` is pure (which pods to start, which to remove); ``reconcile`` applies it from a LIST
(the authoritative pass: line create/update/resync). Fresh pods are started before stale ones are
removed, so a spec change never empties the pool. ``top_up`` is the hot path after each claim:
it counts from the operator's watch-fed index of idle pods plus the pods it started whose watch
event has not arrived yet (``Runtime.starting``), so 20 claims a second cost no LIST at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass
from typing import Any

from voicehive import contract
from voicehive.api.models import HotelLineSpec
from voicehive_operator import builders, metrics
from voicehive_operator.runtime import Runtime

log = logging.getLogger(__name__)

FINISHED_PHASES = frozenset({"Failed", "Succeeded"})


def is_ready(pod: dict[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def is_gone(pod: dict[str, Any]) -> bool:
    """Deleted, deleting, or exited: a pod that will never serve a call."""
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return True
    return (pod.get("status") or {}).get("phase") in FINISHED_PHASES


@dataclass(frozen=True)
class PoolPlan:
    create: int
    delete: tuple[str, ...]
    idle_current: int  # idle pods on the current spec once the plan is applied (started, maybe not Ready yet)
    ready: int  # of those, pods whose Ready condition is True
    claimed: int


def plan(pods: list[dict[str, Any]], desired: int, spec_hash: str, reserved: frozenset[str] | set[str] = frozenset()
         ) -> PoolPlan:
    """``reserved`` pods are being claimed right now: neither counted as idle nor removed."""
    idle = [
        p
        for p in pods
        if p["metadata"].get("labels", {}).get(contract.LABEL_WORKER_STATE) == contract.WORKER_IDLE
        and p["metadata"]["name"] not in reserved
    ]
    claimed = [
        p
        for p in pods
        if p["metadata"].get("labels", {}).get(contract.LABEL_WORKER_STATE) == contract.WORKER_CLAIMED and not is_gone(p)
    ]
    remove: list[str] = []
    current: list[dict[str, Any]] = []
    for pod in idle:
        if pod["metadata"].get("deletionTimestamp"):
            continue  # already on its way out
        if is_gone(pod) or pod["metadata"].get("labels", {}).get(contract.LABEL_SPEC_HASH) != spec_hash:
            remove.append(pod["metadata"]["name"])
        else:
            current.append(pod)
    # Keep ready pods first, then the oldest (they are closest to ready).
    current.sort(key=lambda p: (not is_ready(p), p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
    surplus = current[desired:]
    remove.extend(p["metadata"]["name"] for p in surplus)
    kept = current[:desired]
    create = max(0, desired - len(kept))
    return PoolPlan(create=create, delete=tuple(remove), idle_current=len(kept) + create,
                    ready=sum(1 for p in kept if is_ready(p)), claimed=len(claimed))


async def list_line_pods(runtime: Runtime, namespace: str, line: str, state: str | None = None) -> list[
    dict[str, Any]
]:
    """Worker pods of a line; ``state`` narrows to idle or claimed ones on the server side
    (a busy line has hundreds of claimed pods that a claim or a refill need not read)."""
    labels = {**builders.common_labels(contract.COMPONENT_WORKER), contract.LABEL_LINE: line}
    if state is not None:
        labels[contract.LABEL_WORKER_STATE] = state
    return await runtime.kube.list_pods(namespace, labels)


def top_up_count(idle: Iterable[Mapping[str, Any]], desired: int, spec_hash: str,
                 reserved: Set[str], starting: Set[str]) -> int:
    """Pure: pods to start so that idle (indexed, current spec, unclaimed) + starting = desired."""
    indexed = {str(p.get("name")) for p in idle}
    usable = sum(1 for p in idle if p.get("specHash") == spec_hash and p.get("name") not in reserved)
    in_flight = sum(1 for name in starting if name not in indexed)
    return max(0, desired - usable - in_flight)


async def _start_pods(runtime: Runtime, namespace: str, line: str, line_uid: str, spec: HotelLineSpec,
                      count: int) -> int:
    """Create ``count`` idle pods in batches; remember them as starting until the watch shows them."""
    settings = runtime.settings
    starting = runtime.starting.setdefault(f"{namespace}/{line}", set())
    batch = max(1, settings.pool_create_batch)
    started = 0
    while started < count:
        bodies = [
            builders.worker_pod(namespace=namespace, line_name=line, line_uid=line_uid, spec=spec, settings=settings)
            for _ in range(min(batch, count - started))
        ]
        starting.update(body["metadata"]["name"] for body in bodies)
        results = await asyncio.gather(*(runtime.kube.create_pod(namespace, body) for body in bodies),
                                       return_exceptions=True)
        for body, result in zip(bodies, results, strict=True):
            if isinstance(result, BaseException):
                starting.discard(body["metadata"]["name"])
        failed = [r for r in results if isinstance(r, BaseException)]
        started += len(bodies) - len(failed)
        if failed:
            raise failed[0]
    return started


async def top_up(runtime: Runtime, namespace: str, line: str, line_uid: str, spec: HotelLineSpec,
                 idle: Callable[[], Iterable[Mapping[str, Any]]]) -> int:
    """Start the pods a claim just took out of the pool, counted from memory (no LIST).

    ``idle`` reads the idle-pod index; it is read under the pool lock, after any reconcile that
    held it. Only ever adds: stale or surplus pods are the authoritative ``reconcile``'s to remove.
    """
    if line_uid in runtime.deleted_lines:
        return 0
    spec_hash = builders.worker_spec_hash(namespace, line, spec, runtime.settings)
    async with runtime.lock(f"pool:{namespace}/{line}"):
        entries = list(idle())
        starting = runtime.starting.setdefault(f"{namespace}/{line}", set())
        starting.difference_update(str(p.get("name")) for p in entries)  # the index has them now
        missing = top_up_count(entries, spec.workers.warm_pool, spec_hash, runtime.reserved, starting)
        return await _start_pods(runtime, namespace, line, line_uid, spec, missing) if missing else 0


@metrics.pooled
async def reconcile(
    runtime: Runtime, namespace: str, line: str, line_uid: str, spec: HotelLineSpec, *, count_claimed: bool = False
) -> tuple[PoolPlan, list[str]]:
    """Bring the line's pool to ``spec.workers.warmPool`` idle pods on the current spec.

    ``count_claimed`` also lists the claimed pods (for ``status.activeCalls``); the refill after
    each claim skips that, it only needs the idle ones.
    """
    settings = runtime.settings
    spec_hash = builders.worker_spec_hash(namespace, line, spec, settings)
    async with runtime.lock(f"pool:{namespace}/{line}"):
        pods = await list_line_pods(runtime, namespace, line, None if count_claimed else contract.WORKER_IDLE)
        desired = 0 if line_uid in runtime.deleted_lines else spec.workers.warm_pool
        todo = plan(pods, desired, spec_hash, runtime.reserved)
        # a quorum LIST sees every create that returned: nothing is in flight any more
        runtime.starting.pop(f"{namespace}/{line}", None)
        changes: list[str] = []
        await _start_pods(runtime, namespace, line, line_uid, spec, todo.create)
        if todo.create:
            changes.append(f"started {todo.create} warm worker pod(s)")
        if todo.delete:
            await asyncio.gather(*(runtime.kube.delete_pod(namespace, name) for name in todo.delete))
            changes.append(f"removed {len(todo.delete)} stale or exited idle worker pod(s)")
    return todo, changes


async def remove_idle(runtime: Runtime, namespace: str, line: str) -> int:
    """Delete every idle pod of a line (line deletion); claimed pods belong to their calls."""
    async with runtime.lock(f"pool:{namespace}/{line}"):
        pods = await list_line_pods(runtime, namespace, line, contract.WORKER_IDLE)
        idle = [p["metadata"]["name"] for p in pods if p["metadata"]["name"] not in runtime.reserved]
        await asyncio.gather(*(runtime.kube.delete_pod(namespace, name) for name in idle))
        return len(idle)
