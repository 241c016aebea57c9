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
from typing import Any

from voicehive import contract
from voicehive_operator import builders, metrics, riva_tls
from voicehive_operator.builders import RivaPool
from voicehive_operator.kube import secret_text
from voicehive_operator.riva_tls import PoolTls
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
            tls = await _pool_tls(runtime, pool, changes) if settings.riva_tls else None
            body = builders.riva_deployment(pool, replicas, settings, tls[0].fingerprint if tls else "")
            if before is not None and builders.riva_container_names(before) != builders.riva_container_names(body):
                # TLS switched on or off (or an upgrade from before TLS): the containers are replaced
                # and the rolling update (maxUnavailable 0) keeps the old Pods serving until the new
                # ones are Ready, so ASR is not down for a model load
                await runtime.kube.replace_pod_containers(body)
                changes.append(f"turned TLS {'on' if settings.riva_tls else 'off'} for Riva {pool.name}")
            deployed = await runtime.kube.apply_deployment(body)
            if tls is not None:
                owner = builders.deployment_owner(deployed)
                await runtime.kube.apply_configmap(builders.riva_proxy_configmap(pool, settings, owner))
                material, stored_owners = tls
                if stored_owners != [owner]:  # just written, or a new Deployment to own it
                    await runtime.kube.set_secret_owner(namespace, builders.riva_tls_secret_name(pool), owner)
                runtime.riva_cas[f"{namespace}/{pool.name}"] = material.ca_pem
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
                runtime.riva_cas.pop(f"{namespace}/{name}", None)  # its Secret goes with it (owner GC)
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


async def _pool_tls(runtime: Runtime, pool: RivaPool, changes: list[str]) -> tuple[PoolTls, list[Any]]:
    """The pool's certificate material as stored, issued or renewed (and written) when needed,
    and the stored Secret's owners. Keys are never logged or put in an Event.

    WHY written before the Deployment, first writer wins: two operator replicas can both find
    no Secret (both run for a moment at start-up, and a lease handover overlaps). Had each
    written its own certificate, the Deployment would roll twice and lines could trust the CA
    of the certificate that lost; the one that loses the create reads and uses the winner's.
    """
    name = builders.riva_tls_secret_name(pool)
    for _attempt in range(3):
        stored = await runtime.kube.read_secret(pool.namespace, name)
        existing = riva_tls.from_secret(secret_text(stored)) if stored is not None else None
        material, reason = riva_tls.ensure(existing, pool.name, pool.namespace, runtime.settings.clock.now())
        if reason is None and stored is not None:
            return material, list((stored.get("metadata") or {}).get("ownerReferences") or [])
        if await runtime.kube.write_secret_once(builders.riva_tls_secret(pool, material, None), stored):
            what = "issued" if existing is None else "renewed"
            why = "" if existing is None else f" ({(reason or '').removeprefix('ca: ')})"
            changes.append(f"{what} the TLS certificate of Riva {pool.name}{why}")
            return material, list(((stored or {}).get("metadata") or {}).get("ownerReferences") or [])
    raise RuntimeError(f"the TLS Secret of Riva {pool.name} kept changing while it was being written")


async def pool_ca(runtime: Runtime, pool: RivaPool) -> str | None:
    """The CA certificate callers of a TLS pool trust: remembered from the last reconcile, else
    read from the pool's Secret (an operator restarted before its first pass)."""
    key = f"{pool.namespace}/{pool.name}"
    if key not in runtime.riva_cas:
        ca = await runtime.kube.read_secret_key(pool.namespace, builders.riva_tls_secret_name(pool), riva_tls.CA_CERT)
        if ca is None:
            return None
        runtime.riva_cas[key] = ca
    return runtime.riva_cas[key]


@metrics.riva_observed
async def availability(runtime: Runtime, pool: RivaPool) -> tuple[int, int]:
    """(available replicas, desired replicas) of a pool's Deployment."""
    deployment = await runtime.kube.get_deployment(pool.namespace, pool.name)
    if deployment is None:
        return 0, 0
    status = deployment.get("status") or {}
    return int(status.get("availableReplicas") or 0), int(deployment.get("spec", {}).get("replicas") or 0)
