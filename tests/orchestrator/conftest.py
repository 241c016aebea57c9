"""Fixtures: an orchestrator served over a real loopback socket, backed by the real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.orchestrator.helpers import RunningServer, orchestrator_env, run_app
from voicehive.callstore import CallStore
from voicehive_orchestrator.app import create_app
from voicehive_orchestrator.settings import Settings, load_settings


@pytest.fixture
def orch_env(redis_url: str) -> dict[str, str]:
    return orchestrator_env(redis_url)


@pytest.fixture
def orch_settings(orch_env: dict[str, str]) -> Settings:
    return load_settings(orch_env)


@pytest.fixture
def orch_server(orch_settings: Settings) -> Iterator[RunningServer]:
    with run_app(create_app(orch_settings)) as server:
        yield server


@pytest.fixture
def client(orch_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=orch_server.url, timeout=30) as c:
        yield c


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[CallStore]:
    """A CallStore on the real redis-server, closed after the test."""
    the_store = CallStore.from_url(redis_url)
    try:
        yield the_store
    finally:
        await the_store.close()
