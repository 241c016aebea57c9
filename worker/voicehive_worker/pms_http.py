"""What the Mews and Apaleo adapters share: one HTTP call with a deadline, and a short offer cache.

WHY one place: a caller is waiting on the line, so every PMS request has a hard budget
(``PmsSpec.timeoutSeconds``); a timeout, a 5xx, an auth failure or a rate limit all become
:class:`PmsUnavailable`, which the agent turns into "the booking system is not answering, I
can pass your request to staff". A 429 is retried once when its ``Retry-After`` fits the
budget. No PMS error text reaches the caller or the log (it can quote guest data).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from voicehive_worker.pms import Offer, PmsError, PmsUnavailable, StayRequest, norm_name

log = logging.getLogger("voicehive.worker.pms")

MAX_RETRY_AFTER_S = 2.0


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` in seconds (delta form only; a date form is treated as 'too long')."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@dataclass
class PmsHttp:
    """An httpx client bound to one PMS, with the line's time budget per request."""

    pms: str  # "mews" | "apaleo", for logs and metrics only
    client: httpx.AsyncClient
    timeout_s: float

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Sends once (twice after a short 429); maps every transport failure to PmsUnavailable."""
        for attempt in (1, 2):
            try:
                response = await asyncio.wait_for(self.client.request(method, url, **kwargs), self.timeout_s)
            except (TimeoutError, httpx.TimeoutException):
                log.warning("pms timeout", extra={"pms": self.pms, "op": _op(url)})
                raise PmsUnavailable("the booking system is not answering in time") from None
            except httpx.HTTPError as err:
                log.warning("pms unreachable", extra={"pms": self.pms, "op": _op(url), "error": type(err).__name__})
                raise PmsUnavailable("the booking system cannot be reached") from None
            if response.status_code != 429:
                return response
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            log.warning("pms rate limited", extra={"pms": self.pms, "op": _op(url), "retry_after": wait})
            if attempt == 2 or wait is None or wait > min(MAX_RETRY_AFTER_S, self.timeout_s):
                raise PmsUnavailable("the booking system is busy right now")
            await asyncio.sleep(wait)
        raise PmsUnavailable("the booking system is busy right now")  # pragma: no cover (loop returns)

    def check(self, response: httpx.Response) -> Any:
        """The JSON body of a 2xx; PmsUnavailable for auth and server errors, PmsError for refusals."""
        status = response.status_code
        if 200 <= status < 300:
            return response.json() if response.content else {}
        log.warning("pms error", extra={"pms": self.pms, "op": _op(str(response.url)), "status": status})
        if status in (401, 403):
            raise PmsUnavailable("the booking system refused our access")
        if status >= 500 or status == 408:
            raise PmsUnavailable("the booking system has a problem right now")
        raise PmsError("the booking system did not accept this request")


def _op(url: str) -> str:
    """The operation path without query (never the query: it can carry dates and names)."""
    return httpx.URL(url).path


@dataclass
class OfferCache:
    """Availability per stay for a few seconds, so "and the double?" does not hit the PMS again.

    Only ``availability`` answers are cached; a booking always prices afresh (see the adapters).
    """

    ttl_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _entries: dict[tuple[Any, ...], tuple[float, list[Offer]]] = field(default_factory=dict)

    @staticmethod
    def key(request: StayRequest) -> tuple[Any, ...]:
        return (request.check_in, request.nights, request.guests)

    def get(self, request: StayRequest) -> list[Offer] | None:
        entry = self._entries.get(self.key(request))
        if entry is None or self.clock() - entry[0] > self.ttl_s:
            return None
        return list(entry[1])

    def put(self, request: StayRequest, offers: list[Offer]) -> None:
        now = self.clock()
        self._entries = {k: v for k, v in self._entries.items() if now - v[0] <= self.ttl_s}
        self._entries[self.key(request)] = (now, list(offers))


class CachedOffers:
    """``availability`` and ``quote`` for an adapter that fetches a stay's offers one way
    (``_fetch_offers``): the same caching rule for every PMS, written once."""

    _cache: OfferCache

    async def _fetch_offers(self, request: StayRequest) -> list[Offer]:
        raise NotImplementedError

    async def availability(self, request: StayRequest) -> list[Offer]:
        cached = self._cache.get(request)
        if cached is None:
            cached = await self._fetch_offers(request)
            self._cache.put(request, cached)
        return pick_room(cached, request.room_code)

    async def quote(self, request: StayRequest) -> Offer:
        """Always priced afresh (a quote may become a booking; a cached price never does)."""
        offers = await self._fetch_offers(request)
        self._cache.put(request, offers)
        return require_room(offers, request)


def pick_room(offers: list[Offer], wanted: str | None) -> list[Offer]:
    """Offers whose room code or name matches what the caller/LLM said (all when nothing asked)."""
    if not wanted:
        return offers
    target = norm_name(wanted)
    exact = [o for o in offers if target in (norm_name(o.room_code), norm_name(o.room_name))]
    if exact:
        return exact
    return [o for o in offers if target and (target in norm_name(o.room_name) or norm_name(o.room_name) in target)]


def require_room(offers: list[Offer], request: StayRequest) -> Offer:
    """The cheapest offer for the requested room type, or a PmsError the caller can hear."""
    if not request.room_code:
        raise PmsError("which room type should I quote?")
    matching = pick_room(offers, request.room_code)
    if not matching:
        raise PmsError(f"the {request.room_code} is not available for {request.guests} guests on those dates")
    return min(matching, key=lambda o: o.total)
