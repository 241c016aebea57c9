"""Voice-to-voice latency of our worker vs a bare livekit-agents AgentSession, same fakes, same run.

v2v = first reply audio frame handed to the output − last voiced caller sample fed to the
input, both on time.monotonic, measured by the caller side (not the framework's estimate).

Fakes (fixed latencies, the issue's setup): Riva final 100 ms after the speech end, Azure
OpenAI first token 200 ms (then 2 ms/token), ElevenLabs first audio 100 ms; end-of-turn
silence 300 ms. The fakes run in THIS process; each session runs in its own child process
(``--worker MODE``) so RSS and CPU are the worker's alone.

Besides the plain turns, a few turns contain a mid-sentence pause shorter than the end-of-turn
silence: a reply that starts inside the pause is a cut-off (counted), and the speculative
requests our worker had to cancel there are the "wasted" LLM requests.

Usage: python bench/pipeline.py [--turns 20] [--out bench/results/pipeline.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PHRASES = [
    "I would like to book a double room for two nights",
    "What time is check in at the hotel",
    "Do you have parking for my car",
    "Is breakfast included in the price",
    "Can I bring my dog with me",
    "How do I get there from the airport",
    "I need a room for three people next weekend",
    "What is the price of the junior suite",
    "Is there a gym or a sauna",
    "Can I check out a bit later on Sunday",
    "I want to change my booking to Friday",
    "Do you have free wifi in the rooms",
    "Please tell me the address of the hotel",
    "How much is a single room for one night",
    "Can I speak to somebody at the front desk",
    "I would like to cancel my reservation",
    "Are there any rooms available tomorrow",
    "What time does breakfast start",
    "Can you book a taxi for me",
    "Thank you very much that is all",
]
PAUSED = [
    ("I would like a room", "for two nights in December"),
    ("Do you have", "a quiet room on the top floor"),
    ("My name is", "Anna Schmidt and I booked last week"),
    ("Could you tell me", "when the sauna opens"),
]
BARGE_INS = 5
ASK_LONG = "Tell me about the hotel"
STOP = "Stop please"
LONG_REPLY = (
    "The hotel has single rooms, double rooms and junior suites, breakfast is served every morning, "
    "parking is available underground, and the sauna is open every evening until ten."
)
BARGE_AFTER_S = 3.5  # past the framework's 3 s AEC warm-up, so both sessions can be interrupted
PAUSE_S = 0.2  # shorter than the 300 ms end-of-turn silence
GAP_S = 1.2  # silence after the agent finished before the caller speaks again
REPLY = "Certainly, I can help."


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident set size of this process, MiB."""
    cur = peak = 0.0
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return cur, peak


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# ---------------------------------------------------------------------------------------
# child: one session
# ---------------------------------------------------------------------------------------


async def barge_in(c: Any, ask_pcm: bytes, stop_pcm: bytes) -> float:
    """Milliseconds from the caller's first voiced barge-in sample to the agent audio stopping."""
    ask = c.say(ask_pcm, ASK_LONG)
    seg = await c.wait_reply(ask, timeout=15)
    await c.wait_for(lambda: seg.played >= BARGE_AFTER_S, 15, "the long reply to play")
    stop = c.say(stop_pcm, STOP)
    await c.wait_for(lambda: stop.started_at is not None, 5, "the barge-in to start")
    onset = stop.started_at - 0.02  # the first frame is voiced; its first sample is 20 ms older
    stopped = await c.wait_for(lambda: c.sink.stopped_after(onset), 5, "the agent audio to stop")
    return float((stopped - onset) * 1000)


async def run_worker(mode: str, endpoints: dict[str, str], turns: int, with_pauses: bool) -> dict[str, Any]:
    import logging

    from tests.worker.callrig import Call, line_spec
    from tests.worker.speech import speak
    from voicehive.heap import GcPauses, freeze_startup_heap
    from voicehive_worker.session import ProviderEndpoints

    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("livekit.agents").setLevel(logging.ERROR)

    class _Fakes:
        """The parent's fakes, seen from the child: endpoints and names only."""

        def __init__(self, e: dict[str, str]) -> None:
            self.e = e

        def endpoints(self) -> ProviderEndpoints:
            return ProviderEndpoints(
                riva_server=self.e["riva"], riva_tls=False, nvidia_api_key=None,
                llm_endpoint=self.e["llm"], llm_api_key=self.e["llm_key"],
                tts_base_url=self.e["tts"], tts_api_key=self.e["tts_key"],
            )

        def spec_for(self, spec: Any) -> Any:
            return spec.model_copy(update={
                "llm": spec.llm.model_copy(update={"deployment": self.e["deployment"]}),
                "tts": spec.tts.model_copy(update={"voice_id": self.e["voice"]}),
                "asr": spec.asr.model_copy(update={"model": self.e["asr_model"]}),
            })

    from tests.worker.callrig import running_call

    phrases = [PHRASES[i % len(PHRASES)] for i in range(turns)]
    audio = {p: speak(p) for p in phrases}
    paused = [(speak(a), speak(b), f"{a} / {b}") for a, b in PAUSED] if with_pauses else []
    rss_before, _ = rss_mib()
    result: dict[str, Any] = {"mode": mode}
    async with running_call(_Fakes(endpoints), line_spec(), bare=(mode == "bare"), greet=False) as call:  # type: ignore[arg-type]
        c: Call = call
        await asyncio.sleep(1.0)  # session start, prewarm
        if mode == "ours":
            freeze_startup_heap()  # as `voicehive worker` does once warm (a stock session does not)
        pauses = GcPauses().start()
        rss_start, _ = rss_mib()
        cpu0, t0 = cpu_seconds(), time.monotonic()
        v2v: list[float] = []
        marks: list[tuple[float, float]] = []
        for i, phrase in enumerate(phrases):
            utt = c.say(audio[phrase], phrase)
            seg = await c.wait_reply(utt, timeout=15)
            assert utt.last_voiced_at is not None
            v2v.append((seg.first_frame_at - utt.last_voiced_at) * 1000)
            marks.append((utt.last_voiced_at, seg.first_frame_at))
            await c.wait_quiet(timeout=30)
            await asyncio.sleep(GAP_S)
            if i == 0:
                rss_first, _ = rss_mib()
        cut_offs = 0
        paused_v2v: list[float] = []
        for first, second, label in paused:
            u1 = c.say(first, label + " (1)")
            c.caller.pause(PAUSE_S)
            u2 = c.say(second, label + " (2)")
            seg = await c.wait_reply(u2, timeout=15)
            # a reply that started before the caller's second part ended cut the caller off
            if any(
                s.first_frame_at > (u1.last_voiced_at or 0) and s.first_frame_at < (u2.last_voiced_at or 0)
                for s in c.sink.segments
            ):
                cut_offs += 1
            assert u2.last_voiced_at is not None
            paused_v2v.append((seg.first_frame_at - u2.last_voiced_at) * 1000)
            await c.wait_quiet(timeout=30)
            await asyncio.sleep(GAP_S)
        barge_ms: list[float] = []
        for _ in range(BARGE_INS if with_pauses else 0):
            barge_ms.append(await barge_in(c, speak(ASK_LONG), speak(STOP)))
            await c.wait_quiet(timeout=30)
            await asyncio.sleep(GAP_S)
        cpu1, t1 = cpu_seconds(), time.monotonic()
        pauses.stop()
        rss_end, rss_peak = rss_mib()
        result.update(
            v2v_ms=[round(x, 1) for x in v2v],
            turn_marks=marks,
            p50_ms=round(statistics.median(v2v), 1),
            p95_ms=round(percentile(v2v, 0.95), 1),
            max_ms=round(max(v2v), 1),
            paused_turns=len(paused),
            paused_cut_offs=cut_offs,
            paused_v2v_ms=[round(x, 1) for x in paused_v2v],
            barge_in_stop_ms=[round(x, 1) for x in barge_ms],
            barge_in_stop_p50_ms=round(statistics.median(barge_ms), 1) if barge_ms else None,
            barge_in_stop_max_ms=round(max(barge_ms), 1) if barge_ms else None,
            call_seconds=round(t1 - t0, 1),
            cpu_seconds=round(cpu1 - cpu0, 2),
            cpu_seconds_per_call_minute=round((cpu1 - cpu0) / ((t1 - t0) / 60), 2),
            gc_pauses_during_call=pauses.summary(),
            rss_mib={
                "before_session": round(rss_before, 1),
                "session_started": round(rss_start, 1),
                "after_first_turn": round(rss_first, 1),
                "end": round(rss_end, 1),
                "peak": round(rss_peak, 1),
            },
            turn_stats={
                "finals": c.stats.finals,
                "speculations": c.stats.speculations,
                "resumes": c.stats.resumes,
                "recloses": c.stats.recloses,
            },
        )
    return result


# ---------------------------------------------------------------------------------------
# parent: fakes + children
# ---------------------------------------------------------------------------------------


def breakdown(marks: list[tuple[float, float]], fakes: Any) -> dict[str, Any]:
    """Median time per stage, from the fakes' own records (same monotonic clock as the caller)."""
    finals = sorted(u.final_sent_at for st in fakes.riva.streams for u in st.utterances if u.final_sent_at)
    llm = sorted((r.received_at, r.first_token_at) for r in fakes.azure.requests if r.first_token_at)
    tts = sorted(
        (g.requested_at, g.first_audio_at)
        for sock in fakes.eleven.sockets for ctx in sock.contexts.values() for g in ctx.generations
        if g.first_audio_at
    )
    stages: dict[str, list[float]] = {k: [] for k in (
        "speech_end_to_asr_final", "asr_final_to_llm_request", "llm_request_to_first_token",
        "first_token_to_tts_request", "tts_request_to_first_audio", "tts_first_audio_to_output_frame")}
    for end, out in marks:
        fin = [f for f in finals if end < f < out]
        req = [r for r in llm if end < r[0] < out]
        gen = [g for g in tts if end < g[0] and g[1] < out]
        if not (fin and req and gen):
            continue
        f, (r, tok), (g_req, g_audio) = fin[-1], req[-1], gen[-1]
        stages["speech_end_to_asr_final"].append(f - end)
        stages["asr_final_to_llm_request"].append(r - f)
        stages["llm_request_to_first_token"].append(tok - r)
        stages["first_token_to_tts_request"].append(g_req - tok)
        stages["tts_request_to_first_audio"].append(g_audio - g_req)
        stages["tts_first_audio_to_output_frame"].append(out - g_audio)
    summary: dict[str, Any] = {k: round(statistics.median(v) * 1000, 1) for k, v in stages.items() if v}
    summary["per_turn"] = {k: [round(x * 1000, 1) for x in v] for k, v in stages.items()}
    return summary


async def run_mode(mode: str, turns: int, with_pauses: bool) -> dict[str, Any]:
    from tests.worker.callrig import provider_fakes

    transcripts = [PHRASES[i % len(PHRASES)] for i in range(turns)]
    for a, b in PAUSED if with_pauses else []:
        transcripts += [a, b]
    if with_pauses:
        transcripts += [ASK_LONG, STOP] * BARGE_INS

    def responder(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
        users = [m for m in messages if m.get("role") == "user"]
        return LONG_REPLY if users and ASK_LONG in str(users[-1].get("content")) else REPLY

    async with provider_fakes(transcripts, responder) as fakes:
        endpoints = {
            "riva": fakes.riva.address, "llm": fakes.azure.endpoint, "llm_key": fakes.azure.api_key,
            "tts": fakes.eleven.base_url_v1, "tts_key": fakes.eleven.api_key,
            "deployment": fakes.azure.deployment, "voice": fakes.eleven.voice_id,
            "asr_model": fakes.riva.models[0].name,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--worker", mode, "--turns", str(turns),
            *(["--pauses"] if with_pauses else []),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE": "0"},
        )
        out, _ = await proc.communicate(json.dumps(endpoints).encode())
        if proc.returncode != 0:
            raise RuntimeError(f"{mode} worker failed (exit {proc.returncode})")
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        result["breakdown_ms"] = breakdown(result.pop("turn_marks"), fakes)
        requests = len(fakes.azure.requests)
        replies = turns + (len(PAUSED) + 2 * BARGE_INS if with_pauses else 0)
        result["llm_requests"] = requests
        result["wasted_llm_requests"] = requests - replies
        return result


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    ours = await run_mode("ours", args.turns, with_pauses=True)
    bare = await run_mode("bare", args.turns, with_pauses=True)
    return {
        "benchmark": "pipeline voice-to-voice latency",
        "measured": "first reply audio frame out - last voiced caller sample in (time.monotonic, caller side)",
        "setup": {
            "asr_final_after_speech_end_ms": 100, "llm_first_token_ms": 200, "llm_ms_per_token": 2,
            "tts_first_audio_ms": 100, "end_of_turn_silence_ms": 300, "turns": args.turns,
            "caller_audio": "espeak-ng speech, 20 ms frames in real time",
            "paused_turns": {"count": len(PAUSED), "pause_ms": int(PAUSE_S * 1000)},
            "python": platform.python_version(), "cpus": os.cpu_count(),
        },
        "ours": ours,
        "bare": bare,
        "ratio_p50": round(ours["p50_ms"] / bare["p50_ms"], 3),
        "ratio_p95": round(ours["p95_ms"] / bare["p95_ms"], 3),
        "target": {"p50_ms": 500, "p95_ms": 550,
                   "met": ours["p50_ms"] <= 500 and ours["p95_ms"] <= 550},
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pipeline.json")
    parser.add_argument("--worker", choices=["ours", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--pauses", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        endpoints = json.loads(sys.stdin.read())
        result = asyncio.run(run_worker(args.worker, endpoints, args.turns, args.pauses))
        print(json.dumps(result))
        return
    report = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    o, b = report["ours"], report["bare"]
    print(f"ours p50 {o['p50_ms']} p95 {o['p95_ms']} ms | bare p50 {b['p50_ms']} p95 {b['p95_ms']} ms | "
          f"ratio {report['ratio_p50']} | wasted LLM {o['wasted_llm_requests']} | cut-offs ours "
          f"{o['paused_cut_offs']}/{o['paused_turns']} bare {b['paused_cut_offs']}/{b['paused_turns']} | "
          f"barge-in stop p50 ours {o['barge_in_stop_p50_ms']} bare {b['barge_in_stop_p50_ms']} ms | "
          f"RSS {o['rss_mib']['peak']} MiB | CPU {o['cpu_seconds_per_call_minute']} s/call-min -> {args.out}")


if __name__ == "__main__":
    main()
