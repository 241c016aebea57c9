"""The fakes over TLS with a CA generated at test time, driven by the official clients."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import openai
import riva.client
from elevenlabs import AsyncElevenLabs
from riva.client.proto import riva_asr_pb2 as rasr

from tests.fakes.azure_openai import AzureOpenAIFake
from tests.fakes.elevenlabs import ElevenLabsFake
from tests.fakes.riva import RivaFake
from tests.fakes.tls import make_tls_files


async def test_tls_riva_azure_elevenlabs(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    async with RivaFake(tls=tls.grpc_pair()) as riva_fake:
        auth = riva.client.Auth(uri=riva_fake.address, use_ssl=True, ssl_root_cert=str(tls.ca_file))
        resp = await asyncio.to_thread(
            riva.client.ASRService(auth).stub.GetRivaSpeechRecognitionConfig,
            rasr.RivaSpeechRecognitionConfigRequest(),
            timeout=5,
        )
        assert resp.model_config

    async with AzureOpenAIFake(["hi"], ssl_context=tls.server_context(), ttft=0.01) as az:
        assert az.endpoint.startswith("https://")
        client = openai.AsyncAzureOpenAI(
            azure_endpoint=az.endpoint,
            api_key=az.api_key,
            api_version="2024-10-21",
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(verify=tls.client_context()),
        )
        done = await client.chat.completions.create(
            model=az.deployment, messages=[{"role": "user", "content": "x"}]
        )
        assert done.choices[0].message.content == "hi"
        await client.close()

    async with ElevenLabsFake(ssl_context=tls.server_context()) as el:
        async with httpx.AsyncClient(verify=tls.client_context()) as http:
            sdk = AsyncElevenLabs(base_url=el.url, api_key=el.api_key, httpx_client=http)
            voice = await sdk.voices.get(el.voice_id)
        assert voice.voice_id == el.voice_id
