"""The worker's Riva stream trusts the managed pool's CA it is given (VOICEHIVE_RIVA_CA_FILE),
not only the system roots the nvidia plugin's channel would use."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import grpc
import pytest
from riva.client.proto import riva_asr_pb2 as rasr

from tests.fakes.riva import RivaFake
from voicehive_operator import riva_tls
from voicehive_worker.riva import RivaSTT


async def test_a_stream_verifies_riva_tls_against_the_given_ca(tmp_path: Path) -> None:
    tls = riva_tls.issue("localhost", "hotel-ns", dt.datetime.now(dt.UTC))
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text(tls.ca_pem)
    async with RivaFake(tls=(tls.key_pem.encode(), tls.cert_pem.encode())) as riva:
        common = {"model": riva.models[0].name, "server": f"localhost:{riva.port}", "use_ssl": True, "api_key": ""}
        served = await _in_thread(RivaSTT(ca_file=str(ca_file), **common))
        assert served == [riva.models[0].name]
        with pytest.raises(grpc.RpcError):  # the system roots do not know the pool's CA
            await _in_thread(RivaSTT(**common))


async def _in_thread(stt: RivaSTT) -> list[str]:
    stream = stt.stream()  # needs the running loop; the blocking call runs in a thread
    try:
        request = rasr.RivaSpeechRecognitionConfigRequest()  # type: ignore[attr-defined]
        call = stream._asr_service.stub.GetRivaSpeechRecognitionConfig  # type: ignore[attr-defined]
        response = await asyncio.to_thread(call, request, timeout=5)
        return [cfg.model_name for cfg in response.model_config]
    finally:
        stream._auth.channel.close()  # type: ignore[attr-defined]
        await stream.aclose()
