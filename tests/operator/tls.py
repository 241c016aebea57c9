"""A TLS front for plain-HTTP loopback fakes, with a CA generated at test time.

WHY: HotelLine specs only accept ``https://`` provider endpoints (prompts and keys must be
encrypted in transit), so the operator's provider checks reach the Azure OpenAI and ElevenLabs
fakes through this terminator, verifying its certificate against the test CA exactly as it
would verify a private CA in production (``VOICEHIVE_OPERATOR_PROVIDER_CA_FILE``). The CA and
certificate come from the fakes' own ``tests.fakes.tls.make_tls_files``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path


class TlsProxy:
    """Terminates TLS on 127.0.0.1 and pipes bytes to a plain TCP upstream on 127.0.0.1."""

    def __init__(self, upstream_port: int, cert: Path, key: Path) -> None:
        self.upstream_port = upstream_port
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(cert, key)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def __aenter__(self) -> TlsProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
