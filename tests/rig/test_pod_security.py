"""Pods the operator builds are admitted where hotels run: the real apiserver's PodSecurity
admission at the `restricted` level (the example overlay labels hotel namespaces so)."""

from __future__ import annotations

from typing import Any

import kubernetes
import pytest

from tests.operator.test_builders import SETTINGS, line_spec
from voicehive_operator import builders

pytestmark = pytest.mark.rig

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}


def _dry_run_pod(core: kubernetes.client.CoreV1Api, namespace: str, pod: dict[str, Any]) -> str | None:
    """Create the Pod with dryRun=All; the apiserver's refusal message, or None when admitted."""
    try:
        core.create_namespaced_pod(namespace, pod, dry_run="All")
    except kubernetes.client.ApiException as exc:
        return str(exc.body)
    return None


@pytest.fixture
def restricted_namespace(rig_api: kubernetes.client.ApiClient, rig_namespace: str) -> str:
    core = kubernetes.client.CoreV1Api(rig_api)
    core.patch_namespace(rig_namespace, {"metadata": {"labels": RESTRICTED}})
    return rig_namespace


def test_riva_pods_are_admitted_under_restricted(rig_api: kubernetes.client.ApiClient, restricted_namespace: str) -> None:
    spec = line_spec()
    pool = builders.riva_pool_for(restricted_namespace, spec, SETTINGS)
    assert pool is not None
    deployment = builders.riva_deployment(pool, 1, SETTINGS)
    template = deployment["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "riva-check", **template["metadata"]},
           "spec": template["spec"]}
    refusal = _dry_run_pod(kubernetes.client.CoreV1Api(rig_api), restricted_namespace, pod)
    assert refusal is None, refusal
    for container in template["spec"]["containers"]:
        assert {"cpu", "memory"} <= set(container["resources"].get("requests", {})), container["name"]


def test_worker_pods_are_admitted_under_restricted(rig_api: kubernetes.client.ApiClient, restricted_namespace: str) -> None:
    pod = builders.worker_pod(namespace=restricted_namespace, line_name="grand-hotel", line_uid="uid-1",
                              spec=line_spec(), settings=SETTINGS)
    pod["metadata"].pop("ownerReferences")
    refusal = _dry_run_pod(kubernetes.client.CoreV1Api(rig_api), restricted_namespace, pod)
    assert refusal is None, refusal
