"""The node agent: registers Nodes, keeps their Leases, runs the Pods bound to them, and serves
Services (ClusterIP listeners in the node network) and per-Pod /etc/hosts."""

from __future__ import annotations

import calendar
import contextlib
import ipaddress
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rig.nodeagent.dockerfile import ImageConfig, load_dockerfile
from rig.nodeagent.env import service_links
from rig.nodeagent.kube import STRATEGIC, Kube, KubeError
from rig.nodeagent.netns import (
    Key,
    Proxy,
    Target,
    create_node_network,
    delete_netns,
    kill_netns_processes,
    netns_prefix,
    owned_netns,
)
from rig.nodeagent.nodes import LEASE_NAMESPACE, NodeSpec, build_lease, build_node, build_node_status, now_micro
from rig.nodeagent.pod import PodWorker
from rig.nodeagent.volumes import decode_data

log = logging.getLogger("rig.nodeagent")
HEARTBEAT_SECONDS = 10.0
NOT_READY_TAINT = "node.kubernetes.io/not-ready"


class ApiSources:
    """Secrets, ConfigMaps and tokens as the kubelet reads them (fresh on every Pod start)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def _get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj: dict[str, Any] | None = self.kube.get_or_none(f"/api/v1/namespaces/{namespace}/{kind}/{name}")
        return obj

    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        obj = self._get("secrets", namespace, name)
        return None if obj is None else decode_data(obj, secret=True)

    def configmap(self, namespace: str, name: str) -> dict[str, bytes] | None:
        obj = self._get("configmaps", namespace, name)
        return None if obj is None else decode_data(obj, secret=False)

    def secret_text(self, namespace: str, name: str) -> dict[str, str] | None:
        data = self.secret(namespace, name)
        return None if data is None else {k: v.decode(errors="replace") for k, v in data.items()}

    def configmap_text(self, namespace: str, name: str) -> dict[str, str] | None:
        data = self.configmap(namespace, name)
        return None if data is None else {k: v.decode(errors="replace") for k, v in data.items()}

    def token(self, pod: dict[str, Any], audience: str | None, seconds: int) -> tuple[str, float]:
        """TokenRequest for the Pod's ServiceAccount, bound to the Pod (invalid once it is gone)."""
        meta, spec = pod["metadata"], pod["spec"]
        sa = spec.get("serviceAccountName") or "default"
        body: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [audience] if audience else [], "expirationSeconds": seconds},
        }
        if spec.get("serviceAccountName"):
            # Without ServiceAccount admission (the rig's apiserver) a Pod that names no
            # ServiceAccount keeps it empty, and the apiserver refuses to bind a "default"
            # token to it: such a Pod gets an unbound token of "default".
            body["spec"]["boundObjectRef"] = {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}
        result = self.kube.post(f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{sa}/token", body)
        expires = calendar.timegm(time.strptime(result["status"]["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ"))
        return str(result["status"]["token"]), expires

    def root_ca(self, namespace: str) -> bytes:
        return Path(self.kube.ca_file).read_bytes() if self.kube.ca_file else b""


def hosts_text(pod: dict[str, Any], pod_ip: str, services: list[dict[str, Any]]) -> str:
    """/etc/hosts of a Pod: itself, and every Service's DNS names (the rig has no cluster DNS)."""
    ns = pod["metadata"]["namespace"]
    hostname = pod["spec"].get("hostname") or pod["metadata"]["name"]
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", f"{pod_ip}\t{hostname}"]
    for svc in services:
        ip = svc.get("spec", {}).get("clusterIP")
        if not ip or ip == "None":
            continue
        name, svc_ns = svc["metadata"]["name"], svc["metadata"]["namespace"]
        names = [f"{name}.{svc_ns}.svc.cluster.local", f"{name}.{svc_ns}.svc", f"{name}.{svc_ns}"]
        if svc_ns == ns:
            names.append(name)
        lines.append(f"{ip}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"


def ready_endpoints(slices: list[dict[str, Any]], port_name: str) -> list[tuple[str, int]]:
    """(address, port) of ready endpoints for a Service port, from its EndpointSlices."""
    found: list[tuple[str, int]] = []
    for eps in slices:
        port = next((p.get("port") for p in eps.get("ports") or [] if (p.get("name") or "") == port_name), None)
        if port is None:
            continue
        for endpoint in eps.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            found.extend((address, int(port)) for address in endpoint.get("addresses", [])[:1])
    return found


class Agent:
    def __init__(
        self,
        kube: Kube,
        nodes: list[NodeSpec],
        state: Path,
        repo: Path,
        host_ports: list[int],
        pod_cidr: str = "10.244.0.0/16",
        service_cidr: str = "10.0.0.0/24",
        backoff_base: float = 10.0,
        host_udp_ports: list[int] | None = None,
        ca_bundle: Path | None = None,
    ) -> None:
        self.kube = kube
        self.ca_bundle = ca_bundle
        self.nodes = {n.name: n for n in nodes}
        self.state = state
        self.repo = repo
        self.host_ports = host_ports
        self.host_udp_ports = host_udp_ports or []
        self.backoff_base = backoff_base
        self.service_cidr = service_cidr
        network = ipaddress.ip_network(pod_cidr)
        self.pod_network = network
        self.gateway = str(network.network_address + 1)
        self.prefix_len = network.prefixlen
        self.host_ip = "127.0.0.1"
        self.prefix = netns_prefix(state)
        self.node_net = f"{self.prefix}-node"
        self.images: dict[str, ImageConfig] = load_dockerfile(repo / "Dockerfile")
        # The interpreter the image's /opt/venv links to (the "python:3.11" base layer).
        self.python_prefix = Path(os.path.realpath(repo / ".venv" / "bin" / "python")).parents[1]
        self.sources = ApiSources(kube)
        self.proxy = Proxy()
        api = urlparse(kube.server)
        self.apiserver: Target = (None, api.hostname or "127.0.0.1", api.port or 443)
        self.lock = threading.RLock()
        self.workers: dict[str, PodWorker] = {}
        self.ips: dict[str, str] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.slices: dict[str, dict[str, Any]] = {}
        self.service_accounts: dict[str, bool | None] = {}
        self.stopping = threading.Event()
        self.node_uids: dict[str, str] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        (self.state / "logs").mkdir(parents=True, exist_ok=True)
        for name in owned_netns(self.prefix):  # left over by a killed run of this agent (same --state)
            kill_netns_processes(name)
            delete_netns(name)
        create_node_network(self.node_net, self.gateway, self.prefix_len, self.service_cidr)
        for node in self.nodes.values():
            self.register(node)
        threads: list[tuple[str, Callable[[], None]]] = [("heartbeat", self.heartbeat_loop)]
        threads += [("services", lambda: self.informer("/api/v1/services", {}, self.on_service))]
        threads += [("slices", lambda: self.informer("/apis/discovery.k8s.io/v1/endpointslices", {}, self.on_slice))]
        for node_name in self.nodes:
            threads.append((f"pods-{node_name}", self._pod_informer(node_name)))
        for name, target in threads:
            threading.Thread(target=target, name=f"nodeagent-{name}", daemon=True).start()

    def _pod_informer(self, node: str) -> Callable[[], None]:
        def handler(kind: str, obj: dict[str, Any]) -> None:
            if kind == "SYNCED":
                self.on_relisted(node, {item["metadata"]["uid"] for item in obj["items"]})
            else:
                self.on_pod(kind, obj)

        return lambda: self.informer("/api/v1/pods", {"fieldSelector": f"spec.nodeName={node}"}, handler)

    def shutdown(self, delete_nodes: bool = False) -> None:
        """Stop every Pod we run (SIGTERM, grace, SIGKILL), then the network (and the Nodes)."""
        self.stopping.set()
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(timeout=60)
        self.proxy.close()
        delete_netns(self.node_net)
        for name in self.nodes if delete_nodes else []:
            try:
                self.kube.delete(f"/api/v1/nodes/{name}")
            except (KubeError, OSError) as exc:
                log.warning("deleting node %s: %s", name, exc)

    # ------------------------------------------------------------------ nodes

    def register(self, node: NodeSpec) -> None:
        body = build_node(node)
        try:
            created = self.kube.post("/api/v1/nodes", body)
        except KubeError as exc:
            if exc.status != 409:
                raise
            created = self.kube.patch(f"/api/v1/nodes/{node.name}", {"metadata": {"labels": body["metadata"]["labels"]},
                                                                      "spec": body["spec"]}, STRATEGIC)
        self.node_uids[node.name] = created["metadata"]["uid"]
        self.heartbeat(node)
        self.clear_not_ready(node.name)
        log.info("registered node %s (%s/%s, %d GPUs)", node.name, node.region, node.zone, node.gpus)

    def clear_not_ready(self, name: str) -> None:
        """Admission taints a new Node ``node.kubernetes.io/not-ready:NoSchedule``; the node
        lifecycle controller lifts it once the Node is Ready. The rig may not run that
        controller, so the agent lifts it after posting Ready (the scheduler would skip the Node)."""
        current = self.kube.get(f"/api/v1/nodes/{name}")
        taints = current["spec"].get("taints") or []
        kept = [t for t in taints if t.get("key") != NOT_READY_TAINT]
        if kept != taints:
            self.kube.patch(f"/api/v1/nodes/{name}", {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                                                      "spec": {"taints": kept or None}})

    def heartbeat(self, node: NodeSpec) -> None:
        self.kube.patch(f"/api/v1/nodes/{node.name}/status", build_node_status(node, self.host_ip), STRATEGIC)
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{node.name}"
        try:
            self.kube.patch(path, {"spec": {"renewTime": now_micro(), "holderIdentity": node.name}})
        except KubeError as exc:
            if exc.status != 404:
                raise
            self.kube.post(f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases",
                           build_lease(node.name, self.node_uids[node.name]))

    def heartbeat_loop(self) -> None:
        while not self.stopping.wait(HEARTBEAT_SECONDS):
            for node in self.nodes.values():
                try:
                    self.heartbeat(node)
                except (KubeError, OSError) as exc:
                    log.warning("heartbeat %s: %s", node.name, exc)

    # ------------------------------------------------------------------ watches

    def informer(self, path: str, params: dict[str, Any], handler: Callable[[str, dict[str, Any]], None]) -> None:
        """List then watch, relisting after an error or an expired resourceVersion."""
        while not self.stopping.is_set():
            try:
                listing = self.kube.get(path, params)
                for item in listing.get("items", []):
                    handler("ADDED", item)
                handler("SYNCED", {"items": listing.get("items", [])})
                version = listing["metadata"]["resourceVersion"]
                while not self.stopping.is_set():
                    for event in self.kube.watch(path, {**params, "resourceVersion": version}):
                        if event["type"] == "ERROR":
                            raise KubeError(event["object"].get("code", 500), event["object"], f"WATCH {path}")
                        version = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            handler(event["type"], event["object"])
            except Exception as exc:
                if not self.stopping.is_set():
                    log.info("watch %s: %s; relisting", path, exc)
                    self.stopping.wait(1.0)

    def on_relisted(self, node: str, listed: set[str]) -> None:
        """After a relist: Pods deleted while the watch was down are gone."""
        with self.lock:
            stale = [w for w in self.workers.values() if w.uid not in listed and w.node.name == node]
        for worker in stale:
            worker.vanished()

    def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if kind == "DELETED":
                if worker is not None:
                    worker.vanished()
                return
            if worker is not None:
                worker.update(pod)
                return
            if pod.get("status", {}).get("phase") in {"Succeeded", "Failed"} or self.stopping.is_set():
                return
            if pod["metadata"].get("deletionTimestamp"):  # never started here: just let it go
                threading.Thread(target=self._delete_now, args=(pod,), daemon=True).start()
                return
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
        worker.update(pod)
        worker.start()

    def _delete_now(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(KubeError):
            self.kube.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                             {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})

    def forget(self, worker: PodWorker) -> None:
        with self.lock:
            if self.workers.get(worker.uid) is worker:
                del self.workers[worker.uid]

    def on_service(self, kind: str, svc: dict[str, Any]) -> None:
        if kind == "SYNCED":
            return
        key = f"{svc['metadata']['namespace']}/{svc['metadata']['name']}"
        with self.lock:
            if kind == "DELETED":
                self.services.pop(key, None)
            else:
                self.services[key] = svc
        self.reconcile_services()

    def on_slice(self, kind: str, eps: dict[str, Any]) -> None:
        if kind == "SYNCED":
            return
        key = f"{eps['metadata']['namespace']}/{eps['metadata']['name']}"
        with self.lock:
            if kind == "DELETED":
                self.slices.pop(key, None)
            else:
                self.slices[key] = eps

    # ------------------------------------------------------------------ services

    def _resolver(self, namespace: str, name: str, port_name: str) -> Callable[[], Target | None]:
        if (namespace, name) == ("default", "kubernetes"):
            return lambda: self.apiserver

        def resolve() -> Target | None:
            with self.lock:
                slices = [s for s in self.slices.values() if s["metadata"]["namespace"] == namespace
                          and (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == name]
            ready = ready_endpoints(slices, port_name)
            if not ready:
                return None
            address, port = random.choice(ready)
            return (self.node_net, address, port)

        return resolve

    def reconcile_services(self) -> None:
        """One listener per ClusterIP:port in the node network; Pod /etc/hosts refreshed."""
        with self.lock:
            services = list(self.services.values())
            workers = list(self.workers.values())
        wanted: set[Key] = set()
        if not any(s["metadata"]["namespace"] == "default" and s["metadata"]["name"] == "kubernetes" for s in services):
            services.append(self._kubernetes_service())
        for svc in services:
            spec = svc.get("spec", {})
            ip = spec.get("clusterIP")
            if not ip or ip == "None":
                continue
            for port in spec.get("ports") or []:
                if port.get("protocol", "TCP") != "TCP":
                    continue
                key: Key = (self.node_net, ip, int(port["port"]))
                wanted.add(key)
                resolver = self._resolver(svc["metadata"]["namespace"], svc["metadata"]["name"], port.get("name") or "")
                try:
                    self.proxy.add(self.node_net, ip, int(port["port"]), resolver)
                except OSError as exc:
                    log.warning("service %s/%s port %s: %s", svc["metadata"]["namespace"], svc["metadata"]["name"],
                                port["port"], exc)
        for key in self.proxy.keys():  # noqa: SIM118 - a method, not a dict
            if key[0] == self.node_net and key not in wanted:
                self.proxy.remove(key)
        for worker in workers:
            if worker.pod_ip:
                worker.write_hosts()

    def _kubernetes_service(self) -> dict[str, Any]:
        """The apiserver's own Service, as a stand-in when the apiserver did not create it."""
        ip = str(ipaddress.ip_network(self.service_cidr).network_address + 1)
        return {"metadata": {"namespace": "default", "name": "kubernetes"},
                "spec": {"clusterIP": ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}}

    def hosts_text(self, pod: dict[str, Any], pod_ip: str) -> str:
        with self.lock:
            services = sorted(self.services.values(), key=lambda s: (s["metadata"]["namespace"], s["metadata"]["name"]))
        return hosts_text(pod, pod_ip, services)

    def service_env(self, namespace: str, only_kubernetes: bool = False) -> dict[str, str]:
        with self.lock:
            kubernetes = self.services.get("default/kubernetes")
            services = [] if only_kubernetes else [
                s for s in self.services.values() if s["metadata"]["namespace"] == namespace
            ]
        host = (kubernetes or {}).get("spec", {}).get("clusterIP") or str(
            ipaddress.ip_network(self.service_cidr).network_address + 1
        )
        return service_links(services, host, 443)

    def sa_automount(self, pod: dict[str, Any]) -> bool | None:
        meta = pod["metadata"]
        name = pod["spec"].get("serviceAccountName") or "default"
        sa = self.kube.get_or_none(f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{name}")
        return None if sa is None else sa.get("automountServiceAccountToken")

    # ------------------------------------------------------------------ bookkeeping

    def allocate_ip(self, uid: str) -> str:
        with self.lock:
            used = set(self.ips.values()) | {self.gateway}
            for address in self.pod_network.hosts():
                if str(address) not in used:
                    self.ips[uid] = str(address)
                    return str(address)
        raise OSError(f"pod network {self.pod_network} is full")

    def release_ip(self, uid: str) -> None:
        with self.lock:
            self.ips.pop(uid, None)

    def log_path(self, pod: dict[str, Any], container: str) -> Path:
        meta = pod["metadata"]
        return self.state / "logs" / f"{meta['namespace']}_{meta['name']}_{container}.log"
