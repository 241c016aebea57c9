"""Run the rig's node agent (test infrastructure standing in for the kubelet) until SIGTERM.

    python -m rig.nodeagent --kubeconfig .rig/kubeconfig --state .rig/nodeagent --repo . \\
        --node rig-a:europe-west4:a --node rig-gpu:europe-west4:b:gpu=1 --host-port 7880 --host-udp-port 7882

Needs root (network namespaces, mounts, setuid). On SIGTERM/SIGINT every Pod it runs is
stopped (preStop, SIGTERM, grace period, SIGKILL) and its namespaces removed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from rig.nodeagent.agent import Agent
from rig.nodeagent.kube import Kube
from rig.nodeagent.nodes import parse_node

DEFAULT_NODES = ["rig-node-a:europe-west4:a", "rig-node-b:europe-west4:b", "rig-gpu-a:europe-west4:a:gpu=1"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rig.nodeagent", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--kubeconfig", type=Path, required=True, help="credentials of the agent (the rig's admin)")
    p.add_argument("--state", type=Path, required=True, help="directory for Pod files and logs/<ns>_<pod>_<c>.log")
    p.add_argument("--repo", type=Path, default=Path.cwd(), help="repo with the Dockerfile and .venv (default: .)")
    p.add_argument("--node", action="append", default=[], metavar="NAME:REGION:ZONE[:gpu=N]",
                   help=f"a Node to register (repeatable; default {' '.join(DEFAULT_NODES)})")
    p.add_argument("--host-port", action="append", type=int, default=[], metavar="PORT",
                   help="forward 127.0.0.1:PORT inside every Pod to the host's 127.0.0.1:PORT (repeatable)")
    p.add_argument("--host-udp-port", action="append", type=int, default=[], metavar="PORT",
                   help="the same for UDP, one host socket per flow (livekit-server's RTC port)")
    p.add_argument("--ca-bundle", type=Path, help="a CA bundle every container trusts (bound over the image's "
                   "/etc/ssl/certs/ca-certificates.crt and certifi's cacert.pem), as if the image were built with it")
    p.add_argument("--pod-cidr", default="10.244.0.0/16")
    p.add_argument("--service-cidr", default="10.0.0.0/24", help="the apiserver's --service-cluster-ip-range")
    p.add_argument("--backoff-base", type=float, default=10.0,
                   help="first restart back-off in seconds, doubling to 300 (the kubelet's 10; tests use less)")
    p.add_argument("--delete-nodes-on-exit", action="store_true",
                   help="delete the Nodes on SIGTERM (a kubelet keeps them; without a node lifecycle "
                        "controller a stopped agent's Nodes would stay Ready and keep getting Pods)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if os.geteuid() != 0:
        print("rig node agent: needs root (network namespaces, mounts, per-container users)", file=sys.stderr)
        return 2
    try:
        nodes = [parse_node(n) for n in args.node or DEFAULT_NODES]
    except ValueError as exc:
        print(f"rig node agent: {exc}", file=sys.stderr)
        return 2
    repo = args.repo.resolve()
    if not (repo / "Dockerfile").is_file() or not (repo / ".venv" / "bin").is_dir():
        print(f"rig node agent: {repo} needs a Dockerfile and a .venv (make venv)", file=sys.stderr)
        return 2
    kube = Kube(args.kubeconfig)
    agent = Agent(kube, nodes, args.state.resolve(), repo, args.host_port, args.pod_cidr, args.service_cidr,
                  args.backoff_base, args.host_udp_port, args.ca_bundle.resolve() if args.ca_bundle else None)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    agent.start()
    logging.getLogger("rig.nodeagent").info("node agent running: %s", ", ".join(n.name for n in nodes))
    stop.wait()
    agent.shutdown(delete_nodes=args.delete_nodes_on_exit)
    kube.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
