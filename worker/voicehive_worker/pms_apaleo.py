"""Apaleo adapter: stay offers and bookings through the Booking API, OAuth2 client credentials.

- Token: ``POST <tokenEndpoint>`` (``grant_type=client_credentials``, client id and secret as
  HTTP Basic), kept until shortly before ``expires_in`` and fetched again after any 401.
- Offers: ``GET /booking/v1/offers?propertyId&arrival&departure&adults&channelCode=Direct``;
  each offer has ``unitGroup``, ``ratePlan``, ``availableUnits`` and ``totalGrossAmount``.
- Booking: ``POST /booking/v1/bookings`` with one reservation (one room), the rate plan of the
  freshly fetched offer on every night, answer ``201 {"id": ...}``: the confirmation number.

Apaleo has no option state for a single reservation, so a line whose policy is ``hold`` does
not write to Apaleo: the agent passes the quoted stay to staff instead (``supports_hold``).
Card data only ever goes through Apaleo's payment link / PCI proxy, never through us.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import httpx

from voicehive.api.models import HotelFacts, PmsSpec, RoomType
from voicehive_worker.pms import Guest, Offer, PmsError, PmsUnavailable, Reservation, StayRequest
from voicehive_worker.pms_http import CachedOffers, OfferCache, PmsHttp

DEFAULT_TOKEN_URL = "https://identity.apaleo.com/connect/token"  # noqa: S105 (a URL, not a secret)
TOKEN_MARGIN_S = 60.0


def offers_from(data: dict[str, Any], nights: int, guests: int, prefer_rate: str | None) -> list[Offer]:
    """The cheapest bookable offer per unit group (the preferred rate plan when it is offered)."""
    best: dict[str, Offer] = {}
    for item in data.get("offers", []):
        if int(item.get("availableUnits") or 0) <= 0:
            continue
        group, plan, amount = item.get("unitGroup") or {}, item.get("ratePlan") or {}, item.get("totalGrossAmount") or {}
        if not group.get("id") or "amount" not in amount or not amount.get("currency"):
            continue
        total = float(amount["amount"])
        offer = Offer(
            room_code=str(group["id"]),
            room_name=str(group.get("name") or group.get("code") or group["id"]),
            max_guests=int(group.get("maxPersons") or guests),
            nightly_rate=round(total / nights, 2),
            total=total,
            currency=str(amount["currency"]),
            rate_id=str(plan.get("id") or ""),
        )
        current = best.get(offer.room_code)
        preferred = prefer_rate is not None and offer.rate_id == prefer_rate
        if current is None or preferred or (offer.total < current.total and current.rate_id != prefer_rate):
            best[offer.room_code] = offer
    return sorted(best.values(), key=lambda o: o.total)


class ApaleoPms(CachedOffers):
    """One Apaleo property. ``clock`` is injectable so token expiry is testable without waiting."""

    supports_hold = False

    def __init__(
        self,
        spec: PmsSpec,
        facts: HotelFacts,
        *,
        client_id: str,
        client_secret: str,
        verify: Any = True,
        cache: OfferCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (spec.endpoint and spec.property_id):
            raise ValueError("pms: Apaleo needs endpoint and propertyId")
        self._spec = spec
        self._facts = facts
        self._client_auth = (client_id, client_secret)
        self._token_url = spec.token_endpoint or DEFAULT_TOKEN_URL
        client = httpx.AsyncClient(base_url=spec.endpoint.rstrip("/"), verify=verify)
        self._http = PmsHttp("apaleo", client, spec.timeout_seconds)
        self._cache = cache or OfferCache()
        self._clock = clock
        self._token: tuple[str, float] | None = None  # (access token, monotonic expiry)

    async def aclose(self) -> None:
        await self._http.client.aclose()

    def room_types(self) -> list[RoomType]:
        return list(self._facts.room_types)

    async def _access_token(self) -> str:
        if self._token is not None and self._clock() < self._token[1]:
            return self._token[0]
        response = await self._http.request(
            "POST", self._token_url, data={"grant_type": "client_credentials"}, auth=self._client_auth
        )
        if response.status_code in (400, 401):  # invalid_client: wrong or revoked credentials
            self._http.check(httpx.Response(401, request=response.request))
        body = self._http.check(response)
        token = body.get("access_token")
        if not token:
            raise PmsUnavailable("the booking system refused our access")
        lifetime = float(body.get("expires_in") or 3600)
        self._token = (str(token), self._clock() + max(0.0, lifetime - TOKEN_MARGIN_S))
        return self._token[0]

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call with a bearer token; after a 401 the token is renewed and the call repeated once."""
        for attempt in (1, 2):
            token = await self._access_token()
            response = await self._http.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)
            if response.status_code == 401 and attempt == 1:
                self._token = None
                continue
            return self._http.check(response)
        raise PmsUnavailable("the booking system refused our access")  # pragma: no cover

    async def _fetch_offers(self, request: StayRequest) -> list[Offer]:
        params = {
            "propertyId": self._spec.property_id,
            "arrival": request.check_in.isoformat(),
            "departure": request.check_out.isoformat(),
            "adults": str(request.guests),
            "channelCode": "Direct",
        }
        data = await self._call("GET", "/booking/v1/offers", params=params)
        return offers_from(data or {}, request.nights, request.guests, self._spec.rate_id)

    async def book(self, request: StayRequest, guest: Guest, offer: Offer, *, hold: bool) -> Reservation:
        if hold:
            raise PmsError("this hotel confirms bookings through its staff")
        if not offer.rate_id:
            raise PmsError("the offer has no rate plan to book")
        person = {"lastName": guest.last_name, **({"firstName": guest.first_name} if guest.first_name else {})}
        nights = [request.check_in + dt.timedelta(days=n) for n in range(request.nights)]
        body = {
            "booker": person,
            "comment": "Taken by the VoiceHive phone agent; payment by the hotel's payment link.",
            "reservations": [
                {
                    "arrival": request.check_in.isoformat(),
                    "departure": request.check_out.isoformat(),
                    "adults": request.guests,
                    "channelCode": "Direct",
                    "primaryGuest": person,
                    "guaranteeType": "PM6Hold",
                    "timeSlices": [{"ratePlanId": offer.rate_id} for _ in nights],
                }
            ],
        }
        data = await self._call("POST", "/booking/v1/bookings", json=body)
        number = (data or {}).get("id")
        if not number:
            raise PmsError("the booking system did not return a confirmation number")
        return Reservation(str(number), True, offer.total, offer.currency)
