"""Issue 10, faults during live calls on the installed product, counted (tests/e2e/test_faults.py
asserts the counts, ``bench/e2e.py --faults`` reports them).

Two callers are in conversation while the platform is hurt, one fault after the other; after
each, every live caller asks a question and hears the answer (the call goes on):

1. an orchestrator Pod deleted (the Deployment replaces it; webhooks reach the other replica);
2. the active operator Pod deleted (the standby takes over through Kopf's peering);
3. the call-state redis-server killed with SIGKILL and restarted on its AOF (the chart's
   documented production setting); acknowledged transcript events are all still there;
4. one worker Pod killed (force-deleted, as a node failure would): that call ends Failed with a
   reason, its caller is handed over and disconnected (not left in a silent room), the other
   goes on;
5. `helm upgrade` changing the worker spec (pull policy) while a call is live: the live call
   goes on, warm workers are replaced, a new call is served by a new-spec Pod;
6. a node drain (`kubectl drain`: cordon, then the eviction API, which honours
   PodDisruptionBudgets) of the live call's node: its worker, asked to stop, finishes the call;
   the caller hangs up and the VoiceSession ends `caller_hangup`.

:func:`run_faults` counts, per fault, the live calls and how many of them were dropped (a caller
who asks after the fault hears no answer, or whose turn is not recorded), and the transcript
events acknowledged before the Redis kill against those still stored after its restart. A fault
that drops a call is recorded, then the run stops with :class:`StepFailed`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import yaml

from tests.e2e.scenario import (
    ASK_ROOM,
    CallOutcome,
    Installed,
    StepFailed,
    caller_speech,
    dial_and_bind,
    hang_up_and_end,
    hear_reply,
    wait,
)
from tests.e2e.sip_gateway_sim import SimCall
from tests.fixtures.rig import ROOT, parse_env_file
from voicehive import contract
from voicehive_operator.transfers import WORKER_STOPPED

GROUP, VERSION = "voicehive.io", "v1alpha1"
# the six faults, in the order run_faults applies them (each report entry's "fault")
ORCHESTRATOR_DELETED = "orchestrator Pod deleted"
OPERATOR_DELETED = "active operator Pod deleted"
REDIS_KILLED = "redis-server SIGKILL + AOF restart"
WORKER_KILLED = "one worker Pod killed (the other call)"
WORKER_SPEC_UPGRADED = "helm upgrade of the worker spec"
NODE_DRAINED = "node drain (worker asked to stop)"
FAULTS = (ORCHESTRATOR_DELETED, OPERATOR_DELETED, REDIS_KILLED, WORKER_KILLED, WORKER_SPEC_UPGRADED, NODE_DRAINED)
CLUSTER = ROOT / ".rig" / "cluster"


class Live:
    """A caller in conversation: dialled, greeted, able to ask again after each fault."""

    def __init__(self, inst: Installed, call: SimCall, out: CallOutcome) -> None:
        self.inst, self.call, self.out = inst, call, out

    def turns(self) -> int:
        return int(((self.inst.session_for(self.out.room) or {}).get("status") or {}).get("turns") or 0)

    async def still_served(self) -> None:
        """The caller asks and hears a reply, and the worker records the answered turn (what was
        said is the phone-call test's business; here the call must simply go on)."""
        before = self.turns()
        end = await self.call.say(caller_speech(ASK_ROOM))
        await hear_reply(self.call, end, within=90)
        await wait(lambda: self.turns() > before, 90, "the caller's turn answered and recorded", interval=1)


async def _dial(inst: Installed, index: int) -> Live:
    call, out = await dial_and_bind(inst, f"+4917219{index:05d}", session_timeout=90, bind_timeout=180)
    await hear_reply(call, call.joined_at, within=120)
    return Live(inst, call, out)


@dataclass
class FaultReport:
    """What each fault did to the live calls, and whether acknowledged events survived."""

    faults: list[dict[str, Any]] = field(default_factory=list)
    transcript_events_acknowledged: int = 0  # stored (and fsynced) before redis-server was killed
    transcript_events_after_restart: int = 0  # of those, still there after the AOF restart

    @property
    def events_lost(self) -> int:
        return max(0, self.transcript_events_acknowledged - self.transcript_events_after_restart)

    @property
    def calls_dropped(self) -> int:
        return sum(int(f["dropped"]) for f in self.faults)

    def as_json(self) -> dict[str, Any]:
        return {"faults": self.faults, "calls_dropped": self.calls_dropped,
                "transcript_events": {"acknowledged": self.transcript_events_acknowledged,
                                      "after_restart": self.transcript_events_after_restart,
                                      "lost": self.events_lost}}


async def _served(report: FaultReport, fault: str, calls: list[Live], started: float) -> None:
    """Every live caller asks once more; the fault is recorded with the calls it dropped."""
    results = await asyncio.gather(*(c.still_served() for c in calls), return_exceptions=True)
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    report.faults.append({"fault": fault, "live_calls": len(calls), "dropped": len(errors),
                          "seconds": round(time.monotonic() - started, 1), "errors": errors})
    if errors:
        raise StepFailed(f"{fault}: {len(errors)} of {len(calls)} live calls dropped: {errors}")


def _pods(inst: Installed, namespace: str, selector: str) -> list[Any]:
    return [p for p in inst.core.list_namespaced_pod(namespace, label_selector=selector).items
            if not p.metadata.deletion_timestamp]


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


async def _replaced(inst: Installed, component: str, gone: str) -> None:
    selector = f"app.kubernetes.io/component={component}"

    def settled() -> bool:
        pods = _pods(inst, inst.release_ns, selector)
        return len(pods) == 2 and gone not in {p.metadata.name for p in pods} and all(_ready(p) for p in pods)

    await wait(settled, 240, f"the deleted {component} Pod replaced and both Ready", interval=2)


def _active_operator(inst: Installed) -> str:
    """The operator Pod Kopf's peering lets work: the highest priority live peer."""
    try:
        peering = inst.custom.get_namespaced_custom_object("kopf.dev", "v1", inst.hotel_ns, "kopfpeerings", "voicehive")
    except Exception:  # cluster-wide install
        peering = inst.custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", "voicehive")
    live = {p.metadata.name for p in _pods(inst, inst.release_ns, "app.kubernetes.io/component=operator")}
    peers = [(int(r.get("priority", 0)), pid.split("@", 1)[-1].split("/", 1)[0])
             for pid, r in (peering.get("status") or {}).items()]
    return max((p for p in peers if p[1] in live), default=(0, ""))[1]


async def _transcript_events(url: str) -> int:
    client = aioredis.from_url(url)
    try:
        total = 0
        async for key in client.scan_iter(match="*transcript*", count=500):
            if (await client.type(key)) == b"stream":
                total += int(await client.xlen(key))
        return total
    finally:
        await client.aclose()


def _kill_and_restart_redis(url: str) -> None:
    pidfile = CLUSTER / "redis.pid"
    os.killpg(int(pidfile.read_text()), signal.SIGKILL)
    pidfile.unlink()  # a killed process may linger as a zombie of whoever started it: not "alive"
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    subprocess.run([sys.executable, "-c", f"from rig.cluster import start_redis; start_redis({port})"],
                   cwd=ROOT, check=True, timeout=120)


def _helm_upgrade_worker_spec() -> None:
    rig = parse_env_file(ROOT / ".rig" / "env")
    values = yaml.safe_load((CLUSTER / "values.yaml").read_text())
    values.setdefault("image", {})["pullPolicy"] = "Always"  # also the worker Pods' (the operator's setting)
    path = CLUSTER / "values-faults.yaml"
    path.write_text(yaml.safe_dump(values))
    result = subprocess.run([rig["HELM"], "--kubeconfig", rig["KUBECONFIG"], "upgrade", "voicehive",
                             str(ROOT / "charts" / "voicehive"), "-n", "voicehive", "-f", str(path)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr


def _kubectl(*args: str) -> subprocess.Popen[str]:
    rig = parse_env_file(ROOT / ".rig" / "env")
    return subprocess.Popen(["kubectl", "--kubeconfig", rig["KUBECONFIG"], *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _session(inst: Installed, live: Live) -> dict[str, Any]:
    return inst.session_for(live.out.room) or {}


async def _orchestrator_pod_deleted(inst: Installed, calls: list[Live], report: FaultReport) -> None:
    started = time.monotonic()
    gone = _pods(inst, inst.release_ns, "app.kubernetes.io/component=orchestrator")[0].metadata.name
    inst.core.delete_namespaced_pod(gone, inst.release_ns)
    await _replaced(inst, "orchestrator", gone)
    await _served(report, ORCHESTRATOR_DELETED, calls, started)


async def _active_operator_deleted(inst: Installed, calls: list[Live], report: FaultReport) -> None:
    started = time.monotonic()
    active = _active_operator(inst)
    if not active:
        raise StepFailed("no active operator peer")
    inst.core.delete_namespaced_pod(active, inst.release_ns)
    await _replaced(inst, "operator", active)
    await _served(report, OPERATOR_DELETED, calls, started)


async def _redis_killed(inst: Installed, calls: list[Live], report: FaultReport) -> None:
    """SIGKILL and restart on the AOF: every event acknowledged a second earlier is still there."""
    started = time.monotonic()
    url = inst.cluster["VOICEHIVE_CLUSTER_REDIS_URL"]
    await asyncio.sleep(1.5)  # appendfsync everysec: what was acknowledged a second ago is on disk
    report.transcript_events_acknowledged = await _transcript_events(url)
    if not report.transcript_events_acknowledged:
        raise StepFailed("no transcript event stored before the Redis kill: nothing to lose, nothing proven")
    await asyncio.to_thread(_kill_and_restart_redis, url)
    report.transcript_events_after_restart = await _transcript_events(url)
    await _served(report, REDIS_KILLED, calls, started)


async def _worker_killed(inst: Installed, victim: Live, survivor: Live, report: FaultReport) -> None:
    """The killed worker's call ends Failed with a reason (expected, not a drop); the other goes on."""
    started = time.monotonic()
    inst.core.delete_namespaced_pod(victim.out.worker_pod, inst.hotel_ns, grace_period_seconds=0)
    failed = await wait(lambda: (s := _session(inst, victim)).get("status", {}).get("phase") == "Failed" and s,
                        120, "the killed worker's call Failed")
    if not failed["status"].get("endReason"):
        raise StepFailed(f"the killed worker's call Failed without a reason: {failed['status']}")
    # Its caller is not left alone in the room: the operator hands them over (here the transfer
    # fails, no SIP service) and removes them from the room.
    handed = await wait(lambda: next((c for c in _session(inst, victim).get("status", {}).get("conditions") or []
                                      if c["type"] == contract.CONDITION_TRANSFER), None),
                        120, "the killed worker's caller handed over")
    if not handed["message"].startswith(WORKER_STOPPED):
        raise StepFailed(f"the killed worker's caller was not handed over as a lost worker's: {handed}")
    await wait(lambda: not victim.call.room.isconnected(), 60, "the killed worker's caller disconnected", interval=0.5)
    await victim.call.hang_up()
    await _served(report, WORKER_KILLED, [survivor], started)


async def _worker_spec_upgraded(inst: Installed, live: Live, report: FaultReport) -> None:
    """Live call untouched (its Pod keeps the old spec), warm Pods replaced, a new call on one."""
    started = time.monotonic()
    label = contract.LABEL_SPEC_HASH
    old = inst.core.read_namespaced_pod(live.out.worker_pod, inst.hotel_ns).metadata.labels[label]
    await asyncio.to_thread(_helm_upgrade_worker_spec)
    idle = f"{contract.LABEL_COMPONENT}={contract.COMPONENT_WORKER},{contract.LABEL_WORKER_STATE}=idle"
    await wait(lambda: (ps := _pods(inst, inst.hotel_ns, idle)) and all(
        p.metadata.labels[label] != old and _ready(p) for p in ps), 600, "warm workers replaced by new-spec Pods",
        interval=3)
    await _served(report, WORKER_SPEC_UPGRADED, [live], started)
    if inst.core.read_namespaced_pod(live.out.worker_pod, inst.hotel_ns).metadata.labels[label] != old:
        raise StepFailed("the live call's worker Pod was changed by the upgrade")
    new = await _dial(inst, 3)
    if inst.core.read_namespaced_pod(new.out.worker_pod, inst.hotel_ns).metadata.labels[label] == old:
        raise StepFailed("a call after the upgrade was served by an old-spec Pod")
    await hang_up_and_end(inst, new.call, new.out)


async def _node_drained(inst: Installed, live: Live, report: FaultReport) -> None:
    """Cordon and evict (PDBs honoured): the worker, asked to stop, finishes its call."""
    started = time.monotonic()
    node = inst.core.read_namespaced_pod(live.out.worker_pod, inst.hotel_ns).spec.node_name
    drain = _kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=600s")
    try:
        await wait(lambda: inst.core.read_namespaced_pod(live.out.worker_pod, inst.hotel_ns).metadata.deletion_timestamp,
                   120, "the live call's worker asked to stop", interval=1)
        await _served(report, NODE_DRAINED, [live], started)
        ended = await hang_up_and_end(inst, live.call, live.out)
        if ended["status"]["phase"] != "Ended" or ended["status"]["endReason"] != "caller_hangup":
            report.faults[-1]["dropped"] = 1
            raise StepFailed(f"the drained worker's call did not end by the caller's hang-up: {ended['status']}")
        out, _ = await asyncio.to_thread(drain.communicate, timeout=600)
        if drain.returncode != 0:
            raise StepFailed(f"kubectl drain failed: {out}")
    finally:
        if drain.poll() is None:
            drain.kill()
        _kubectl("uncordon", node).communicate(timeout=60)


async def run_faults(inst: Installed, report: FaultReport) -> FaultReport:
    """Two live calls through the six faults, one after the other; ``report`` fills as they go."""
    a, b = await asyncio.gather(_dial(inst, 1), _dial(inst, 2))
    try:
        await _orchestrator_pod_deleted(inst, [a, b], report)
        await _active_operator_deleted(inst, [a, b], report)
        await _redis_killed(inst, [a, b], report)
        await _worker_killed(inst, b, a, report)
        await _worker_spec_upgraded(inst, a, report)
        await _node_drained(inst, a, report)
    finally:
        for live in (a, b):
            await live.call.hang_up()
    return report
