"""The Riva fake, driven by the real riva.client and livekit-plugins-nvidia over a socket.

These tests double as documentation of what the fake speaks.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import riva.client
from livekit import rtc
from livekit.agents import stt as lk_stt
from livekit.plugins import nvidia
from riva.client.proto import riva_asr_pb2 as rasr

from tests.fakes.riva import RivaFake, RivaModel, ScriptedTranscriber, pcm_silence, pcm_tone

RATE = 16000


def _streaming_config(model: str = "", interim: bool = True) -> riva.client.StreamingRecognitionConfig:
    return riva.client.StreamingRecognitionConfig(
        config=riva.client.RecognitionConfig(
            encoding=riva.client.AudioEncoding.LINEAR_PCM,
            language_code="en-US",
            model=model,
            sample_rate_hertz=RATE,
            audio_channel_count=1,
            enable_word_time_offsets=True,
            max_alternatives=1,
        ),
        interim_results=interim,
    )


def _chunks(pcm: bytes, ms: int = 20) -> list[bytes]:
    step = RATE * 2 * ms // 1000
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


def _service(riva_fake: RivaFake) -> riva.client.ASRService:
    return riva.client.ASRService(riva.client.Auth(uri=riva_fake.address, use_ssl=False))


async def test_config_lists_served_models(riva_fake: RivaFake) -> None:
    asr = _service(riva_fake)
    resp = await asyncio.to_thread(
        asr.stub.GetRivaSpeechRecognitionConfig, rasr.RivaSpeechRecognitionConfigRequest()
    )
    names = {(c.model_name, c.parameters["language_code"], c.parameters["type"]) for c in resp.model_config}
    assert (riva_fake.models[0].name, "en-US", "online") in names
    # filtered by name, and an unknown name gives an empty list
    resp = await asyncio.to_thread(
        asr.stub.GetRivaSpeechRecognitionConfig,
        rasr.RivaSpeechRecognitionConfigRequest(model_name="no-such-model"),
    )
    assert list(resp.model_config) == []


async def test_streaming_words_timings_and_final_delay() -> None:
    # 0.3 s silence, 1.0 s speech, 0.2 s pause, 0.6 s speech, 0.5 s silence
    audio = pcm_silence(0.3) + pcm_tone(1.0) + pcm_silence(0.2) + pcm_tone(0.6) + pcm_silence(0.5)
    async with RivaFake(["book a room for friday", "thanks"], final_delay=0.1) as fake:
        asr = _service(fake)

        def run() -> list[object]:
            def paced() -> object:
                for c in _chunks(audio):
                    time.sleep(0.02)  # real-time caller
                    yield c

            return list(asr.streaming_response_generator(paced(), _streaming_config()))

        responses = await asyncio.to_thread(run)

    finals = [r.results[0] for r in responses if r.results[0].is_final]  # type: ignore[attr-defined]
    interims = [r.results[0] for r in responses if not r.results[0].is_final]  # type: ignore[attr-defined]
    assert [f.alternatives[0].transcript for f in finals] == ["book a room for friday", "thanks"]
    assert interims and interims[0].alternatives[0].transcript.startswith("book")
    words = finals[0].alternatives[0].words
    assert [w.word for w in words] == ["book", "a", "room", "for", "friday"]
    assert words[0].start_time == 300 and words[-1].end_time == 1300  # ms from stream start, exact to 10 ms
    assert finals[1].alternatives[0].words[0].start_time == 1500
    assert finals[0].alternatives[0].confidence == pytest.approx(0.95)

    stream = fake.streams[0]
    assert stream.config is not None and stream.config.config.sample_rate_hertz == RATE
    assert len(stream.audio) == len(audio)
    for utt in stream.finals:
        assert utt.final_sent_at is not None
        latency = utt.final_sent_at - utt.speech_end_received_at
        assert 0.099 <= latency < 0.4, latency  # final_delay on the wall clock (never early)


async def test_offline_recognize(riva_fake: RivaFake) -> None:
    riva_fake.models.append(RivaModel(name="offline-en", streaming=False))
    riva_fake.transcriber.push("hello there")  # type: ignore[attr-defined]
    cfg = riva.client.RecognitionConfig(
        encoding=riva.client.AudioEncoding.LINEAR_PCM,
        sample_rate_hertz=RATE,
        language_code="en-US",
        enable_word_time_offsets=True,
    )
    resp = await asyncio.to_thread(
        _service(riva_fake).offline_recognize, pcm_silence(0.1) + pcm_tone(0.5) + pcm_silence(0.1), cfg
    )
    alt = resp.results[0].alternatives[0]
    assert alt.transcript == "hello there"
    assert alt.words[0].start_time == 100 and alt.words[-1].end_time == 600


async def test_unknown_model_is_invalid_argument(riva_fake: RivaFake) -> None:
    asr = _service(riva_fake)

    def run() -> None:
        list(asr.streaming_response_generator(iter([pcm_tone(0.1)]), _streaming_config("nope")))

    with pytest.raises(grpc.RpcError) as err:
        await asyncio.to_thread(run)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Unavailable model" in err.value.details()


async def test_api_key_checked() -> None:
    async with RivaFake(api_key="k1") as fake:
        bad = riva.client.ASRService(
            riva.client.Auth(uri=fake.address, metadata_args=[["authorization", "Bearer x"]])
        )
        with pytest.raises(grpc.RpcError) as err:
            await asyncio.to_thread(
                bad.stub.GetRivaSpeechRecognitionConfig, rasr.RivaSpeechRecognitionConfigRequest()
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def _push_frames(stream: lk_stt.SpeechStream, pcm: bytes, ms: int = 20, speed: float = 1.0) -> None:
    for chunk in _chunks(pcm, ms):
        frame = rtc.AudioFrame(chunk, RATE, 1, len(chunk) // 2)
        stream.push_frame(frame)
        await asyncio.sleep(ms / 1000 / speed)


async def test_nvidia_plugin_stream(riva_fake: RivaFake) -> None:
    riva_fake.transcriber.push("i would like a double room")  # type: ignore[attr-defined]
    stt = nvidia.STT(server=riva_fake.address, use_ssl=False)
    stream = stt.stream()
    events: list[lk_stt.SpeechEvent] = []

    async def collect() -> None:
        async for ev in stream:
            events.append(ev)
            if ev.type == lk_stt.SpeechEventType.END_OF_SPEECH:
                return

    collector = asyncio.create_task(collect())
    await _push_frames(stream, pcm_silence(0.2) + pcm_tone(0.8) + pcm_silence(0.4))
    await asyncio.wait_for(collector, 5)
    stream.end_input()
    await stream.aclose()

    kinds = [e.type for e in events]
    assert kinds[0] == lk_stt.SpeechEventType.START_OF_SPEECH
    assert lk_stt.SpeechEventType.INTERIM_TRANSCRIPT in kinds
    final = next(e for e in events if e.type == lk_stt.SpeechEventType.FINAL_TRANSCRIPT)
    assert final.alternatives[0].text == "i would like a double room"
    assert riva_fake.streams[0].metadata.get("function-id")  # the plugin's NVCF header arrives
    assert riva_fake.streams[0].config.config.enable_word_time_offsets  # type: ignore[union-attr]


async def test_kill_mid_stream_ends_call_unavailable_and_refuses_new(riva_fake: RivaFake) -> None:
    asr = _service(riva_fake)
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def run() -> None:
        def endless() -> object:
            loop.call_soon_threadsafe(started.set)
            while True:
                time.sleep(0.02)
                yield pcm_tone(0.02)

        list(asr.streaming_response_generator(endless(), _streaming_config()))

    task = asyncio.create_task(asyncio.to_thread(run))
    await started.wait()
    await asyncio.sleep(0.1)
    await riva_fake.kill()
    with pytest.raises(grpc.RpcError) as err:
        await asyncio.wait_for(task, 5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # refused while down, served again after restart on the same port
    with pytest.raises(grpc.RpcError):
        await asyncio.to_thread(
            _service(riva_fake).stub.GetRivaSpeechRecognitionConfig,
            rasr.RivaSpeechRecognitionConfigRequest(),
            timeout=1,
        )
    await riva_fake.restart()
    resp = await asyncio.to_thread(
        _service(riva_fake).stub.GetRivaSpeechRecognitionConfig,
        rasr.RivaSpeechRecognitionConfigRequest(),
        timeout=2,
    )
    assert resp.model_config


async def test_stall_and_error_status(riva_fake: RivaFake) -> None:
    riva_fake.transcriber.push("first")  # type: ignore[attr-defined]
    riva_fake.stall()
    asr = _service(riva_fake)
    audio = pcm_tone(0.3) + pcm_silence(0.3)
    responses = await asyncio.to_thread(
        lambda: list(asr.streaming_response_generator(_chunks(audio), _streaming_config()))
    )
    assert responses == []  # a stalled recogniser says nothing
    assert riva_fake.streams[-1].utterances[0].final_sent_at is None

    riva_fake.clear_faults()
    riva_fake.fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many streams")
    with pytest.raises(grpc.RpcError) as err:
        await asyncio.to_thread(
            lambda: list(asr.streaming_response_generator(_chunks(audio), _streaming_config()))
        )
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _espeak_pcm16k(text: str) -> bytes:
    import io
    import shutil
    import subprocess
    import wave

    import numpy as np

    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed")
    wav = subprocess.run([exe, "-v", "en-us", "--stdout", text], capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate, samples = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    t = np.arange(int(len(samples) * RATE / rate)) * rate / RATE
    return np.interp(t, np.arange(len(samples)), samples).astype("<i2").tobytes()


@pytest.mark.parametrize(
    ("endpoint", "clauses", "expected"),
    [
        (None, True, ["Hello,", "my name is Anna.", "Do you have a room?"]),  # eSpeak pauses at , and .
        (0.5, False, ["Hello, my name is Anna. Do you have a room?"]),  # pauses merged
    ],
)
async def test_synthetic_speech_segments(endpoint: float | None, clauses: bool, expected: list[str]) -> None:
    text = "Hello, my name is Anna. Do you have a room?"
    audio = _espeak_pcm16k(text) + pcm_silence(0.6)
    transcriber = ScriptedTranscriber([text], clauses=clauses)
    async with RivaFake(transcriber, endpoint_silence=endpoint) as fake:
        asr = _service(fake)
        responses = await asyncio.to_thread(
            lambda: list(asr.streaming_response_generator(_chunks(audio), _streaming_config(interim=False)))
        )
    assert [r.results[0].alternatives[0].transcript for r in responses] == expected
    assert transcriber.unscripted == 0
