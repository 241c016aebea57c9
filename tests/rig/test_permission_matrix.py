"""Permission matrix of the chart's ServiceAccounts on the rig's real kube-apiserver (issue 11).

The chart is installed for two hotel namespaces; the apiserver's own authoriser (`kubectl auth
can-i --as=system:serviceaccount:...`, i.e. SubjectAccessReview by impersonation) answers every
question: what each component needs is allowed, a forbidden list is denied (another hotel, a
non-hotel namespace, kube-system, cluster-wide), and the installed ClusterRoles hold no rule that
docs/delivery.md does not justify.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import kubernetes
import pytest

from tests.delivery.test_tenant_isolation_chart import JUSTIFIED_CLUSTER_RULES
from tests.fixtures.rig import KubectlRunner, Rig
from tests.rig.test_delivery_on_apiserver import CHART, can_i, helm

pytestmark = pytest.mark.rig

VS, HL = "voicesessions.voicehive.io", "hotellines.voicehive.io"


@pytest.fixture
def hotels(rig_api: kubernetes.client.ApiClient) -> Iterator[tuple[str, str, str]]:
    """Two hotel namespaces and one that is not a hotel's."""
    core = kubernetes.client.CoreV1Api(rig_api)
    names = tuple(f"rig-{kind}-{uuid.uuid4().hex[:6]}" for kind in ("hotel-a", "hotel-b", "not-hotel"))
    for name in names:
        core.create_namespace(kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name)))
    yield names  # type: ignore[misc]
    for name in names:
        core.delete_namespace(name)


def test_permission_matrix_by_impersonation(
    rig: Rig, helm_bin: str, kubectl: KubectlRunner, rig_crds: list[str], rig_namespace: str,
    hotels: tuple[str, str, str],
) -> None:
    hotel_a, hotel_b, elsewhere = hotels
    release = f"vh-{uuid.uuid4().hex[:6]}"
    installed = helm(helm_bin, rig, "install", release, str(CHART), "--namespace", rig_namespace,
                     "--set", f"operator.peering={release}", "--set", f"operator.watchNamespaces={{{hotel_a},{hotel_b}}}",
                     "--set", "crds.install=false")  # rig_crds applied them (another release may own them)
    assert installed.returncode == 0, installed.stderr
    try:
        sa = "system:serviceaccount:{}:{}".format
        operator, orchestrator = sa(rig_namespace, "voicehive-operator"), sa(rig_namespace, "voicehive-orchestrator")
        worker_a = sa(hotel_a, "voicehive-worker")
        allowed = [
            (operator, verb, res, ns) for ns in (hotel_a, hotel_b) for verb, res in [
                ("watch", HL), ("patch", f"{HL}/status"), ("delete", VS), ("create", "pods"), ("delete", "pods"),
                ("create", "deployments.apps"), ("create", "services"), ("get", "secrets"), ("create", "secrets"),
                ("patch", "secrets"), ("create", "configmaps"), ("patch", "configmaps"), ("create", "events"),
                ("patch", "kopfpeerings.kopf.dev")]
        ] + [(operator, "watch", "customresourcedefinitions.apiextensions.k8s.io", None)] + [
            (orchestrator, verb, res, ns) for ns in (hotel_a, hotel_b) for verb, res in [
                ("list", HL), ("create", VS), ("patch", f"{VS}/status")]
        ] + [(worker_a, "watch", VS, hotel_a), (worker_a, "patch", f"{VS}/status", hotel_a)]
        denied = [
            # nothing outside the hotel namespaces
            *[(operator, verb, res, ns) for ns in (elsewhere, "kube-system") for verb, res in [
                ("create", "pods"), ("get", "secrets"), ("watch", HL), ("create", "deployments.apps")]],
            (operator, "list", "pods", None), (operator, "get", "secrets", None), (operator, "watch", HL, None),
            (operator, "patch", "clusterkopfpeerings.kopf.dev", None), (operator, "list", "namespaces", None),
            (operator, "list", "secrets", hotel_a), (operator, "watch", "secrets", hotel_a),
            (operator, "delete", "secrets", hotel_a), (operator, "delete", HL, hotel_a),
            (operator, "delete", "configmaps", hotel_a), (operator, "list", "configmaps", hotel_a),
            (operator, "create", "roles.rbac.authorization.k8s.io", hotel_a),
            (operator, "create", "clusterroles.rbac.authorization.k8s.io", None),
            (orchestrator, "list", HL, None), (orchestrator, "list", HL, elsewhere), (orchestrator, "create", VS, "kube-system"),
            (orchestrator, "get", "secrets", hotel_a), (orchestrator, "patch", HL, hotel_a), (orchestrator, "create", "pods", hotel_a),
            # a worker: its own namespace's sessions, nothing else
            (worker_a, "watch", VS, hotel_b), (worker_a, "patch", f"{VS}/status", hotel_b), (worker_a, "patch", VS, hotel_a),
            (worker_a, "get", "secrets", hotel_a), (worker_a, "list", "pods", hotel_a), (worker_a, "get", HL, hotel_a),
            (worker_a, "list", VS, None),
        ]
        refused = [q for q in allowed if not can_i(kubectl, *q)]
        granted = [q for q in denied if can_i(kubectl, *q)]
        assert (refused, granted) == ([], [])

        # The installed ClusterRoles: only the rules docs/delivery.md justifies.
        roles = json.loads(kubectl("get", "clusterroles", "-l", f"app.kubernetes.io/instance={release}",
                                   "-o", "json").stdout)["items"]
        rules = {(g, r) for role in roles for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
        assert rules == set(JUSTIFIED_CLUSTER_RULES)
    finally:
        removed = helm(helm_bin, rig, "uninstall", release, "--namespace", rig_namespace, "--wait")
        assert removed.returncode == 0, removed.stderr
