"""Operator benchmark: VoiceSession create -> worker pod bound latency, HotelLine reconcile time, RSS.

The operator runs as its own process (``voicehive operator -n <ns>``) so its RSS is its own; it
talks over real sockets to a KMock Kubernetes API (tests/fixtures/kmock_emulator.py, in a thread
of this process) and to the LiveKit Twirp fake (this process). Provider checks are off: they
do not sit on the binding path and would only measure the fakes.

1. Binding: one HotelLine with a warm pool; VoiceSessions are created at ``--rate`` per second
   for ``--seconds``. Latency = the moment a watch on voicesessions sees the ``worker`` label
   (the operator sets it last, after the pod claim and ``phase=Starting``) minus the moment the
   create request was sent. Target from the issue: p95 <= 250 ms with a warm pool.
2. Reconcile: ``--lines`` HotelLines created at once; time until every one reports
   SipTrunkReady=True and WorkersReady=True (trunk + dispatch rule in LiveKit, warm pod started).
3. RSS of the operator process (VmRSS at the end, VmHWM peak) from /proc.

Usage: python bench/operator.py [--rate 20] [--seconds 30] [--lines 200] [--out bench/results/operator.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.livekit_twirp import LiveKitFake  # noqa: E402
from tests.fixtures.kube import write_kubeconfig  # noqa: E402
from tests.operator.helpers import spec  # noqa: E402
from voicehive import contract  # noqa: E402
from voicehive.contract import HOTELLINES, VOICESESSIONS  # noqa: E402
from voicehive_operator.kube import Kube  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _proc_mem(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in {"VmRSS", "VmHWM"}:
                out[key] = int(value.split()[0]) / 1024.0
    except OSError:
        pass
    return out


def _line_body(namespace: str, name: str, number: str, warm: int, max_calls: int) -> dict[str, Any]:
    # No kubelet runs the worker pods, so no worker ever answers: the longest start timeout keeps
    # every bench call from timing out (and being torn down) while the binding is measured.
    workers = {**spec()["workers"], "warmPool": warm, "maxConcurrentCalls": max_calls, "startTimeoutSeconds": 300}
    body = spec(phoneNumbers=[number], workers=workers)
    body["asr"] = {**body["asr"], "endpoint": "127.0.0.1:50051"}  # no managed Riva: not on the binding path
    body["sip"] = {"allowedAddresses": ["203.0.113.0/28"], "mediaEncryption": "require"}  # no auth Secret needed
    return {"apiVersion": "voicehive.io/v1alpha1", "kind": "HotelLine",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}


def _session_body(namespace: str, line: str) -> dict[str, Any]:
    room_hash = secrets.token_hex(32)
    return {"apiVersion": "voicehive.io/v1alpha1", "kind": "VoiceSession",
            "metadata": {"name": contract.session_name(room_hash), "namespace": namespace},
            "spec": {"lineRef": {"name": line}, "roomHash": room_hash, "callerHash": secrets.token_hex(32),
                     "sealedCallRef": "v1_" + secrets.token_urlsafe(48)}}


class BindWatcher(threading.Thread):
    """Records when each VoiceSession first carries the worker label (watch stream, own thread)."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        super().__init__(daemon=True)
        self.kube, self.namespace = kube, namespace
        self.bound: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        import kubernetes

        while not self.stop.is_set():
            watch = kubernetes.watch.Watch()
            try:
                for event in watch.stream(self.kube.custom.list_namespaced_custom_object, "voicehive.io", "v1alpha1",
                                          self.namespace, VOICESESSIONS, timeout_seconds=5):
                    obj = event["object"]
                    name = obj["metadata"]["name"]
                    if name not in self.bound and (obj["metadata"].get("labels") or {}).get(contract.LABEL_WORKER):
                        self.bound[name] = time.monotonic()
                    if self.stop.is_set():
                        break
            except Exception:  # the watch is restarted; the bench measures, it does not serve
                time.sleep(0.1)
            finally:
                watch.stop()


async def _wait(predicate: Any, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


KMOCK_SERVER = """
import sys, threading
from tests.fixtures.kube import KMockThread
server = KMockThread()
server.start()
print(server.url, flush=True)
sys.stdin.read()  # serve until the bench closes our stdin
server.stop()
"""


async def main(args: argparse.Namespace) -> dict[str, Any]:
    import kubernetes

    tmp = Path(tempfile.mkdtemp(prefix="vh-bench-op-"))
    kmock: subprocess.Popen[str] | None = None
    suffix = secrets.token_hex(3)
    ns_bind, ns_lines = f"bench-bind-{suffix}", f"bench-lines-{suffix}"
    if args.kube == "rig":
        # The rig's real kube-apiserver (make rig): the numbers are the operator's, not an emulator's.
        from tests.fixtures.rig import apply_crds, rig_kube

        rig = rig_kube()
        if rig is None or rig.kubeconfig is None:
            raise SystemExit("--kube rig: the rig's kube-apiserver is not running (make rig)")
        kubeconfig = Path(rig.kubeconfig)
        cfg = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = 32
        kube = Kube(kubernetes.client.ApiClient(cfg))
        apply_crds(kube.api_client)
        from voicehive_operator.builders import worker_rbac
        from voicehive_operator.settings import OperatorSettings

        await _purge_bench_namespaces(kube)  # a killed earlier run must not load this run's operator
        for ns in (ns_bind, ns_lines):
            kube.core.create_namespace({"metadata": {"name": ns}})
            kube.core.create_namespaced_service_account(ns, worker_rbac(ns, OperatorSettings())[0])
        api_label = "kube-apiserver + etcd from the rig (real, loopback, TLS)"
    else:
        # The Kubernetes API emulator gets a process of its own, so neither the load generator
        # nor the watch in this process competes with it for the GIL.
        kmock = subprocess.Popen(  # noqa: ASYNC220 (started once, before the measured part)
            [sys.executable, "-c", KMOCK_SERVER], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True,
        )
        assert kmock.stdout is not None
        kmock_url = kmock.stdout.readline().strip()
        kubeconfig = write_kubeconfig(tmp / "kubeconfig", kmock_url)
        cfg = kubernetes.client.Configuration()
        cfg.host = kmock_url
        kube = Kube(kubernetes.client.ApiClient(cfg))
        api_label = "KMock emulator (own process, loopback)"
    results: dict[str, Any] = {}
    async with LiveKitFake() as lk:
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "LIVEKIT_URL": lk.url,
            "LIVEKIT_API_KEY": lk.api_key,
            "LIVEKIT_API_SECRET": lk.api_secret,
            "VOICEHIVE_OPERATOR_CHECK_PROVIDERS": "false",
            "VOICEHIVE_OPERATOR_ASR_ALLOWED_HOSTS": "127.0.0.1",  # the lines name a loopback Riva
            "VOICEHIVE_OPERATOR_LIVENESS": f"http://127.0.0.1:{_free_port()}/healthz",
            "VOICEHIVE_OPERATOR_RESYNC_INTERVAL_S": "30",
            "VOICEHIVE_OPERATOR_SWEEP_INTERVAL_S": "5",
        }
        log = (tmp / "operator.log").open("w")
        proc = subprocess.Popen(  # noqa: ASYNC220 (started once, before the measured part)
            [sys.executable, "-c", "from voicehive_cli.main import app; app()", "operator", "--all-namespaces"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            # 1. binding latency at a steady rate, warm pool sized for the burst rate.
            await kube.create_custom(ns_bind, HOTELLINES, _line_body(ns_bind, "bench", "+493011111110",
                                                                     args.warm_pool, 1000))
            await _wait(lambda: _idle_count(kube, ns_bind, "bench", args.warm_pool), 120, "warm pool")
            gc.collect()
            gc.freeze()  # the bench's own full collections would stall its watch thread: measure the operator
            watcher = BindWatcher(kube, ns_bind)
            watcher.start()
            await asyncio.sleep(1.0)  # the watch is established before the first create
            sent: dict[str, float] = {}
            total = int(args.rate * args.seconds)
            cpu_before = _proc_cpu_s(proc.pid)
            start = time.monotonic()

            async def create(i: int) -> None:
                await asyncio.sleep(max(0.0, start + i / args.rate - time.monotonic()))
                body = _session_body(ns_bind, "bench")
                sent[body["metadata"]["name"]] = time.monotonic()
                await kube.create_custom(ns_bind, VOICESESSIONS, body)

            await asyncio.gather(*(create(i) for i in range(total)))
            with contextlib.suppress(TimeoutError):  # reported below as unbound sessions
                await _wait(lambda: asyncio.sleep(0, len(watcher.bound) >= total), 120, "all sessions bound")
            watcher.stop.set()
            operator_cpu = _proc_cpu_s(proc.pid) - cpu_before
            latencies = [1000 * (watcher.bound[n] - t) for n, t in sent.items() if n in watcher.bound]
            from_pool = await _claimed_from_pool(kube, ns_bind)
            results["binding"] = {
                "sessions": total, "rate_per_s": args.rate, "seconds": args.seconds, "warm_pool": args.warm_pool,
                "bound": len(latencies),
                "unbound_after_120s": total - len(latencies),
                "throughput_bound_per_s": round(len(latencies) / max(1e-9, max(watcher.bound.values(), default=start)
                                                                         - start), 1),
                "p50_ms": round(statistics.median(latencies), 1),
                "p95_ms": round(_percentile(latencies, 0.95), 1),
                "p99_ms": round(_percentile(latencies, 0.99), 1),
                "max_ms": round(max(latencies), 1),
                "served_by_warm_pod": from_pool,
                "operator_cpu_ms_per_session": round(1000 * operator_cpu / max(1, len(latencies)), 2),
                "latency_ms_by_second": _by_second(sent, watcher.bound, start),
                "target_p95_ms": 250,
                "meets_target": len(latencies) == total and _percentile(latencies, 0.95) <= 250,
            }
            mem_after_bind = _proc_mem(proc.pid)

            # 2. reconcile time for N HotelLines created at once.
            t0 = time.monotonic()
            await asyncio.gather(*(
                kube.create_custom(ns_lines, HOTELLINES, _line_body(ns_lines, f"line-{i:03d}", f"+4930{2000000 + i}",
                                                                    1, 10))
                for i in range(args.lines)
            ))
            created = time.monotonic() - t0
            progress: list[tuple[float, int]] = []

            async def all_ready() -> bool:
                ready = await _ready_count(kube, ns_lines)
                if not progress or progress[-1][1] != ready:
                    progress.append((round(time.monotonic() - t0, 1), ready))
                    print(f"reconciled {ready}/{args.lines} after {progress[-1][0]} s", file=sys.stderr, flush=True)
                return ready >= args.lines

            with contextlib.suppress(TimeoutError):  # reported below as lines not reconciled
                await _wait(all_ready, args.lines_timeout, f"{args.lines} lines reconciled")
            elapsed = time.monotonic() - t0
            reconciled = await _ready_count(kube, ns_lines)
            results["reconcile"] = {
                "hotellines": args.lines, "reconciled": reconciled,
                "seconds_to_all_reconciled": round(elapsed, 2) if reconciled >= args.lines else None,
                "progress_s_count": progress[:: max(1, len(progress) // 20)] + progress[-1:],
                "seconds_to_create_requests": round(created, 2),
                "per_line_ms": round(1000 * elapsed / max(1, reconciled), 1),
                "livekit_trunks": len(lk.trunks) - 1, "livekit_dispatch_rules": len(lk.dispatch_rules) - 1,
                "definition": "all lines report SipTrunkReady=True and WorkersReady=True (trunk + rule + 1 warm pod)",
            }
            results["operator_memory_mb"] = {
                "rss_after_binding": round(mem_after_bind.get("VmRSS", float("nan")), 1),
                "rss_end": round(_proc_mem(proc.pid).get("VmRSS", float("nan")), 1),
                "peak": round(_proc_mem(proc.pid).get("VmHWM", float("nan")), 1),
            }
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
    if kmock is not None:
        assert kmock.stdin is not None
        kmock.stdin.close()
        kmock.wait(timeout=30)
    else:
        await _purge_bench_namespaces(kube)
    kube.close()
    results["environment"] = {
        "python": platform.python_version(), "cpus": os.cpu_count(), "kube_api": api_label,
        "livekit": "Twirp fake (loopback)", "operator": "separate process, `voicehive operator`",
        "note": "shared 2-core machine (other engineers' jobs ran at the same time); the LiveKit fake, the "
                "load generator and the watch run in the bench process; no kubelet, so pods are never Ready",
    }
    return results


def _by_second(sent: dict[str, float], bound: dict[str, float], start: float) -> list[list[float]]:
    """[second since start, p50, max] of the sessions sent in that second: shows when the tail happens."""
    buckets: dict[int, list[float]] = {}
    for name, at in sent.items():
        if name in bound:
            buckets.setdefault(int(at - start), []).append(1000 * (bound[name] - at))
    return [[s, round(statistics.median(v)), round(max(v))] for s, v in sorted(buckets.items())]


async def _purge_bench_namespaces(kube: Kube) -> None:
    """Delete every bench namespace and wait until it is gone.

    WHY: the operator is stopped by then, so our finalizers would keep the namespaces
    Terminating, and the next run's operator (all namespaces) would spend its first seconds
    tearing down 600 sessions and 200 lines of this one, which is not what it measures.
    """
    names = [ns.metadata.name for ns in kube.core.list_namespace().items
             if ns.metadata.name.startswith(("bench-bind-", "bench-lines-"))]
    for ns in names:
        with contextlib.suppress(Exception):
            kube.core.delete_namespace(ns)
        for plural in (HOTELLINES, VOICESESSIONS):
            for obj in await kube.list_custom(ns, plural):
                if obj["metadata"].get("finalizers"):
                    await kube.patch_custom(ns, plural, obj["metadata"]["name"], {"metadata": {"finalizers": None}})

    async def gone() -> bool:
        left = {ns.metadata.name for ns in kube.core.list_namespace().items}
        return not left.intersection(names)

    await _wait(gone, 300, "bench namespaces deleted")


async def _idle_count(kube: Kube, ns: str, line: str, want: int) -> bool:
    pods = await kube.list_pods(ns, {contract.LABEL_LINE: line, contract.LABEL_WORKER_STATE: contract.WORKER_IDLE})
    return len(pods) >= want


async def _claimed_from_pool(kube: Kube, ns: str) -> int:
    sessions = await kube.list_custom(ns, VOICESESSIONS)
    return sum(
        1 for s in sessions
        for c in (s.get("status") or {}).get("conditions") or []
        if c.get("type") == "WorkerBound" and c.get("reason") == "Claimed"
    )


async def _ready_count(kube: Kube, ns: str) -> int:
    lines = await kube.list_custom(ns, HOTELLINES)
    ready = 0
    for line in lines:
        conds = {c["type"]: c["status"] for c in (line.get("status") or {}).get("conditions") or []}
        if conds.get("SipTrunkReady") == "True" and conds.get("WorkersReady") == "True":
            ready += 1
    return ready


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warm-pool", type=int, default=20)
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--lines-timeout", type=float, default=300.0)
    parser.add_argument("--kube", choices=["auto", "rig", "kmock"], default="auto",
                        help="Kubernetes API: the rig's kube-apiserver if up (auto), or KMock")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "operator.json")
    arguments = parser.parse_args()
    if arguments.kube == "auto":
        from tests.fixtures.rig import rig_kube

        arguments.kube = "rig" if rig_kube() is not None else "kmock"
    output = asyncio.run(main(arguments))
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(output, indent=2) + "\n")
    print(json.dumps(output, indent=2))
