"""The operator's provider checks accept every endpoint form the worker accepts."""

from __future__ import annotations

import pytest

from tests.operator.conftest import Providers
from voicehive_operator.providers import check_elevenlabs


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
async def test_elevenlabs_check_takes_the_base_url_with_or_without_v1(providers: Providers, suffix: str) -> None:
    """The worker appends /v1 unless the endpoint has it; the check called /v1/v1/voices and said
    the line's voice did not exist (found on the installed chart with the example line)."""
    seen = await check_elevenlabs(base_url=providers.eleven_url.rstrip("/") + suffix, voice_id=providers.eleven.voice_id,
                                  model_id="eleven_flash_v2_5", api_key=providers.eleven.api_key,
                                  ca_file=providers.ca_file, timeout_s=5.0)
    assert seen.ok, seen.message
