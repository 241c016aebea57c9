"""The kubelet's decisions as the agent makes them: env, restarts, probes, Pod status (pure)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from rig.nodeagent.agent import hosts_text, ready_endpoints
from rig.nodeagent.env import ConfigError, PodFacts, build_env, service_links
from rig.nodeagent.images import ImageError, RunError, resolve_process
from rig.nodeagent.kube import KubeError
from rig.nodeagent.nodes import GPU_TAINT, build_node, build_node_status, parse_node
from rig.nodeagent.pod import exit_code, retry_until_done, user_of
from rig.nodeagent.status import (
    ContainerRecord,
    ProbeState,
    backoff_delay,
    build_pod_status,
    pod_phase,
    probe_update,
    should_restart,
)
from rig.nodeagent.volumes import needs_default_sa
from tests.nodeagent.test_dockerfile import ROOT

POD: dict[str, Any] = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}},
    "spec": {"nodeName": "n1", "serviceAccountName": "sa"},
}
FACTS = PodFacts(pod_ip="10.244.0.9", host_ip="127.0.0.1", node_name="n1")
SECRETS = {("ns", "creds"): {"password": "s3cret", "user": "u"}}
CONFIGMAPS = {("ns", "cfg"): {"MODE": "test"}}


def lookup(table: dict[tuple[str, str], dict[str, str]]) -> Any:
    return lambda ns, name: table.get((ns, name))


def test_env_layers_and_sources() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "cfg"}}, {"secretRef": {"name": "creds"}, "prefix": "DB_"}],
        "env": [
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "MODE2", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "MODE"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {"name": "URL", "value": "http://$(POD):80"},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": True}}},
            {"name": "PATH", "value": "/x:$(PATH)"},
        ],
        "resources": {"limits": {"memory": "256Mi"}},
    }
    env = build_env(POD, container, {"PATH": "/opt/venv/bin"}, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, FACTS,
                    lookup(SECRETS), lookup(CONFIGMAPS))
    assert env["PASSWORD"] == "s3cret"
    assert env["DB_user"] == "u"
    assert env["MODE"] == env["MODE2"] == "test"
    assert (env["POD"], env["IP"], env["APP"], env["SA"]) == ("p", "10.244.0.9", "x", "sa")
    assert env["URL"] == "http://p:80"
    assert env["PATH"] == "/x:/opt/venv/bin"
    assert env["KUBERNETES_SERVICE_HOST"] == "10.0.0.1"
    assert "OPT" not in env


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}], 'secret "gone" not found'),
        ([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nokey"}}}], "couldn't find key nokey"),
    ],
)
def test_missing_sources_are_config_errors(env: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_env(POD, {"env": env}, {}, {}, FACTS, lookup(SECRETS), lookup(CONFIGMAPS))


def test_service_links() -> None:
    svc = {"metadata": {"name": "my-svc"}, "spec": {"clusterIP": "10.0.0.7", "ports": [{"name": "http", "port": 80}]}}
    env = service_links([svc], "10.0.0.1", 443)
    assert env["KUBERNETES_SERVICE_HOST"] == "10.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "443"
    assert env["MY_SVC_SERVICE_HOST"] == "10.0.0.7"
    assert env["MY_SVC_SERVICE_PORT_HTTP"] == "80"


def test_restart_policy_and_backoff() -> None:
    assert should_restart("Always", 0) and should_restart("Always", 1)
    assert should_restart("OnFailure", 2) and not should_restart("OnFailure", 0)
    assert not should_restart("Never", 1)
    delays = [backoff_delay(n) for n in range(0, 8)]
    assert delays[:4] == [0.0, 10.0, 20.0, 40.0]
    assert delays[-1] == 300.0
    assert exit_code(-15) == 143 and exit_code(3) == 3


def test_probe_thresholds() -> None:
    state = ProbeState()
    state = probe_update(state, False, 1, 3)
    assert state.passed is None
    state = probe_update(state, True, 2, 3)
    assert state.passed is None  # one success of two
    state = probe_update(state, True, 2, 3)
    assert state.passed is True
    for _ in range(2):
        state = probe_update(state, False, 2, 3)
    assert state.passed is True  # still ready until the third failure
    state = probe_update(state, False, 2, 3)
    assert state.passed is False


def rec(name: str, state: str, code: int = 0, ready: bool = False, restarts: int = 0) -> ContainerRecord:
    return ContainerRecord(name, "img", state=state, exit_code=code, ready=ready, restart_count=restarts)


def test_phase() -> None:
    assert pod_phase([rec("i", "running")], [rec("c", "waiting")], "Always", False) == "Pending"
    assert pod_phase([rec("i", "terminated")], [rec("c", "running")], "Always", False) == "Running"
    assert pod_phase([], [rec("c", "waiting", restarts=2)], "Always", False) == "Running"
    assert pod_phase([], [rec("c", "terminated")], "Never", False) == "Succeeded"
    assert pod_phase([], [rec("c", "terminated", 1)], "Never", False) == "Failed"
    assert pod_phase([], [rec("c", "terminated", 1)], "OnFailure", False) == "Running"
    assert pod_phase([], [rec("c", "waiting")], "Always", True) == "Failed"
    crashed = rec("c", "waiting")
    crashed.last_terminated = {"exitCode": 1}
    assert pod_phase([], [crashed], "Always", False) == "Running"  # first crash, before its restart


def test_status_conditions_keep_transition_times() -> None:
    since: dict[str, tuple[bool, str]] = {}
    first = build_pod_status([], [rec("c", "running", ready=False)], "Always", "10.244.0.2", "127.0.0.1", "t0",
                             since, "t1")
    second = build_pod_status([], [rec("c", "running", ready=True)], "Always", "10.244.0.2", "127.0.0.1", "t0",
                              since, "t2")
    conditions = {c["type"]: c for c in second["conditions"]}
    assert {c["type"]: c["status"] for c in first["conditions"]}["Ready"] == "False"
    assert conditions["Ready"]["status"] == "True" and conditions["Ready"]["lastTransitionTime"] == "t2"
    assert conditions["PodScheduled"]["lastTransitionTime"] == "t1"
    assert second["podIP"] == "10.244.0.2" and second["phase"] == "Running"
    assert second["containerStatuses"][0]["state"] == {"running": {"startedAt": ""}}


def test_nodes() -> None:
    gpu = parse_node("g1:europe-west4:b:gpu=2")
    assert (gpu.zone, gpu.gpus) == ("europe-west4-b", 2)
    node = build_node(gpu)
    assert node["metadata"]["labels"]["topology.kubernetes.io/region"] == "europe-west4"
    assert node["spec"]["taints"] == [GPU_TAINT]
    assert build_node_status(gpu)["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert "taints" not in build_node(parse_node("c1:europe-west4:a"))["spec"]
    with pytest.raises(ValueError, match="NAME:REGION:ZONE"):
        parse_node("bad")
    with pytest.raises(ValueError, match="gpu=N"):
        parse_node("n:r:z:tpu=1")


def test_images_resolve_to_targets_riva_or_pull_errors() -> None:
    from rig.nodeagent.dockerfile import load_dockerfile

    targets = load_dockerfile(ROOT / "Dockerfile")
    cpu, gpu = parse_node("c:europe-west4:a"), parse_node("g:europe-west4:a:gpu=1")
    worker = resolve_process({"image": "ghcr.io/voicehive/worker:0.1.0"}, targets, cpu, ROOT)
    assert worker.argv == ["voicehive", "worker"]
    with pytest.raises(ImageError, match="no Dockerfile target 'memcached'"):
        resolve_process({"image": "memcached:1.6"}, targets, cpu, ROOT)
    riva = {"image": "nvcr.io/nvidia/riva/riva-speech:2.19.0", "ports": [{"containerPort": 50051}],
            "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    assert resolve_process(riva, targets, gpu, ROOT).argv[-3:] == ["-m", "rig.nodeagent.riva", "50051"]
    with pytest.raises(RunError, match="needs an NVIDIA GPU"):
        resolve_process(riva, targets, cpu, ROOT)
    with pytest.raises(RunError, match="needs an NVIDIA GPU"):
        resolve_process({**riva, "resources": {}}, targets, gpu, ROOT)


def test_a_nim_serves_grpc_on_nim_grpc_api_port_even_when_it_is_not_a_declared_port() -> None:
    gpu = parse_node("g:europe-west4:a:gpu=1")
    nim = {"image": "nvcr.io/nim/nvidia/parakeet-1-1b-ctc-en-us:latest", "resources": {"limits": {"nvidia.com/gpu": "1"}},
           "env": [{"name": "NIM_GRPC_API_PORT", "value": "50052"}, {"name": "NIM_HTTP_API_PORT", "value": "9000"}],
           "ports": [{"name": "http", "containerPort": 9000}]}
    assert resolve_process(nim, {}, gpu, ROOT).argv[-4:] == ["rig.nodeagent.riva", "50052", "--http", "9000"]
    declared = {**nim, "env": [], "ports": [{"name": "speech-grpc", "containerPort": 50051}]}
    assert resolve_process(declared, {}, gpu, ROOT).argv[-2:] == ["rig.nodeagent.riva", "50051"]
    with pytest.raises(RunError, match="NIM_GRPC_API_PORT='x' is not a port number"):
        resolve_process({**nim, "env": [{"name": "NIM_GRPC_API_PORT", "value": "x"}]}, {}, gpu, ROOT)


def test_nginx_images_run_the_hosts_nginx_with_the_images_cmd(tmp_path: Path) -> None:
    from rig.nodeagent import images

    cpu = parse_node("c:europe-west4:a")
    if not images.NGINX_BINARY.exists():
        with pytest.raises(RunError, match="make system-deps"):
            resolve_process({"image": "nginx:1.28-alpine"}, {}, cpu, ROOT)
        return
    default = resolve_process({"image": "docker.io/library/nginx:1.28-alpine"}, {}, cpu, ROOT)
    assert default.argv[:2] == ["nginx", "-g"] and default.argv[2].endswith("daemon off;")
    assert "/usr/sbin" in default.image.env_dict()["PATH"].split(":")
    sidecar = resolve_process({"image": "nginx:1.28-alpine", "command": ["nginx", "-e", "stderr", "-g", "daemon off;"]},
                              {}, cpu, ROOT)
    assert sidecar.argv[:4] == ["nginx", "-e", "stderr", "-g"] and len(sidecar.argv) == 5
    module = tmp_path / "ngx_stream_module.so"
    assert images.with_stream_module(["nginx", "-g", "daemon off;"], module) == ["nginx", "-g", "daemon off;"]
    module.touch()  # Debian's dynamic stream module: loaded through the one -g nginx keeps
    assert images.with_stream_module(["nginx", "-g", "daemon off;"], module) == [
        "nginx", "-g", f"load_module {module}; daemon off;"]
    assert images.with_stream_module(["nginx"], module) == ["nginx", "-g", f"load_module {module};"]
    assert images.with_stream_module(["sh", "-c", "nginx"], module) == ["sh", "-c", "nginx"]


def test_users() -> None:
    pod = {"spec": {"securityContext": {"fsGroup": 2000}}}
    assert user_of(pod, {}, "10001") == (10001, 0, [2000])
    assert user_of(pod, {"securityContext": {"runAsUser": 5, "runAsGroup": 6}}, "10001") == (5, 6, [2000])
    from rig.nodeagent.dockerfile import load_dockerfile

    worker = load_dockerfile(ROOT / "Dockerfile")["worker"]
    assert user_of({"spec": {}}, {}, worker.user, worker) == (10001, 10001, [])  # useradd's own group
    with pytest.raises(ConfigError, match="runAsNonRoot"):
        user_of({"spec": {"securityContext": {"runAsNonRoot": True}}}, {}, "0")


def test_default_service_account_mount() -> None:
    assert needs_default_sa({"spec": {"containers": [{}]}}, None)
    assert not needs_default_sa({"spec": {"containers": [{}], "automountServiceAccountToken": False}}, True)
    assert not needs_default_sa({"spec": {"containers": [{}]}}, False)
    mounted = {"containers": [{"volumeMounts": [{"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}]}
    assert not needs_default_sa({"spec": mounted}, None)


def test_hosts_and_endpoints() -> None:
    svc = {"metadata": {"name": "api", "namespace": "ns"}, "spec": {"clusterIP": "10.0.0.9"}}
    other = {"metadata": {"name": "db", "namespace": "x"}, "spec": {"clusterIP": "10.0.0.8"}}
    headless = {"metadata": {"name": "h", "namespace": "ns"}, "spec": {"clusterIP": "None"}}
    text = hosts_text(POD, "10.244.0.9", [svc, other, headless])
    assert "10.0.0.9\tapi.ns.svc.cluster.local api.ns.svc api.ns api\n" in text
    assert "10.0.0.8\tdb.x.svc.cluster.local db.x.svc db.x\n" in text
    assert "10.244.0.9\tp" in text and "\th." not in text
    slices = [{"ports": [{"name": "http", "port": 8080}], "endpoints": [
        {"addresses": ["10.244.0.2"], "conditions": {"ready": True}},
        {"addresses": ["10.244.0.3"], "conditions": {"ready": False}},
    ]}]
    assert ready_endpoints(slices, "http") == [("10.244.0.2", 8080)]
    assert ready_endpoints(slices, "grpc") == []


def test_a_final_delete_the_apiserver_fails_is_retried_until_the_pod_is_gone() -> None:
    """CI 12-03: a Pod stayed Terminating past 180 s; the agent tried its final delete once.
    The kubelet's status manager retries until the API object is gone (404/409 end it too)."""
    answers: list[BaseException | None] = [ConnectionResetError("reset by peer"),
                                           KubeError(500, {"message": "etcdserver: request timed out"}, "DELETE"),
                                           KubeError(429, {"message": "too many requests"}, "DELETE"), None]
    calls: list[int] = []

    def delete() -> None:
        calls.append(1)
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    assert retry_until_done(delete, threading.Event(), "pod ns/p: final delete", pause=0.01) is True
    assert len(calls) == 4 and answers == []
    for status in (404, 409):
        def gone(status: int = status) -> None:
            raise KubeError(status, {}, "DELETE")
        assert retry_until_done(gone, threading.Event(), "final delete", pause=0.01) is True
    stopping = threading.Event()
    stopping.set()
    assert retry_until_done(lambda: (_ for _ in ()).throw(OSError("down")), stopping, "final delete") is False
