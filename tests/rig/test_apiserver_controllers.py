"""What only a real control plane does: garbage collection by ownerReferences, and Kopf
driving handlers, finalizers and /status through a real apiserver's watch."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
from typing import Any

import kopf
import kubernetes
import pytest
from kubernetes.client import V1Container, V1ObjectMeta, V1OwnerReference, V1Pod, V1PodSpec

from tests.fixtures.rig import Rig
from tests.rig.conftest import GROUP, VERSION, Custom, eventually
from tests.rig.test_apiserver_crds import _good_hotelline

pytestmark = pytest.mark.rig


def _pod(name: str, owner: dict[str, Any] | None = None) -> V1Pod:
    references = None
    if owner is not None:
        references = [
            V1OwnerReference(
                api_version=owner["apiVersion"],
                kind=owner["kind"],
                name=owner["metadata"]["name"],
                uid=owner["metadata"]["uid"],
                controller=True,
                block_owner_deletion=True,
            )
        ]
    return V1Pod(
        metadata=V1ObjectMeta(name=name, owner_references=references),
        spec=V1PodSpec(containers=[V1Container(name="worker", image="registry.invalid/voicehive-worker:test")]),
    )


def _pod_names(core: kubernetes.client.CoreV1Api, namespace: str) -> list[str]:
    return sorted(str(p.metadata.name) for p in core.list_namespaced_pod(namespace).items if p.metadata)


@pytest.mark.parametrize("propagation", ["Background", "Foreground"])
def test_deleting_an_owner_deletes_its_pods(
    propagation: str, rig_crds: list[str], rig_api: kubernetes.client.ApiClient, rig_namespace: str
) -> None:
    custom = Custom(rig_api, rig_namespace)
    core = kubernetes.client.CoreV1Api(rig_api)
    owner = custom.create("hotellines", _good_hotelline())
    bystander = core.create_namespaced_pod(rig_namespace, _pod("bystander"))
    for i in range(3):
        core.create_namespaced_pod(rig_namespace, _pod(f"worker-{i}", owner))
    assert _pod_names(core, rig_namespace) == ["bystander", "worker-0", "worker-1", "worker-2"]

    custom.delete("hotellines", owner["metadata"]["name"], propagation=propagation)

    eventually(
        lambda: _pod_names(core, rig_namespace) == ["bystander"],
        timeout=90,
        what="the garbage collector deleting owned pods",
    )
    assert not custom.exists("hotellines", owner["metadata"]["name"])
    survivor = core.read_namespaced_pod("bystander", rig_namespace)
    assert survivor.metadata and bystander.metadata and survivor.metadata.uid == bystander.metadata.uid


async def test_kopf_operator_against_the_real_apiserver(
    rig: Rig, rig_crds: list[str], rig_api: kubernetes.client.ApiClient, rig_namespace: str
) -> None:
    """A Kopf operator with a finalizer: create -> status via /status, delete -> cleanup runs first."""
    registry = kopf.OperatorRegistry()
    created_seen = asyncio.Event()
    deleted_seen = asyncio.Event()
    assert rig.kube_url and rig.kube_token
    server, token = rig.kube_url, rig.kube_token

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=server, ca_path=rig.kube_ca, token=token, scheme="Bearer")

    @kopf.on.create(GROUP, VERSION, "hotellines", registry=registry)
    def created(spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
        patch.status["warmWorkers"] = len(spec["phoneNumbers"])
        created_seen.set()

    @kopf.on.delete(GROUP, VERSION, "hotellines", registry=registry)
    def deleted(**_: Any) -> None:
        deleted_seen.set()

    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    settings.posting.enabled = False
    settings.watching.server_timeout = 10
    settings.persistence.finalizer = "voicehive.io/rig-smoke"
    stop_flag: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ready_flag = threading.Event()
    tasks = await kopf.spawn_tasks(
        registry=registry,
        settings=settings,
        namespaces=[rig_namespace],
        standalone=True,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )
    runner = asyncio.create_task(kopf.run_tasks(tasks, ignored=set(asyncio.all_tasks())))
    custom = Custom(rig_api, rig_namespace)
    line = copy.deepcopy(_good_hotelline())
    name = line["metadata"]["name"]
    try:
        await asyncio.to_thread(custom.create, "hotellines", line)
        await asyncio.wait_for(created_seen.wait(), timeout=60)

        def status_and_finalizer() -> dict[str, Any] | None:
            obj = custom.get("hotellines", name)
            finalizers = obj["metadata"].get("finalizers", [])
            ok = obj.get("status", {}).get("warmWorkers") == 2 and "voicehive.io/rig-smoke" in finalizers
            return obj if ok else None

        obj = await asyncio.to_thread(eventually, status_and_finalizer, 60, 0.2, "kopf's status patch and finalizer")
        assert obj["spec"]["displayName"] == line["spec"]["displayName"]

        await asyncio.to_thread(custom.delete, "hotellines", name)
        await asyncio.wait_for(deleted_seen.wait(), timeout=60)
        await asyncio.to_thread(
            eventually, lambda: not custom.exists("hotellines", name), 60, 0.2, "finalizer released, object gone"
        )
    finally:
        stop_flag.set_result(None)
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
            await asyncio.wait_for(runner, timeout=30)
