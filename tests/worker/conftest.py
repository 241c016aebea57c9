"""Worker suite wiring: every spoken reply is scanned for text meant for a model; the PMS fakes
(Mews, Apaleo) over TLS from a test CA, shared by the PMS, booking and back-office tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.fakes.apaleo import ApaleoFake
from tests.fakes.mews import MewsFake
from tests.fakes.tls import TlsFiles, make_tls_files
from tests.spoken_replies import spoken_replies

__all__ = ["apaleo", "mews", "spoken_replies", "tls"]


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


@pytest_asyncio.fixture
async def mews(tls: TlsFiles) -> AsyncIterator[MewsFake]:
    async with MewsFake(ssl_context=tls.server_context()) as fake:
        yield fake


@pytest_asyncio.fixture
async def apaleo(tls: TlsFiles) -> AsyncIterator[ApaleoFake]:
    async with ApaleoFake(ssl_context=tls.server_context()) as fake:
        yield fake
