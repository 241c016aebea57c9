"""`helm upgrade` rolls the release's Pods and leaves no old ones; deleting the HotelLines and then
`helm uninstall` (the order docs/delivery.md gives) leaves nothing behind: no Pods, Deployments,
Services, RBAC or peering of the release, no finalizer on anything, no LiveKit trunk or rule.

Runs after test_installed_chart.py (file order): it takes the installation down.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from tests.cluster.conftest import CLUSTER_ENV, Cluster
from tests.fixtures.rig import ROOT, parse_env_file
from tests.rig.conftest import eventually

pytestmark = pytest.mark.rig

GROUP, VERSION = "voicehive.io", "v1alpha1"
UPGRADED_COLUMN = "UpgradeMark"


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    rig = parse_env_file(CLUSTER_ENV.parent.parent / "env")
    return subprocess.run([rig["HELM"], "--kubeconfig", rig["KUBECONFIG"], *args], capture_output=True, text=True,
                          timeout=600, check=False)


def _release_pods(cluster: Cluster) -> list[Any]:
    return cluster.pods(cluster.release_ns, "app.kubernetes.io/instance=voicehive")


def _all_ready(cluster: Cluster, expected: int) -> list[str] | None:
    pods = _release_pods(cluster)
    ready = [p.metadata.name for p in pods if any(c.type == "Ready" and c.status == "True"
                                                   for c in p.status.conditions or [])]
    return ready if len(ready) == len(pods) == expected else None


def _next_chart_version(tmp: Path) -> Path:
    """The chart as its next release would ship it: version bumped, the VoiceSession CRD changed
    (a new printer column), from the installed (previous) chart."""
    chart = tmp / "voicehive"
    shutil.copytree(ROOT / "charts" / "voicehive", chart, symlinks=False)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    major, minor, patch = (int(x) for x in meta["version"].split("."))
    meta["version"] = f"{major}.{minor}.{patch + 1}"
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    crd_file = chart / "files" / "crds" / "voicesessions.voicehive.io.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    crd["spec"]["versions"][0].setdefault("additionalPrinterColumns", []).append(
        {"name": UPGRADED_COLUMN, "type": "string", "jsonPath": ".status.endReason"})
    crd_file.write_text(yaml.safe_dump(crd))
    return chart


def _adopt_crds(cluster: Cluster) -> None:
    """cluster-up applied crds/ itself (`crds.install=false`, as a platform team that manages
    CRDs does); moving them under the release is Helm's documented adoption: its ownership
    label and annotations, then an upgrade with `crds.install=true` (docs/delivery.md)."""
    ext = kubernetes.client.ApiextensionsV1Api(cluster.api)
    for crd in ext.list_custom_resource_definition().items:
        if crd.spec.group not in (GROUP, "kopf.dev"):
            continue
        ext.patch_custom_resource_definition(crd.metadata.name, {"metadata": {
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": "voicehive",
                            "meta.helm.sh/release-namespace": cluster.release_ns}}})


def _printer_columns(cluster: Cluster) -> list[str]:
    crd = kubernetes.client.ApiextensionsV1Api(cluster.api).read_custom_resource_definition("voicesessions.voicehive.io")
    return [c.name for c in crd.spec.versions[0].additional_printer_columns or []]


def test_helm_upgrade_rolls_every_pod_and_leaves_no_old_one(cluster: Cluster, tmp_path: Path) -> None:
    """`helm upgrade` to the next chart version: every Pod replaced, and the changed CRD upgraded
    in the apiserver (Helm would never upgrade a chart's crds/ folder; ours are templates)."""
    before = {p.metadata.name for p in _release_pods(cluster)}
    assert UPGRADED_COLUMN not in _printer_columns(cluster)
    values = yaml.safe_load((CLUSTER_ENV.parent / "values.yaml").read_text())
    for component in ("operator", "orchestrator"):
        values.setdefault(component, {}).setdefault("extraEnv", []).append({"name": "VOICEHIVE_UPGRADE_MARK", "value": "2"})
    values["crds"] = {"install": True}
    path = CLUSTER_ENV.parent / "values-upgrade.yaml"
    path.write_text(yaml.safe_dump(values))
    _adopt_crds(cluster)
    result = _helm("upgrade", "voicehive", str(_next_chart_version(tmp_path)), "-n", cluster.release_ns, "-f", str(path))
    assert result.returncode == 0, result.stderr
    assert UPGRADED_COLUMN in _printer_columns(cluster), "helm upgrade left the CRD as it was"
    after = eventually(lambda: (ready := _all_ready(cluster, len(before))) and not set(ready) & before and ready,
                       timeout=300, what="every release Pod replaced and Ready")
    assert len(after) == len(before)


def _livekit_objects(namespace: str) -> tuple[int, int]:
    """The namespace's SIP trunks and dispatch rules left in livekit-server (named by the operator)."""
    from livekit import api as lkapi

    from voicehive_operator.builders import livekit_name

    rig = parse_env_file(CLUSTER_ENV.parent.parent / "env")
    prefix = livekit_name(namespace, "")

    async def count() -> tuple[int, int]:
        async with lkapi.LiveKitAPI(rig["LIVEKIT_URL"], rig["LIVEKIT_API_KEY"], rig["LIVEKIT_API_SECRET"]) as lk:
            trunks = await lk.sip.list_inbound_trunk(lkapi.ListSIPInboundTrunkRequest())
            rules = await lk.sip.list_dispatch_rule(lkapi.ListSIPDispatchRuleRequest())
            return (sum(t.name.startswith(prefix) for t in trunks.items),
                    sum(r.name.startswith(prefix) for r in rules.items))

    return asyncio.run(count())


def _describe(cluster: Cluster, pods: list[Any]) -> list[str]:
    """Which Pods stayed, who owns them, and the node agent's and their containers' last words."""
    agent_log = (CLUSTER_ENV.parent / "nodeagent.log")
    agent_lines = agent_log.read_text(errors="replace").splitlines() if agent_log.exists() else []

    def one(pod: Any) -> str:
        name = pod.metadata.name
        owners = ",".join(f"{o.kind}/{o.name}" for o in pod.metadata.owner_references or [])
        said = [line for line in agent_lines if name in line][-4:]
        last = {c.name: cluster.log(cluster.hotel_ns, name, c.name).splitlines()[-3:] for c in pod.spec.containers}
        return (f"{name} owner={owners or '-'} phase={pod.status.phase} deleting={pod.metadata.deletion_timestamp} "
                f"finalizers={pod.metadata.finalizers} agent={said} containers={last}")
    return [one(p) for p in pods]


def test_deleting_lines_then_uninstalling_leaves_nothing_behind(cluster: Cluster) -> None:
    lines = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, cluster.hotel_ns, "hotellines")["items"]
    assert lines
    for line in lines:
        cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, cluster.hotel_ns, "hotellines",
                                                       line["metadata"]["name"])
    eventually(lambda: not cluster.custom.list_namespaced_custom_object(
        GROUP, VERSION, cluster.hotel_ns, "hotellines")["items"], timeout=180, what="HotelLines gone (finalizers run)")
    try:
        # a worker that is still warming up when it gets SIGTERM exits once warm (minutes on a busy CI machine)
        eventually(lambda: not cluster.pods(cluster.hotel_ns), timeout=300, what="worker and Riva Pods gone")
    except AssertionError as error:  # say which Pods stayed, who owns them and how far they got
        raise AssertionError(f"{error}; left: {_describe(cluster, cluster.pods(cluster.hotel_ns))}") from None
    asr = "app.kubernetes.io/component=asr"  # the Riva pool's TLS Secret and nginx ConfigMap: owner GC
    eventually(lambda: not cluster.core.list_namespaced_secret(cluster.hotel_ns, label_selector=asr).items
               and not cluster.core.list_namespaced_config_map(cluster.hotel_ns, label_selector=asr).items,
               timeout=180, what="the Riva pool's Secret and ConfigMap gone with its Deployment")
    assert _livekit_objects(cluster.hotel_ns) == (0, 0)
    result = _helm("uninstall", "voicehive", "-n", cluster.release_ns, "--wait", "--timeout", "180s")
    assert result.returncode == 0, result.stderr
    eventually(lambda: not _release_pods(cluster), timeout=180, what="the release's Pods gone")
    label = "app.kubernetes.io/instance=voicehive"
    left = {
        "deployments": cluster.apps.list_deployment_for_all_namespaces(label_selector=label).items,
        "services": cluster.core.list_service_for_all_namespaces(label_selector=label).items,
        "serviceaccounts": cluster.core.list_service_account_for_all_namespaces(label_selector=label).items,
    }
    assert {kind: [o.metadata.name for o in objs] for kind, objs in left.items() if objs} == {}
    peerings = cluster.custom.list_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings")["items"]
    assert [p["metadata"]["name"] for p in peerings] == []
    sessions = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, cluster.hotel_ns, "voicesessions")["items"]
    assert [s["metadata"]["name"] for s in sessions if s["metadata"].get("finalizers")] == []
