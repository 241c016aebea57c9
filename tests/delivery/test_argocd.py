"""Argo CD: the HotelLine and VoiceSession health checks run the way Argo CD runs them (a Lua 5.1
chunk with the object as global ``obj`` that returns ``hs`` with status and message), driven by
Argo CD's own test layout (``health_test.yaml`` cases over ``testdata/*.yaml``); the install
snippets carry exactly those scripts; the ApplicationSet points at overlays that exist.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.rig import ROOT

ARGOCD = ROOT / "manifests" / "argocd"
CUSTOMIZATIONS = ARGOCD / "resource_customizations" / "voicehive.io"
KINDS = ("HotelLine", "VoiceSession")
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

lupa = pytest.importorskip("lupa")


def _lua51() -> Any:
    """Argo CD embeds gopher-lua, a Lua 5.1: run the scripts on a 5.1 runtime when lupa has one."""
    for name in ("lupa.lua51", "lupa.luajit21", "lupa.luajit20"):
        if importlib.util.find_spec(name) is not None:
            return importlib.import_module(name)
    return lupa


def _to_lua(runtime: Any, value: Any) -> Any:
    """Python YAML -> Lua tables (lists 1-based), as Argo CD converts an unstructured object."""
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    return value


def run_health(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    """Execute ``<Kind>/health.lua`` on ``obj`` in a fresh runtime, as Argo CD does per object."""
    module = _lua51()
    runtime = module.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = _to_lua(runtime, obj)
    hs = runtime.execute((CUSTOMIZATIONS / kind / "health.lua").read_text())
    assert hs is not None, "health.lua must return hs"
    return {key: hs[key] for key in ("status", "message") if hs[key] is not None}


def cases(kind: str) -> list[tuple[str, dict[str, Any]]]:
    spec = yaml.safe_load((CUSTOMIZATIONS / kind / "health_test.yaml").read_text())
    return [(kind, case) for case in spec["tests"]]


ALL_CASES = [case for kind in KINDS for case in cases(kind)]


@pytest.mark.parametrize(("kind", "case"), ALL_CASES, ids=lambda c: c if isinstance(c, str) else Path(c["inputPath"]).stem)
def test_health_check_matches_argo_cd_test_case(kind: str, case: dict[str, Any]) -> None:
    obj = yaml.safe_load((CUSTOMIZATIONS / kind / case["inputPath"]).read_text())
    assert obj["kind"] == kind
    assert run_health(kind, obj) == case["healthStatus"]


def test_every_testdata_file_is_a_case_and_statuses_are_argo_cd_statuses() -> None:
    for kind in KINDS:
        listed = {Path(c["inputPath"]).name for _, c in cases(kind)}
        assert listed == {p.name for p in (CUSTOMIZATIONS / kind / "testdata").glob("*.yaml")}
        assert {c["healthStatus"]["status"] for _, c in cases(kind)} <= ARGO_STATUSES


def test_a_degraded_hotel_line_is_degraded_and_a_filling_one_progressing() -> None:
    """The issue's symptom: a line that cannot take calls showed Healthy in Argo CD."""
    data = CUSTOMIZATIONS / "HotelLine" / "testdata"
    statuses = {p.stem: run_health("HotelLine", yaml.safe_load(p.read_text()))["status"] for p in data.glob("*.yaml")}
    assert {s for name, s in statuses.items() if name.startswith("degraded")} == {"Degraded"}
    assert {s for name, s in statuses.items() if name.startswith("progressing")} == {"Progressing"}
    assert statuses["healthy"] == "Healthy"


@pytest.mark.parametrize("reason", ["SpecInvalid", "RegionNotEU", "KeySecretMissing", "SipTrunkRefused"])
def test_any_ready_false_reason_but_coming_up_is_degraded(reason: str) -> None:
    obj = yaml.safe_load((CUSTOMIZATIONS / "HotelLine" / "testdata" / "healthy.yaml").read_text())
    ready = obj["status"]["conditions"][0]
    ready.update(status="False", reason=reason, message="The line cannot take calls.")
    assert run_health("HotelLine", obj) == {"status": "Degraded", "message": f"Ready {reason}: The line cannot take calls."}


def test_no_voicehive_state_is_suspended() -> None:
    """Neither CRD has a pause switch (no spec.suspend): no phase or condition may map to
    Suspended, or Argo CD would hide a line that is silently not answering."""
    base = yaml.safe_load((CUSTOMIZATIONS / "VoiceSession" / "testdata" / "healthy_active.yaml").read_text())
    for phase in ("Pending", "Starting", "Active", "Ended", "Failed", "Paused"):
        base["status"]["phase"] = phase
        assert run_health("VoiceSession", base)["status"] != "Suspended"


def test_install_snippets_carry_the_scripts() -> None:
    """argocd-cm keys resource.customizations.health.<group>_<Kind> hold exactly health.lua
    (`make argocd` regenerates them)."""
    wanted = {f"resource.customizations.health.voicehive.io_{k}": (CUSTOMIZATIONS / k / "health.lua").read_text()
              for k in KINDS}
    patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
    assert (patch["kind"], patch["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    assert patch["data"] == wanted, "stale: run `make argocd`"
    values = yaml.safe_load((ARGOCD / "argo-cd-values.yaml").read_text())
    assert values["configs"]["cm"] == wanted, "stale: run `make argocd`"


def test_application_set_points_at_region_overlays() -> None:
    appset = yaml.safe_load((ARGOCD / "applicationset.yaml").read_text())
    assert appset["kind"] == "ApplicationSet" and appset["apiVersion"] == "argoproj.io/v1alpha1"
    elements = appset["spec"]["generators"][0]["list"]["elements"]
    assert len(elements) >= 2
    path_template = appset["spec"]["template"]["spec"]["source"]["path"]
    for element in elements:
        path = path_template.replace("{{.region}}", element["region"])
        assert (ROOT / path / "kustomization.yaml").is_file(), path
        overlay = yaml.safe_load((ROOT / path / "kustomization.yaml").read_text())
        assert element["region"] in yaml.safe_dump(overlay["patches"]), "overlay pins pods to its region"


def test_region_overlays_give_the_worker_the_rbac_py_rules() -> None:
    from voicehive import rbac

    docs = list(yaml.safe_load_all((ROOT / "manifests" / "base" / "voicehive.yaml").read_text()))
    role = next(d for d in docs if d and d["kind"] == "Role" and d["metadata"]["namespace"] == "hotels"
                and d["metadata"]["name"].endswith("worker"))
    assert role["rules"] == rbac.worker_rules()
