"""Entry point of ``voicehive operator``: build the runtime, register handlers, run Kopf.

HA: with ``--peering NAME`` several replicas run; Kopf's peering (a KopfPeering or
ClusterKopfPeering object, CRDs in ``crds/kopf-peering.yaml``) lets the highest priority one
work while the others stand by and take over when its heartbeat stops.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Sequence
from typing import Any

import kopf

from voicehive import contract, heap
from voicehive.tracing import Tracing
from voicehive_operator.handlers import build_registry
from voicehive_operator.kube import Kube
from voicehive_operator.livekit_sip import LiveKitSip
from voicehive_operator.runtime import Runtime
from voicehive_operator.settings import OperatorSettings


def build_runtime(settings: OperatorSettings, kube: Kube) -> Runtime:
    redis_client: Any = None
    if settings.redis_url:
        from voicehive.redis_client import connect_url

        redis_client = connect_url(settings.redis_url)  # single, Sentinel or Cluster (docs/redis.md)
    sip = LiveKitSip(settings.livekit_url, settings.livekit_api_key, settings.livekit_api_secret,
                     timeout_s=settings.livekit_timeout_s)
    return Runtime(settings=settings, kube=kube, sip=sip, redis=redis_client, tracing=Tracing.start(settings.tracing))


def kopf_settings(clusterwide: bool = False) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # Serving named namespaces, Kopf would still list every namespace (and CRD) to follow changes:
    # forbidden by the namespaced Roles the chart grants, it retries for a minute before starting.
    settings.scanning.disabled = not clusterwide
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    # Only our worker pods are streamed (a server-side selector), not every Pod of the cluster.
    settings.watching.label_selectors["v1", "pods"] = contract.worker_pod_selector()
    return settings


def peering_priority(pod_name: str | None) -> int:
    """A replica's Kopf peering priority, stable for its Pod name and distinct between replicas.

    Kopf pauses *every* peer that shares the highest priority ("Pausing all operators, including
    self"), so replicas of one Deployment must not all run at the default 0. A 31-bit hash of
    the Pod's name makes a collision between two replicas about one in two billion.
    """
    if not pod_name:
        return 1
    return int.from_bytes(hashlib.sha256(pod_name.encode()).digest()[:4], "big") % (2**31 - 1) + 1


def run(
    namespaces: Sequence[str] = (),
    all_namespaces: bool = False,
    peering: str | None = None,
    *,
    priority: int | None = None,
    settings: OperatorSettings | None = None,
) -> None:
    """Run the operator until SIGTERM. Without ``peering`` it runs standalone (one replica).

    ``priority`` orders peered replicas (higher wins; default :func:`peering_priority` of the
    Pod's name); settings come from the environment (``VOICEHIVE_OPERATOR_*``, ``LIVEKIT_*``,
    ``VOICEHIVE_REDIS_URL``) unless given.
    """
    from voicehive.audit import configure_json_logging

    configure_json_logging(logging.INFO)
    # Kopf reports every handler and timer run at INFO; keep its per-object chatter to problems.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if not namespaces and not all_namespaces:
        raise SystemExit("voicehive operator: give --namespace NAME (repeatable) or --all-namespaces")
    settings = settings or OperatorSettings.from_env()
    kube = Kube.from_environment()
    runtime = build_runtime(settings, kube)
    runtime.namespaces = () if all_namespaces else tuple(namespaces)
    memo = kopf.Memo()
    memo.runtime = runtime
    registry = build_registry(settings)

    @kopf.on.login(registry=registry, id="login")
    def login(**_: Any) -> Any:
        return kube.connection_info()

    @kopf.on.startup(registry=registry, id="freeze_startup_heap")
    def freeze_startup_heap(**_: Any) -> None:
        """After Kopf's own start-up: see ``voicehive.heap`` (the binding tail was full GCs)."""
        heap.freeze_startup_heap()

    metrics_server = runtime.metrics.serve(settings.metrics_port) if settings.metrics_port else None
    try:
        kopf.run(
            registry=registry,
            settings=kopf_settings(clusterwide=all_namespaces),
            memo=memo,
            clusterwide=all_namespaces,
            namespaces=list(namespaces),
            standalone=peering is None,
            peering_name=peering,
            priority=priority if priority is not None else peering_priority(os.environ.get(contract.ENV_POD_NAME)),
            liveness_endpoint=settings.liveness_endpoint,
        )
    finally:
        if metrics_server is not None:
            metrics_server.stop()
        asyncio.run(runtime.close())
