"""Issue 10, concurrency: N calls at once on one line through the installed product's Pods.

The line's warm pool is raised to N (as a hotel expecting N simultaneous callers would set it);
N SIP callers dial one second apart, as calls arrive, and are all connected at the same time.
Every caller hears the greeting with its AI disclosure and an answer about availability, and
hangs up; each call is served by its own worker and no worker serves two calls (the
VoiceSessions' bound Pods, and each Pod's own audit log naming exactly one call); afterwards the
warm pool refills with new Pods.

N is issue 10's 8 from 6 CPUs up, 1.5 per CPU below that, at least 3. Here every call's ASR
(pocketsphinx in the Riva stand-in), TTS (eSpeak NG), caller and worker share the machine's CPUs
with the control plane and with the Pods the pool starts to refill. Measured on 2 cores
(2026-12-04, docs/rig.md "Calls at once"): 4 at once passed 4 of 6 runs (a fresh-clone CI run
failed it: two callers got the fallback, their question never recognised; another run had a
caller who never heard the agent); at 5, two callers get the fallback instead of the answer; at
6 and 8 the callers' WebRTC connections fail and the agents' audio never reaches them. So 3 here.
``VOICEHIVE_E2E_CONCURRENT`` sets N.

Past what the machine can start in time (a burst on an empty pool), a caller must still not be
left in a silent room: the last test makes one call certain to hit the start timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.scenario import (
    ASK_ROOM,
    AVAILABILITY,
    DISCLOSURE,
    E2E_MARKS,
    CallOutcome,
    Installed,
    caller_speech,
    dial_and_bind,
    hang_up_and_end,
    hear_reply,
    transfer_requests,
    wait,
)
from voicehive import contract, transfer

pytestmark = E2E_MARKS

CALLS = int(os.environ.get("VOICEHIVE_E2E_CONCURRENT", str(min(8, max(3, 3 * (os.cpu_count() or 2) // 2)))))
DIAL_SPACING_S = float(os.environ.get("VOICEHIVE_E2E_DIAL_SPACING", "1.0"))  # callers do not all dial in one instant


@dataclass
class Live:
    """One of the calls at once: what it observed, and when its caller was connected."""

    out: CallOutcome
    joined: float
    hung_up: float


async def _one_call(inst: Installed, index: int) -> Live:
    """Dialled ``index`` x DIAL_SPACING_S after the first; greeting, one question answered, hang up.

    Spotting only (no full decode of the replies) and polls twice a second: the callers share
    the machine's CPUs with the calls they test."""
    await asyncio.sleep(index * DIAL_SPACING_S)
    call, out = await dial_and_bind(inst, f"+4917112{index:05d}", session_timeout=120, bind_timeout=180, poll=0.5)
    try:
        first, out.heard["greeting"] = await hear_reply(call, call.joined_at, within=180, transcribe=False)
        out.timings.pickup_s = round(first - call.joined_at, 3)
        end = await call.say(caller_speech(ASK_ROOM))
        first, out.heard["availability"] = await hear_reply(call, end, within=180, transcribe=False)
        for repeat in (1, 2):  # the agent's fallback, not the answer: the caller asks again, at most twice
            if AVAILABILITY in out.heard["availability"]:  # (CI 12-04: with 4 questions within 3 s, the one
                break  # pocketsphinx process standing in for Riva gave two of them no final in time)
            out.timings.steps["asked_again"] = repeat
            end = await call.say(caller_speech(ASK_ROOM))
            first, out.heard["availability"] = await hear_reply(call, end, within=180, transcribe=False)
        out.timings.voice_to_voice_s.append(round(first - end, 3))
    finally:
        hung_up = time.monotonic()
        out.session = await hang_up_and_end(inst, call, out, poll=0.5)
    return Live(out, call.joined_at, hung_up)


def _calls_served_by(inst: Installed, pod: str) -> set[str]:
    """Call references in a worker Pod's own audit log (the node agent keeps each Pod's log)."""
    path = Path(inst.cluster["VOICEHIVE_CLUSTER_LOGS"]) / f"{inst.hotel_ns}_{pod}_worker.log"
    refs = set()
    for line in path.read_text(errors="replace").splitlines():
        if '"voicehive.audit"' in line and '"call_transition"' in line:
            refs.add(json.loads(line)["call_ref"])
    return refs


async def test_calls_at_once_each_have_their_own_worker_and_the_pool_refills(installed: Installed) -> None:
    before = installed.line()["spec"]["workers"]["warmPool"]
    installed.set_workers({"warmPool": CALLS})
    try:
        warm = await wait(lambda: installed.warm_pool_of(CALLS), 600, f"{CALLS} warm workers Ready", interval=2)
        outs: list[Any] = await asyncio.gather(*(_one_call(installed, i) for i in range(CALLS)),
                                               return_exceptions=True)
        failed = [repr(o) for o in outs if isinstance(o, BaseException)]
        assert failed == [], failed
        calls: list[Live] = [o for o in outs if isinstance(o, Live)]
        together = min(c.hung_up for c in calls) - max(c.joined for c in calls)
        assert together > 0, f"the {CALLS} callers were never all connected at the same time"
        ends = [((c.out.session or {}).get("status") or {}) for c in calls]
        assert all(e.get("phase") == "Ended" and e.get("endReason") == "caller_hangup" for e in ends), [
            (e.get("phase"), e.get("endReason"), e.get("turns")) for e in ends]
        heard = [(c.out.heard, c.out.timings.steps.get("asked_again", 0)) for c in calls]
        assert all(DISCLOSURE in h["greeting"] and AVAILABILITY in h["availability"] for h, _ in heard), heard
        pods = [c.out.worker_pod for c in calls]
        assert len(set(pods)) == CALLS, f"a worker served two calls: {pods}"
        assert set(pods) <= warm, "a call waited for a cold worker although the pool was warm"
        served = {pod: _calls_served_by(installed, pod) for pod in pods if pod}
        assert all(len(refs) == 1 for refs in served.values()), served
        refilled = await wait(lambda: installed.warm_pool_of(CALLS, used=set(pods)), 600,
                              "the warm pool refilled with new workers", interval=2)
        assert not refilled & set(pods)
    finally:
        installed.set_workers({"warmPool": before})


async def test_a_caller_nobody_answers_is_handed_over_not_left_in_silence(installed: Installed) -> None:
    """A burst the cluster has no room for, made certain: no warm worker, and workers that request
    more CPU than any node has, so kube-scheduler leaves the call's Pod Pending (as when a node
    pool is full and the autoscaler is slower than the line's start timeout). The operator fails
    the session, tries the front desk (livekit-server has no SIP service here, so the transfer
    fails: the tested path, as in the full call) and removes the caller from the room, which makes
    livekit-sip end the SIP call. The caller is disconnected, not left waiting in silence."""
    before = installed.line()["spec"]["workers"]
    too_big = {"requests": {"cpu": "64", "memory": "512Mi"}, "limits": {"cpu": "64", "memory": "1Gi"}}
    installed.set_workers({"warmPool": 0, "startTimeoutSeconds": 5, "resources": too_big})
    call = None
    try:
        await wait(lambda: not installed.idle_ready_workers(), 300, "no warm worker left", interval=1)
        call = await installed.sim().dial(installed.inbound_call("+4917199900001"))
        room = call.dispatch.room

        def handled() -> dict[str, Any] | None:
            session = installed.session_for(room) or {}
            status = session.get("status") or {}
            return status if transfer.state(status) in (transfer.TRANSFERRED, transfer.FAILED) else None

        status = await wait(handled, 180, "the unanswered call handed over", interval=0.5)
        assert status["phase"] == "Failed" and status["endReason"].startswith("start_timeout"), status
        cond = next(c for c in status["conditions"] if c["type"] == contract.CONDITION_TRANSFER)
        assert cond["reason"] == transfer.FAILED and "disconnected" in cond["message"], cond
        assert transfer_requests(room) >= 1  # the front desk was tried first, at livekit-server
        await wait(lambda: not call.room.isconnected(), 60, "the caller disconnected by the server", interval=0.5)
        events = installed.core.list_namespaced_event(installed.hotel_ns).items
        written = json.dumps(installed.session_for(room)) + json.dumps([e.message for e in events])
        assert "99900001" not in written and room not in written  # what was written says no number
    finally:
        if call is not None:
            await call.hang_up()
        installed.set_workers({"warmPool": before["warmPool"], "resources": before.get("resources"),
                                 "startTimeoutSeconds": before.get("startTimeoutSeconds", 20)})
