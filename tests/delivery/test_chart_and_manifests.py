"""The Helm chart and the Kustomize base: they render, every object validates against the
Kubernetes 1.34 schemas, RBAC is least privilege, and nothing is defined twice.

helm comes from the rig's cache (rig/build.sh helm) or PATH; kubectl (for kustomize) from PATH.
Tests that need them skip with the reason when they are missing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.fixtures.rig import ROOT
from voicehive import rbac

CHART = ROOT / "charts" / "voicehive"
CRD_DIR = ROOT / "crds"
BASE = ROOT / "manifests" / "base"
OVERLAYS = sorted(p.parent for p in (ROOT / "manifests" / "overlays").glob("*/kustomization.yaml"))
KUBERNETES_VERSION = "1.34"
# Kinds whose schema is a CRD of ours or Kopf's (validated as CRDs, not as built-ins).
CUSTOM_KINDS = {"ClusterKopfPeering", "KopfPeering", "HotelLine", "VoiceSession"}

# Environment variables that carry key material: each must be a secretKeyRef, never a value.
SECRET_ENV = {
    "LIVEKIT_API_KEY",
    "LIVEKIT_API_SECRET",
    "VOICEHIVE_PII_KEY",
    "VOICEHIVE_TRANSCRIPT_KEY",
    "VOICEHIVE_AGENT_TOKEN",
}

VARIANT_VALUES = {
    "defaults": [],
    "namespaced-plain-http-redis-secret": [
        "--set",
        "operator.watchNamespaces={hotels,resorts}",
        "--set",
        "orchestrator.tls.enabled=false",
        "--set",
        "redis.urlSecret.name=redis-url",
        "--set",
        "worker.namespaces={hotels,resorts}",
        "--set",
        "image.tag=1.2.3",
        "--set",
        "orchestrator.replicas=3",
    ],
}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, check=False, env=env)


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


# The chart requires the hotel namespaces (least privilege, issue 11); a variant may override.
HOTELS = ("--set", "operator.watchNamespaces={hotels}")


def helm_template(helm: str, *extra: str, crds: bool = False) -> list[dict[str, Any]]:
    args = [helm, "template", "voicehive", str(CHART), "--namespace", "voicehive", *HOTELS, *extra]
    if crds:
        args.append("--include-crds")
    result = run(*args)
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)


def validate_all(docs: list[dict[str, Any]]) -> None:
    problems = []
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert problems == []


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


# --- one source of truth ------------------------------------------------------------------


def test_chart_crds_are_the_repository_crds() -> None:
    """charts/voicehive/files/crds holds links to crds/ (no copies that could go stale)."""
    for crd in sorted(CRD_DIR.glob("*.yaml")):
        in_chart = CHART / "files" / "crds" / crd.name
        assert in_chart.is_symlink() and in_chart.resolve() == crd.resolve(), f"{in_chart} must link to {crd}"
    kopf = CHART / "files" / "crds" / "kopf-peerings.kopf.dev.yaml"
    assert kopf.resolve() == (CRD_DIR / "kopf-peerings.kopf.dev.yaml").resolve()  # HA peering ships in crds/


def test_crds_kustomization_lists_every_crd() -> None:
    """crds/Kustomization lets manifests/base include crds/ unchanged; it must list every file."""
    listed = yaml.safe_load((CRD_DIR / "Kustomization").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in CRD_DIR.glob("*.yaml"))


def test_kustomize_base_is_the_rendered_chart(helm_bin: str) -> None:
    """manifests/base/voicehive.yaml is `helm template` of the chart: `make manifests` if this fails."""
    rendered = helm_template(helm_bin, "--skip-tests", "--set", "crds.install=false")  # as rig/render-manifests.sh
    committed = documents((BASE / "voicehive.yaml").read_text())
    assert committed == rendered, "manifests/base/voicehive.yaml is stale: run `make manifests`"


# --- helm ---------------------------------------------------------------------------------


def test_helm_lint_strict(helm_bin: str) -> None:
    result = run(helm_bin, "lint", "--strict", str(CHART), *HOTELS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("variant", sorted(VARIANT_VALUES))
def test_helm_template_renders_valid_objects(helm_bin: str, variant: str) -> None:
    docs = helm_template(helm_bin, *VARIANT_VALUES[variant], crds=True)
    validate_all(docs)
    crds = by_kind(docs, "CustomResourceDefinition")
    assert {"hotellines.voicehive.io", "voicesessions.voicehive.io", "clusterkopfpeerings.kopf.dev"} <= set(crds)
    deployments = by_kind(docs, "Deployment")
    operator, orchestrator = deployments["voicehive-operator"], deployments["voicehive-orchestrator"]
    assert operator["spec"]["replicas"] == 2
    assert "--peering=voicehive" in operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert orchestrator["spec"]["replicas"] >= 2
    assert (
        by_kind(docs, "Service")["voicehive-orchestrator"]["spec"]["selector"]
        == (orchestrator["spec"]["selector"]["matchLabels"])
    )
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
            env = {e["name"]: e for e in container.get("env", [])}
            for name in SECRET_ENV & set(env):  # keys only ever by reference to a Secret
                assert "secretKeyRef" in env[name].get("valueFrom", {}), f"{name} must come from a Secret"
    orchestrator_env = {e["name"] for e in orchestrator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert orchestrator_env >= SECRET_ENV


def test_namespaced_variant_scopes_rbac_and_peering(helm_bin: str) -> None:
    docs = helm_template(helm_bin, *VARIANT_VALUES["namespaced-plain-http-redis-secret"])
    roles = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "voicehive-operator"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["hotels", "resorts"]
    peerings = by_kind(docs, "KopfPeering")
    assert peerings and not by_kind(docs, "ClusterKopfPeering")
    cluster_rules = by_kind(docs, "ClusterRole")["voicehive-operator-cluster"]["rules"]
    assert not any("pods" in rule["resources"] for rule in cluster_rules), "namespaced mode leaked cluster-wide pods"
    args = by_kind(docs, "Deployment")["voicehive-operator"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=hotels" in args and "--all-namespaces" not in args
    orchestrator = by_kind(docs, "Deployment")["voicehive-orchestrator"]["spec"]["template"]["spec"]["containers"][0]
    assert "--plain-http" in orchestrator["args"]
    assert orchestrator["image"] == "ghcr.io/voicehive/orchestrator:1.2.3"
    redis = next(e for e in orchestrator["env"] if e["name"] == "VOICEHIVE_REDIS_URL")
    assert redis["valueFrom"]["secretKeyRef"] == {"name": "redis-url", "key": "url"}
    worker_sas = [
        d["metadata"]["namespace"]
        for d in docs
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "voicehive-worker"
    ]
    assert sorted(worker_sas) == ["hotels", "resorts", "voicehive"]


def test_rbac_is_least_privilege(helm_bin: str) -> None:
    docs = helm_template(helm_bin)
    for doc in docs:
        for rule in doc.get("rules", []) if doc["kind"] in {"Role", "ClusterRole"} else []:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], doc["metadata"]["name"]
            if "secrets" in rule["resources"]:
                # read a line's key refs, write the per-line Secret; never list, watch or delete
                assert set(rule["verbs"]) <= {"get", "create", "patch"}, doc["metadata"]["name"]
    worker = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "voicehive-worker"]
    assert [r["rules"] for r in worker] == [rbac.worker_rules()] * 2, "the chart's worker Role is voicehive/rbac.py's"
    operator = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "voicehive-operator"]
    assert [r["metadata"]["namespace"] for r in operator] == ["hotels"]
    granted = {
        (g, r, v) for rule in operator[0]["rules"] for g in rule["apiGroups"] for r in rule["resources"]
        for v in rule["verbs"]
    }
    for needed in [
        ("voicehive.io", "hotellines", "watch"),
        ("voicehive.io", "voicesessions/status", "patch"),
        ("voicehive.io", "hotellines/finalizers", "update"),
        ("", "pods", "create"),
        ("apps", "deployments", "create"),
        ("", "services", "create"),
        ("", "secrets", "get"),
        ("", "configmaps", "create"),  # each Riva pool's nginx configuration
        ("", "events", "create"),
        ("kopf.dev", "kopfpeerings", "patch"),
    ]:
        assert needed in granted, needed
    for forbidden in [
        ("", "secrets", "list"),
        ("", "secrets", "delete"),
        ("", "configmaps", "delete"),  # owner GC removes a pool's ConfigMap with its Deployment
        ("", "pods", "update"),
        ("voicehive.io", "hotellines", "delete"),
        ("", "namespaces", "delete"),
    ]:
        assert forbidden not in granted, forbidden


# --- kustomize ----------------------------------------------------------------------------


def kustomize(kubectl_bin: str, path: Path) -> list[dict[str, Any]]:
    result = run(kubectl_bin, "kustomize", str(path), env={**os.environ, "KUBECONFIG": "/dev/null"})
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)


@pytest.mark.parametrize("path", [BASE, *OVERLAYS], ids=lambda p: str(p.relative_to(ROOT)))
def test_kustomize_renders_valid_objects_with_sync_waves(kubectl_bin: str, path: Path) -> None:
    docs = kustomize(kubectl_bin, path)
    validate_all(docs)
    waves = {
        (d["kind"], d["metadata"]["name"]): int(d["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])
        for d in docs
    }
    crd_waves = [w for (kind, _), w in waves.items() if kind == "CustomResourceDefinition"]
    other_waves = [w for (kind, _), w in waves.items() if kind != "CustomResourceDefinition"]
    assert len(crd_waves) == 4 and max(crd_waves) < min(other_waves), "CRDs must sync first"
    workloads = [w for (kind, _), w in waves.items() if kind == "Deployment"]
    rbac = [w for (kind, _), w in waves.items() if kind in {"ClusterRole", "Role", "ServiceAccount"}]
    assert max(rbac) < min(workloads), "RBAC and ServiceAccounts before the workloads that use them"
    deployments = by_kind(docs, "Deployment")
    assert deployments["voicehive-operator"]["spec"]["replicas"] == 2


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("livekit.url=ftp://livekit", "/livekit/url"),
        ("operator.watchNamespaces={Hotels_EU}", "/operator/watchNamespaces/0"),
        ("orchestrator.replicas=0", "/orchestrator/replicas"),
        ("keysSecretName=Keys!", "/keysSecretName"),
    ],
)
def test_bad_values_are_refused_naming_the_value(helm_bin: str, setting: str, named: str) -> None:
    """values.schema.json: a typo fails `helm install` with the value's path, not a broken Pod later."""
    result = run(helm_bin, "template", "voicehive", str(CHART), "--set", setting)
    assert result.returncode != 0
    assert named in result.stderr, result.stderr
