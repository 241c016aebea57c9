"""Benchmark: webhook events through the orchestrator into Redis, against Redis's own ceiling.

Starts a real redis-server (AOF, ``appendfsync always``: the durability the service promises)
and the orchestrator as a separate process (``python -m voicehive_orchestrator``) on loopback,
then sends call lifecycles (agent_ready, call_started, 2 transcriptions, call_ended) from 64
concurrent senders. Reports events/s, p50/p99 latency, and lost events (acknowledged with 2xx
but absent from the call's Redis event stream; must be 0).

The anchor (issue 16) is measured in the same run, against the same redis-server: a bare-bones
FastAPI + redis.asyncio handler of the seed's transcription endpoint (``bench/bare_handler.py``:
pydantic model, bearer check, one MULTI pipeline XADD + HSET + 2x EXPIRE) and the orchestrator
each take the same load from the same generator: new transcription events (unique event ids)
spread over 64 live calls, from 64 concurrent senders, with one server process and with two
(two processes on two ports, the senders split evenly between them, as a Service would), each
pair repeated in alternating order (``--anchor-repeats``) because the shared machine's load
drifts. Our median events/s and p50/p99 are reported as ratios to the anchor's medians, every
sample is kept, and lost events are counted for both.

The ceiling is measured in the same run with ``redis-benchmark`` on the same server: the rate
of each Redis command one event issues (HGETALL, SISMEMBER, and EVALSHA of the CallStore apply
script with a real event's arguments), at the same concurrency, combined as
``1 / sum(1 / rate_i)``: the events/s Redis could sustain if the service cost nothing.

Usage: ``python bench/webhooks.py [--calls 1000] [--anchor-events 10000] [--anchor-repeats 7] [--out ...]``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis
import redis.asyncio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.anchor import post_jobs, run_anchor  # noqa: E402
from voicehive.callstore import events_key  # noqa: E402
from voicehive.privacy import PiiHasher, generate_key_b64  # noqa: E402

TOKEN = secrets.token_urlsafe(24)  # generated per run, never committed


def per_event_commands() -> list[tuple[str, list[str]]]:
    """The Redis commands one state-changing event issues (CallStore.apply), for
    redis-benchmark: the pipelined read (HGETALL + SISMEMBER; only for a call the process has
    not written yet, so counting it makes the ceiling lower than Redis's real one), the apply
    script itself with the argument sizes of a real call_started event on fresh keys, and the
    index script."""
    from voicehive.callstore import (
        _APPLY_LUA,
        _INDEX_LUA,
        INDEX_KEYS,
        CallRecord,
        CallStore,
        Outcome,
        Plan,
        call_key,
        seen_key,
    )
    from voicehive.lifecycle import CallPhase

    store = CallStore(redis.asyncio.Redis())
    ref = "c-__rand_int__"
    before = CallRecord(ref=ref, phase=CallPhase.STARTING, line="bench", caller_hash="a" * 64)
    plan = Plan(Outcome.APPLIED, {"type": "call_started", "actor": "agent", "at": f"{time.time():.6f}",
                                  "from": "Starting", "to": "Active"},
                phase=CallPhase.ACTIVE, fields={"answered_at": f"{time.time():.6f}"}, active=True)
    keys, args = store._script_call(ref, before, plan, "d" * 32, 30 * 86400)
    args[0] = "0"  # fresh random keys: the version check passes, the whole write path runs
    sha = hashlib.sha1(_APPLY_LUA.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1
    index_args = [ref, f"{time.time():.6f}", "1", "", str(30 * 86400), "21600"]
    return [
        ("HGETALL", ["HGETALL", call_key(ref)]),
        ("SISMEMBER", ["SISMEMBER", seen_key(ref), "d" * 32]),
        ("EVALSHA apply", ["EVALSHA", sha, str(len(keys)), *keys, *args]),
        ("EVAL index", ["EVAL", _INDEX_LUA, str(len(INDEX_KEYS)), *INDEX_KEYS, *index_args]),
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (make system-deps)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir), "--appendonly", "yes",
         "--appendfsync", "always", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            if client.ping():
                return proc, port
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("redis-server did not start")
        time.sleep(0.05)  # start-up polling


def start_orchestrator(redis_port: int, env: dict[str, str], *, bare: bool = False) -> tuple[subprocess.Popen[bytes], int]:
    """The orchestrator (``bare``: the anchor handler instead) as its own process."""
    port = free_port()
    program = [str(ROOT / "bench" / "bare_handler.py")] if bare else ["-m", "voicehive_orchestrator", "--plain-http"]
    proc = subprocess.Popen(
        [sys.executable, *program, "--port", str(port), "--redis-url", f"redis://127.0.0.1:{redis_port}/0"],
        env={**os.environ, **env}, stdout=subprocess.DEVNULL,
        stderr=open(os.environ.get("VOICEHIVE_BENCH_LOG", os.devnull), "ab"),  # noqa: SIM115
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc, port
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("orchestrator did not start")
        time.sleep(0.1)  # start-up polling


def call_events(call: int) -> list[tuple[str, dict[str, Any]]]:
    sid = f"vh-bench00000-_+49301{call:06d}_b{call}"
    return [
        ("/v1/livekit/webhook", {"event_type": "agent_ready", "call_sid": sid, "event_id": f"b{call}-1",
                                 "data": {"hotel_id": "bench"}}),
        ("/v1/livekit/webhook", {"event_type": "call_started", "call_sid": sid, "event_id": f"b{call}-2",
                                 "data": {"is_sip": True}}),
        ("/v1/livekit/transcription", {"call_sid": sid, "text": "Do you have a double room available on Friday",
                                       "language": "en", "confidence": 0.93, "is_final": True, "event_id": f"b{call}-3"}),
        ("/v1/livekit/transcription", {"call_sid": sid, "text": "Great, thank you, goodbye", "language": "en",
                                       "confidence": 0.95, "is_final": True, "event_id": f"b{call}-4"}),
        ("/v1/livekit/webhook", {"event_type": "call_ended", "call_sid": sid, "event_id": f"b{call}-5",
                                 "data": {"reason": "participant_disconnected"}}),
    ]


async def send_all(port: int, calls: int, concurrency: int) -> tuple[list[float], dict[str, int], int, float]:
    """64 senders, each playing whole calls in order (bench/anchor.py's load generator)."""
    return await post_jobs([port], TOKEN, [(call, call_events(call)) for call in range(calls)], concurrency)


def lost_events(redis_port: int, hasher: PiiHasher, acked: dict[str, int]) -> int:
    client = redis.Redis(port=redis_port, decode_responses=True)
    lost = 0
    by_call: dict[int, list[str]] = {}
    for event_id, call in acked.items():
        by_call.setdefault(call, []).append(event_id)
    for call, ids in by_call.items():
        sid = str(call_events(call)[0][1]["call_sid"])
        ref = hasher.call_ref(sid)
        stored = [entry["event_id"] for _id, entry in client.xrange(events_key(ref))]
        for event_id in ids:
            if stored.count(hasher.event_id(f"id:{event_id}")) != 1:
                lost += 1
    client.close()
    return lost


def redis_benchmark(port: int, concurrency: int, requests: int) -> dict[str, float]:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise SystemExit("redis-benchmark is not installed (redis-tools)")
    from voicehive.callstore import _APPLY_LUA

    redis.Redis(port=port).script_load(_APPLY_LUA)
    rates: dict[str, float] = {}
    cache: dict[tuple[str, ...], float] = {}
    for label, command in per_event_commands():
        key = tuple(command)
        if key not in cache:
            out = subprocess.run(
                [binary, "-h", "127.0.0.1", "-p", str(port), "-c", str(concurrency), "-n", str(requests),
                 "-r", "100000000", "--csv", *command],
                capture_output=True, text=True, check=True, timeout=300,
            ).stdout
            rows = [line for line in out.splitlines() if line and not line.startswith('"test"')]
            # columns: "test","rps", then 6 latency columns; the test name may itself hold commas
            cache[key] = float(rows[-1].split(",")[-7].strip('"'))
        rates[label] = cache[key]
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--redis-benchmark-requests", type=int, default=20000)
    parser.add_argument("--anchor-events", type=int, default=10000, help="transcription events per anchor run")
    parser.add_argument("--anchor-repeats", type=int, default=7, help="alternating bare/ours runs per process count")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "webhooks.json"))
    args = parser.parse_args()

    pii_key = generate_key_b64()
    env = {"VOICEHIVE_PII_KEY": pii_key, "VOICEHIVE_TRANSCRIPT_KEY": generate_key_b64(),
           "VOICEHIVE_AGENT_TOKEN": TOKEN, "VOICEHIVE_SESSION_RETRY_SECONDS": "30",
           "VOICEHIVE_RATE_LIMIT_AGENT": "1000000/second"}  # measure the service, not the per-client limit
    import base64

    hasher = PiiHasher(base64.b64decode(pii_key))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vh-bench-") as tmp:
        redis_proc, redis_port = start_redis(Path(tmp))
        orch_proc, orch_port = start_orchestrator(redis_port, env)
        try:
            asyncio.run(send_all(orch_port, min(50, args.calls), args.concurrency))  # warm-up
            redis.Redis(port=redis_port).flushall()
            latencies, acked, failures, elapsed = asyncio.run(send_all(orch_port, args.calls, args.concurrency))
            lost = lost_events(redis_port, hasher, acked)
            orch_proc.terminate()
            orch_proc.wait(timeout=30)
            anchor = run_anchor(redis_port, env, hasher, args.anchor_events, args.concurrency, start_orchestrator,
                                args.anchor_repeats)
            rates = redis_benchmark(redis_port, args.concurrency, args.redis_benchmark_requests)
            info = redis.Redis(port=redis_port).info("server")
        finally:
            orch_proc.terminate()
            orch_proc.wait(timeout=30)
            redis_proc.terminate()
            redis_proc.wait(timeout=30)

    events = len(latencies)
    ceiling = 1.0 / sum(1.0 / rate for rate in rates.values())
    ours = events / elapsed
    ordered = sorted(latencies)
    result = {
        "benchmark": "webhooks",
        "what": "agent webhook + transcription events through the orchestrator into Redis (CallStore.apply)",
        "events": events,
        "calls": args.calls,
        "concurrency": args.concurrency,
        "events_per_second": round(ours, 1),
        "latency_ms": {
            "p50": round(statistics.median(ordered) * 1000, 2),
            "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
            "max": round(ordered[-1] * 1000, 2),
        },
        "acknowledged": len(acked),
        "non_2xx": failures,
        "lost_events": lost,
        "redis_ceiling": {
            "tool": "redis-benchmark",
            "method": "redis-benchmark rate of each command a phase event can issue (the read HGETALL + "
                      "SISMEMBER, made only for a call the process has not written yet; EVALSHA of the apply "
                      "script with a real event's arguments; the index script) on the same server at the same "
                      "concurrency; ceiling = 1 / sum(1 / rate)",
            "requests_per_command": args.redis_benchmark_requests,
            "command_rates_per_second": rates,
            "ceiling_events_per_second": round(ceiling, 1),
        },
        "ratio_to_ceiling": round(ours / ceiling, 3),
        "anchor": anchor,
        "redis": {"version": info.get("redis_version"), "appendonly": "yes", "appendfsync": "always"},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]},
        "note": "client, orchestrator (1 process) and redis-server share this machine's cores; other work on "
                "the machine (load average) lowers our rate much more than Redis's",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    lost += sum(int(run["lost_events"]) for runs in anchor["runs"].values() for run in runs.values())
    if lost:
        raise SystemExit(f"{lost} acknowledged events are missing from Redis")


if __name__ == "__main__":
    main()
