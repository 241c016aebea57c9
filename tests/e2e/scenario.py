"""The hotel call through the installed product, step by step and timed (tests/e2e, bench/e2e.py).

Each step waits (generously) for what the installed Pods, livekit-server, Redis and the
apiserver really show, and records how long it took. Pure helpers (what a transcript must
contain, what the privacy scan looks for) are separated from the waiting.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import pytest
import redis.asyncio as aioredis
from livekit import api

from tests.e2e.sip_gateway_sim import InboundCall, SimCall, SipGatewaySim
from tests.e2e.voices import recogniser, spot
from tests.fixtures.rig import ROOT, parse_env_file
from tests.worker.speech import espeak_available, speak
from voicehive import contract
from voicehive.privacy import PiiHasher

T = TypeVar("T")
GROUP, VERSION = "voicehive.io", "v1alpha1"
LINE = "lindenhof-main"
CALLER_NUMBER = "+4915112345678"
# what the caller says, phrased so pocketsphinx understands it through a 300-3400 Hz line
ASK_ROOM = "Do you have a double room available?"
ASK_DESK = "Can I talk to a human?"
# what the caller listens for (keyword spotting on the received audio, tests/e2e/voices.py)
# Every e2e test: on the rig, slow, and a caller who speaks (eSpeak NG)
E2E_MARKS = [pytest.mark.rig, pytest.mark.slow, pytest.mark.e2e,
             pytest.mark.skipif(not espeak_available(), reason="espeak-ng (make system-deps) speaks for the caller")]
SPOTTED = ("assistant", "double room", "message", "sorry")
DISCLOSURE = "assistant"  # "... the hotel's automated AI assistant" (phrases.GREETING)
AVAILABILITY = "double room"
DESK_UNREACHABLE = "message"  # "... I can take a message for them instead" / "I can take a message"


def asked_to_repeat(heard: str) -> bool:
    """The agent's reply was its "sorry ... could you tell me again" (policy.py), not an answer."""
    spotted, _, transcript = heard.partition("|")
    return "sorry" in spotted and DESK_UNREACHABLE not in spotted and " again " in f" {transcript} "


class StepFailed(AssertionError):
    """A step of the call did not happen within its time."""


@dataclass
class Timings:
    steps: dict[str, float] = field(default_factory=dict)
    pickup_s: float | None = None
    voice_to_voice_s: list[float] = field(default_factory=list)


@dataclass
class Installed:
    """The installed product on the rig (`make cluster-up`), as the e2e sees it."""

    rig: dict[str, str]
    cluster: dict[str, str]
    api_client: Any

    @classmethod
    def load(cls) -> Installed:
        rig = parse_env_file(ROOT / ".rig" / "env")
        cluster = parse_env_file(ROOT / ".rig" / "cluster" / "env")
        client = kubernetes.config.new_client_from_config(config_file=cluster["KUBECONFIG"])  # type: ignore[no-untyped-call]
        return cls(rig, cluster, client)

    @property
    def hotel_ns(self) -> str:
        return self.cluster["VOICEHIVE_CLUSTER_HOTEL_NS"]

    @property
    def release_ns(self) -> str:
        return self.cluster["VOICEHIVE_CLUSTER_RELEASE_NS"]

    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api_client)

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api_client)

    def hasher(self) -> PiiHasher:
        keys = json.loads((ROOT / ".rig" / "cluster" / "keys.json").read_text())
        return PiiHasher(base64.b64decode(keys["pii-key"]))

    def sim(self) -> SipGatewaySim:
        return SipGatewaySim(self.rig["LIVEKIT_URL"], self.rig["LIVEKIT_API_KEY"], self.rig["LIVEKIT_API_SECRET"])

    def lkapi(self) -> api.LiveKitAPI:
        return api.LiveKitAPI(self.rig["LIVEKIT_URL"].replace("ws://", "http://"), self.rig["LIVEKIT_API_KEY"],
                              self.rig["LIVEKIT_API_SECRET"])

    def line(self) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.hotel_ns, "hotellines", LINE))

    def inbound_call(self, caller: str = CALLER_NUMBER) -> InboundCall:
        """The carrier's INVITE for the line's first number, with the line's SIP credentials."""
        spec = self.line()["spec"]
        auth = spec["sip"]["auth"]
        data = self.core.read_namespaced_secret(auth["secretName"], self.hotel_ns).data
        user = base64.b64decode(data[auth["usernameKey"]]).decode()
        password = base64.b64decode(data[auth["passwordKey"]]).decode()
        return InboundCall(caller=caller, dialled=spec["phoneNumbers"][0], username=user, password=password)

    def set_workers(self, patch: dict[str, Any]) -> None:
        """Merge-patch the example line's ``spec.workers`` (warm pool, start timeout, resources)."""
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.hotel_ns, "hotellines", LINE,
                                                   {"spec": {"workers": patch}})

    def idle_ready_workers(self) -> set[str]:
        """Warm worker Pods: idle, Ready and not being deleted."""
        selector = f"{contract.LABEL_COMPONENT}={contract.COMPONENT_WORKER},{contract.LABEL_WORKER_STATE}=idle"
        pods = self.core.list_namespaced_pod(self.hotel_ns, label_selector=selector).items
        return {p.metadata.name for p in pods if not p.metadata.deletion_timestamp
                and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])}

    def warm_pool_of(self, size: int, used: set[str] | None = None) -> set[str] | None:
        """The idle Ready workers (none of ``used``) once there are ``size`` of them."""
        idle = self.idle_ready_workers() - (used or set())
        return idle if len(idle) >= size else None

    def sessions(self) -> list[dict[str, Any]]:
        out = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.hotel_ns, "voicesessions")
        return list(out["items"])

    def session_for(self, room: str) -> dict[str, Any] | None:
        wanted = self.hasher().room(room)
        return next((s for s in self.sessions() if s["spec"].get("roomHash") == wanted), None)

    def orchestrator_audit(self, call_ref: str) -> list[dict[str, Any]]:
        """The orchestrator Pods' audit entries for one call (their logs, as the node agent keeps them)."""
        entries = []
        for path in Path(self.cluster["VOICEHIVE_CLUSTER_LOGS"]).glob(f"{self.release_ns}_*orchestrator*.log"):
            for line in path.read_text(errors="replace").splitlines():
                if call_ref in line and '"voicehive.audit"' in line:
                    entries.append(json.loads(line))
        return entries


async def wait(check: Callable[[], Awaitable[T | None]] | Callable[[], T | None], within: float, what: str,
               interval: float = 0.1) -> T:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            last = result
        except Exception as exc:  # a transient API error is retried until the deadline
            last = exc
        else:
            if result:
                return result  # type: ignore[return-value]
        await asyncio.sleep(interval)
    raise StepFailed(f"{what}: not within {within:.0f}s (last: {last!r})")


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


async def hear_reply(call: SimCall, since: float, within: float = 30, quiet: float = 1.5,
                     transcribe: bool = True) -> tuple[float, str]:
    """(first audio arrival after ``since``, the phrases spotted in the whole reply "|" what the
    local ASR recognises of it). ``transcribe=False`` spots only: a full decode costs about a
    quarter of the reply's duration in CPU, which calls at once on two cores cannot spare."""
    first = await wait(lambda: call.heard.voiced_after(since), within, "agent audio")
    await wait(lambda: time.monotonic() - max(call.heard.quiet_since(), first) > quiet, within + 30, "reply ends")
    audio = call.heard.audio(first - 0.05, time.monotonic())
    text = (await asyncio.to_thread(recogniser(str(ROOT)).transcribe_pcm, audio))[0] if transcribe else ""
    found = await asyncio.to_thread(spot, audio, SPOTTED)
    return first, " ".join([*sorted(found), "|", str(text)])


def warm_listener() -> None:
    """Load the caller's recognisers before dialling (seconds of model loading, not call time)."""
    recogniser(str(ROOT))
    spot(b"\0\0" * 1600, SPOTTED)


def caller_speech(text: str) -> bytes:
    return speak(text, voice="en-us", words_per_minute=130)


def privacy_findings(blobs: dict[str, str], secrets_in_clear: list[str]) -> list[str]:
    """Where any of ``secrets_in_clear`` appears (case-insensitive) in the named blobs."""
    found = []
    for where, text in blobs.items():
        low = text.lower()
        for secret in secrets_in_clear:
            if secret and secret.lower() in low:
                found.append(f"{secret[:6]}... in {where}")
    return found


async def redis_dump(url: str) -> tuple[dict[str, str], dict[str, int]]:
    """Every key's value (as text) and TTL in VoiceHive's call-state Redis."""
    r = aioredis.from_url(url, decode_responses=False)
    values: dict[str, str] = {}
    ttls: dict[str, int] = {}
    try:
        async for key in r.scan_iter(count=500):
            name = key.decode(errors="replace")
            kind = (await r.type(key)).decode()
            if kind == "string":
                raw: Any = await r.get(key)
            elif kind == "hash":
                raw = await r.hgetall(key)
            elif kind == "list":
                raw = await r.lrange(key, 0, -1)
            elif kind == "set":
                raw = await r.smembers(key)
            elif kind == "zset":
                raw = await r.zrange(key, 0, -1, withscores=True)
            elif kind == "stream":
                raw = await r.xrange(key)
            else:
                raw = kind
            values[name] = repr(raw)
            ttls[name] = int(await r.ttl(key))
    finally:
        await r.aclose()
    return values, ttls


def kube_dump(inst: Installed) -> dict[str, str]:
    """Every VoiceHive CR and every Event, as JSON text."""
    out: dict[str, str] = {}
    for plural in ("hotellines", "voicesessions"):
        items = inst.custom.list_cluster_custom_object(GROUP, VERSION, plural)["items"]
        out[f"CR {plural}"] = json.dumps(items)
    events = inst.core.list_event_for_all_namespaces()
    out["Events"] = json.dumps([inst.api_client.sanitize_for_serialization(e) for e in events.items])
    return out


def pod_logs(inst: Installed) -> dict[str, str]:
    """Every Pod's log of this installation (the node agent keeps older clusters' logs too)."""
    logs = Path(inst.cluster["VOICEHIVE_CLUSTER_LOGS"])
    since = (ROOT / ".rig" / "cluster" / "env").stat().st_mtime - 900  # Pods start before env is written
    return {f"log {p.name}": p.read_text(errors="replace") for p in sorted(logs.glob("*.log"))
            if p.stat().st_mtime >= since}


def transfer_requests(room: str) -> int:
    """TransferSIPParticipant requests for this room that livekit-server logged (its Twirp API log)."""
    log = ROOT / ".rig" / "logs" / "livekit-server.log"
    return sum(1 for line in log.read_text(errors="replace").splitlines()
               if "API SIP.TransferSIPParticipant" in line and f'"room": "{room}"' in line)


def desk_open_now(inst: Installed) -> bool:
    import datetime as dt
    from zoneinfo import ZoneInfo

    from voicehive.api.models import HotelLineSpec
    from voicehive_worker.agent import desk_is_open

    spec = HotelLineSpec.model_validate(inst.line()["spec"])
    return desk_is_open(spec.front_desk.hours, dt.datetime.now(ZoneInfo(spec.time_zone)))


@dataclass
class CallOutcome:
    """What one simulated call observed (for assertions, the privacy scan and the bench)."""

    room: str
    identity: str
    attributes: dict[str, str]
    session: dict[str, Any] | None = None
    worker_pod: str | None = None
    heard: dict[str, str] = field(default_factory=dict)
    timings: Timings = field(default_factory=Timings)


class Stopwatch:
    def __init__(self, timings: Timings) -> None:
        self.timings, self.t0 = timings, time.monotonic()

    def mark(self, step: str) -> None:
        self.timings.steps[step] = round(time.monotonic() - self.t0, 3)


async def dial_and_bind(inst: Installed, caller: str = CALLER_NUMBER, session_timeout: float = 30,
                        bind_timeout: float = 60, poll: float = 0.2) -> tuple[SimCall, CallOutcome]:
    """Dial the line; wait for the signed participant_joined, the VoiceSession and the worker.
    Steps are timed to ``poll`` seconds (each poll lists the apiserver's VoiceSessions)."""
    await asyncio.to_thread(warm_listener)
    outcome_timings = Timings()
    watch = Stopwatch(outcome_timings)
    call = await inst.sim().dial(inst.inbound_call(caller))
    try:
        return call, await _bound(inst, call, watch, outcome_timings, session_timeout, bind_timeout, poll)
    except BaseException:
        await call.hang_up()  # a step failed: the caller leaves (else the room outlives the test or bench)
        raise


async def _bound(inst: Installed, call: SimCall, watch: Stopwatch, timings: Timings, session_timeout: float,
                 bind_timeout: float, poll: float) -> CallOutcome:
    d = call.dispatch
    out = CallOutcome(room=d.room, identity=d.identity, attributes=d.attributes, timings=timings)
    watch.mark("dialled")
    ref = inst.hasher().call_ref(d.room)
    await wait(lambda: [e for e in inst.orchestrator_audit(ref) if e.get("event") == "sip_participant_joined"],
               30, "the signed participant_joined verified and applied by the orchestrator", interval=poll)
    watch.mark("participant_joined_processed")
    out.session = await wait(lambda: inst.session_for(d.room), session_timeout, "VoiceSession for the call",
                             interval=poll)
    watch.mark("voice_session")

    def bound() -> str | None:
        session = inst.session_for(d.room) or {}
        return (session.get("status") or {}).get("workerPod")

    out.worker_pod = await wait(bound, bind_timeout, "a warm worker claimed (status.workerPod)", interval=poll)
    watch.mark("worker_claimed")

    async def agent_in_room() -> bool:
        async with inst.lkapi() as lk:
            res = await lk.room.list_participants(api.ListParticipantsRequest(room=d.room))
        return any(p.identity != d.identity for p in res.participants)

    await wait(agent_in_room, bind_timeout, "the worker in the room", interval=poll)
    watch.mark("worker_in_room")
    return out


async def converse(inst: Installed, call: SimCall, out: CallOutcome, *, full: bool = True,
                   transcribe: bool = True) -> None:
    """Greeting, a room question, the front desk by voice and by key 0 (``full``), measured."""
    watch, t = Stopwatch(out.timings), out.timings
    first, out.heard["greeting"] = await hear_reply(call, call.joined_at, within=60, transcribe=transcribe)
    t.pickup_s = round(first - call.joined_at, 3)
    watch.mark("greeting_heard")
    end = await call.say(caller_speech(ASK_ROOM))
    first, out.heard["availability"] = await hear_reply(call, end, transcribe=transcribe)
    t.voice_to_voice_s.append(round(first - end, 3))
    watch.mark("availability_heard")
    if not full:
        return
    end = await call.say(caller_speech(ASK_DESK))
    first, out.heard["desk_by_voice"] = await hear_reply(call, end, quiet=2.5)
    for repeat in (1, 2):  # the agent's ASR missed it: the caller says it again, at most twice
        if not asked_to_repeat(out.heard["desk_by_voice"]):  # (CI 12-03, twice in a row once: pocketsphinx
            break  # in the Riva stand-in on a loaded machine heard nothing it could use)
        t.steps["desk_by_voice_repeated"] = repeat
        end = await call.say(caller_speech(ASK_DESK))
        first, out.heard["desk_by_voice"] = await hear_reply(call, end, quiet=2.5)
    t.voice_to_voice_s.append(round(first - end, 3))
    watch.mark("desk_by_voice_heard")
    t.steps["transfer_requests_after_voice"] = transfer_requests(out.room)
    pressed = await call.press("0")
    first, out.heard["desk_by_key"] = await hear_reply(call, pressed, quiet=2.5)
    t.steps["key0_to_audio_s"] = round(first - pressed, 3)
    watch.mark("desk_by_key_heard")
    t.steps["transfer_requests_after_key"] = transfer_requests(out.room)


async def hang_up_and_end(inst: Installed, call: SimCall, out: CallOutcome, poll: float = 0.2) -> dict[str, Any]:
    watch = Stopwatch(out.timings)
    await call.hang_up()

    def ended() -> dict[str, Any] | None:
        session = inst.session_for(out.room) or {}
        return session if (session.get("status") or {}).get("phase") in ("Ended", "Failed") else None

    session = await wait(ended, 90, "VoiceSession Ended", interval=poll)
    watch.mark("session_ended")
    return session


async def ttl_findings(inst: Installed, max_days: int) -> list[str]:
    """Call-state keys without a TTL or with one longer than the line's retention."""
    _, ttls = await redis_dump(inst.cluster["VOICEHIVE_CLUSTER_REDIS_URL"])
    found = [f"{':'.join(k.split(':')[:2])}...:{k.split(':')[-1]} has no TTL" for k, v in ttls.items() if v < 0]
    found += [f"{':'.join(k.split(':')[:2])}... TTL {v}s > {max_days} days" for k, v in ttls.items()
              if v > max_days * 86400 + 60]
    return sorted(set(found)) if ttls else ["Redis holds no call-state key at all"]


async def privacy_scan(inst: Installed, out: CallOutcome, caller: str, sentences: list[str]) -> list[str]:
    """The caller's number, the room name and what was said, anywhere in clear (Pod logs,
    Redis keys and values, every VoiceHive CR, every Event)."""
    values, _ = await redis_dump(inst.cluster["VOICEHIVE_CLUSTER_REDIS_URL"])
    blobs = {**pod_logs(inst), **kube_dump(inst), **{f"redis {k[:12]}...": v for k, v in values.items()}}
    blobs["redis key names"] = "\n".join(values)
    needles = [caller, caller.lstrip("+"), out.room, out.identity, *sentences]
    return await asyncio.to_thread(privacy_findings, blobs, needles)
