"""The side-by-side half of bench/webhooks.py: the bare handler vs the orchestrator, same load.

WHY: issue 16. Our rate as a ratio to a bare-bones handler of the same endpoint, on the same
redis-server, from the same load generator, in the same run, with one process and with two.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from voicehive.callstore import events_key
from voicehive.privacy import PiiHasher

LIVE_CALLS = 64
Start = Callable[..., tuple[subprocess.Popen[bytes], int]]


def sid_of(call: int) -> str:
    return f"vh-anchor0000-_+49302{call:06d}_a{call}"


def transcription(call: int, event_id: str) -> dict[str, Any]:
    return {"call_sid": sid_of(call), "text": "Do you have a double room available on Friday", "language": "en",
            "confidence": 0.93, "is_final": True, "event_id": event_id}


Post = tuple[str, dict[str, Any]]  # path, JSON body
Job = tuple[int, list[Post]]  # the call the requests belong to, and the requests in order


async def post_jobs(ports: list[int], token: str, jobs: list[Job],
                    concurrency: int) -> tuple[list[float], dict[str, int], int, float]:
    """The bench's one load generator: ``concurrency`` senders split evenly over ``ports``; each
    takes the next job and posts its requests in order (aiohttp: a light client, so the load
    generator does not starve the servers of the cores they share). Returns every latency, the
    acknowledged event ids (-> call), the non-2xx count and the elapsed seconds."""
    import aiohttp

    latencies: list[float] = []
    acked: dict[str, int] = {}
    failures = 0
    queue: asyncio.Queue[Job] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    headers = {"Authorization": f"Bearer {token}"}
    sessions = [aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=headers,
                                      connector=aiohttp.TCPConnector(limit=concurrency)) for port in ports]

    async def sender(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        while not queue.empty():
            call, posts = queue.get_nowait()
            for path, body in posts:
                started = time.perf_counter()
                async with session.post(path, json=body) as r:
                    await r.read()
                    status = r.status
                latencies.append(time.perf_counter() - started)
                if 200 <= status < 300:
                    acked[str(body.get("event_id"))] = call
                else:
                    failures += 1

    try:
        started = time.perf_counter()
        await asyncio.gather(*(sender(sessions[i % len(sessions)]) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        for session in sessions:
            await session.close()
    return latencies, acked, failures, elapsed


def lost(redis_port: int, acked: dict[str, int], hasher: PiiHasher | None) -> int:
    """Acknowledged events absent from Redis: ours in the call's event stream (hashed ids),
    the bare handler's in its transcript stream."""
    client = redis.Redis(port=redis_port, decode_responses=True)
    stored: dict[int, list[str]] = {}
    for call in set(acked.values()):
        if hasher is None:
            entries = client.xrange(f"bare:{sid_of(call)}:transcript")
        else:
            entries = client.xrange(events_key(hasher.call_ref(sid_of(call))))
        stored[call] = [entry.get("event_id", "") for _id, entry in entries]
    client.close()
    missing = 0
    for event_id, call in acked.items():
        wanted = event_id if hasher is None else hasher.event_id(f"id:{event_id}")
        missing += stored[call].count(wanted) != 1
    return missing


def figures(latencies: list[float], acked: dict[str, int], failures: int, elapsed: float, missing: int) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {
        "events": len(latencies),
        "events_per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "acknowledged": len(acked),
        "non_2xx": failures,
        "lost_events": missing,
    }


def segments(prefix: str, count: int) -> list[Job]:
    """``count`` new transcription events (unique ids) spread over the live calls, one per job."""
    return [(i % LIVE_CALLS, [("/v1/livekit/transcription", transcription(i % LIVE_CALLS, f"{prefix}{i}"))])
            for i in range(count)]


def one_run(redis_port: int, env: dict[str, str], hasher: PiiHasher, events: int, concurrency: int,
            start: Start, processes: int, bare: bool) -> dict[str, Any]:
    """Start ``processes`` servers, open the 64 calls (ours), warm up, measure, check, stop."""
    token = env["VOICEHIVE_AGENT_TOKEN"]
    fresh_redis(redis_port)
    servers = [start(redis_port, env, bare=bare) for _ in range(processes)]
    ports = [port for _proc, port in servers]
    try:
        if not bare:  # our endpoint records transcripts of known calls only: open them first
            opening = [(c, [("/v1/livekit/webhook", {"event_type": kind, "call_sid": sid_of(c),
                                                     "event_id": f"o{c}-{kind}", "data": {"hotel_id": "bench"}})
                            for kind in ("agent_ready", "call_started")]) for c in range(LIVE_CALLS)]
            asyncio.run(post_jobs(ports, token, opening, concurrency))
        asyncio.run(post_jobs(ports, token, segments("w", 300), concurrency))  # warm-up
        redis_pid = int(redis.Redis(port=redis_port).info("server")["process_id"])
        cpu_before = sum(cpu_seconds(proc.pid) for proc, _port in servers)
        redis_before = cpu_seconds(redis_pid)
        generator_before = cpu_seconds(os.getpid())
        latencies, acked, failures, elapsed = asyncio.run(post_jobs(ports, token, segments("t", events), concurrency))
        generator_cpu = cpu_seconds(os.getpid()) - generator_before
        cpu = sum(cpu_seconds(proc.pid) for proc, _port in servers) - cpu_before
        redis_cpu = cpu_seconds(redis_pid) - redis_before
        missing = lost(redis_port, acked, None if bare else hasher)
    finally:
        for proc, _port in servers:
            proc.terminate()
            proc.wait(timeout=30)
    return {**figures(latencies, acked, failures, elapsed, missing),
            "server_cpu_us_per_event": round(cpu / max(1, len(latencies)) * 1e6, 1),
            "redis_cpu_us_per_event": round(redis_cpu / max(1, len(latencies)) * 1e6, 1),
            "generator_cpu_us_per_event": round(generator_cpu / max(1, len(latencies)) * 1e6, 1)}


def fresh_redis(port: int) -> None:
    """Empty the server and compact its append-only file, so every run starts from the same
    state: with ``appendfsync always`` the file otherwise grows run after run, and later runs
    (bare and ours alike) were measured up to a third slower than the first."""
    client = redis.Redis(port=port)
    client.flushall()
    client.bgrewriteaof()
    deadline = time.monotonic() + 60
    while client.info("persistence").get("aof_rewrite_in_progress") or client.info("persistence").get(
            "aof_rewrite_scheduled"):
        if time.monotonic() > deadline:
            raise RuntimeError("redis-server did not finish rewriting its append-only file")
        time.sleep(0.05)  # polling the rewrite
    client.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/PID/stat fields 14 and 15): the server's cost
    per event, which the machine's other load disturbs far less than its rate."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median_of(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Median events/s, p50 and p99 over repeated runs; counts summed; every sample kept."""
    return {
        "events_per_second": round(statistics.median(r["events_per_second"] for r in samples), 1),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in samples), 2),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in samples), 2),
        "server_cpu_us_per_event": round(statistics.median(r["server_cpu_us_per_event"] for r in samples), 1),
        "redis_cpu_us_per_event": round(statistics.median(r["redis_cpu_us_per_event"] for r in samples), 1),
        "generator_cpu_us_per_event": round(statistics.median(r["generator_cpu_us_per_event"] for r in samples), 1),
        "acknowledged": sum(r["acknowledged"] for r in samples),
        "non_2xx": sum(r["non_2xx"] for r in samples),
        "lost_events": sum(r["lost_events"] for r in samples),
        "samples": samples,
    }


def run_anchor(redis_port: int, env: dict[str, str], hasher: PiiHasher, events: int, concurrency: int,
               start: Start, repeats: int = 3) -> dict[str, Any]:
    """Bare and ours, one process then two, ``repeats`` times in alternating order (the machine's
    other load drifts); medians, and ratios ours/bare (events/s: >= 1 is as fast; p50/p99: <= 1)."""
    runs: dict[str, dict[str, Any]] = {}
    ratios: dict[str, dict[str, float]] = {}
    for processes in (1, 2):
        key = f"{processes}_process" + ("es" if processes > 1 else "")
        samples: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
        for repeat in range(repeats):
            for bare in ((True, False) if repeat % 2 == 0 else (False, True)):
                samples[bare].append(one_run(redis_port, env, hasher, events, concurrency, start, processes, bare))
        bare_fig, ours = median_of(samples[True]), median_of(samples[False])
        runs[key] = {"bare": bare_fig, "ours": ours}
        ratios[key] = {
            "events_per_second_ours_over_bare": round(ours["events_per_second"] / bare_fig["events_per_second"], 3),
            "p50_ours_over_bare": round(ours["p50_ms"] / bare_fig["p50_ms"], 3),
            "p99_ours_over_bare": round(ours["p99_ms"] / bare_fig["p99_ms"], 3),
            "server_cpu_per_event_ours_over_bare": round(
                ours["server_cpu_us_per_event"] / bare_fig["server_cpu_us_per_event"], 3),
        }
    return {
        "what": "new transcription events (unique ids) over 64 live calls, 64 senders; bare = bench/bare_handler.py "
                "(pydantic model, bearer check, one MULTI: XADD + HSET + 2x EXPIRE); ours = the orchestrator with "
                "every feature on; same redis-server (AOF always), same generator, same run; two processes = two "
                "servers on two ports, senders split evenly; medians of alternating repeats",
        "events_per_run": events,
        "repeats": repeats,
        "runs": runs,
        "ratios": ratios,
    }
