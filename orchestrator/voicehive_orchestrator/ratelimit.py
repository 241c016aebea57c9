"""Per-client rate limits: 429 with ``Retry-After`` before a request reaches a handler.

WHY: one leaked or buggy client must not exhaust Redis or the API server for every hotel. A
client is the credential it presents (its name from :mod:`auth`), or its address when it presents
none or an unknown one (so guessing tokens is limited too). Limits are per replica, in memory,
with the ``limits`` library's moving window (the library behind slowapi / Flask-Limiter).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth import Client, TokenStore

# Probes and scrapes come from the kubelet and Prometheus, every few seconds: never limited.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass(frozen=True)
class RateLimits:
    """Limits in the ``limits`` syntax, e.g. ``"200/second"``; per client name or per address."""

    agent: str = "1000/second"  # all workers share one agent credential: ~1 event/s per live call
    admin: str = "60/minute"
    anonymous: str = "500/second"  # per address; LiveKit's own webhooks (signed JWT, no bearer) count here

    @cached_property
    def _items(self) -> tuple[RateLimitItem, RateLimitItem, RateLimitItem]:
        return parse(self.anonymous), parse(self.agent), parse(self.admin)  # parsed once, not per request

    def item_for(self, client: Client | None) -> RateLimitItem:
        anonymous, agent, admin = self._items
        if client is None:
            return anonymous
        return agent if client.scope.value == "agent" else admin


class RateLimiter:
    """The per-client decision; ``tokens`` finds the app's :class:`TokenStore` (built at start-up)."""

    def __init__(self, limits: RateLimits, tokens: Callable[[Scope], TokenStore | None]) -> None:
        self.limits = limits
        self.tokens = tokens
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def retry_after(self, scope: Scope) -> int | None:
        """``None`` when the request may go on, else the seconds until its client may try again."""
        if scope.get("path") in EXEMPT_PATHS:
            return None
        store = self.tokens(scope)
        headers = dict(scope.get("headers") or [])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        client = store.client_for(authorization) if store is not None else None
        key = f"client:{client.name}:{client.scope.value}" if client else f"addr:{(scope.get('client') or ('?',))[0]}"
        item = self.limits.item_for(client)
        if await self.limiter.hit(item, key):
            return None
        stats = await self.limiter.get_window_stats(item, key)
        return max(1, math.ceil(stats.reset_time - time.time()))


class RateLimitMiddleware:
    """ASGI middleware for every route FastAPI dispatches (the webhook fast path asks the same
    :class:`RateLimiter` itself)."""

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        retry = await self.limiter.retry_after(scope) if scope["type"] == "http" else None
        if retry is None:
            await self.app(scope, receive, send)
        else:
            await too_many(send, retry)


async def too_many(send: Send, retry_after: int) -> None:
    body = (b'{"error":"rate_limited","detail":"too many requests from this client; retry after '
            + str(retry_after).encode() + b' s","errors":[]}')
    await send({"type": "http.response.start", "status": 429, "headers": [
        (b"content-type", b"application/json"), (b"retry-after", str(retry_after).encode()),
        (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def app_tokens(scope: Scope) -> TokenStore | None:
    """The TokenStore of the app serving ``scope`` (``None`` before start-up finished)."""
    app: Any = scope.get("app")
    orch = getattr(getattr(app, "state", None), "orch", None)
    return getattr(orch, "tokens", None)
