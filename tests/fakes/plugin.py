"""pytest fixtures for the loopback fakes (register via ``pytest_plugins`` in tests/conftest.py).

Each fixture is function scoped, starts its fake on 127.0.0.1 port 0 with keys generated
at test time, yields the running fake (``.url`` / ``.address``) and stops it afterwards.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from tests.fakes.azure_openai import AzureOpenAIFake
from tests.fakes.elevenlabs import ElevenLabsFake
from tests.fakes.livekit_twirp import LiveKitFake
from tests.fakes.riva import RivaFake
from tests.fakes.threaded import F, InThread


@pytest_asyncio.fixture
async def riva_fake() -> AsyncIterator[RivaFake]:
    """A Riva ASR fake with the default streaming model and an empty script."""
    async with RivaFake() as fake:
        yield fake


@pytest_asyncio.fixture
async def azure_fake() -> AsyncIterator[AzureOpenAIFake]:
    """An Azure OpenAI fake with one deployment ("gpt-4o"), a fresh key and a scripted responder."""
    async with AzureOpenAIFake(api_key=secrets.token_urlsafe(24)) as fake:
        yield fake


@pytest_asyncio.fixture
async def elevenlabs_fake() -> AsyncIterator[ElevenLabsFake]:
    """An ElevenLabs fake with two premade voices, three models and a fresh key."""
    async with ElevenLabsFake(api_key=secrets.token_urlsafe(24)) as fake:
        yield fake


@pytest_asyncio.fixture
async def livekit_fake() -> AsyncIterator[LiveKitFake]:
    """A LiveKit control-plane fake with a fresh API key/secret and no webhook URL."""
    async with LiveKitFake(
        api_key="API" + secrets.token_hex(6), api_secret=secrets.token_urlsafe(32)
    ) as fake:
        yield fake


@pytest.fixture
def fake_in_thread() -> Iterator[Callable[[F], InThread[F]]]:
    """For sync tests or components on other threads: ``riva = fake_in_thread(RivaFake()).fake``.

    Each fake runs on its own loop in a background thread and is stopped at teardown.
    """
    runners: list[InThread[Any]] = []

    def start(fake: F) -> InThread[F]:
        runner = InThread(fake)
        runner.start()
        runners.append(runner)
        return runner

    yield start
    for runner in reversed(runners):
        runner.stop()
