"""One call in a real LiveKit room (the rig's livekit-server): a caller participant publishes
speech, the worker's session joins as the agent, greets and answers in that room.

Skipped when the rig's livekit-server is not up (``make rig``); the providers are still the
loopback fakes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
from livekit import api as lkapi
from livekit import rtc
from livekit.agents.utils import http_context
from livekit.agents.voice.room_io import RoomOptions

from tests.fixtures.rig import rig_livekit, skip_or_fail
from tests.worker.callrig import line_spec, provider_fakes
from tests.worker.speech import espeak_available, speak
from voicehive_worker.agent import LocalCallActions
from voicehive_worker.session import create_agent, create_session, provider_models

pytestmark = [pytest.mark.rig, pytest.mark.slow]

QUESTION = "What time is check in"


def _token(rig_env: dict[str, str], identity: str, room: str, *, agent: bool = False) -> str:
    token = lkapi.AccessToken(rig_env["LIVEKIT_API_KEY"], rig_env["LIVEKIT_API_SECRET"]).with_identity(identity)
    if agent:
        token = token.with_kind("agent")
    return token.with_grants(lkapi.VideoGrants(room_join=True, room=room, agent=agent)).to_jwt()


class Ear:
    """The caller's speaker: records when agent audio (not silence) arrives."""

    def __init__(self) -> None:
        self.voiced_at: list[float] = []
        self.tasks: list[asyncio.Task[None]] = []

    def listen(self, track: rtc.Track) -> None:
        async def run() -> None:
            stream = rtc.AudioStream(track, sample_rate=16000, num_channels=1)
            async for ev in stream:
                samples = np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.float64)
                if samples.size and np.sqrt(np.mean(samples**2)) > 300:
                    self.voiced_at.append(time.monotonic())

        self.tasks.append(asyncio.ensure_future(run()))

    def heard_since(self, t: float) -> bool:
        return any(v > t for v in self.voiced_at)


async def _wait(predicate: Any, timeout: float, what: str) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_worker_answers_a_caller_in_a_real_room() -> None:
    found = rig_livekit()
    if found is None:
        skip_or_fail("livekit-server")
    assert found is not None
    if not espeak_available():
        pytest.skip("espeak-ng is needed for caller speech")
    env = found.env
    url = env["LIVEKIT_URL"]
    room_name = f"vh-test-room-{int(time.time() * 1000)}"

    caller = rtc.Room()
    ear = Ear()

    @caller.on("track_subscribed")
    def _subscribed(track: rtc.Track, *_: Any) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            ear.listen(track)

    await caller.connect(url, _token(env, "caller-1", room_name))
    source = rtc.AudioSource(16000, 1)
    await caller.local_participant.publish_track(
        rtc.LocalAudioTrack.create_audio_track("mic", source),
        rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
    )

    async def speak_into_room(pcm: bytes) -> float:
        """20 ms frames (AudioSource paces them in real time); returns when the last one went out."""
        step = 320 * 2
        for i in range(0, len(pcm), step):
            chunk = pcm[i : i + step].ljust(step, b"\x00")
            await source.capture_frame(rtc.AudioFrame(chunk, 16000, 1, 320))
        return time.monotonic()

    async def keep_line_open() -> None:
        """A phone line carries silence too: the recogniser needs it to see the speech end."""
        silence = rtc.AudioFrame(b"\x00" * 640, 16000, 1, 320)
        while True:
            await source.capture_frame(silence)

    agent_room = rtc.Room()
    try:
        async with provider_fakes([QUESTION], lambda m, t: "Check-in is from three in the afternoon.") as fakes:
            spec = fakes.spec_for(line_spec())
            async with http_context.open():
                await agent_room.connect(url, _token(env, "voicehive-agent-test", room_name, agent=True))
                session = create_session(spec, provider_models(spec, fakes.endpoints()))
                agent = create_agent(spec, LocalCallActions())
                await session.start(agent, room=agent_room, room_options=RoomOptions(participant_identity="caller-1"))
                started = time.monotonic()
                await _wait(lambda: ear.heard_since(started), 20, "the greeting in the room")
                await _wait(lambda: time.monotonic() - ear.voiced_at[-1] > 1.0, 30, "the greeting to finish")

                spoken_at = await speak_into_room(speak(QUESTION))
                line = asyncio.ensure_future(keep_line_open())
                try:
                    await _wait(lambda: ear.heard_since(spoken_at), 10, "the reply in the room")
                finally:
                    line.cancel()
                assert fakes.transcriber.consumed == [QUESTION]
                users = [m for r in fakes.azure.requests for m in r.messages if m.get("role") == "user"]
                assert any("check in" in str(m.get("content")).lower() for m in users)
                await session.aclose()
    finally:
        for task in ear.tasks:
            task.cancel()
        await agent_room.disconnect()
        await caller.disconnect()
