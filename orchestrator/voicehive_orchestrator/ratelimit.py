"""Per-client rate limits: 429 with ``Retry-After`` before a request reaches a handler.

WHY: one leaked or buggy client must not exhaust Redis or the API server for every hotel. A
client is the credential it presents (its name from :mod:`auth`), or its address when it presents
none or an unknown one (so guessing tokens is limited too). Limits are per replica, in memory,
in a moving window (:class:`MovingWindows`), with limits written and parsed as the ``limits``
library (behind slowapi / Flask-Limiter) writes them.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from limits import RateLimitItem, parse
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth import Client, TokenStore, client_of

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


class MovingWindows:
    """At most ``amount`` hits in any ``seconds`` long window, per key: the ``limits`` library's
    moving window, kept as one deque of hit times per key.

    WHY not the library's storages: both in-memory ones expire entries in the background, the
    asyncio one with a thread hop per key after nearly every request, the synchronous one on a
    new ``threading.Timer`` thread every 10 ms, started (and waited for) on the request path. Under
    load that was 20% and 3% of the service's CPU (py-spy, issue 16). Here a key's old hits are
    dropped when the key is hit, and idle keys when the table grows.
    """

    def __init__(self, max_keys: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self._prune_at = max_keys
        self._hits: dict[Hashable, tuple[float, deque[float]]] = {}

    def hit(self, key: Hashable, amount: int, seconds: float) -> float | None:
        """Count a hit: ``None``, or refuse it: the seconds until the oldest hit leaves the window."""
        now = self.clock()
        found = self._hits.get(key)
        if found is None:
            if len(self._hits) >= self._prune_at:
                self._prune(now)
            found = self._hits[key] = (seconds, deque())
        hits = found[1]
        while hits and hits[0] <= now - seconds:
            hits.popleft()
        if len(hits) >= amount:
            return hits[0] + seconds - now
        hits.append(now)
        return None

    def _prune(self, now: float) -> None:
        """Forget keys with no hit in their window; if all are live, prune again only at twice
        the size (a flood of new keys must not make every request scan the table)."""
        self._hits = {key: found for key, found in self._hits.items() if found[1] and found[1][-1] > now - found[0]}
        self._prune_at = max(self.max_keys, 2 * len(self._hits))

    def __len__(self) -> int:
        return len(self._hits)


class RateLimiter:
    """The per-client decision; ``tokens`` finds the app's :class:`TokenStore` (built at start-up)."""

    def __init__(self, limits: RateLimits, tokens: Callable[[Scope], TokenStore | None]) -> None:
        self.limits = limits
        self.tokens = tokens
        self.windows = MovingWindows()

    def retry_after(self, scope: Scope) -> int | None:
        """``None`` when the request may go on, else the seconds until its client may try again."""
        if scope.get("path") in EXEMPT_PATHS:
            return None
        store = self.tokens(scope)
        client = client_of(scope, store) if store is not None else None
        item = self.limits.item_for(client)
        who: Hashable = client or ("addr", (scope.get("client") or ("?",))[0])
        wait = self.windows.hit(who, item.amount, item.get_expiry())
        return None if wait is None else max(1, math.ceil(wait))


class RateLimitMiddleware:
    """ASGI middleware for every route FastAPI dispatches (the webhook fast path asks the same
    :class:`RateLimiter` itself)."""

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        retry = self.limiter.retry_after(scope) if scope["type"] == "http" else None
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
