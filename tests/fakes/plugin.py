"""pytest fixtures for the loopback fakes (register via ``pytest_plugins`` in tests/conftest.py).

Each fixture is function scoped, starts its fake on 127.0.0.1 port 0 with keys generated
at test time, yields the running fake (``.url`` / ``.address``) and stops it afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.fakes.riva import RivaFake


@pytest_asyncio.fixture
async def riva_fake() -> AsyncIterator[RivaFake]:
    """A Riva ASR fake with the default streaming model and an empty script."""
    async with RivaFake() as fake:
        yield fake
