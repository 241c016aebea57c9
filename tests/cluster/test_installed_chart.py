"""Issue 9 on the installed chart: every Pod of `helm install` runs and is Ready, runs the
Dockerfile's entrypoint, one operator replica is active, each ServiceAccount may do what it
needs and nothing else, Riva lands on the GPU node, workers are Ready only when warm."""

from __future__ import annotations

import ast
import re
import time
from typing import Any

import kubernetes
import pytest

from tests.cluster.conftest import CLUSTER_ENV, Cluster
from tests.rig.conftest import eventually
from voicehive import contract, rbac

pytestmark = pytest.mark.rig

GROUP, VERSION = "voicehive.io", "v1alpha1"
LINE = "lindenhof-main"


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def _started_argv(cluster: Cluster, pod: str) -> list[str]:
    """The argv the node agent exec'd for the Pod's first container (from the agent's log)."""
    log = (CLUSTER_ENV.parent / "nodeagent.log").read_text(errors="replace")
    for line in reversed(log.splitlines()):
        if f"/{pod}: started container" in line:
            return list(ast.literal_eval(line.split(": ", 2)[-1].split("): ", 1)[1]))
    raise AssertionError(f"no start of {pod} in the node agent's log")


def test_every_pod_of_the_release_runs_and_is_ready(cluster: Cluster) -> None:
    for namespace in (cluster.release_ns, cluster.hotel_ns):
        pods = cluster.pods(namespace)
        assert pods, f"no Pods in {namespace}"
        not_ready = [p.metadata.name for p in pods if not _ready(p)]
        assert not_ready == [], f"not Ready in {namespace}: {not_ready}"
        for pod in pods:
            assert pod.spec.node_name and pod.status.pod_ip, pod.metadata.name
            assert all(s.restart_count == 0 for s in pod.status.container_statuses), pod.metadata.name


_HTTP_403 = re.compile(r"(?<![\d.])403(?!\d)")  # a status, not a port such as 127.0.0.1:56403 (CI 12-03)


def _forbidden(log: str) -> list[str]:
    """Log lines that show the apiserver refusing a request."""
    return [line[:300] for line in log.splitlines() if "Forbidden" in line or _HTTP_403.search(line)]


@pytest.mark.parametrize("component", ["operator", "orchestrator"])
def test_no_component_asks_for_more_than_its_role_grants(cluster: Cluster, component: str) -> None:
    """Namespaced Roles only: a request the apiserver forbids (e.g. Kopf listing every namespace)
    is a start-up delay of a minute of retries at best and a silent standstill at worst."""
    pods = cluster.pods(cluster.release_ns, f"app.kubernetes.io/component={component}")
    assert pods
    for pod in pods:
        forbidden = _forbidden(cluster.log(cluster.release_ns, pod.metadata.name, component))
        assert forbidden == [], forbidden


@pytest.mark.parametrize("component", ["operator", "orchestrator"])
def test_chart_pods_run_the_dockerfile_entrypoint(cluster: Cluster, component: str) -> None:
    pods = cluster.pods(cluster.release_ns, f"app.kubernetes.io/component={component}")
    assert len(pods) == 2
    for pod in pods:
        argv = _started_argv(cluster, pod.metadata.name)
        assert argv[:2] == ["voicehive", component] and component not in argv[2:], argv


def _peers(cluster: Cluster) -> dict[str, int]:
    """Live peers as {operator Pod name: priority}, from Kopf's own record: the KopfPeering in the
    hotel namespace (the chart's namespaced default), or the ClusterKopfPeering (clusterWide)."""
    try:
        peering = cluster.custom.get_namespaced_custom_object("kopf.dev", "v1", cluster.hotel_ns, "kopfpeerings",
                                                              "voicehive")
    except kubernetes.client.ApiException as exc:
        if exc.status != 404:
            raise
        peering = cluster.custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", "voicehive")
    peers = {}
    for peer_id, record in (peering.get("status") or {}).items():  # "<user>@<host>/<started>/<random>"
        host = peer_id.split("@", 1)[-1].split("/", 1)[0]
        peers[host] = int(record.get("priority", 0))
    return peers


def _two_live_peers(cluster: Cluster) -> dict[str, int] | None:
    pods = {p.metadata.name for p in cluster.pods(cluster.release_ns, "app.kubernetes.io/component=operator")
            if _ready(p)}
    peers = {name: prio for name, prio in _peers(cluster).items() if name in pods}
    return peers if len(peers) == 2 == len(pods) else None


def test_exactly_one_operator_replica_is_active_and_the_other_takes_over(cluster: Cluster) -> None:
    """Kopf lets only the highest priority peer work; equal priorities would pause both."""
    logs = "".join(cluster.log(cluster.release_ns, p.metadata.name, "operator")
                   for p in cluster.pods(cluster.release_ns, "app.kubernetes.io/component=operator"))
    assert "Pausing all operators, including self" not in logs
    peers = eventually(lambda: _two_live_peers(cluster), timeout=120, what="both operator replicas in the peering")
    assert len(set(peers.values())) == 2, f"replicas share a priority: {peers}"
    active = max(peers, key=lambda name: peers[name])
    t0 = time.monotonic()
    cluster.core.delete_namespaced_pod(active, cluster.release_ns)
    # The standby resumes once the active one has left the peering (Kopf removes itself on SIGTERM)
    # and a change to the line is handled again (observedGeneration catches up).
    eventually(lambda: active not in _peers(cluster), timeout=120, what="the stopped replica out of the peering")
    generation = cluster.custom.patch_namespaced_custom_object(
        GROUP, VERSION, cluster.hotel_ns, "hotellines", LINE, {"spec": {"displayName": f"Hotel Lindenhof {t0:.0f}"}}
    )["metadata"]["generation"]
    eventually(lambda: _line_settled(cluster) and generation, timeout=120, what="the line reconciled after takeover")
    assert time.monotonic() - t0 < 240


def _line_settled(cluster: Cluster) -> bool:
    line = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, cluster.hotel_ns, "hotellines", LINE)
    status = line.get("status") or {}
    return bool(status.get("observedGeneration") == line["metadata"]["generation"])


def _can(cluster: Cluster, sa: str, verb: str, resource: str, namespace: str | None, group: str = "") -> bool:
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
        "user": sa, "groups": ["system:serviceaccounts", f"system:serviceaccounts:{sa.split(':')[2]}"],
        "resourceAttributes": {"verb": verb, "group": group, "namespace": namespace,
                               **dict(zip(("resource", "subresource"), resource.split("/"), strict=False))}}}
    result = kubernetes.client.AuthorizationV1Api(cluster.api).create_subject_access_review(review)
    return bool(result.status.allowed)


def test_permission_matrix_of_the_service_accounts(cluster: Cluster) -> None:
    rel, hotel = cluster.release_ns, cluster.hotel_ns
    operator, orchestrator = f"system:serviceaccount:{rel}:voicehive-operator", f"system:serviceaccount:{rel}:voicehive-orchestrator"
    worker = f"system:serviceaccount:{hotel}:voicehive-worker"
    allowed = [
        (operator, "create", "pods", hotel, ""), (operator, "patch", "hotellines/status", hotel, GROUP),
        (operator, "create", "deployments", hotel, "apps"), (operator, "get", "secrets", hotel, ""),
        (operator, "create", "secrets", hotel, ""), (operator, "patch", "secrets", hotel, ""),  # the per-line Secret
        # the backstop lists the lines it serves and annotates one no replica reconciled (backstop.py)
        (operator, "list", "hotellines", hotel, GROUP), (operator, "patch", "hotellines", hotel, GROUP),
        (orchestrator, "create", "voicesessions", hotel, GROUP), (orchestrator, "get", "hotellines", hotel, GROUP),
    ]
    allowed += [(worker, verb, rule_resource, hotel, GROUP) for rule in rbac.WORKER_RULES
                for rule_resource in rule["resources"] for verb in rule["verbs"]]
    denied = [
        (worker, "get", "secrets", hotel, ""), (worker, "list", "voicesessions", "kube-system", GROUP),
        (worker, "list", "voicesessions", rel, GROUP), (worker, "create", "pods", hotel, ""),
        (worker, "patch", "voicesessions", hotel, GROUP), (worker, "get", "hotellines", hotel, GROUP),
        (orchestrator, "get", "secrets", hotel, ""), (orchestrator, "create", "pods", hotel, ""),
        (operator, "list", "secrets", hotel, ""), (operator, "delete", "secrets", hotel, ""),
        (operator, "create", "pods", rel, ""),
        (operator, "delete", "namespaces", None, ""),
    ]
    wrong = [(sa.rsplit(":", 1)[1], v, r, ns, "allowed" if not ok else "denied")
             for ok, cases in ((True, allowed), (False, denied)) for sa, v, r, ns, g in cases
             if _can(cluster, sa, v, r, ns, g) != ok]
    assert wrong == []


def test_riva_is_restricted_on_the_gpu_node_and_asr_ready(cluster: Cluster) -> None:
    hotel = cluster.core.read_namespace(cluster.hotel_ns)
    assert hotel.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = cluster.pods(cluster.hotel_ns, f"{contract.LABEL_COMPONENT}={contract.COMPONENT_ASR}")
    assert pods and all(_ready(p) for p in pods)
    for pod in pods:
        node = cluster.core.read_node(pod.spec.node_name)
        assert int(node.status.allocatable.get("nvidia.com/gpu", "0")) >= 1, pod.spec.node_name
    deployments = cluster.apps.list_namespaced_deployment(cluster.hotel_ns, label_selector=f"{contract.LABEL_COMPONENT}=asr")
    assert all(d.status.available_replicas == d.spec.replicas for d in deployments.items)
    line = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, cluster.hotel_ns, "hotellines", LINE)
    assert {c["type"]: c["status"] for c in line["status"]["conditions"]}["AsrReady"] == "True"


def test_warm_workers_are_ready_because_their_readyz_is(cluster: Cluster) -> None:
    # a refill after an earlier test's claim may still be warming: Ready comes when /readyz says so
    pods = eventually(lambda: (ps := cluster.pods(cluster.hotel_ns, contract.worker_pod_selector()))
                      and all(_ready(p) for p in ps) and ps, timeout=240, what="every warm worker Ready")
    for pod in pods:
        probe = pod.spec.containers[0].readiness_probe
        assert probe.http_get.path == "/readyz"
        log = cluster.log(cluster.hotel_ns, pod.metadata.name, "worker")
        assert log, f"no log of {pod.metadata.name}"


def test_a_claimed_worker_sees_its_voice_session_on_its_own_token(cluster: Cluster) -> None:
    """The operator claims a warm Pod; the worker, with only its ServiceAccount token, lists and
    watches its VoiceSession, opens the sealed room name and joins that LiveKit room."""
    import asyncio
    import base64
    import json

    from livekit import api as lkapi

    from tests.fixtures.rig import parse_env_file
    from tests.operator.test_sessions import Call
    from voicehive.privacy import Privacy

    keys = json.loads((CLUSTER_ENV.parent / "keys.json").read_text())
    privacy = Privacy.from_keys(base64.b64decode(keys["pii-key"]), base64.b64decode(keys["transcript-key"]))
    call = Call(privacy, LINE)
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, cluster.hotel_ns, "voicesessions",
                                                   call.body(cluster.hotel_ns))
    session = eventually(lambda: (vs := cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, cluster.hotel_ns, "voicesessions", call.name)).get("status", {}).get("workerPod") and vs,
        timeout=60, what="the VoiceSession bound to a warm worker")
    pod = session["status"]["workerPod"]
    rig = parse_env_file(CLUSTER_ENV.parent.parent / "env")

    async def participants() -> list[str]:
        async with lkapi.LiveKitAPI(rig["LIVEKIT_URL"], rig["LIVEKIT_API_KEY"], rig["LIVEKIT_API_SECRET"]) as lk:
            listing = await lk.room.list_participants(lkapi.ListParticipantsRequest(room=call.room))
            return [p.identity for p in listing.participants]

    joined = eventually(lambda: [i for i in asyncio.run(participants()) if pod in i], timeout=120,
                        what=f"worker {pod} in the call's room")
    assert joined
    log = cluster.log(cluster.hotel_ns, pod, "worker")
    assert _forbidden(log) == []
    assert call.number not in log and call.room not in log  # the sealed room name never reaches a log line
    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, cluster.hotel_ns, "voicesessions", call.name)
