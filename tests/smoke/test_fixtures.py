"""The test rig's own fixtures work: a real redis-server and a Kubernetes API that Kopf can drive."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import redis
import yaml

from tests.fixtures.kube import KubeAPI
from tests.fixtures.redis import RedisServer


def test_redis_server_is_real_and_survives_restart(redis_server: RedisServer, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("vh:test:durable", "1")
    info = client.info("server")
    assert info["tcp_port"] == redis_server.port
    redis_server.restart()
    client = redis.Redis.from_url(redis_url)
    assert client.get("vh:test:durable") == b"1"  # AOF persisted it across the restart


def _hotelline(name: str) -> dict[str, Any]:
    """The complete example line (a real apiserver enforces the schema's required fields)."""
    examples = Path(__file__).resolve().parents[2] / "examples" / "hotelline.yaml"
    (line,) = [d for d in yaml.safe_load_all(examples.read_text()) if d and d["kind"] == "HotelLine"]
    line["metadata"] = {"name": name}
    line["spec"].update(hotelId="smoke", displayName="Smoke Hotel")
    return dict(line)


def test_kube_api_serves_our_crds_like_an_apiserver(kube: KubeAPI, namespace: str) -> None:
    api = kubernetes.client.CustomObjectsApi(kube.api_client())
    created = api.create_namespaced_custom_object("voicehive.io", "v1alpha1", namespace, "hotellines", _hotelline("a"))
    assert created["metadata"]["uid"] and created["metadata"]["generation"] == 1
    patched = api.patch_namespaced_custom_object_status(
        "voicehive.io", "v1alpha1", namespace, "hotellines", "a", {"status": {"activeCalls": 2}, "spec": {"hotelId": "x"}}
    )
    assert patched["status"]["activeCalls"] == 2
    assert patched["spec"]["hotelId"] == "smoke"  # /status never changes spec
    assert patched["metadata"]["generation"] == 1
    patched = api.patch_namespaced_custom_object(
        "voicehive.io", "v1alpha1", namespace, "hotellines", "a", {"spec": {"hotelId": "y"}, "status": {"activeCalls": 9}}
    )
    assert patched["spec"]["hotelId"] == "y" and patched["status"]["activeCalls"] == 2
    assert patched["metadata"]["generation"] == 2
    listed = api.list_namespaced_custom_object("voicehive.io", "v1alpha1", namespace, "hotellines")
    assert [item["metadata"]["name"] for item in listed["items"]] == ["a"]


async def test_kopf_handler_runs_against_the_kube_api(kube: KubeAPI, namespace: str) -> None:
    """A trivial Kopf operator, run in this loop, reacts to a HotelLine and patches its status."""
    registry = kopf.OperatorRegistry()
    seen = asyncio.Event()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kube.kopf_connection()  # type: ignore[no-any-return]

    @kopf.on.create("voicehive.io", "v1alpha1", "hotellines", registry=registry)
    def created(patch: kopf.Patch, **_: Any) -> None:
        patch.status["warmWorkers"] = 3
        seen.set()

    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    settings.posting.enabled = False
    settings.watching.server_timeout = 10
    stop_flag: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ready_flag = threading.Event()
    tasks = await kopf.spawn_tasks(
        registry=registry,
        settings=settings,
        namespaces=[namespace],
        standalone=True,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )
    runner = asyncio.create_task(kopf.run_tasks(tasks, ignored=set(asyncio.all_tasks())))
    try:
        api = kubernetes.client.CustomObjectsApi(kube.api_client())
        await asyncio.to_thread(
            api.create_namespaced_custom_object, "voicehive.io", "v1alpha1", namespace, "hotellines", _hotelline("b")
        )
        await asyncio.wait_for(seen.wait(), timeout=60)
        for _ in range(600):  # poll up to 60 s for kopf's status patch to land
            obj = await asyncio.to_thread(
                api.get_namespaced_custom_object, "voicehive.io", "v1alpha1", namespace, "hotellines", "b"
            )
            if obj.get("status", {}).get("warmWorkers") == 3:
                break
            await asyncio.sleep(0.1)
        assert obj["status"]["warmWorkers"] == 3
    finally:
        stop_flag.set_result(None)
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
            await asyncio.wait_for(runner, timeout=30)
