"""Shared test data and waiting helpers for the operator tests (no sleeps for synchronisation)."""

from __future__ import annotations

import asyncio
import copy
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

BASE_SPEC: dict[str, Any] = {
    "hotelId": "hotel-lindenhof",
    "displayName": "Hotel Lindenhof Berlin",
    "timeZone": "Europe/Berlin",
    "languages": ["en", "de"],
    "region": "germanywestcentral",
    "phoneNumbers": ["+493012345670", "+493012345671"],
    "sip": {
        "allowedAddresses": ["203.0.113.0/28"],
        "auth": {"secretName": "line-keys", "usernameKey": "sip-username", "passwordKey": "sip-password"},
        "mediaEncryption": "require",
    },
    "frontDesk": {"transferTo": "tel:+493012345600"},
    "asr": {
        "model": "parakeet-1.1b-en-US-asr-streaming",
        "language": "en-US",
        "gpusPerReplica": 1,
        "nodeSelector": {"voicehive.io/pool": "gpu-l4"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "llm": {
        "endpoint": "https://lindenhof-weu.openai.azure.com",
        "deployment": "gpt-4o",
        "apiKeySecretRef": {"name": "line-keys", "key": "azure-openai-api-key"},
    },
    "tts": {
        "voiceId": "21m00Tcm4TlvDq8ikWAM",
        "modelId": "eleven_flash_v2_5",
        "apiKeySecretRef": {"name": "line-keys", "key": "elevenlabs-api-key"},
    },
    "workers": {"warmPool": 2, "maxConcurrentCalls": 40, "startTimeoutSeconds": 20, "maxCallDurationSeconds": 600},
}


def spec(**overrides: Any) -> dict[str, Any]:
    """A valid HotelLine spec with top-level overrides."""
    data = copy.deepcopy(BASE_SPEC)
    data.update(copy.deepcopy(overrides))
    return data


def hex64() -> str:
    return secrets.token_hex(32)


async def wait_for(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], *, timeout: float = 90.0, what: str = "condition"  # noqa: ASYNC109
) -> T:
    """Poll ``probe`` until ``accept`` holds; fails with the last value seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    value = await probe()
    while not accept(value):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last value: {value!r}"[:3000])
        await asyncio.sleep(0.05)
        value = await probe()
    return value
