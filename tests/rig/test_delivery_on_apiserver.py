"""The chart and the Kustomize base on a real kube-apiserver: they install, RBAC grants exactly
what each component needs (checked by the apiserver's own authorizer), and nothing drifts once
the apiserver has defaulted the objects (what Argo CD would report as OutOfSync)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from tests.fixtures.rig import ROOT, KubectlRunner, Rig

pytestmark = pytest.mark.rig

CHART = ROOT / "charts" / "voicehive"


def helm(helm_bin: str, rig: Rig, *args: str) -> subprocess.CompletedProcess[str]:
    assert rig.kubeconfig is not None
    state = rig.kubeconfig.parent
    env = {
        **os.environ,
        "KUBECONFIG": str(rig.kubeconfig),
        "HELM_CACHE_HOME": str(state / "helm"),
        "HELM_CONFIG_HOME": str(state / "helm"),
        "HELM_DATA_HOME": str(state / "helm"),
    }
    return subprocess.run([helm_bin, *args], capture_output=True, text=True, timeout=180, check=False, env=env)


def can_i(kubectl: KubectlRunner, who: str, verb: str, resource: str, namespace: str | None = None) -> bool:
    resource, _, subresource = resource.partition("/")  # kubectl wants --subresource separately
    args = ["auth", "can-i", verb, resource, f"--as={who}"]
    args += [f"--subresource={subresource}"] if subresource else []
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    result = kubectl(*args, check=False)
    assert result.stdout.strip() in {"yes", "no"}, result.stderr
    return result.stdout.strip() == "yes"


@pytest.fixture
def other_namespace(rig_api: kubernetes.client.ApiClient) -> Iterator[str]:
    core = kubernetes.client.CoreV1Api(rig_api)
    name = f"rig-other-{uuid.uuid4().hex[:6]}"
    core.create_namespace(kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def test_helm_install_and_least_privilege(
    rig: Rig, helm_bin: str, kubectl: KubectlRunner, rig_crds: list[str], rig_namespace: str, other_namespace: str
) -> None:
    release = f"vh-{uuid.uuid4().hex[:6]}"
    installed = helm(
        helm_bin,
        rig,
        "install",
        release,
        str(CHART),
        "--namespace",
        rig_namespace,
        "--set",
        "crds.install=false",  # rig_crds applied them for the whole session
        "--set",
        f"operator.peering={release}",
        "--set",
        f"operator.watchNamespaces={{{other_namespace}}}",
    )
    assert installed.returncode == 0, installed.stderr
    try:
        status = helm(helm_bin, rig, "status", release, "--namespace", rig_namespace, "-o", "json")
        assert '"status":"deployed"' in status.stdout.replace(" ", "")
        deployments = kubectl("get", "deployments", "-n", rig_namespace, "-o", "json").stdout
        replicas = {d["metadata"]["name"]: d["spec"]["replicas"] for d in yaml.safe_load(deployments)["items"]}
        assert replicas == {f"{release}-voicehive-operator": 2, f"{release}-voicehive-orchestrator": 2}
        kubectl("get", "kopfpeering", release, "-n", other_namespace)  # the peering object Kopf's replicas share

        sa = "system:serviceaccount:{}:{}"
        worker = sa.format(rig_namespace, "voicehive-worker")
        assert can_i(kubectl, worker, "patch", "voicesessions.voicehive.io/status", rig_namespace)
        assert can_i(kubectl, worker, "get", "voicesessions.voicehive.io/status", rig_namespace)
        assert not can_i(kubectl, worker, "patch", "voicesessions.voicehive.io", rig_namespace)  # spec is not its
        assert not can_i(kubectl, worker, "get", "secrets", rig_namespace)
        assert not can_i(kubectl, worker, "list", "pods", rig_namespace)
        assert not can_i(kubectl, worker, "patch", "voicesessions.voicehive.io/status", other_namespace)
        other_worker = sa.format(other_namespace, "voicehive-worker")
        assert can_i(kubectl, other_worker, "patch", "voicesessions.voicehive.io/status", other_namespace)

        operator = sa.format(rig_namespace, "voicehive-operator")
        assert can_i(kubectl, operator, "watch", "hotellines.voicehive.io", other_namespace)
        assert can_i(kubectl, operator, "patch", "hotellines.voicehive.io/status", other_namespace)
        assert can_i(kubectl, operator, "create", "pods", other_namespace)
        assert can_i(kubectl, operator, "create", "deployments.apps", other_namespace)
        assert can_i(kubectl, operator, "get", "secrets", other_namespace)
        assert can_i(kubectl, operator, "patch", "kopfpeerings.kopf.dev", other_namespace)
        assert not can_i(kubectl, operator, "patch", "clusterkopfpeerings.kopf.dev")  # namespaced by default
        assert not can_i(kubectl, operator, "list", "secrets", other_namespace)
        assert not can_i(kubectl, operator, "delete", "hotellines.voicehive.io", other_namespace)
        assert not can_i(kubectl, operator, "create", "clusterroles.rbac.authorization.k8s.io")

        orchestrator = sa.format(rig_namespace, "voicehive-orchestrator")
        assert can_i(kubectl, orchestrator, "create", "voicesessions.voicehive.io", other_namespace)
        assert not can_i(kubectl, orchestrator, "patch", "hotellines.voicehive.io", other_namespace)
        assert not can_i(kubectl, orchestrator, "get", "secrets", other_namespace)
    finally:
        removed = helm(helm_bin, rig, "uninstall", release, "--namespace", rig_namespace, "--wait")
        assert removed.returncode == 0, removed.stderr
    assert kubectl("get", "clusterrole", f"{release}-voicehive-operator-cluster", check=False).returncode != 0


def is_subset(desired: Any, live: Any, path: str = "") -> list[str]:
    """Paths where ``live`` differs from ``desired`` (fields only in ``live`` are defaults, fine)."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return [f"{path}: {live!r} is not an object"]
        return [p for key, value in desired.items() for p in is_subset(value, live.get(key), f"{path}.{key}")]
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return [f"{path}: {live!r} != {desired!r}"]
        return [p for i, (d, v) in enumerate(zip(desired, live, strict=True)) for p in is_subset(d, v, f"{path}[{i}]")]
    return [] if desired == live else [f"{path}: live {live!r} != desired {desired!r}"]


def test_kustomize_base_applies_without_drift(
    rig: Rig, kubectl: KubectlRunner, rig_crds: list[str], rig_api: kubernetes.client.ApiClient
) -> None:
    """Server-side apply the base, read every object back: the apiserver's defaults add fields but
    change none we set, so a GitOps diff stays empty (no normalised quantities, no pruned {})."""
    rendered = kubectl("kustomize", str(ROOT / "manifests" / "base")).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=argocd-like", "-f", "-", stdin=rendered)
    try:
        drift: list[str] = []
        for doc in docs:
            ref = [doc["kind"], doc["metadata"]["name"], "-o", "yaml"]
            if doc["metadata"].get("namespace"):
                ref += ["-n", doc["metadata"]["namespace"]]
            live = yaml.safe_load(kubectl("get", *ref).stdout)
            drift += [f"{doc['kind']}/{doc['metadata']['name']}{p}" for p in is_subset(doc, live)]
        assert drift == []
    finally:
        # Everything but the CRDs (other tests' objects live under them).
        keep = {"CustomResourceDefinition"}
        others = "---\n".join(yaml.safe_dump(d) for d in docs if d["kind"] not in keep)
        kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=others)
