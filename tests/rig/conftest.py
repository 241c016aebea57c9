"""Shared helpers for tests that need the rig's real kube-apiserver (tests/fixtures/rig.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import kubernetes
import pytest

from tests.fixtures.rig import Rig, apply_crds

T = TypeVar("T")


@pytest.fixture(scope="session")
def rig_api(rig: Rig) -> Iterator[kubernetes.client.ApiClient]:
    """An ApiClient authenticated as the rig's admin, verifying the apiserver's certificate."""
    client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(rig.kubeconfig)
    )
    yield client
    client.close()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="session")
def rig_crds(rig_api: kubernetes.client.ApiClient) -> list[str]:
    """Our CRDs, applied and Established on the real apiserver."""
    return apply_crds(rig_api)


@pytest.fixture
def rig_namespace(rig_api: kubernetes.client.ApiClient) -> Iterator[str]:
    """A fresh namespace on the real apiserver, deleted (by the namespace controller) afterwards."""
    core = kubernetes.client.CoreV1Api(rig_api)
    name = f"rig-{uuid.uuid4().hex[:8]}"
    core.create_namespace(kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name)))
    yield name
    try:
        core.delete_namespace(name)
    except kubernetes.client.ApiException as exc:
        if exc.status != 404:
            raise


def eventually(check: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.2, what: str = "") -> T:
    """Poll ``check`` until it returns a truthy value (generous timeout; no bare sleeps)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return cast(T, last)
        time.sleep(interval)
    raise AssertionError(f"not reached within {timeout}s: {what or check} (last: {last!r})")


GROUP, VERSION = "voicehive.io", "v1alpha1"


class Custom:
    """Our custom resources in one namespace, typed (CustomObjectsApi returns ``object``)."""

    def __init__(self, client: kubernetes.client.ApiClient, namespace: str) -> None:
        self.api = kubernetes.client.CustomObjectsApi(client)
        self.namespace = namespace

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        return cast(
            dict[str, Any], self.api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, body)
        )

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name))

    def patch(self, plural: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return cast(
            dict[str, Any], self.api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name, body)
        )

    def patch_status(self, plural: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self.api.patch_namespaced_custom_object_status(GROUP, VERSION, self.namespace, plural, name, body),
        )

    def replace(self, plural: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self.api.replace_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name, body),
        )

    def delete(self, plural: str, name: str, propagation: str | None = None) -> None:
        self.api.delete_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, name, propagation_policy=propagation
        )

    def exists(self, plural: str, name: str) -> bool:
        try:
            self.get(plural, name)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True
