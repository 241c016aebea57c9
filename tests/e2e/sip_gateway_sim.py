"""A SIP gateway SIMULATOR (test infrastructure): livekit-sip's inbound role, for the e2e tests.

livekit-sip itself cannot be built or run here (it needs the SIP/RTP stack, its media bridge and
LiveKit's pion forks, which the Go proxy reachable from this machine refuses; docs/rig.md), so
this plays what it does for one inbound call, from what the operator really created on the
rig's livekit-server, read back through ``livekit-api``:

1. **Trunk match** (``sip.list_inbound_trunk``): a trunk whose ``numbers`` hold the dialled number
   (normalised), whose ``allowed_addresses`` (IP or CIDR) admit the source address and whose
   ``allowed_numbers`` admit the caller; a trunk with ``auth_username`` needs those credentials
   (livekit-sip answers 407 and checks the digest). LiveKit docs, "SIP inbound trunk"
   (docs.livekit.io/sip/trunk-inbound/) and livekit/protocol ``sip/sip.go`` ``MatchTrunkDetailed``.
2. **Dispatch rule** (``sip.list_dispatch_rule``): a rule whose ``trunk_ids`` name the trunk (or
   none) and whose ``inbound_numbers`` (if any) hold the caller. LiveKit docs, "SIP dispatch rule"
   (docs.livekit.io/sip/dispatch-rule/) and protocol ``MatchDispatchRuleIter``.
3. **Individual rule**: room ``<room_prefix>_<caller>_<random>`` (``no_randomness`` drops the
   suffix), identity ``sip_<caller>``, name ``Phone <caller>``. With ``hide_phone_number`` the
   caller is its last 4 digits in the room and name, the identity is ``sip_`` + 16 hex digits of
   its SHA-256, and ``sip.phoneNumber``, ``sip.hostname`` and ``sip.trunkPhoneNumber`` are omitted
   (protocol ``livekit/attrs.go``: "will be omitted if HidePhoneNumber is set";
   ``sip/sip.go`` ``EvaluateDispatchRules``). Attributes: the rule's own ``attributes`` plus
   ``sip.callID``, ``sip.trunkID``, ``sip.ruleID`` and ``sip.callStatus=active`` once answered
   (docs.livekit.io/sip/sip-participant/, "SIP participant attributes"); metadata: the rule's.
4. **Join** as a participant of kind SIP: the access token's ``kind`` claim (livekit-api
   ``AccessToken.with_kind("sip")``), which livekit-server v1.13.5 applies to the participant
   (``roommanager.go``: ``SetKind(grants.GetParticipantKind())``), so its webhooks carry
   ``ParticipantInfo.Kind.SIP`` as a real SIP leg's do.
5. **Media** as a phone line delivers it: the caller's speech band-limited to 300-3400 Hz and
   sampled at 8 kHz (G.711's band). The agent's audio is received and time-stamped.
6. **DTMF**: ``LocalParticipant.publish_dtmf`` (what livekit-sip sends for RFC 2833 digits;
   ``sip_dtmf_received`` in livekit-agents). **Hang-up**: the participant leaves the room.

Not simulated: SIP signalling, SRTP (the line asks ``mediaEncryption: require``), codecs and
jitter of a real PSTN leg, and REFER (a transfer reaches livekit-server, which has no SIP
service here to carry it out).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import ipaddress
import re
import secrets
import string
import time
from dataclasses import dataclass, field

import numpy as np
from livekit import api, rtc
from livekit.protocol.sip import SIPDispatchRuleInfo, SIPInboundTrunkInfo

PHONE_RATE = 8000
RECEIVE_RATE = 16000
FRAME_MS = 20
DTMF_CODES = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}


class CallRejected(Exception):
    """What livekit-sip would answer with a SIP error (no trunk, 403, no dispatch rule)."""


@dataclass(frozen=True)
class InboundCall:
    """One INVITE: who calls, which number, from where, with which digest credentials."""

    caller: str
    dialled: str
    source_ip: str = "127.0.0.1"
    username: str = ""
    password: str = ""


@dataclass(frozen=True)
class Dispatch:
    """What livekit-sip's dispatch evaluation answers (protocol ``EvaluateSIPDispatchRulesResponse``)."""

    trunk_id: str
    rule_id: str
    room: str
    identity: str
    name: str
    metadata: str
    attributes: dict[str, str]
    hide_phone_number: bool


def normalize_number(number: str) -> str:
    """protocol ``NormalizeNumber``: digits only, with a leading + (``sip:`` and spaces dropped)."""
    digits = re.sub(r"[^\d]", "", number.removeprefix("sip:").split("@")[0])
    return "+" + digits if digits else number


def _address_allowed(source_ip: str, masks: list[str]) -> bool:
    if not masks:
        return True
    ip = ipaddress.ip_address(source_ip)
    for mask in masks:
        with contextlib.suppress(ValueError):
            if ip in ipaddress.ip_network(mask, strict=False):
                return True
    return False


def match_trunk(trunks: list[SIPInboundTrunkInfo], call: InboundCall) -> SIPInboundTrunkInfo:
    """The trunk for the dialled number that admits this caller, address and credentials."""
    dialled = normalize_number(call.dialled)
    for trunk in trunks:
        if trunk.allowed_numbers and normalize_number(call.caller) not in map(normalize_number, trunk.allowed_numbers):
            continue
        if not _address_allowed(call.source_ip, list(trunk.allowed_addresses)):
            continue
        if dialled not in map(normalize_number, trunk.numbers):
            continue
        if trunk.auth_username and (call.username, call.password) != (trunk.auth_username, trunk.auth_password):
            raise CallRejected("403 Forbidden: digest credentials do not match the trunk's")
        return trunk
    raise CallRejected(f"404: no inbound trunk for this number from {call.source_ip}")


def match_rule(trunk: SIPInboundTrunkInfo, rules: list[SIPDispatchRuleInfo], call: InboundCall) -> SIPDispatchRuleInfo:
    """A rule for this trunk (a rule naming trunks is preferred over a wildcard one)."""
    caller = normalize_number(call.caller)
    fitting = [r for r in rules if (not r.trunk_ids or trunk.sip_trunk_id in r.trunk_ids)
               and (not r.inbound_numbers or caller in map(normalize_number, r.inbound_numbers))]
    if not fitting:
        raise CallRejected("no dispatch rule for this trunk")
    return sorted(fitting, key=lambda r: not r.trunk_ids)[0]


def _suffix() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(12))


def evaluate(trunk: SIPInboundTrunkInfo, rule: SIPDispatchRuleInfo, call: InboundCall,
             call_id: str, suffix: str) -> Dispatch:
    """Room, identity and attributes for this call, as livekit-sip derives them (pure)."""
    caller = call.caller.removeprefix("sip:")
    attrs = dict(rule.attributes)
    attrs.update({"sip.callID": call_id, "sip.trunkID": trunk.sip_trunk_id, "sip.ruleID": rule.sip_dispatch_rule_id})
    identity, shown = f"sip_{caller}", caller
    if rule.hide_phone_number:
        identity = "sip_" + hashlib.sha256(caller.encode()).hexdigest()[:16]
        shown = caller[-4:] if len(caller) > 4 else caller[-1:]
    else:
        attrs.update({"sip.phoneNumber": caller, "sip.hostname": call.source_ip,
                      "sip.trunkPhoneNumber": call.dialled})
    individual = rule.rule.dispatch_rule_individual
    if not rule.rule.HasField("dispatch_rule_individual"):
        raise CallRejected("the simulator plays individual dispatch rules only")
    room = f"{individual.room_prefix}_{shown}" if individual.room_prefix else shown
    if not individual.no_randomness:
        room += "_" + suffix
    return Dispatch(trunk.sip_trunk_id, rule.sip_dispatch_rule_id, room, identity, f"Phone {shown}",
                    rule.metadata, attrs, rule.hide_phone_number)


def phone_band(pcm16k: bytes) -> bytes:
    """16 kHz speech as a phone line carries it: 300-3400 Hz, 8 kHz samples."""
    x = np.frombuffer(pcm16k, dtype="<i2").astype(np.float64)
    if not len(x):
        return b""
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1 / 16000)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    y = np.fft.irfft(spectrum, len(x))[::2]
    return np.clip(y, -32768, 32767).astype("<i2").tobytes()


VOICED_DBFS = -40.0


@dataclass
class Heard:
    """The agent's audio as received: 16 kHz frames with their arrival time.

    Each frame is judged voiced or not once, when it arrives: the scenario polls ten times a
    second per call, and re-measuring a whole call's frames on every poll cost the test process
    most of a core with eight calls at once (2026-12-04)."""

    frames: list[tuple[float, bytes]] = field(default_factory=list)
    voiced: list[float] = field(default_factory=list)  # arrival times of voiced frames, ascending

    def add(self, at: float, pcm: bytes) -> None:
        self.frames.append((at, pcm))
        limit = 32768 * 10 ** (VOICED_DBFS / 20)
        if pcm and np.sqrt(np.mean(np.frombuffer(pcm, "<i2").astype(np.float64) ** 2)) > limit:
            self.voiced.append(at)

    def voiced_after(self, since: float) -> float | None:
        """Arrival time of the first voiced frame after ``since``."""
        i = bisect.bisect_left(self.voiced, since)
        return self.voiced[i] if i < len(self.voiced) else None

    def audio(self, start: float, end: float) -> bytes:
        first = bisect.bisect_left(self.frames, start, key=lambda f: f[0])
        last = bisect.bisect_right(self.frames, end, key=lambda f: f[0])
        return b"".join(pcm for _, pcm in self.frames[first:last])

    def quiet_since(self) -> float:
        """Arrival time of the last voiced frame (0 if none)."""
        return self.voiced[-1] if self.voiced else 0.0


class SimCall:
    """One connected call: speak, listen, press keys, hang up."""

    def __init__(self, room: rtc.Room, source: rtc.AudioSource, dispatch: Dispatch) -> None:
        self.room, self.source, self.dispatch = room, source, dispatch
        self.heard = Heard()
        self.joined_at = time.monotonic()
        self._speech: asyncio.Queue[tuple[bytes, asyncio.Future[float] | None]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._line()))
        self.room.on("track_subscribed", self._on_track)
        for participant in self.room.remote_participants.values():
            for pub in participant.track_publications.values():
                if pub.track is not None and pub.kind == rtc.TrackKind.KIND_AUDIO:
                    self._on_track(pub.track, pub, participant)

    def _on_track(self, track: rtc.Track, _pub: object, _participant: object) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self._tasks.append(asyncio.create_task(self._listen(track)))

    async def _listen(self, track: rtc.Track) -> None:
        # 20 ms frames (the SDK's default is 10 ms): half the per-frame work for the callers'
        # process, which hosts every simulated caller; first-audio times are to 20 ms
        stream = rtc.AudioStream(track, sample_rate=RECEIVE_RATE, num_channels=1, frame_size_ms=FRAME_MS)
        async for event in stream:
            self.heard.add(time.monotonic(), bytes(event.frame.data))

    async def _line(self) -> None:
        """A phone line never stops sending: silence between the caller's utterances."""
        step = PHONE_RATE * FRAME_MS // 1000
        silence = bytes(2 * step)
        while True:
            chunk, done = silence, None
            with contextlib.suppress(asyncio.QueueEmpty):
                chunk, done = self._speech.get_nowait()
            frame = rtc.AudioFrame(chunk, PHONE_RATE, 1, len(chunk) // 2)
            await self.source.capture_frame(frame)
            if done is not None:  # the utterance's last frame: it plays out after what is queued
                done.set_result(time.monotonic() + self.source.queued_duration)

    async def say(self, pcm16k: bytes) -> float:
        """Send the caller's speech; returns the moment its last sample has been played out."""
        pcm = phone_band(pcm16k)
        step = 2 * PHONE_RATE * FRAME_MS // 1000
        pcm += bytes((-len(pcm)) % step)
        done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)]
        for i, chunk in enumerate(chunks):
            self._speech.put_nowait((chunk, done if i == len(chunks) - 1 else None))
        end = await done
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        return end

    async def press(self, digit: str) -> float:
        await self.room.local_participant.publish_dtmf(code=DTMF_CODES[digit], digit=digit)
        return time.monotonic()

    async def hang_up(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.room.disconnect()


class SipGatewaySim:
    """Dials a HotelLine through the trunk and rule its operator created on livekit-server."""

    def __init__(self, url: str, api_key: str, api_secret: str) -> None:
        self.url, self.api_key, self.api_secret = url, api_key, api_secret

    async def route(self, call: InboundCall) -> Dispatch:
        http_url = self.url.replace("ws://", "http://").replace("wss://", "https://")
        async with api.LiveKitAPI(http_url, self.api_key, self.api_secret) as lk:
            trunks = (await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())).items
            rules = (await lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items
        trunk = match_trunk(list(trunks), call)
        rule = match_rule(trunk, list(rules), call)
        return evaluate(trunk, rule, call, call_id="SCL_" + _suffix(), suffix=_suffix())

    def token(self, dispatch: Dispatch) -> str:
        attributes = {**dispatch.attributes, "sip.callStatus": "active"}
        return (api.AccessToken(self.api_key, self.api_secret).with_identity(dispatch.identity)
                .with_name(dispatch.name).with_kind("sip").with_metadata(dispatch.metadata)
                .with_attributes(attributes)
                .with_grants(api.VideoGrants(room_join=True, room=dispatch.room, can_publish=True,
                                             can_subscribe=True, can_publish_data=True))
                .to_jwt())

    async def dial(self, call: InboundCall) -> SimCall:
        dispatch = await self.route(call)
        room = rtc.Room()
        await room.connect(self.url, self.token(dispatch))
        source = rtc.AudioSource(PHONE_RATE, 1)
        track = rtc.LocalAudioTrack.create_audio_track("caller", source)
        await room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        sim = SimCall(room, source, dispatch)
        sim.start()
        return sim
