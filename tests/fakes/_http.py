"""Shared lifecycle of the aiohttp-based fakes: bind 127.0.0.1 port 0, report the port."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Self

from aiohttp import web


class AiohttpFake:
    """Base class: subclasses fill ``self.app`` with routes in ``build_app``."""

    def __init__(self, *, port: int = 0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.ssl_context = ssl_context  # serve HTTPS/WSS with it (see tests.fakes.tls)
        self._runner: web.AppRunner | None = None
        self._connections: set[asyncio.BaseTransport] = set()

    def build_app(self) -> web.Application:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> Self:
        runner = web.AppRunner(self.build_app(), handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True, ssl_context=self.ssl_context)
        await site.start()
        server: Any = site._server  # aiohttp keeps the asyncio.Server private
        self.port = server.sockets[0].getsockname()[1]
        self._runner = runner
        return self

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
