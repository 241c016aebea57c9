"""Shared Riva ASR Deployments: sized from the lines that use them, removed when none does.

WHY an index: the replica count of a shared pool depends on every line using it. Kopf keeps an
in-memory index of HotelLines by pool key (``handlers.asr_users``), so a reconcile sums the
users without listing all lines, and a deleted or moved line drops out of the sum at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from voicehive import contract
from voicehive_operator import builders, metrics
from voicehive_operator.builders import RivaPool
from voicehive_operator.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolUser:
    """One line's claim on a pool, as stored in the Kopf index."""

    line: str  # namespace/name
    uid: str
    max_calls: int
    pool: RivaPool


def desired_pools(
    users: Mapping[str, Iterable[PoolUser]], gone: frozenset[str] | set[str] = frozenset()
) -> dict[str, tuple[RivaPool, int]]:
    """Pool key -> (pool, summed max concurrent calls) for every key with at least one live user.

    ``gone`` holds uids of lines being deleted: Kopf keeps an object in its index until the
    object is really gone, which is after our deletion handler has run.
    """
    result: dict[str, tuple[RivaPool, int]] = {}
    for key, all_entries in users.items():
        entries = [e for e in all_entries if e.uid not in gone]
        if entries:
            result[key] = (entries[0].pool, sum(e.max_calls for e in entries))
    return result


async def reconcile_namespace(
    runtime: Runtime, namespace: str, users: Mapping[str, Iterable[PoolUser]]
) -> list[str]:
    """Apply every used pool in ``namespace`` and delete unused ones; returns what changed."""
    settings = runtime.settings
    changes: list[str] = []

    def wanted_now() -> dict[str, tuple[RivaPool, int]]:
        return {key: v for key, v in desired_pools(users, runtime.deleted_lines).items() if v[0].namespace == namespace}

    def summary(wanted: dict[str, tuple[RivaPool, int]]) -> dict[str, int]:
        return {key: total for key, (_pool, total) in wanted.items()}

    def fresh(wanted: dict[str, tuple[RivaPool, int]]) -> bool:
        """Applied this very desired state recently: skip (drift is re-checked once per resync)."""
        last = runtime.riva_applied.get(namespace)
        return last is not None and last[0] == summary(wanted) and (
            time.monotonic() - last[1] < settings.resync_interval_s
        )

    if fresh(wanted_now()):
        return changes
    async with runtime.lock(f"riva:{namespace}"):
        wanted = wanted_now()
        if fresh(wanted):
            return changes
        for pool, total in wanted.values():
            replicas = builders.riva_replicas(total, settings.streams_per_gpu, pool.gpus_per_replica)
            before = await runtime.kube.get_deployment(namespace, pool.name)
            await runtime.kube.apply_deployment(builders.riva_deployment(pool, replicas, settings))
            await runtime.kube.apply_service(builders.riva_service(pool, settings))
            if before is None:
                changes.append(f"created Riva {pool.name} ({pool.model} in {pool.region}, {replicas} replica(s))")
            elif before.get("spec", {}).get("replicas") != replicas:
                changes.append(f"scaled Riva {pool.name} to {replicas} replica(s)")
        selector = builders.common_labels(contract.COMPONENT_ASR)
        for deployment in await runtime.kube.list_deployments(namespace, selector):
            key = deployment["metadata"].get("labels", {}).get(contract.LABEL_ASR_POOL)
            if key not in wanted:
                name = deployment["metadata"]["name"]
                # the Service first: nothing is routed to pods that are about to go
                await runtime.kube.delete_service(namespace, name)
                await runtime.kube.delete_deployment(namespace, name)
                changes.append(f"removed Riva {name}: no line uses it any more")
        for service in await runtime.kube.list_services(namespace, selector):
            key = service["metadata"].get("labels", {}).get(contract.LABEL_ASR_POOL)
            if key not in wanted:
                await runtime.kube.delete_service(namespace, service["metadata"]["name"])
        runtime.riva_applied[namespace] = (summary(wanted), time.monotonic())
    return changes


@metrics.riva_observed
async def availability(runtime: Runtime, pool: RivaPool) -> tuple[int, int]:
    """(available replicas, desired replicas) of a pool's Deployment."""
    deployment = await runtime.kube.get_deployment(pool.namespace, pool.name)
    if deployment is None:
        return 0, 0
    status = deployment.get("status") or {}
    return int(status.get("availableReplicas") or 0), int(deployment.get("spec", {}).get("replicas") or 0)
