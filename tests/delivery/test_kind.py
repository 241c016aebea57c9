"""kind: `make kind-up` cannot run here (no Docker), so this checks what it would use: the kind
config's nodes carry EU region/zone labels and a GPU pool the operator's Riva pods tolerate and
select, and the chart renders valid objects with kind/values-kind.yaml."""

from __future__ import annotations

from typing import Any

import yaml

from tests.delivery.test_chart_and_manifests import by_kind, helm_template, validate_all
from tests.fixtures.rig import ROOT
from voicehive.api.models import EURegion, HotelLine
from voicehive_operator import builders
from voicehive_operator.settings import OperatorSettings

KIND = ROOT / "kind"
CONFIG = yaml.safe_load((KIND / "kind-config.yaml").read_text())
REGION = "topology.kubernetes.io/region"
ZONE = "topology.kubernetes.io/zone"


def _taints(node: dict[str, Any]) -> list[dict[str, str]]:
    taints: list[dict[str, str]] = []
    for patch in node.get("kubeadmConfigPatches", []):
        doc = yaml.safe_load(patch)
        taints += doc.get("nodeRegistration", {}).get("taints", [])
    return taints


def _tolerates(tolerations: list[dict[str, Any]], taint: dict[str, str]) -> bool:
    return any(t.get("key") == taint["key"] and t.get("effect") in (None, taint["effect"])
               and (t.get("operator") == "Exists" or t.get("value") == taint.get("value")) for t in tolerations)


def test_nodes_carry_eu_region_and_zones() -> None:
    assert CONFIG["kind"] == "Cluster" and CONFIG["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    nodes = CONFIG["nodes"]
    assert {n["labels"][REGION] for n in nodes} <= {r.value for r in EURegion}
    assert len({n["labels"][ZONE] for n in nodes if n["role"] == "worker"}) >= 2


def test_the_gpu_pool_is_where_the_example_lines_riva_goes() -> None:
    gpu = [n for n in CONFIG["nodes"] if n["labels"].get("voicehive.io/pool")]
    assert len(gpu) == 1 and {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in _taints(gpu[0])
    docs = list(yaml.safe_load_all((ROOT / "examples" / "hotelline.yaml").read_text()))
    line = HotelLine.model_validate(next(d for d in docs if d["kind"] == "HotelLine"))
    settings = OperatorSettings()
    pool = builders.riva_pool_for("hotels", line.spec, settings)
    assert pool is not None
    pod = builders.riva_deployment(pool, 1, settings)["spec"]["template"]["spec"]
    assert all(_tolerates(pod["tolerations"], taint) for taint in _taints(gpu[0]))
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    for expr in terms[0]["matchExpressions"]:
        assert gpu[0]["labels"].get(expr["key"]) in expr["values"], expr
    assert str(line.spec.region) == gpu[0]["labels"][REGION]


def test_chart_renders_with_the_kind_values(helm_bin: str) -> None:
    docs = helm_template(helm_bin, "-f", str(KIND / "values-kind.yaml"))
    validate_all(docs)
    for deployment in by_kind(docs, "Deployment").values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"].endswith(":dev") and container["imagePullPolicy"] == "Never"
    assert "hotels" in {d["metadata"].get("namespace") for d in docs if d["kind"] == "Role"}


def test_kind_up_uses_these_files_and_the_readme_says_it_cannot_run_here() -> None:
    script = (KIND / "up.sh").read_text()
    assert "kind/kind-config.yaml" in script and "kind/values-kind.yaml" in script and "kind load" in script
    assert "kind-up:" in (ROOT / "Makefile").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make kind-up" in readme and "cannot run" in readme
