"""The chart as platform teams expect it: a complete values schema, CRDs that `helm upgrade`
upgrades (kept on uninstall), digests, a `helm test` hook, disruption budgets, topology spread,
priority classes and startup probes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from tests.delivery.test_chart_and_manifests import CHART, CRD_DIR, HOTELS, by_kind, documents, helm_template, run

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
DIGEST = "sha256:" + "ab" * 32


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return {**SCHEMA["definitions"][node["$ref"].split("/")[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _walk(values: Any, node: dict[str, Any], path: str, problems: list[str]) -> None:
    node = _resolve(node)
    if not node.get("description"):
        problems.append(f"{path}: no description")
    if not ({"type", "enum", "oneOf"} & node.keys()):
        problems.append(f"{path}: no type")
    if isinstance(values, dict) and node.get("type") == "object" and "properties" in node:
        if node.get("additionalProperties") is not False:
            problems.append(f"{path}: additionalProperties is not false")
        for key, value in values.items():
            child = node["properties"].get(key)
            if child is None:
                problems.append(f"{path}/{key}: not in the schema")
            else:
                _walk(value, child, f"{path}/{key}", problems)


def test_schema_types_and_describes_every_value() -> None:
    assert SCHEMA["additionalProperties"] is False
    problems: list[str] = []
    for key, value in VALUES.items():
        child = SCHEMA["properties"].get(key)
        if child is None:
            problems.append(f"/{key}: not in the schema")
        else:
            _walk(value, child, f"/{key}", problems)
    assert problems == []


def test_a_misspelt_value_is_refused(helm_bin: str) -> None:
    result = run(helm_bin, "template", "voicehive", str(CHART), "--set", "orchestrator.replica=3")
    assert result.returncode != 0 and "replica" in result.stderr


def test_crds_are_templates_kept_on_uninstall_and_equal_to_crds_dir(helm_bin: str) -> None:
    crds = by_kind(helm_template(helm_bin), "CustomResourceDefinition")
    source = {d["metadata"]["name"]: d for f in CRD_DIR.glob("*.yaml") for d in documents(f.read_text())}
    assert crds.keys() == source.keys()
    for name, crd in crds.items():
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["spec"] == source[name]["spec"], f"{name}: the chart must render crds/ unchanged"
    assert by_kind(helm_template(helm_bin, "--set", "crds.install=false"), "CustomResourceDefinition") == {}
    loose = by_kind(helm_template(helm_bin, "--set", "crds.keep=false"), "CustomResourceDefinition")
    assert all("helm.sh/resource-policy" not in c["metadata"].get("annotations", {}) for c in loose.values())


def test_a_changed_crd_reaches_the_upgrade_manifest(helm_bin: str, tmp_path: Path) -> None:
    """What `helm upgrade` applies is the rendered manifest: a CRD change in crds/ is in it
    (a chart's crds/ folder would never be upgraded). On a real apiserver: tests/rig."""
    chart = tmp_path / "voicehive"
    shutil.copytree(CHART, chart, symlinks=False)
    crd_file = chart / "files" / "crds" / "voicesessions.voicehive.io.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    crd["spec"]["versions"][0]["additionalPrinterColumns"].append(
        {"name": "Upgraded", "type": "string", "jsonPath": ".status.endReason"})
    crd_file.write_text(yaml.safe_dump(crd))
    result = run(helm_bin, "template", "voicehive", str(chart), "--namespace", "voicehive", *HOTELS)
    assert result.returncode == 0, result.stderr
    rendered = by_kind(documents(result.stdout), "CustomResourceDefinition")["voicesessions.voicehive.io"]
    assert "Upgraded" in [c["name"] for c in rendered["spec"]["versions"][0]["additionalPrinterColumns"]]


def test_image_digests_pin_components(helm_bin: str) -> None:
    docs = helm_template(helm_bin, "--set", f"image.digests.operator={DIGEST}")
    deployments = by_kind(docs, "Deployment")
    assert deployments["voicehive-operator"]["spec"]["template"]["spec"]["containers"][0]["image"] == \
        f"ghcr.io/voicehive/operator@{DIGEST}"
    assert deployments["voicehive-orchestrator"]["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "ghcr.io/voicehive/orchestrator:0.1.0"
    bad = run(helm_bin, "template", "voicehive", str(CHART), "--set", "image.digests.operator=latest")
    assert bad.returncode != 0 and "/image/digests/operator" in bad.stderr


def test_disruption_budgets_spread_priority_and_startup_probes(helm_bin: str) -> None:
    docs = helm_template(helm_bin, "--set", "operator.priorityClassName=voicehive-critical",
                         "--set", "orchestrator.priorityClassName=voicehive-critical")
    pdbs = by_kind(docs, "PodDisruptionBudget")
    assert set(pdbs) == {"voicehive-operator", "voicehive-orchestrator"}
    for name, deployment in by_kind(docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["priorityClassName"] == "voicehive-critical"
        keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        selector = pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]
        assert selector == deployment["spec"]["selector"]["matchLabels"] == pdbs[name]["spec"]["selector"]["matchLabels"]
        container = pod["containers"][0]
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz", name
        assert "initialDelaySeconds" not in container["livenessProbe"], "the startup probe holds liveness off"


def test_helm_test_hook_checks_the_orchestrator(helm_bin: str) -> None:
    pods = by_kind(helm_template(helm_bin), "Pod")
    test = pods["voicehive-test-orchestrator"]
    assert test["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "voicehive-orchestrator.voicehive.svc:443/healthz" in test["spec"]["containers"][0]["command"][2]
    assert test["spec"]["securityContext"]["runAsNonRoot"] is True
    assert "voicehive-test-orchestrator" not in by_kind(helm_template(helm_bin, "--skip-tests"), "Pod")


def test_the_image_pull_policy_reaches_the_operators_worker_setting(helm_bin: str) -> None:
    deployment = by_kind(helm_template(helm_bin, "--set", "image.pullPolicy=Always"), "Deployment")
    operator = next(d for n, d in deployment.items() if "operator" in n)
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VOICEHIVE_OPERATOR_WORKER_IMAGE_PULL_POLICY"] == "Always"
