"""The ElevenLabs fake, driven by livekit-plugins-elevenlabs, the elevenlabs SDK and aiohttp."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import aiohttp
import numpy as np
import pytest
from elevenlabs import ElevenLabs
from elevenlabs.core import ApiError
from livekit.agents import APIError as LkAPIError
from livekit.agents.utils import http_context
from livekit.plugins import elevenlabs as lk_elevenlabs

from tests.fakes.elevenlabs import ElevenLabsFake


def _tts(fake: ElevenLabsFake, key: str | None = None) -> lk_elevenlabs.TTS:
    return lk_elevenlabs.TTS(
        base_url=fake.base_url_v1,
        api_key=key or fake.api_key,
        encoding="pcm_16000",
        voice_id=fake.voice_id,
        model="eleven_flash_v2_5",
    )


def _rms(pcm: bytes) -> float:
    a = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(a * a))) if a.size else 0.0


async def test_plugin_stream_multi_context(elevenlabs_fake: ElevenLabsFake) -> None:
    text = "Good evening. Welcome to the Grand Hotel."
    async with http_context.open():
        tts = _tts(elevenlabs_fake)
        for _turn in range(2):  # one socket, reused across turns (one context per turn)
            stream = tts.stream()
            t0 = time.monotonic()
            stream.push_text(text)
            stream.end_input()
            pcm, first_at = b"", None
            async for ev in stream:
                first_at = first_at or time.monotonic()
                pcm += ev.frame.data.tobytes()
            await stream.aclose()
            assert first_at is not None and first_at - t0 >= 0.1
            assert _rms(pcm) > 1000  # non-silent
            assert len(pcm) / 2 / 16000 == pytest.approx(elevenlabs_fake.expected_seconds(text), abs=0.05)
        await tts.aclose()

    sock = elevenlabs_fake.sockets[0]
    assert len(elevenlabs_fake.sockets) == 1 and sock.kind == "multi"
    assert sock.query["model_id"] == "eleven_flash_v2_5" and sock.query["output_format"] == "pcm_16000"
    assert len(sock.contexts) == 2
    for ctx in sock.contexts.values():
        assert ctx.text.strip() == text and ctx.closed and ctx.final_sent_at is not None
        gen = ctx.generations[0]
        assert gen.first_audio_at is not None
        assert 0.1 <= gen.first_audio_at - gen.requested_at < 0.4


async def test_plugin_synthesize_over_http(elevenlabs_fake: ElevenLabsFake) -> None:
    async with http_context.open():
        tts = _tts(elevenlabs_fake)
        pcm = b""
        async for ev in tts.synthesize("Your room is ready."):
            pcm += ev.frame.data.tobytes()
        await tts.aclose()
    assert _rms(pcm) > 1000
    req = elevenlabs_fake.http_requests[-1]
    assert req.path.endswith("/stream") and req.body and req.body["text"] == "Your room is ready."


async def test_sdk_voices_models_and_errors(elevenlabs_fake: ElevenLabsFake) -> None:
    client = ElevenLabs(base_url=elevenlabs_fake.url, api_key=elevenlabs_fake.api_key)
    voice = await asyncio.to_thread(client.voices.get, elevenlabs_fake.voice_id)
    assert voice.voice_id == elevenlabs_fake.voice_id and voice.name == "Rachel"
    models = await asyncio.to_thread(client.models.list)
    assert "eleven_flash_v2_5" in {m.model_id for m in models}
    with pytest.raises(ApiError) as nf:
        await asyncio.to_thread(client.voices.get, "no-such-voice")
    assert nf.value.status_code == 404
    bad = ElevenLabs(base_url=elevenlabs_fake.url, api_key="wrong")
    with pytest.raises(ApiError) as unauth:
        await asyncio.to_thread(bad.models.list)
    assert unauth.value.status_code == 401
    assert elevenlabs_fake.auth_failures == 1


async def test_wrong_key_on_websocket_is_rejected(elevenlabs_fake: ElevenLabsFake) -> None:
    async with http_context.open():
        tts = _tts(elevenlabs_fake, key="wrong")
        stream = tts.stream()
        stream.push_text("hello there.")
        stream.end_input()
        with pytest.raises(LkAPIError):
            async for _ in stream:
                pass
        await stream.aclose()
        await tts.aclose()
    assert elevenlabs_fake.auth_failures >= 1


async def test_socket_dropped_mid_utterance(elevenlabs_fake: ElevenLabsFake) -> None:
    elevenlabs_fake.drop_next(after_chunks=2)
    text = "This sentence is long enough to need several chunks of audio."
    got = b""
    async with http_context.open():
        tts = _tts(elevenlabs_fake)
        stream = tts.stream()
        stream.push_text(text)
        stream.end_input()
        with pytest.raises(LkAPIError):
            async for ev in stream:
                got += ev.frame.data.tobytes()
        await stream.aclose()
        await tts.aclose()
    gen = next(iter(elevenlabs_fake.sockets[0].contexts.values())).generations[0]
    assert gen.interrupted and gen.chunks == 2
    assert elevenlabs_fake.sockets[0].dropped


async def test_single_context_stream_input_protocol(elevenlabs_fake: ElevenLabsFake) -> None:
    url = (
        f"{elevenlabs_fake.url}/v1/text-to-speech/{elevenlabs_fake.voice_id}/stream-input"
        "?model_id=eleven_flash_v2_5&output_format=pcm_22050"
    )
    audio, finals = b"", 0
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_json({"text": " ", "xi_api_key": elevenlabs_fake.api_key, "voice_settings": {}})
        await ws.send_json({"text": "Hello there. ", "flush": True})
        await ws.send_json({"text": "Goodbye. "})
        await ws.send_json({"text": ""})
        async for msg in ws:
            data = json.loads(msg.data)
            if data.get("audio"):
                audio += base64.b64decode(data["audio"])
            finals += bool(data.get("isFinal"))
    assert finals == 1
    expected = elevenlabs_fake.expected_seconds("Hello there. ") + elevenlabs_fake.expected_seconds(
        "Goodbye. "
    )
    assert len(audio) / 2 / 22050 == pytest.approx(expected, abs=0.02)
    assert elevenlabs_fake.sockets[0].messages[0]["xi_api_key"] == "<redacted>"


async def test_stall_keeps_socket_open_without_audio(elevenlabs_fake: ElevenLabsFake) -> None:
    elevenlabs_fake.stall()
    async with http_context.open():
        tts = _tts(elevenlabs_fake)
        stream = tts.stream()
        stream.push_text("Hello there.")
        stream.end_input()
        frames: list[object] = []

        async def consume() -> None:
            async for ev in stream:
                frames.append(ev)

        task = asyncio.create_task(consume())
        done, _ = await asyncio.wait({task}, timeout=0.5)
        assert not done and frames == []  # a hung TTS: no audio at all
        ctx = next(iter(elevenlabs_fake.sockets[0].contexts.values()))
        assert ctx.text.strip() == "Hello there." and ctx.generations[0].first_audio_at is None
        elevenlabs_fake.unstall()
        await asyncio.wait_for(task, 5)
        assert frames
        await stream.aclose()
        await tts.aclose()


async def test_non_pcm_or_unknown_voice_is_refused(elevenlabs_fake: ElevenLabsFake) -> None:
    headers = {"xi-api-key": elevenlabs_fake.api_key}
    base = f"{elevenlabs_fake.url}/v1/text-to-speech"
    async with aiohttp.ClientSession() as session:
        # no output_format means ElevenLabs' mp3 default, which this fake does not produce
        async with session.ws_connect(
            f"{base}/{elevenlabs_fake.voice_id}/multi-stream-input", headers=headers
        ) as ws:
            msg = await ws.receive_json()
            assert "PCM" in msg["message"]
            await ws.receive()
            assert ws.close_code == 1008
        resp = await session.post(
            f"{base}/nope/stream?output_format=pcm_16000", json={"text": "hi"}, headers=headers
        )
        assert resp.status == 404
