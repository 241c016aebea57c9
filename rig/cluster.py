"""`make cluster-up` / `make cluster-down`: VoiceHive installed by its own chart on the rig.

    .venv/bin/python rig/cluster.py up     # rig + node agent + fakes + helm install + example line
    .venv/bin/python rig/cluster.py down   # uninstall, stop the node agent and the fakes

What runs (all on 127.0.0.1 or in network namespaces the node agent makes):
- the rig (rig/up.sh): etcd, kube-apiserver (RBAC, PodSecurity), controller-manager, scheduler,
  livekit-server;
- a redis-server for VoiceHive's call state (AOF `everysec`, the chart's documented setting);
- the provider fakes (tests/fakes: Azure OpenAI, ElevenLabs) over TLS from a generated CA,
  which every Pod trusts as if the images' CA bundle held it (node agent `--ca-bundle`);
- the node agent (rig/nodeagent, test infrastructure standing in for the kubelet) with three
  EU nodes, one of them in the GPU pool, forwarding the host ports above into every Pod;
- the chart (`helm upgrade --install`, values in .rig/cluster/values.yaml) in namespace
  `voicehive`, and the example HotelLine (examples/hotelline.yaml, providers pointed at the
  fakes) in `hotel-lindenhof`, labelled `restricted` for Pod Security.
It returns when every Pod is Ready and the HotelLine is Ready, and writes .rig/cluster/env.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("VOICEHIVE_RIG_STATE", REPO / ".rig"))
CLUSTER = STATE / "cluster"
RELEASE, RELEASE_NS, HOTEL_NS = "voicehive", "voicehive", "hotel-lindenhof"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}
REGION = "germanywestcentral"
GPU_POOL_LABEL = ("voicehive.io/pool", "gpu-l4")  # the example line's asr.nodeSelector
NODES = [f"vh-cpu-1:{REGION}:{REGION}-1", f"vh-cpu-2:{REGION}:{REGION}-2", f"vh-gpu-1:{REGION}:{REGION}-1:gpu=1"]


def log(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise SystemExit(f"[cluster] {what}: not within {timeout:.0f}s (last: {last!r})")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- processes


def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    """Start a background process whose pid and log live in .rig/cluster/ (stopped by `down`)."""
    CLUSTER.mkdir(parents=True, exist_ok=True)
    logf = (CLUSTER / f"{name}.log").open("ab")
    proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, **(env or {})}, cwd=REPO)
    (CLUSTER / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def alive(name: str) -> bool:
    pidf = CLUSTER / f"{name}.pid"
    if not pidf.exists():
        return False
    try:
        os.kill(int(pidf.read_text()), 0)
    except (ProcessLookupError, ValueError):
        return False
    return True


def stop(name: str, timeout: float = 30) -> None:
    pidf = CLUSTER / f"{name}.pid"
    if not alive(name):
        pidf.unlink(missing_ok=True)
        return
    pid = int(pidf.read_text())
    log(f"stopping {name} ({pid})")
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(name):
        time.sleep(0.2)
    if alive(name):
        os.killpg(pid, signal.SIGKILL)
    pidf.unlink(missing_ok=True)


def start_redis(port: int) -> str:
    """VoiceHive's call-state Redis: AOF on, as the chart documents for production."""
    if not alive("redis"):
        data = CLUSTER / "redis"
        data.mkdir(parents=True, exist_ok=True)
        start("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data),
                        "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--protected-mode", "yes"])
    wait_for(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True,
                                    check=False).stdout.strip() == "PONG", 30, "redis-server")
    return f"redis://127.0.0.1:{port}/0"


def start_fakes(tls_dir: Path) -> dict[str, Any]:
    """The provider fakes over TLS; their endpoints and throwaway keys as JSON."""
    out = CLUSTER / "fakes.json"
    if not alive("fakes"):
        out.unlink(missing_ok=True)
        start("fakes", [str(REPO / ".venv/bin/python"), "-m", "tests.fakes", "--json", "--tls-dir", str(tls_dir),
                        "--json-file", str(out), "--phone"])
    wait_for(out.exists, 60, "provider fakes")
    return dict(json.loads(out.read_text()))


def start_node_agent(kubeconfig: Path, host_ports: list[int], udp_ports: list[int], ca_bundle: Path) -> None:
    if alive("nodeagent"):
        return
    argv = [str(REPO / ".venv/bin/python"), "-m", "rig.nodeagent", "--kubeconfig", str(kubeconfig),
            "--state", str(STATE / "nodeagent"), "--repo", str(REPO), "--ca-bundle", str(ca_bundle),
            "--delete-nodes-on-exit"]
    argv += [arg for node in NODES for arg in ("--node", node)]
    argv += [arg for port in host_ports for arg in ("--host-port", str(port))]
    argv += [arg for port in udp_ports for arg in ("--host-udp-port", str(port))]
    start("nodeagent", argv)


# ----------------------------------------------------------------------------- kubernetes


class Kubectl:
    """kubectl against the rig (a client a platform engineer uses; output parsed as JSON)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.bin = shutil.which("kubectl") or str(STATE / "bin" / "kubectl")

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run([self.bin, "--kubeconfig", str(self.kubeconfig), *args], input=stdin,
                                capture_output=True, text=True, timeout=300, check=False)
        if check and result.returncode != 0:
            raise SystemExit(f"[cluster] kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def apply(self, *docs: dict[str, Any]) -> None:
        self("apply", "--server-side", "--force-conflicts", "--field-manager=voicehive-cluster-up", "-f", "-",
             stdin=yaml.safe_dump_all(docs))

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))

    def maybe(self, *args: str) -> dict[str, Any]:
        """The object as JSON, or {} when it does not exist (yet)."""
        out = self(*args, "-o", "json", "--ignore-not-found", check=False)
        return dict(json.loads(out)) if out.strip() else {}


def secret(name: str, namespace: str, data: dict[str, str], kind: str = "Opaque") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": kind, "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def keys_material() -> dict[str, str]:
    """Generated once per rig (never in the repo): PII and transcript keys, agent token, and the
    example line's SIP password. Once, not per `cluster up`: a new password re-applied to a line
    that is already Ready made the next dial fail with 403 until the operator had updated the
    trunk (`make bench-e2e` on a running cluster, 2026-12-04)."""
    path = CLUSTER / "keys.json"
    keys = dict(json.loads(path.read_text())) if path.exists() else {}
    fresh = {"pii-key": lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
             "transcript-key": lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
             "agent-token": lambda: secrets.token_urlsafe(32), "sip-password": lambda: secrets.token_urlsafe(16)}
    if missing := [k for k in fresh if k not in keys]:
        keys.update({k: fresh[k]() for k in missing})
        path.write_text(json.dumps(keys))
        path.chmod(0o600)
    return keys


def chart_values(livekit_url: str) -> dict[str, Any]:
    """Test values: images map to the Dockerfile's targets; providers are the loopback fakes."""
    # the rig's nodes are small: Riva's real 4 CPU / 16 GiB would not fit on them
    small_riva = [{"name": "VOICEHIVE_OPERATOR_RIVA_CPU", "value": "500m"},
                  {"name": "VOICEHIVE_OPERATOR_RIVA_MEMORY", "value": "1Gi"}]
    return {
        # the suite's other tests apply crds/ to the rig's apiserver first, as a platform team
        # that manages CRDs itself would (`kubectl apply -f crds/`); cluster-up does the same
        "crds": {"install": False},
        "image": {"registry": "ghcr.io/voicehive", "tag": "0.1.0"},
        # the rig's redis-server speaks plain TCP on loopback: the chart's lab switch-off of TLS
        "redis": {"urlSecret": {"name": "voicehive-redis", "key": "url"}, "caSecret": {"name": ""}},
        "livekit": {"url": livekit_url, "secretName": "voicehive-livekit"},
        "operator": {"extraEnv": small_riva, "watchNamespaces": [HOTEL_NS]},
        # the providers are the loopback fakes (allow-lists: docs/tenant-isolation.md)
        "providers": {"llmHosts": ["127.0.0.1"], "llmEuHosts": ["127.0.0.1"], "ttsHosts": ["127.0.0.1"]},
        "worker": {"namespaces": [HOTEL_NS]},
    }


def example_line(fakes: dict[str, Any]) -> list[dict[str, Any]]:
    """examples/hotelline.yaml with its keys generated and its providers pointed at the fakes."""
    docs = [d for d in yaml.safe_load_all((REPO / "examples" / "hotelline.yaml").read_text()) if d]
    secret_doc = next(d for d in docs if d["kind"] == "Secret")
    line = next(d for d in docs if d["kind"] == "HotelLine")
    secret_doc["metadata"]["namespace"] = line["metadata"]["namespace"] = HOTEL_NS
    env = fakes["env"]
    secret_doc["stringData"].update({"azure-openai-api-key": env["AZURE_OPENAI_API_KEY"],
                                     "elevenlabs-api-key": env["ELEVEN_API_KEY"],
                                     "sip-password": keys_material()["sip-password"]})
    spec = line["spec"]
    spec["llm"].update({"endpoint": env["AZURE_OPENAI_ENDPOINT"], "deployment": fakes["azure_deployment"]})
    spec["tts"].update({"endpoint": fakes["elevenlabs_endpoint"], "voiceId": fakes["elevenlabs_voice_id"]})
    spec["asr"]["model"] = fakes["riva_model"]
    spec["sip"]["allowedAddresses"] = ["127.0.0.1"]
    return [secret_doc, line]


def condition(obj: dict[str, Any], kind: str) -> str | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


def diagnosis(kubectl: Kubectl, line: str) -> str:
    """What a failed `up` leaves to read: the line's conditions and every Pod's phase and node."""
    obj = kubectl.maybe("get", "hotelline", line, "-n", HOTEL_NS)
    conds = [f"  {c.get('type')}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}"
             for c in (obj.get("status") or {}).get("conditions") or []]
    pods = [f"  {ns}/{p['metadata']['name']} {p.get('status', {}).get('phase')} on {p['spec'].get('nodeName')}"
            for ns in (RELEASE_NS, HOTEL_NS) for p in kubectl.json("get", "pods", "-n", ns)["items"]]
    return "\n".join([f"HotelLine {HOTEL_NS}/{line} conditions:", *(conds or ["  none"]), "Pods:", *(pods or ["  none"])])


def pods_ready(kubectl: Kubectl, ns: str) -> list[str] | None:
    """Names of the namespace's Pods when every one of them is Ready, else None."""
    pods = kubectl.json("get", "pods", "-n", ns)["items"]
    if not pods or any(condition(p, "Ready") != "True" for p in pods):
        return None
    return [p["metadata"]["name"] for p in pods]


def orchestrator_hosts() -> tuple[str, ...]:
    service = f"{RELEASE}-orchestrator"
    return ("127.0.0.1", "localhost", service, f"{service}.{RELEASE_NS}", f"{service}.{RELEASE_NS}.svc",
            f"{service}.{RELEASE_NS}.svc.cluster.local")


def ca_bundle(tls_ca: Path) -> Path:
    """The public CA bundle plus the rig's CA: what an image built with that CA would trust."""
    import certifi

    bundle = CLUSTER / "ca-bundle.pem"
    bundle.write_text(Path(certifi.where()).read_text() + "\n" + tls_ca.read_text())
    return bundle


def cluster_ports() -> dict[str, int]:
    path = CLUSTER / "ports.json"
    if not path.exists():
        CLUSTER.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"redis": free_port()}))
    return dict(json.loads(path.read_text()))


def install_prerequisites(kubectl: Kubectl, rig_env: dict[str, str], redis_url: str, tls_dir: Path) -> None:
    """Namespaces (restricted Pod Security) and the Secrets the chart's NOTES ask for."""
    kubectl.apply(namespace(RELEASE_NS, RESTRICTED), namespace(HOTEL_NS, RESTRICTED))
    keys = keys_material()
    livekit = {"api-key": rig_env["LIVEKIT_API_KEY"], "api-secret": rig_env["LIVEKIT_API_SECRET"]}
    docs = [secret("voicehive-livekit", RELEASE_NS, livekit)]  # the operator's; workers get room tokens
    docs += [secret("voicehive-keys", ns, keys) for ns in (RELEASE_NS, HOTEL_NS)]
    docs.append(secret("voicehive-redis", RELEASE_NS, {"url": redis_url}))
    # the NGC key Riva's NIM reads (the rig's Riva is the loopback fake: a throwaway value)
    docs.append(secret("voicehive-ngc", HOTEL_NS, {"api-key": secrets.token_urlsafe(16)}))
    docs.append(secret(f"{RELEASE}-orchestrator-tls", RELEASE_NS,
                       {"tls.crt": (tls_dir / "server.pem").read_text(), "tls.key": (tls_dir / "server.key").read_text()},
                       kind="kubernetes.io/tls"))
    kubectl.apply(*docs)


def helm_install(helm: str, kubeconfig: Path, values: dict[str, Any]) -> None:
    path = CLUSTER / "values.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    result = subprocess.run([helm, "--kubeconfig", str(kubeconfig), "upgrade", "--install", RELEASE,
                             str(REPO / "charts" / "voicehive"), "--namespace", RELEASE_NS, "-f", str(path)],
                            capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise SystemExit(f"[cluster] helm install failed: {result.stderr.strip()}")


def start_webhook_forwarder(kubeconfig: Path, port: int) -> None:
    """livekit-server's webhook URL (rig/up.sh) -> the orchestrator's Service (rig/servicefwd.py)."""
    if not port:
        log("the rig's ports.env names no LIVEKIT_WEBHOOK_PORT (rig/up.sh of an older rig): no webhooks")
        return
    if not alive("servicefwd"):
        start("servicefwd", [str(REPO / ".venv/bin/python"), "-m", "rig.servicefwd", "--kubeconfig", str(kubeconfig),
                             "--state", str(STATE / "nodeagent"), "--listen", f"127.0.0.1:{port}",
                             "--service", f"{RELEASE_NS}/{RELEASE}-orchestrator:443"])


def up(timeout: float) -> None:
    t0 = time.monotonic()
    subprocess.run([str(REPO / "rig" / "up.sh"), "--build"], check=True)
    rig_env, rig_ports = read_env(STATE / "env"), read_env(STATE / "ports.env")
    if "KUBECONFIG" not in rig_env or "LIVEKIT_URL" not in rig_env or "HELM" not in rig_env:
        raise SystemExit("[cluster] the rig has no kube-apiserver, livekit-server or helm (see rig/up.sh output)")
    kubeconfig, kubectl = Path(rig_env["KUBECONFIG"]), Kubectl(Path(rig_env["KUBECONFIG"]))
    redis_url = start_redis(cluster_ports()["redis"])
    # one CA per rig state: livekit-server trusts it for its webhooks (rig/up.sh, SSL_CERT_FILE)
    if not (CLUSTER / "tls" / "ca.pem").exists():
        from tests.fakes.tls import make_tls_files

        make_tls_files(CLUSTER / "tls", hosts=orchestrator_hosts())
    fakes = start_fakes(CLUSTER / "tls")
    host_ports = [int(rig_ports["LIVEKIT_PORT"]), cluster_ports()["redis"], *fakes["ports"]]
    start_node_agent(kubeconfig, host_ports, [int(rig_ports["LIVEKIT_RTC_UDP_PORT"])], ca_bundle(CLUSTER / "tls" / "ca.pem"))
    names = [n.split(":")[0] for n in NODES]
    wait_for(lambda: all(condition(kubectl.maybe("get", "node", n), "Ready") == "True" for n in names), 120, "nodes Ready")
    kubectl("label", "node", "vh-gpu-1", "--overwrite", "=".join(GPU_POOL_LABEL))
    install_prerequisites(kubectl, rig_env, redis_url, CLUSTER / "tls")
    kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=voicehive-cluster-up", "-f",
            str(REPO / "crds"))
    helm_install(rig_env["HELM"], kubeconfig, chart_values(rig_env["LIVEKIT_URL"]))
    start_webhook_forwarder(kubeconfig, int(rig_ports.get("LIVEKIT_WEBHOOK_PORT", "0")))
    log(f"chart installed ({time.monotonic() - t0:.0f}s); applying the example HotelLine")
    kubectl.apply(*example_line(fakes))
    line = "lindenhof-main"
    try:
        wait_for(lambda: condition(kubectl.maybe("get", "hotelline", line, "-n", HOTEL_NS), "Ready") == "True",
                 timeout, f"HotelLine {HOTEL_NS}/{line} Ready")
        for ns in (RELEASE_NS, HOTEL_NS):
            wait_for(lambda ns=ns: pods_ready(kubectl, ns), timeout, f"every Pod in {ns} Ready")
    except SystemExit:
        log(diagnosis(kubectl, line))
        raise
    write_env(rig_env, redis_url)
    log(f"up in {time.monotonic() - t0:.0f}s. Use it with:\n  export KUBECONFIG={kubeconfig}\n"
        f"  kubectl get pods -A; kubectl get hotellines -A\n  logs: {STATE / 'nodeagent' / 'logs'}")


def write_env(rig_env: dict[str, str], redis_url: str) -> None:
    lines = [f"KUBECONFIG={rig_env['KUBECONFIG']}", f"VOICEHIVE_CLUSTER_RELEASE_NS={RELEASE_NS}",
             f"VOICEHIVE_CLUSTER_HOTEL_NS={HOTEL_NS}", f"VOICEHIVE_CLUSTER_REDIS_URL={redis_url}",
             f"VOICEHIVE_CLUSTER_LOGS={STATE / 'nodeagent' / 'logs'}", f"VOICEHIVE_CLUSTER_CA={CLUSTER / 'tls' / 'ca.pem'}"]
    (CLUSTER / "env").write_text("\n".join(lines) + "\n")


def down() -> None:
    """Uninstall (HotelLines first, so the operator can remove trunks and finalizers), then stop."""
    rig_env = read_env(STATE / "env") if (STATE / "env").exists() else {}
    if "KUBECONFIG" in rig_env and alive("nodeagent"):
        kubectl = Kubectl(Path(rig_env["KUBECONFIG"]))
        started = time.monotonic()
        kubectl("delete", "hotellines", "--all", "-n", HOTEL_NS, "--wait=true", "--timeout=120s", check=False)
        log(f"HotelLines deleted in {time.monotonic() - started:.0f}s")
        # Tearing the rig down is not a drain: a worker still in a call (a test that failed midway)
        # would hold its Pod for its whole grace period. The graceful path has its own tests.
        kubectl("delete", "pods", "--all", "-n", HOTEL_NS, "--grace-period=0", "--force", "--wait=false",
                check=False)
        subprocess.run([rig_env["HELM"], "--kubeconfig", rig_env["KUBECONFIG"], "uninstall", RELEASE,
                        "--namespace", RELEASE_NS, "--wait", "--timeout", "120s"], check=False, timeout=180)
        log(f"release uninstalled at {time.monotonic() - started:.0f}s")
        kubectl("delete", "namespace", HOTEL_NS, RELEASE_NS, "--wait=false", check=False)
        # a Terminating namespace refuses new objects: the next `up` must find them gone
        wait_for(lambda: not any(kubectl.maybe("get", "namespace", ns) for ns in (HOTEL_NS, RELEASE_NS)), 300,
                 "namespaces deleted")
        log(f"namespaces gone at {time.monotonic() - started:.0f}s")
    for name in ("servicefwd", "nodeagent", "fakes", "redis"):
        stop(name, timeout=120 if name == "nodeagent" else 30)
    (CLUSTER / "env").unlink(missing_ok=True)
    if "KUBECONFIG" in rig_env:
        Kubectl(Path(rig_env["KUBECONFIG"]))("delete", "nodes", *[n.split(":")[0] for n in NODES],
                                             "--ignore-not-found", check=False)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m rig.cluster", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for Ready (default 600)")
    args = parser.parse_args()
    if args.action == "up":
        up(args.timeout)
    else:
        down()


if __name__ == "__main__":
    main()
