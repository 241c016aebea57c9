"""Benchmark: phone calls through the installed product on the rig (`make bench-e2e`).

Needs `make cluster-up` (root, the rig). The SIP gateway simulator (tests/e2e/sip_gateway_sim.py)
dials the example line; what is measured is what the caller experiences:

- pickup: the caller joined the room -> the first greeting audio arrives (warm pool);
- voice-to-voice per turn: the caller's last sample played out -> the first reply audio arrives;
- the full scenario's step times (webhook applied, VoiceSession, worker claimed, in the room ...);
- with ``--concurrent N``: N calls at once on the line (dialled ``--dial-spacing`` s apart, warm pool
  raised to N): completed/started, distinct workers, how busy the machine was;
- with ``--empty-pool N``: pickup when no warm worker is left;
- with ``--faults``: tests/e2e/faults.py's six platform faults during two live calls: per fault the
  live calls and those dropped, transcript events acknowledged before a Redis SIGKILL and lost.

Usage: ``python bench/e2e.py [--calls 5] [--concurrent 8] [--dial-spacing 1] [--empty-pool 3] [--faults]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.faults import FaultReport, run_faults  # noqa: E402
from tests.e2e.scenario import (  # noqa: E402
    ASK_DESK,
    ASK_ROOM,
    CallOutcome,
    Installed,
    converse,
    dial_and_bind,
    hang_up_and_end,
    hear_reply,
    privacy_scan,
    ttl_findings,
    wait,
)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)


async def one_call(inst: Installed, caller: str, full: bool, delay: float = 0.0,
                   light: bool = False) -> tuple[CallOutcome | None, str | None]:
    """One call; ``light``: as the concurrency test's callers (spotting only, slower polls)."""
    await asyncio.sleep(delay)
    poll = 0.5 if light else 0.2
    for attempt in (1, 2):  # one retry of a failed dial (a busy 2-core machine)
        try:
            call, out = await dial_and_bind(inst, caller, poll=poll)
            break
        except Exception as exc:
            if attempt == 2 or "VoiceSession" not in str(exc):
                return None, f"dial: {exc}"
            print(f"retrying the dial once: {exc}", file=sys.stderr)
    try:
        await converse(inst, call, out, full=full, transcribe=not light)
        session = await hang_up_and_end(inst, call, out, poll=poll)
        out.session = session
        return out, None
    except Exception as exc:
        await call.hang_up()
        return out, f"{type(exc).__name__}: {exc}"


def summary(outs: list[CallOutcome]) -> dict[str, Any]:
    pickups = [o.timings.pickup_s for o in outs if o.timings.pickup_s is not None]
    v2v = [v for o in outs for v in o.timings.voice_to_voice_s]
    return {"pickup_s": {"n": len(pickups), "p50": pct(pickups, 0.5), "p95": pct(pickups, 0.95), "all": pickups},
            "voice_to_voice_s": {"n": len(v2v), "p50": pct(v2v, 0.5), "p95": pct(v2v, 0.95), "all": v2v}}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    inst = Installed.load()
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                              "errors": []}
    full, err = await one_call(inst, "+4915112340000", True)
    if err:
        result["errors"].append(f"full call: {err}")
    if full is not None:
        result["full_call"] = {"steps_s": full.timings.steps, "pickup_s": full.timings.pickup_s,
                               "voice_to_voice_s": full.timings.voice_to_voice_s, "heard": full.heard,
                               "end": (full.session or {}).get("status", {}).get("endReason"),
                               "redis_ttl_findings": await ttl_findings(inst, 30),
                               "privacy_findings": await privacy_scan(inst, full, "+4915112340000",
                                                                      [ASK_ROOM, ASK_DESK])}
    outs: list[CallOutcome] = [full] if full and full.timings.pickup_s else []
    for i in range(args.calls):
        await asyncio.sleep(args.gap)  # let the warm pool refill between sequential calls
        out, err = await one_call(inst, f"+491511234{i + 1:04d}", False)
        if err:
            result["errors"].append(f"call {i + 1}: {err}")
        if out is not None and out.timings.pickup_s is not None:
            outs.append(out)
    result["sequential_warm"] = {"calls": args.calls + 1, "completed": len(outs), **summary(outs)}
    if args.concurrent:
        result["concurrent"] = await concurrent(inst, args.concurrent, args.dial_spacing)
    if args.empty_pool:
        result["empty_pool"] = await empty_pool(inst, args.empty_pool)
    if args.faults:
        result["faults"] = await faults(inst)
    return result


async def faults(inst: Installed) -> dict[str, Any]:
    """The fault scenario's counts; a fault that drops a call ends the run, its counts kept."""
    report = FaultReport()
    error = None
    try:
        await run_faults(inst, report)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    return {**report.as_json(), "completed": error is None, "error": error}


async def empty_pool(inst: Installed, n: int) -> dict[str, Any]:
    """Pickup with no warm worker: the call waits for a Pod to be created and start. The line's
    start timeout is raised for the measurement (a 20 s timeout fails every such call here)."""
    before = dict(inst.line()["spec"]["workers"])
    inst.set_workers({"warmPool": 0, "startTimeoutSeconds": 300})
    pickups, errors = [], []
    try:
        for i in range(n):
            await wait(lambda: not inst.idle_ready_workers(), 300, "no warm worker left")
            try:
                call, out = await dial_and_bind(inst, f"+491731234{i:04d}", bind_timeout=300)
                first, _ = await hear_reply(call, call.joined_at, within=300)
                pickups.append(round(first - call.joined_at, 3))
                await hang_up_and_end(inst, call, out)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        inst.set_workers({"warmPool": before["warmPool"], "startTimeoutSeconds": before.get("startTimeoutSeconds", 20)})
    return {"calls": n, "completed": len(pickups), "errors": errors,
            "pickup_s": {"n": len(pickups), "p50": pct(pickups, 0.5), "p95": pct(pickups, 0.95), "all": pickups}}


def _cpu_times() -> list[int]:
    """The machine's CPU time counters (/proc/stat "cpu" line: user nice system idle iowait ...)."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def _busy_fraction(before: list[int], after: list[int]) -> float:
    """Share of all CPUs busy between two readings (idle and iowait count as not busy)."""
    delta = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(delta)
    return round(1 - (delta[3] + delta[4]) / total, 3) if total else 0.0


async def concurrent(inst: Installed, n: int, spacing: float) -> dict[str, Any]:
    """N calls at once with the warm pool raised to N first (as tests/e2e/test_concurrent_calls.py)."""
    before = inst.line()["spec"]["workers"]["warmPool"]
    inst.set_workers({"warmPool": n})
    try:
        await wait(lambda: inst.warm_pool_of(n), 600, f"{n} warm workers Ready", interval=2)
        t0, cpu0 = time.monotonic(), _cpu_times()
        results = await asyncio.gather(*(one_call(inst, f"+491711234{i:04d}", False, delay=i * spacing, light=True)
                                         for i in range(n)))
        busy = _busy_fraction(cpu0, _cpu_times())
    finally:
        inst.set_workers({"warmPool": before})
    outs = [o for o, e in results if o is not None and e is None]
    workers = [o.worker_pod for o in outs if o.worker_pod]
    return {"started": n, "dial_spacing_s": spacing, "completed": len(outs), "wall_s": round(time.monotonic() - t0, 1),
            "machine_cpu_busy": busy,
            "distinct_workers": len(set(workers)), "worker_served_two_calls": len(workers) != len(set(workers)),
            "errors": [e for _, e in results if e], **summary(outs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--calls", type=int, default=4, help="sequential short calls after the full one")
    parser.add_argument("--gap", type=float, default=20.0, help="seconds between sequential calls")
    parser.add_argument("--concurrent", type=int, default=0, help="then N calls at once (0: skip)")
    parser.add_argument("--dial-spacing", type=float, default=1.0, help="seconds between the concurrent calls' dials")
    parser.add_argument("--empty-pool", type=int, default=0, help="then N calls with no warm worker (0: skip)")
    parser.add_argument("--faults", action="store_true", help="then the six platform faults during live calls")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "e2e.json")
    args = parser.parse_args()
    t0 = time.monotonic()
    result = asyncio.run(run(args))
    result["duration_s"] = round(time.monotonic() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    seq = result["sequential_warm"]
    if result["errors"] or seq["completed"] < seq["calls"] or not result.get("faults", {"completed": True})["completed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
