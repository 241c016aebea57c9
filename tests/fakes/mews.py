"""A loopback Mews Connector API: the operations the adapter uses, with Mews' auth and errors.

Requests are ``POST /api/connector/v1/<operation>`` with ``ClientToken``, ``AccessToken`` and
``Client`` in the JSON body; a wrong token answers 401 ``{"Message": ...}``, a malformed body
400, a rate limit 429 with ``Retry-After``. ``faults`` queues answers for the next requests
(status, headers, body) and ``delay`` stalls every answer (timeouts); ``down`` answers 503.
Inventory: each category has a nightly gross price and a number of free rooms every night.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes._http import AiohttpFake


@dataclass
class Category:
    name: str
    capacity: int
    nightly: float
    free: int
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


def _days(first: str, last: str) -> list[str]:
    start = dt.datetime.fromisoformat(first.replace("Z", "+00:00"))
    end = dt.datetime.fromisoformat(last.replace("Z", "+00:00"))
    out, day = [], start
    while day <= end:
        out.append(day.strftime("%Y-%m-%dT%H:%M:%SZ"))
        day += dt.timedelta(days=1)
    return out


class MewsFake(AiohttpFake):
    def __init__(self, categories: list[Category] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client_token = secrets.token_hex(16)
        self.access_token = secrets.token_hex(16)
        self.service_id = str(uuid.uuid4())
        self.rate_id = str(uuid.uuid4())
        self.adult_id = str(uuid.uuid4())
        self.currency = "EUR"
        self.categories = categories or [
            Category("Double Room", 2, 119.0, 3),
            Category("Single Room", 1, 89.0, 0),
            Category("Family Suite", 4, 219.0, 1),
        ]
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.reservations: list[dict[str, Any]] = []
        self.faults: list[tuple[int, dict[str, str], dict[str, Any]]] = []
        self.delay = 0.0
        self.down = False
        self._number = 4100

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/connector/v1/{op:.+}", self._handle)
        return app

    def calls(self, op: str) -> list[dict[str, Any]]:
        return [body for name, body in self.requests if name == op]

    async def _handle(self, request: web.Request) -> web.Response:
        op = request.match_info["op"]
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            return web.json_response({"Message": "Service unavailable."}, status=503)
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.json_response({"Message": "Invalid JSON."}, status=400)
        self.requests.append((op, body))
        if self.faults:
            status, headers, payload = self.faults.pop(0)
            return web.json_response(payload, status=status, headers=headers)
        if body.get("ClientToken") != self.client_token or body.get("AccessToken") != self.access_token:
            return web.json_response({"Message": "Invalid ClientToken or AccessToken.", "RequestId": "r1"}, status=401)
        if not body.get("Client"):
            return web.json_response({"Message": "Missing Client."}, status=400)
        handler = {
            "resourceCategories/getAll": self._categories,
            "ageCategories/getAll": self._age_categories,
            "services/getAvailability/2024-01-22": self._availability,
            "reservations/price": self._price,
            "customers/add": self._customer,
            "reservations/add": self._add,
        }.get(op)
        if handler is None:
            return web.json_response({"Message": f"Operation {op} not found."}, status=404)
        try:
            return web.json_response(handler(body))
        except (KeyError, ValueError, TypeError) as err:
            return web.json_response({"Message": f"Invalid request: {err}"}, status=400)

    def _categories(self, body: dict[str, Any]) -> dict[str, Any]:
        assert body["ServiceIds"] == [self.service_id]
        return {
            "ResourceCategories": [
                {"Id": c.id, "ServiceId": self.service_id, "IsActive": True, "Names": {"en-US": c.name}, "Capacity": c.capacity}
                for c in self.categories
            ],
            "Cursor": None,
        }

    def _age_categories(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"AgeCategories": [{"Id": self.adult_id, "ServiceId": self.service_id, "Classification": "Adult"}]}

    def _availability(self, body: dict[str, Any]) -> dict[str, Any]:
        if body["ServiceId"] != self.service_id:
            raise ValueError("unknown ServiceId")
        units = _days(body["FirstTimeUnitStartUtc"], body["LastTimeUnitStartUtc"])
        return {
            "TimeUnitStartsUtc": units,
            "ResourceCategoryAvailabilities": [
                {
                    "ResourceCategoryId": c.id,
                    "Metrics": {"UsableResources": [c.free + 2] * len(units), "Occupied": [2] * len(units)},
                }
                for c in self.categories
            ],
        }

    def _nights(self, item: dict[str, Any]) -> int:
        start = dt.datetime.fromisoformat(item["StartUtc"].replace("Z", "+00:00")).date()
        end = dt.datetime.fromisoformat(item["EndUtc"].replace("Z", "+00:00")).date()
        if end <= start:
            raise ValueError("EndUtc before StartUtc")
        return (end - start).days

    def _price(self, body: dict[str, Any]) -> dict[str, Any]:
        out = []
        for item in body["Reservations"]:
            if item["RateId"] != self.rate_id:
                raise ValueError("unknown RateId")
            category = next(c for c in self.categories if c.id == item["RequestedCategoryId"])
            gross = round(category.nightly * self._nights(item), 2)
            out.append({"Identifier": item["Identifier"], "TotalAmount": {"Currency": self.currency, "GrossValue": gross, "NetValue": round(gross / 1.07, 2)}})
        return {"ReservationPrices": out}

    def _customer(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("LastName"):
            raise ValueError("LastName is required")
        return {"Id": str(uuid.uuid4()), "FirstName": body.get("FirstName"), "LastName": body["LastName"]}

    def _add(self, body: dict[str, Any]) -> dict[str, Any]:
        out = []
        for item in body["Reservations"]:
            category = next(c for c in self.categories if c.id == item["RequestedCategoryId"])
            if category.free <= 0:
                raise ValueError("no availability")
            if item["State"] not in ("Confirmed", "Optional", "Enquired"):
                raise ValueError("bad State")
            category.free -= 1
            self._number += 1
            made = {"Id": str(uuid.uuid4()), "Number": str(self._number), "State": item["State"], **item}
            self.reservations.append(made)
            out.append({"Identifier": item.get("Identifier"), "Reservation": made})
        return {"Reservations": out}
