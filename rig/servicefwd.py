"""Forward a host port to a Service's ClusterIP on the node agent's network (test infrastructure).

    python -m rig.servicefwd --kubeconfig K --state .rig/nodeagent --listen 127.0.0.1:P \\
        --service voicehive/voicehive-orchestrator:443

WHY: livekit-server runs on the host (rig/up.sh) and posts its webhooks to
``https://127.0.0.1:$LIVEKIT_WEBHOOK_PORT``; in a cluster it would post to the orchestrator's
Service. The node agent owns the Service CIDR inside its node netns (rig/nodeagent/netns.py),
so this process listens on the host and opens each upstream connection inside that netns to the
Service's ClusterIP, where the agent picks a ready endpoint, as kube-proxy would. Plain TCP: TLS
stays end to end between livekit-server and the orchestrator Pod.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from pathlib import Path

import kubernetes

from rig.nodeagent.netns import Proxy, Target, netns_prefix


class ServiceAddress:
    """The Service's ClusterIP, looked up again after a failure (a reinstall changes it)."""

    def __init__(self, kubeconfig: Path, namespace: str, name: str, port: int) -> None:
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        self.core = kubernetes.client.CoreV1Api(api)
        self.namespace, self.name, self.port = namespace, name, port
        self.ip: str | None = None
        self.looked_up = 0.0

    def current(self) -> str | None:
        if self.ip is None or time.monotonic() - self.looked_up > 10:
            try:
                svc = self.core.read_namespaced_service(self.name, self.namespace)
                self.ip = str(svc.spec.cluster_ip)
            except Exception:
                self.ip = None
            self.looked_up = time.monotonic()
        return self.ip


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m rig.servicefwd", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--kubeconfig", type=Path, required=True)
    p.add_argument("--state", type=Path, required=True, help="the node agent's --state (names its netns)")
    p.add_argument("--listen", required=True, metavar="HOST:PORT")
    p.add_argument("--service", required=True, metavar="NAMESPACE/NAME:PORT")
    args = p.parse_args()
    host, port = args.listen.rsplit(":", 1)
    ref, svc_port = args.service.rsplit(":", 1)
    namespace, name = ref.split("/", 1)
    address = ServiceAddress(args.kubeconfig, namespace, name, int(svc_port))
    node_netns = f"{netns_prefix(args.state)}-node"

    def resolve() -> Target | None:
        ip = address.current()
        return (node_netns, ip, address.port) if ip else None

    proxy = Proxy()
    proxy.add(None, host, int(port), resolve)
    print(f"forwarding {host}:{port} -> Service {namespace}/{name}:{svc_port} in netns {node_netns}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    proxy.close()


if __name__ == "__main__":
    main()
