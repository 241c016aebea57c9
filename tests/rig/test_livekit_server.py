"""A real livekit-server from the rig: its Twirp services through the real ``livekit-api``
client, and real media between two ``livekit`` rtc participants over loopback WebRTC."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import numpy as np
import pytest
from livekit import api, rtc

from tests.fixtures.livekit import LiveKitServer

pytestmark = pytest.mark.rig

SAMPLE_RATE = 48_000
TONE_HZ = 440.0


async def test_rooms_sip_trunk_dispatch_rule_and_agent_dispatch(livekit: LiveKitServer) -> None:
    lk = livekit.api()
    suffix = uuid.uuid4().hex[:8]
    room_name = f"rig-room-{suffix}"
    try:
        room = await lk.room.create_room(api.CreateRoomRequest(name=room_name, empty_timeout=60))
        assert room.name == room_name and room.sid
        listed_rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=[room_name]))
        assert [r.name for r in listed_rooms.rooms] == [room_name]

        number = f"+4930{int(suffix, 16) % 10**8:08d}"
        trunk = await lk.sip.create_inbound_trunk(
            api.CreateSIPInboundTrunkRequest(
                trunk=api.SIPInboundTrunkInfo(
                    name=f"rig-trunk-{suffix}",
                    numbers=[number],
                    allowed_addresses=["203.0.113.0/28"],
                    auth_username="carrier",
                    auth_password=uuid.uuid4().hex,
                )
            )
        )
        assert trunk.sip_trunk_id.startswith("ST_")
        trunks = await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
        mine = [t for t in trunks.items if t.sip_trunk_id == trunk.sip_trunk_id]
        assert len(mine) == 1 and list(mine[0].numbers) == [number]

        rule = await lk.sip.create_dispatch_rule(
            api.CreateSIPDispatchRuleRequest(
                dispatch_rule=api.SIPDispatchRuleInfo(
                    name=f"rig-rule-{suffix}",
                    trunk_ids=[trunk.sip_trunk_id],
                    rule=api.SIPDispatchRule(
                        dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix="call-")
                    ),
                    room_config=api.RoomConfiguration(
                        agents=[api.RoomAgentDispatch(agent_name="voicehive-worker", metadata="{}")]
                    ),
                )
            )
        )
        assert rule.sip_dispatch_rule_id.startswith("SDR_")
        rules = await lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())
        mine_rules = [r for r in rules.items if r.sip_dispatch_rule_id == rule.sip_dispatch_rule_id]
        assert len(mine_rules) == 1
        assert list(mine_rules[0].trunk_ids) == [trunk.sip_trunk_id]
        assert mine_rules[0].rule.dispatch_rule_individual.room_prefix == "call-"

        dispatch = await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name="voicehive-worker", room=room_name, metadata='{"line": "x"}')
        )
        assert dispatch.id and dispatch.agent_name == "voicehive-worker" and dispatch.room == room_name
        dispatches = await lk.agent_dispatch.list_dispatch(room_name=room_name)
        # A room also gets LiveKit's automatic dispatch (empty agent name); ours is the named one.
        assert [d.id for d in dispatches if d.agent_name == "voicehive-worker"] == [dispatch.id]

        await lk.sip.delete_dispatch_rule(
            api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=rule.sip_dispatch_rule_id)
        )
        await lk.sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=trunk.sip_trunk_id))
        trunks = await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
        assert trunk.sip_trunk_id not in [t.sip_trunk_id for t in trunks.items]
    finally:
        with contextlib.suppress(api.TwirpError):
            await lk.room.delete_room(api.DeleteRoomRequest(room=room_name))
        await lk.aclose()


def _tone_frames(frequency: float, frame_ms: int = 10):  # type: ignore[no-untyped-def]
    """Endless 16-bit mono frames of a sine tone, phase-continuous across frames."""
    samples = SAMPLE_RATE * frame_ms // 1000
    n = 0
    while True:
        frame = rtc.AudioFrame.create(SAMPLE_RATE, 1, samples)
        t = (np.arange(samples) + n) / SAMPLE_RATE
        np.frombuffer(frame.data, dtype=np.int16)[:] = (0.3 * 32767 * np.sin(2 * np.pi * frequency * t)).astype(
            np.int16
        )
        n += samples
        yield frame


def dominant_frequency(samples: np.ndarray, sample_rate: int) -> float:
    """Frequency of the largest FFT bin (DC removed, Hann window against leakage)."""
    centred = samples.astype(np.float64) - samples.mean()
    spectrum = np.abs(np.fft.rfft(centred * np.hanning(len(centred))))
    freqs = np.fft.rfftfreq(len(centred), d=1.0 / sample_rate)
    return float(freqs[int(np.argmax(spectrum))])


@pytest.mark.slow
async def test_a_440_hz_tone_crosses_a_real_room(livekit: LiveKitServer) -> None:
    room_name = f"rig-media-{uuid.uuid4().hex[:8]}"
    speaker, listener = rtc.Room(), rtc.Room()
    received: list[np.ndarray] = []
    enough = asyncio.Event()
    track_ready: asyncio.Future[rtc.Track] = asyncio.get_running_loop().create_future()

    @listener.on("track_subscribed")
    def on_track(track: rtc.Track, *_: object) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and not track_ready.done():
            track_ready.set_result(track)

    async def listen() -> None:
        track = await track_ready
        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
        total = 0
        async for event in stream:
            chunk = np.frombuffer(event.frame.data, dtype=np.int16).copy()
            if total == 0 and not np.any(chunk):
                continue  # leading silence before the first decoded packet
            received.append(chunk)
            total += len(chunk)
            if total >= SAMPLE_RATE:  # one second of tone
                enough.set()
                break
        await stream.aclose()

    async def speak(source: rtc.AudioSource) -> None:
        for frame in _tone_frames(TONE_HZ):
            await source.capture_frame(frame)  # paced by the source's queue (real time)

    listen_task = asyncio.create_task(listen())
    speak_task: asyncio.Task[None] | None = None
    try:
        await listener.connect(livekit.url, livekit.token("listener", room_name))
        await speaker.connect(livekit.url, livekit.token("speaker", room_name))
        source = rtc.AudioSource(SAMPLE_RATE, 1)
        track = rtc.LocalAudioTrack.create_audio_track("tone", source)
        await speaker.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        speak_task = asyncio.create_task(speak(source))
        await asyncio.wait_for(enough.wait(), timeout=60)
    finally:
        if speak_task:
            speak_task.cancel()
        listen_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listen_task
        if speak_task:
            with contextlib.suppress(asyncio.CancelledError):
                await speak_task
        await speaker.disconnect()
        await listener.disconnect()

    audio = np.concatenate(received)
    tail = audio[SAMPLE_RATE // 5 :]  # skip the codec's first 200 ms
    rms = float(np.sqrt(np.mean(tail.astype(np.float64) ** 2)))
    assert rms > 1000, f"received near-silence (rms {rms:.0f})"
    frequency = dominant_frequency(tail, SAMPLE_RATE)
    assert abs(frequency - TONE_HZ) < 5, f"dominant frequency {frequency:.1f} Hz, expected {TONE_HZ} Hz"
