"""Fakes on their own loop in a thread, driven from plain synchronous code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import openai
import pytest
import riva.client
from livekit import api
from riva.client.proto import riva_asr_pb2 as rasr

from tests.fakes.azure_openai import AzureOpenAIFake
from tests.fakes.livekit_twirp import LiveKitFake
from tests.fakes.riva import RivaFake, pcm_silence, pcm_tone
from tests.fakes.threaded import InThread


def test_sync_clients_against_threaded_fakes(fake_in_thread: Callable[[Any], InThread[Any]]) -> None:
    riva_runner = fake_in_thread(RivaFake(["check in please"]))
    riva_fake: RivaFake = riva_runner.fake
    asr = riva.client.ASRService(riva.client.Auth(uri=riva_fake.address))
    cfg = riva.client.StreamingRecognitionConfig(
        config=riva.client.RecognitionConfig(
            encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=16000, language_code="en-US"
        ),
        interim_results=False,
    )
    audio = pcm_tone(0.4) + pcm_silence(0.3)
    responses = list(
        asr.streaming_response_generator([audio[i : i + 640] for i in range(0, len(audio), 640)], cfg)
    )
    assert [r.results[0].alternatives[0].transcript for r in responses] == ["check in please"]

    riva_runner.call(riva_fake.kill)  # faults run on the fake's own loop
    with pytest.raises(grpc.RpcError):
        asr.stub.GetRivaSpeechRecognitionConfig(rasr.RivaSpeechRecognitionConfigRequest(), timeout=1)

    az: AzureOpenAIFake = fake_in_thread(AzureOpenAIFake(["Hi!"], ttft=0.01)).fake
    client = openai.AzureOpenAI(
        azure_endpoint=az.endpoint, api_key=az.api_key, api_version="2024-10-21", max_retries=0
    )
    done = client.chat.completions.create(model=az.deployment, messages=[{"role": "user", "content": "x"}])
    assert done.choices[0].message.content == "Hi!"
    client.close()


async def test_async_with_keeps_fake_off_the_callers_loop() -> None:
    async with InThread(LiveKitFake()) as lk_fake:
        lk = lk_fake.api()
        room = await lk.room.create_room(api.CreateRoomRequest(name="r"))
        assert room.name == "r" and "r" in lk_fake.rooms
        await lk.aclose()
