"""Pods on the rig's real kube-apiserver, run by the node agent (test infrastructure standing
in for the kubelet): image targets, env, ServiceAccount tokens, probes, Services, restarts,
deletion. Pods carry ``spec.nodeName`` (no scheduler needed)."""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

import pytest

from rig.nodeagent.kube import KubeError
from tests.nodeagent.conftest import RunningAgent, eventually

pytestmark = pytest.mark.rig

# Runs in the `worker` image target by a command override: python is /opt/venv/bin/python, from
# the image's PATH. It reports what it sees on stdout (the container log) and serves HTTP.
SERVER = r"""
import base64, http.server, json, os, signal, socket, ssl, sys, threading, time, urllib.error, urllib.request
SA = "/var/run/secrets/kubernetes.io/serviceaccount"
NAME = os.environ.get("MY_POD_NAME", "?")

def api(method, path, body=None):
    url = "https://%s:%s%s" % (os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"], path)
    headers = {"Authorization": "Bearer " + open(SA + "/token").read(), "Content-Type": "application/json"}
    data = json.dumps(body).encode() if body else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=SA + "/ca.crt"), timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None

def facts():
    out = {"uid": os.getuid(), "hostname": socket.gethostname(), "cwd": os.getcwd(), "python": sys.executable,
           "env": {k: os.environ.get(k) for k in ("SECRET_VALUE", "MY_POD_NAME", "MY_POD_IP", "MY_NS", "HOME", "PATH")}}
    if os.path.exists(SA + "/token"):
        out["namespace_file"] = open(SA + "/namespace").read()
        payload = open(SA + "/token").read().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        out["aud"] = claims.get("aud")
        out["bound_pod"] = claims.get("kubernetes.io", {}).get("pod", {}).get("name")
        status, review = api("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                             {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        out["whoami"] = (review or {}).get("status", {}).get("userInfo", {}).get("username")
        out["list_pods"] = api("GET", "/api/v1/namespaces/%s/pods" % out["namespace_file"])[0]
        out["list_secrets"] = api("GET", "/api/v1/namespaces/%s/secrets" % out["namespace_file"])[0]
    try:
        out["host_port"] = urllib.request.urlopen("http://127.0.0.1:%s/" % os.environ["HOST_PORT"], timeout=5).read().decode()
    except Exception as e:
        out["host_port"] = repr(e)
    print("FACTS " + json.dumps(out), flush=True)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/ready":
            code = 503 if os.environ.get("NEVER_READY") else 200
        elif self.path == "/prestop":
            print("PRESTOP", flush=True)
            code = 200
        else:
            code = 200
        body = NAME.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

def on_term(*_):
    print("SIGTERM", flush=True)
    threading.Thread(target=server.shutdown).start()

signal.signal(signal.SIGTERM, on_term)
server = http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler)
threading.Thread(target=facts).start()
server.serve_forever()
print("EXIT", flush=True)
"""

IMAGE = "ghcr.io/voicehive/worker:0.1.0-test"


def web_pod(name: str, node: str, host_port: int, labels: dict[str, str] | None = None,
            never_ready: bool = False, **spec: Any) -> dict[str, Any]:
    env = [
        {"name": "MY_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MY_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "HOST_PORT", "value": str(host_port)},
    ]
    if never_ready:
        env.append({"name": "NEVER_READY", "value": "1"})
    container: dict[str, Any] = {
        "name": "web",
        "image": IMAGE,
        "command": ["python", "-c", SERVER],
        "env": env,
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1},
        "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2, "failureThreshold": 5},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"nodeName": node, "containers": [container], "terminationGracePeriodSeconds": 10, **spec},
    }


def create(agent: RunningAgent, namespace: str, body: dict[str, Any], plural: str = "pods",
           group: str = "/api/v1") -> dict[str, Any]:
    result: dict[str, Any] = agent.kube.post(f"{group}/namespaces/{namespace}/{plural}", body)
    return result


def condition(pod: dict[str, Any] | None, kind: str) -> str | None:
    for cond in (pod or {}).get("status", {}).get("conditions", []):
        if cond["type"] == kind:
            return str(cond["status"])
    return None


def wait_ready(agent: RunningAgent, namespace: str, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = eventually(
        lambda: (p := agent.pod(namespace, name)) and condition(p, "Ready") == "True" and p,
        what=f"pod {name} Ready ({agent.log(namespace, name, 'web')[-500:]})",
    )
    return pod


def facts(agent: RunningAgent, namespace: str, name: str) -> dict[str, Any]:
    line = eventually(
        lambda: next((ln for ln in agent.log(namespace, name, "web").splitlines() if ln.startswith("FACTS ")), None),
        what=f"FACTS in the log of {name}",
    )
    result: dict[str, Any] = json.loads(line.removeprefix("FACTS "))
    return result


def pod_exec(pod: dict[str, Any], code: str) -> str:
    """Like ``kubectl exec``: python in the container's namespaces, as its user."""
    pid = pod["status"]["containerStatuses"][0]["containerID"].rsplit("/", 1)[1]
    result = subprocess.run(
        ["nsenter", "-t", pid, "-n", "-m", "-u", "-S", "10001", "-G", "0", "--", "/opt/venv/bin/python", "-c", code],
        capture_output=True, text=True, timeout=60, check=False, env={"PATH": "/opt/venv/bin:/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_nodes_are_registered_with_labels_taint_capacity_and_a_lease(agent: RunningAgent) -> None:
    gpu = agent.kube.get(f"/api/v1/nodes/{agent.gpu_node}")
    cpu = agent.kube.get(f"/api/v1/nodes/{agent.cpu_node}")
    assert gpu["metadata"]["labels"]["topology.kubernetes.io/region"] == "europe-west4"
    assert gpu["metadata"]["labels"]["topology.kubernetes.io/zone"] == "europe-west4-b"
    assert gpu["metadata"]["labels"]["kubernetes.io/hostname"] == agent.gpu_node
    assert gpu["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "effect": "NoSchedule"}.items() <= gpu["spec"]["taints"][0].items()
    assert "taints" not in cpu["spec"] and "nvidia.com/gpu" not in cpu["status"]["allocatable"]
    path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{agent.cpu_node}"
    first = eventually(lambda: agent.kube.get_or_none(path), what="node lease")["spec"]["renewTime"]
    eventually(lambda: agent.kube.get(path)["spec"]["renewTime"] != first, 40, what="the lease is renewed")


def test_a_pod_runs_from_its_image_target_with_env_token_and_rbac(agent: RunningAgent, namespace: str) -> None:
    create(agent, namespace, {"metadata": {"name": "creds"}, "stringData": {"value": "from-a-secret"}}, "secrets")
    create(agent, namespace, {"metadata": {"name": "reader"}}, "serviceaccounts")
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    create(agent, namespace, {"metadata": {"name": "pod-reader"},
                              "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]},
           "roles", rbac)
    create(agent, namespace, {"metadata": {"name": "pod-reader"},
                              "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
                              "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]},
           "rolebindings", rbac)
    body = web_pod("app", agent.cpu_node, agent.host_port, serviceAccountName="reader")
    body["spec"]["containers"][0]["env"].append(
        {"name": "SECRET_VALUE", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "value"}}})
    create(agent, namespace, body)
    pod = wait_ready(agent, namespace, "app")
    ip = pod["status"]["podIP"]
    assert ip.startswith("10.244.") and pod["status"]["podIPs"] == [{"ip": ip}]
    assert pod["status"]["phase"] == "Running" and condition(pod, "ContainersReady") == "True"
    seen = facts(agent, namespace, "app")
    assert seen["uid"] == 10001  # the image's USER
    assert seen["hostname"] == "app"
    assert seen["python"].startswith("/opt/venv/bin/python")
    assert seen["env"]["SECRET_VALUE"] == "from-a-secret"
    assert (seen["env"]["MY_POD_NAME"], seen["env"]["MY_POD_IP"], seen["env"]["MY_NS"]) == ("app", ip, namespace)
    assert seen["env"]["PATH"].startswith("/opt/venv/bin:") and seen["env"]["HOME"] == "/home/voicehive"
    assert seen["namespace_file"] == namespace
    assert seen["whoami"] == f"system:serviceaccount:{namespace}:reader"
    assert seen["bound_pod"] == "app"
    assert seen["aud"]  # the apiserver's audience
    assert (seen["list_pods"], seen["list_secrets"]) == (200, 403)
    assert seen["host_port"] == "hello from the host"


def test_two_pods_on_one_port_and_a_service_reaches_only_the_ready_one(agent: RunningAgent, namespace: str) -> None:
    labels = {"app": "web"}
    create(agent, namespace, web_pod("ready", agent.cpu_node, agent.host_port, labels))
    create(agent, namespace, web_pod("unready", agent.cpu_node, agent.host_port, labels, never_ready=True,
                                     automountServiceAccountToken=False))
    create(agent, namespace, {"metadata": {"name": "web"}, "spec": {
        "selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}, "services")
    ready = wait_ready(agent, namespace, "ready")
    unready = eventually(lambda: (p := agent.pod(namespace, "unready")) and p["status"].get("podIP") and p)
    assert ready["status"]["podIP"] != unready["status"]["podIP"]
    assert condition(unready, "Ready") == "False"
    # both listen on 8080, each in its own network; Pod IPs reach each other directly
    assert pod_exec(ready, f"import urllib.request as u; print(u.urlopen('http://{unready['status']['podIP']}:8080/x', "
                           "timeout=5).read().decode())").strip() == "unready"
    slices = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
    try:
        eventually(lambda: agent.kube.get(slices, {"labelSelector": "kubernetes.io/service-name=web"})["items"], 30)
    except AssertionError:
        pytest.skip("no EndpointSlice appeared: the rig's kube-controller-manager runs no endpointslice-controller")
    fetch = ("import urllib.request as u; print(','.join(u.urlopen('http://web/', timeout=5).read().decode() "
             "for _ in range(8)))")
    answers = eventually(lambda: pod_exec(ready, fetch).strip(), what="the Service answers")
    assert set(answers.split(",")) == {"ready"}
    full = pod_exec(ready, f"import urllib.request as u; print(u.urlopen('http://web.{namespace}.svc.cluster.local/', "
                           "timeout=5).read().decode())")
    assert full.strip() == "ready"


def test_a_crashing_container_backs_off_and_counts_restarts(agent: RunningAgent, namespace: str) -> None:
    create(agent, namespace, {"metadata": {"name": "crash"}, "spec": {"nodeName": agent.cpu_node, "containers": [
        {"name": "web", "image": IMAGE, "command": ["python", "-c", "import sys; print('boom', flush=True); sys.exit(3)"]}
    ]}})

    def looping() -> dict[str, Any] | None:
        pod = agent.pod(namespace, "crash")
        statuses = (pod or {}).get("status", {}).get("containerStatuses") or [{}]
        status: dict[str, Any] = statuses[0]
        waiting = status.get("state", {}).get("waiting", {})
        if status.get("restartCount", 0) >= 2 and waiting.get("reason") == "CrashLoopBackOff":
            return status
        return None

    status = eventually(looping, what="CrashLoopBackOff with restartCount >= 2")
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert agent.log(namespace, "crash", "web").count("boom") >= 3  # appended across restarts
    assert agent.pod(namespace, "crash")["status"]["phase"] == "Running"  # type: ignore[index]


def test_an_unknown_image_cannot_be_pulled(agent: RunningAgent, namespace: str) -> None:
    create(agent, namespace, {"metadata": {"name": "nope"}, "spec": {"nodeName": agent.cpu_node, "containers": [
        {"name": "web", "image": "docker.io/library/memcached:1.6"}]}})  # (nginx runs: the host's nginx)

    def waiting() -> dict[str, Any] | None:
        pod = agent.pod(namespace, "nope") or {}
        statuses = pod.get("status", {}).get("containerStatuses") or [{}]
        state = statuses[0].get("state", {}).get("waiting", {})
        return state if state.get("reason") in {"ErrImagePull", "ImagePullBackOff"} else None

    state = eventually(waiting, what="ErrImagePull")
    assert "no Dockerfile target 'memcached'" in state["message"]
    assert agent.pod(namespace, "nope")["status"]["phase"] == "Pending"  # type: ignore[index]


def test_deletion_runs_prestop_then_sigterm_and_the_pod_disappears(agent: RunningAgent, namespace: str) -> None:
    body = web_pod("bye", agent.cpu_node, agent.host_port, automountServiceAccountToken=False)
    body["spec"]["containers"][0]["lifecycle"] = {"preStop": {"httpGet": {"path": "/prestop", "port": 8080}}}
    create(agent, namespace, body)
    wait_ready(agent, namespace, "bye")
    agent.kube.delete(f"/api/v1/namespaces/{namespace}/pods/bye", {"gracePeriodSeconds": 20})
    eventually(lambda: agent.pod(namespace, "bye") is None, 60, what="the Pod is deleted")
    log = agent.log(namespace, "bye", "web")
    assert "PRESTOP" in log and "SIGTERM" in log
    assert log.index("PRESTOP") < log.index("SIGTERM") < log.index("EXIT")


def riva_pod(node: str, gpu: bool) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "riva",
        "image": "nvcr.io/nvidia/riva/riva-speech:2.19.0",
        "args": ["start-riva", "--riva-uri=0.0.0.0:50051"],
        "ports": [{"name": "grpc", "containerPort": 50051}],
        "readinessProbe": {"grpc": {"port": 50051}, "periodSeconds": 2},
        "securityContext": {"runAsUser": 1000, "runAsNonRoot": True},
    }
    if gpu:
        container["resources"] = {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}
    return {"metadata": {"name": f"riva-{'gpu' if gpu else 'cpu'}"}, "spec": {
        "nodeName": node, "automountServiceAccountToken": False, "containers": [container],
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}}


def test_riva_runs_as_the_fake_only_with_a_gpu(agent: RunningAgent, namespace: str) -> None:
    create(agent, namespace, riva_pod(agent.gpu_node, gpu=True))
    create(agent, namespace, riva_pod(agent.cpu_node, gpu=False))
    eventually(lambda: condition(agent.pod(namespace, "riva-gpu"), "Ready") == "True",
               what=f"Riva fake Ready by its gRPC health probe ({agent.log(namespace, 'riva-gpu', 'riva')[-300:]})")

    def refused() -> dict[str, Any] | None:
        statuses = (agent.pod(namespace, "riva-cpu") or {}).get("status", {}).get("containerStatuses") or [{}]
        state = statuses[0].get("state", {}).get("waiting", {})
        return state if state.get("reason") == "CreateContainerError" else None

    assert "needs an NVIDIA GPU" in eventually(refused, what="Riva without GPU refused")["message"]


def test_token_is_refused_once_its_pod_is_gone(agent: RunningAgent, namespace: str) -> None:
    """The mounted token is bound to the Pod (TokenRequest boundObjectRef), as the kubelet's."""
    create(agent, namespace, web_pod("bound", agent.cpu_node, agent.host_port, serviceAccountName="default"))
    pod = wait_ready(agent, namespace, "bound")
    token = pod_exec(pod, "print(open('/var/run/secrets/kubernetes.io/serviceaccount/token').read())").strip()
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=" * (-len(token.split(".")[1]) % 4)))
    assert claims["kubernetes.io"]["pod"]["uid"] == pod["metadata"]["uid"]
    agent.kube.delete(f"/api/v1/namespaces/{namespace}/pods/bound", {"gracePeriodSeconds": 1})
    eventually(lambda: agent.pod(namespace, "bound") is None, 60, what="the Pod is deleted")
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}

    def refused() -> bool:
        result = agent.kube.post("/apis/authentication.k8s.io/v1/tokenreviews", review)
        return result["status"].get("authenticated") is not True

    eventually(refused, 60, interval=1.0, what="the apiserver refuses the token of a deleted Pod")


def test_kube_errors_name_the_request(agent: RunningAgent) -> None:
    with pytest.raises(KubeError, match="404"):
        agent.kube.get("/api/v1/namespaces/does-not-exist-xyz/pods/p")


def test_nginx_terminates_the_pools_tls_in_front_of_the_riva_fake(
    agent: RunningAgent, namespace: str, tmp_path: Any
) -> None:
    """The operator's Riva Pod as the builders make it (NIM + TLS sidecar, its ConfigMap and
    kubernetes.io/tls Secret): the host's real nginx (Debian's package, standing in for NGINX's
    image) serves TLS 1.3 with ALPN h2 on the Service's port and passes gRPC to the Riva fake on
    NIM_GRPC_API_PORT. A client with the pool's CA gets the model list; another CA, or plaintext to
    the TLS port, gets nothing. The NIM's own port answers plaintext inside the Pod network: only a
    NetworkPolicy-enforcing CNI closes it (none on the rig; docs/tenant-isolation.md)."""
    import datetime as dt

    from rig.nodeagent.images import NGINX_BINARY
    from tests.fixtures.riva_tls_probe import probe_riva_tls
    from tests.operator.helpers import spec
    from voicehive.api.models import HotelLineSpec
    from voicehive_operator import builders, riva_tls
    from voicehive_operator.settings import OperatorSettings

    if not NGINX_BINARY.exists():
        pytest.fail(f"{NGINX_BINARY} is not installed: make system-deps")
    settings = OperatorSettings(riva_cpu="100m", riva_memory="256Mi")
    pool = builders.riva_pool_for(namespace, HotelLineSpec.model_validate(spec()), settings)
    assert pool is not None
    now = dt.datetime.now(dt.UTC)
    tls = riva_tls.issue(pool.name, namespace, now)
    create(agent, namespace, {"metadata": {"name": "voicehive-ngc"}, "stringData": {"api-key": "unused-by-the-fake"}},
           "secrets")
    create(agent, namespace, builders.riva_tls_secret(pool, tls, None), "secrets")
    create(agent, namespace, builders.riva_proxy_configmap(pool, settings, None), "configmaps")
    template = builders.riva_deployment(pool, 1, settings, tls.fingerprint)["spec"]["template"]
    create(agent, namespace, {"metadata": {"name": "riva-tls", "labels": template["metadata"]["labels"]},
                              "spec": {**template["spec"], "nodeName": agent.gpu_node}})

    def logs() -> str:
        return (agent.log(namespace, "riva-tls", "riva")[-300:] + " | nginx: "
                + agent.log(namespace, "riva-tls", builders.RIVA_PROXY_CONTAINER)[-500:])

    try:
        pod = eventually(lambda: (p := agent.pod(namespace, "riva-tls")) and condition(p, "Ready") == "True" and p,
                         timeout=120, what="the Riva Pod Ready, both containers")
    except AssertionError as exc:
        raise AssertionError(f"{exc} (logs: {logs()})") from None
    statuses = {s["name"]: s for s in pod["status"]["containerStatuses"]}
    assert statuses[builders.RIVA_PROXY_CONTAINER]["ready"] and statuses["riva"]["ready"]
    ca, stranger = tmp_path / "ca.crt", tmp_path / "stranger.crt"
    ca.write_text(tls.ca_pem)
    stranger.write_text(riva_tls.issue(pool.name, namespace, now).ca_pem)
    host = pool.address(settings).rsplit(":", 1)[0]  # what a worker dials: <pool>.<ns>.svc
    seen = probe_riva_tls(agent.node_net, pod["status"]["podIP"], host, ca, stranger, settings.riva_port,
                          builders.NIM_INTERNAL_GRPC_PORT)
    assert isinstance(seen["with_pool_ca"], list) and seen["with_pool_ca"], seen  # the fake's model list
    assert isinstance(seen["with_another_ca"], str) and isinstance(seen["plaintext_to_tls_port"], str), seen
    assert seen["tls"] == ["TLSv1.3", "h2"], seen
    assert isinstance(seen["plaintext_to_plain_port"], list), seen  # open without a NetworkPolicy-enforcing CNI
    assert "PRIVATE KEY" not in json.dumps(pod)
