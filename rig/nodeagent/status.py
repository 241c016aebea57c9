"""Decisions the kubelet makes about containers and Pods, as pure functions.

Restart policy and back-off, probe thresholds, and the Pod status (phase, conditions,
containerStatuses) built from a snapshot of each container's record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_BACKOFF = 300.0


def should_restart(restart_policy: str, exit_code: int) -> bool:
    """Always restarts any exit; OnFailure only a non-zero exit; Never never."""
    if restart_policy == "Always":
        return True
    if restart_policy == "OnFailure":
        return exit_code != 0
    return False


def backoff_delay(restarts: int, base: float = 10.0, cap: float = MAX_BACKOFF) -> float:
    """Wait before restart number ``restarts + 1``: 0 for the first, then base doubling to cap."""
    if restarts <= 0:
        return 0.0
    return float(min(cap, base * 2 ** (restarts - 1)))


@dataclass
class ProbeState:
    """Consecutive results of one probe, and its current verdict."""

    successes: int = 0
    failures: int = 0
    passed: bool | None = None  # None until a threshold is crossed


def probe_update(state: ProbeState, ok: bool, success_threshold: int, failure_threshold: int) -> ProbeState:
    """A probe passes after ``success_threshold`` consecutive successes, fails after ``failure_threshold``."""
    if ok:
        successes, failures = state.successes + 1, 0
    else:
        successes, failures = 0, state.failures + 1
    passed = state.passed
    if successes >= max(1, success_threshold):
        passed = True
    elif failures >= max(1, failure_threshold):
        passed = False
    return ProbeState(successes=successes, failures=failures, passed=passed)


def probe_settings(probe: dict[str, Any]) -> tuple[float, float, float, int, int]:
    """(initialDelay, period, timeout, successThreshold, failureThreshold) with Kubernetes defaults."""
    return (
        float(probe.get("initialDelaySeconds", 0) or 0),
        float(probe.get("periodSeconds", 10) or 10),
        float(probe.get("timeoutSeconds", 1) or 1),
        int(probe.get("successThreshold", 1) or 1),
        int(probe.get("failureThreshold", 3) or 3),
    )


@dataclass
class ContainerRecord:
    """What the agent knows about one container, as the status reports it."""

    name: str
    image: str
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    started_at: str = ""
    finished_at: str = ""
    exit_code: int = 0
    restart_count: int = 0
    last_terminated: dict[str, Any] | None = None
    ready: bool = False
    started: bool = False
    container_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def terminated_reason(exit_code: int) -> str:
    return "Completed" if exit_code == 0 else "Error"


def build_container_status(rec: ContainerRecord) -> dict[str, Any]:
    state: dict[str, Any]
    if rec.state == "running":
        state = {"running": {"startedAt": rec.started_at}}
    elif rec.state == "terminated":
        state = {
            "terminated": {
                "exitCode": rec.exit_code,
                "reason": rec.reason or terminated_reason(rec.exit_code),
                "startedAt": rec.started_at or None,
                "finishedAt": rec.finished_at,
                **({"message": rec.message} if rec.message else {}),
            }
        }
    else:
        state = {"waiting": {"reason": rec.reason, **({"message": rec.message} if rec.message else {})}}
    status: dict[str, Any] = {
        "name": rec.name,
        "image": rec.image,
        "imageID": "",
        "ready": rec.ready,
        "started": rec.started,
        "restartCount": rec.restart_count,
        "state": state,
        "lastState": {"terminated": rec.last_terminated} if rec.last_terminated else {},
    }
    if rec.container_id:
        status["containerID"] = rec.container_id
    return status


def pod_phase(init: list[ContainerRecord], main: list[ContainerRecord], restart_policy: str, failed: bool) -> str:
    """Pending until init containers finish and a main container started; then by the rules."""
    if failed:
        return "Failed"
    if any(r.state != "terminated" or r.exit_code != 0 for r in init):
        return "Pending"
    if not main:
        return "Pending"
    if all(r.state == "terminated" for r in main) and restart_policy != "Always":
        if all(r.exit_code == 0 for r in main):
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
    if any(r.state in {"running", "terminated"} or r.restart_count or r.last_terminated for r in main):
        return "Running"
    return "Pending"


def _condition(kind: str, ok: bool, since: dict[str, tuple[bool, str]], now: str, reason: str = "") -> dict[str, Any]:
    previous = since.get(kind)
    changed_at = previous[1] if previous and previous[0] == ok else now
    since[kind] = (ok, changed_at)
    cond: dict[str, Any] = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": changed_at,
                            "lastProbeTime": None}
    if not ok and reason:
        cond["reason"] = reason
    return cond


def pod_conditions(
    init: list[ContainerRecord], main: list[ContainerRecord], since: dict[str, tuple[bool, str]], now: str
) -> list[dict[str, Any]]:
    """PodScheduled, Initialized, ContainersReady, Ready; ``since`` keeps transition times."""
    initialized = all(r.state == "terminated" and r.exit_code == 0 for r in init)
    ready = initialized and bool(main) and all(r.ready for r in main)
    return [
        _condition("PodScheduled", True, since, now),
        _condition("Initialized", initialized, since, now, "ContainersNotInitialized"),
        _condition("ContainersReady", ready, since, now, "ContainersNotReady"),
        _condition("Ready", ready, since, now, "ContainersNotReady"),
    ]


def build_pod_status(
    init: list[ContainerRecord],
    main: list[ContainerRecord],
    restart_policy: str,
    pod_ip: str,
    host_ip: str,
    start_time: str,
    since: dict[str, tuple[bool, str]],
    now: str,
    failed: bool = False,
    message: str = "",
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": pod_phase(init, main, restart_policy, failed),
        "conditions": pod_conditions(init, main, since, now),
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": start_time,
        "initContainerStatuses": [build_container_status(r) for r in init],
        "containerStatuses": [build_container_status(r) for r in main],
    }
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if message:
        status["message"] = message
    return status
