"""Mews Connector API adapter: availability, prices and reservations for one accommodation service.

Every call is ``POST <endpoint>/api/connector/v1/<operation>`` with ``ClientToken``,
``AccessToken`` and ``Client`` in the JSON body (Mews' documented authentication). Used:

- ``resourceCategories/getAll`` (room types and capacity) and ``ageCategories/getAll`` (the
  adult category for ``PersonCounts``), both once per call;
- ``services/getAvailability/2024-01-22``: per night ``UsableResources - Occupied``;
- ``reservations/price``: the total for the stay at the line's ``rateId``;
- ``customers/add`` + ``reservations/add``: ``Confirmed``, or ``Optional`` when staff confirm.

The Booking Engine API (``/api/distributor``) is never used: Mews forbids polling it
server-to-server. Time units are nights starting at local midnight in the hotel's time zone.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from voicehive.api.models import HotelFacts, PmsSpec, RoomType
from voicehive_worker.pms import Guest, Offer, PmsError, Reservation, StayRequest
from voicehive_worker.pms_http import CachedOffers, OfferCache, PmsHttp

CONNECTOR = "/api/connector/v1/"
AVAILABILITY_OP = "services/getAvailability/2024-01-22"
CLIENT_NAME = "VoiceHive 0.1.0"


@dataclass(frozen=True)
class MewsCategory:
    id: str
    name: str
    capacity: int


def _utc(day: dt.date, clock: str, tz: ZoneInfo) -> str:
    """A local date and HH:MM in the hotel's zone as the UTC instant Mews expects."""
    hour, minute = (int(x) for x in clock.split(":"))
    local = dt.datetime.combine(day, dt.time(hour, minute), tzinfo=tz)
    return local.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def category_name(names: dict[str, str], language: str) -> str:
    """The category's name in the caller's language, else English, else any."""
    for key, value in names.items():
        if key.split("-")[0] == language:
            return value
    return names.get("en-US") or next(iter(names.values()), "room")


def free_rooms(result: dict[str, Any], nights: int) -> dict[str, int]:
    """Category id -> rooms free on every night of the stay (from the 2024-01-22 metrics)."""
    free: dict[str, int] = {}
    for item in result.get("ResourceCategoryAvailabilities", []):
        metrics = item.get("Metrics", {})
        usable, occupied = metrics.get("UsableResources", []), metrics.get("Occupied", [])
        per_night = [u - o for u, o in zip(usable[:nights], occupied[:nights], strict=False)]
        free[item["ResourceCategoryId"]] = min(per_night) if len(per_night) == nights else 0
    return free


class MewsPms(CachedOffers):
    """One line's Mews service. Credentials come from the line's Secret via the pod env."""

    supports_hold = True

    def __init__(
        self,
        spec: PmsSpec,
        facts: HotelFacts,
        *,
        client_token: str,
        access_token: str,
        time_zone: str,
        language: str = "en",
        verify: Any = True,
        cache: OfferCache | None = None,
    ) -> None:
        if not (spec.endpoint and spec.property_id and spec.rate_id):
            raise ValueError("pms: Mews needs endpoint, propertyId (the ServiceId) and rateId")
        self._spec = spec
        self._facts = facts
        self._auth = {"ClientToken": client_token, "AccessToken": access_token, "Client": CLIENT_NAME}
        self._tz = ZoneInfo(time_zone)
        self._language = language.split("-")[0]
        client = httpx.AsyncClient(base_url=spec.endpoint.rstrip("/") + CONNECTOR, verify=verify)
        self._http = PmsHttp("mews", client, spec.timeout_seconds)
        self._cache = cache or OfferCache()
        self._categories: list[MewsCategory] | None = None
        self._adult: str | None = None

    async def aclose(self) -> None:
        await self._http.client.aclose()

    async def _post(self, operation: str, body: dict[str, Any]) -> Any:
        response = await self._http.request("POST", operation, json={**self._auth, **body})
        return self._http.check(response)

    def room_types(self) -> list[RoomType]:
        return list(self._facts.room_types)

    async def categories(self) -> list[MewsCategory]:
        if self._categories is None:
            data = await self._post(
                "resourceCategories/getAll",
                {"ServiceIds": [self._spec.property_id], "ActivityStates": ["Active"], "Limitation": {"Count": 100}},
            )
            self._categories = [
                MewsCategory(c["Id"], category_name(c.get("Names") or {}, self._language), int(c.get("Capacity") or 1))
                for c in data.get("ResourceCategories", [])
                if c.get("IsActive", True)
            ]
        return self._categories

    async def adult_category(self) -> str:
        if self._adult is None:
            data = await self._post("ageCategories/getAll", {"ServiceIds": [self._spec.property_id]})
            adults = [a["Id"] for a in data.get("AgeCategories", []) if a.get("Classification") == "Adult"]
            if not adults:
                raise PmsError("the booking system has no adult guest category")
            self._adult = adults[0]
        return self._adult

    async def _fetch_offers(self, request: StayRequest) -> list[Offer]:
        categories = [c for c in await self.categories() if c.capacity >= request.guests]
        if not categories:
            return []
        last_night = request.check_in + dt.timedelta(days=request.nights - 1)
        result = await self._post(
            AVAILABILITY_OP,
            {
                "ServiceId": self._spec.property_id,
                "FirstTimeUnitStartUtc": _utc(request.check_in, "00:00", self._tz),
                "LastTimeUnitStartUtc": _utc(last_night, "00:00", self._tz),
                "Metrics": ["UsableResources", "Occupied"],
            },
        )
        free = free_rooms(result, request.nights)
        open_categories = [c for c in categories if free.get(c.id, 0) > 0]
        prices = await self._prices(request, open_categories)
        offers = [
            Offer(c.id, c.name, c.capacity, round(total / request.nights, 2), total, currency, self._spec.rate_id or "")
            for c in open_categories
            if (priced := prices.get(c.id)) is not None
            for total, currency in [priced]
        ]
        return sorted(offers, key=lambda o: o.total)

    def _stay(self, request: StayRequest) -> dict[str, str]:
        return {
            "StartUtc": _utc(request.check_in, self._facts.check_in, self._tz),
            "EndUtc": _utc(request.check_out, self._facts.check_out, self._tz),
        }

    async def _prices(self, request: StayRequest, categories: list[MewsCategory]) -> dict[str, tuple[float, str]]:
        """Category id -> (total, currency) from ``reservations/price`` (one request for all)."""
        if not categories:
            return {}
        adult = await self.adult_category()
        data = await self._post(
            "reservations/price",
            {
                "ServiceId": self._spec.property_id,
                "Reservations": [
                    {
                        "Identifier": c.id,
                        **self._stay(request),
                        "RequestedCategoryId": c.id,
                        "RateId": self._spec.rate_id,
                        "PersonCounts": [{"AgeCategoryId": adult, "Count": request.guests}],
                    }
                    for c in categories
                ],
            },
        )
        prices: dict[str, tuple[float, str]] = {}
        for item in data.get("ReservationPrices", []):
            amount = item.get("TotalAmount") or {}
            if "GrossValue" in amount and amount.get("Currency"):
                prices[item["Identifier"]] = (float(amount["GrossValue"]), str(amount["Currency"]))
        return prices

    async def book(self, request: StayRequest, guest: Guest, offer: Offer, *, hold: bool) -> Reservation:
        adult = await self.adult_category()
        customer = await self._post(
            "customers/add", {"FirstName": guest.first_name or None, "LastName": guest.last_name, "OverwriteExisting": False}
        )
        customer_id = customer.get("Id") or (customer.get("Customer") or {}).get("Id")
        if not customer_id:
            raise PmsError("the booking system did not create the guest profile")
        identifier = uuid.uuid4().hex[:12]
        data = await self._post(
            "reservations/add",
            {
                "ServiceId": self._spec.property_id,
                "SendConfirmationEmail": False,
                "Reservations": [
                    {
                        "Identifier": identifier,
                        "State": "Optional" if hold else "Confirmed",
                        **self._stay(request),
                        "CustomerId": customer_id,
                        "BookerId": customer_id,
                        "RequestedCategoryId": offer.room_code,
                        "RateId": offer.rate_id or self._spec.rate_id,
                        "PersonCounts": [{"AgeCategoryId": adult, "Count": request.guests}],
                        "Notes": "Taken by the VoiceHive phone agent.",
                    }
                ],
            },
        )
        made = next((r.get("Reservation") or {} for r in data.get("Reservations", []) if r.get("Identifier") == identifier), {})
        number = made.get("Number")
        if not number:
            raise PmsError("the booking system did not return a confirmation number")
        return Reservation(str(number), made.get("State") == "Confirmed", offer.total, offer.currency)
