"""A loopback Apaleo: OAuth2 token endpoint, ``GET /booking/v1/offers``, ``POST /booking/v1/bookings``.

Tokens are opaque, expire after ``token_lifetime`` seconds (``expires_in``) and can be revoked
(``revoke_tokens``) to force the adapter's 401 -> refresh path. Errors use Apaleo's shapes:
``{"error": "invalid_client"}`` from the token endpoint, ``{"messages": [...]}`` with 400/422,
401 with ``WWW-Authenticate: Bearer``, 429 with ``Retry-After``. ``faults``/``delay``/``down``
work as in the Mews fake.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes._http import AiohttpFake


@dataclass
class UnitGroup:
    id: str
    name: str
    max_persons: int
    nightly: float
    available: int


class ApaleoFake(AiohttpFake):
    def __init__(self, groups: list[UnitGroup] | None = None, *, token_lifetime: int = 3600, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client_id = "vh-" + secrets.token_hex(4)
        self.client_secret = secrets.token_hex(16)
        self.property_id = "BER"
        self.token_lifetime = token_lifetime
        self.groups = groups or [
            UnitGroup("BER-DBL", "Double Room", 2, 124.0, 4),
            UnitGroup("BER-SGL", "Single Room", 1, 94.0, 0),
            UnitGroup("BER-STE", "Junior Suite", 3, 199.0, 1),
        ]
        self.tokens: dict[str, float] = {}
        self.token_requests = 0
        self.requests: list[tuple[str, str, Any]] = []
        self.bookings: list[dict[str, Any]] = []
        self.faults: list[tuple[int, dict[str, str], Any]] = []
        self.delay = 0.0
        self.down = False

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/connect/token", self._token)
        app.router.add_get("/booking/v1/offers", self._offers)
        app.router.add_post("/booking/v1/bookings", self._book)
        return app

    @property
    def token_url(self) -> str:
        return f"{self.url}/connect/token"

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        header = request.headers.get("Authorization", "")
        user, _, password = base64.b64decode(header[6:]).decode().partition(":") if header.startswith("Basic ") else ("", "", "")
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if (user, password) != (self.client_id, self.client_secret):
            return web.json_response({"error": "invalid_client"}, status=400)
        token = secrets.token_urlsafe(24)
        self.tokens[token] = time.monotonic() + self.token_lifetime
        return web.json_response({"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer", "scope": "reservations.manage offers.read"})

    async def _gate(self, request: web.Request) -> web.Response | None:
        """Delay, outage, queued faults and bearer-token check shared by the API routes."""
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            return web.json_response({"messages": ["Service Unavailable"]}, status=503)
        self.requests.append((request.method, request.path, dict(request.query)))
        if self.faults:
            status, headers, payload = self.faults.pop(0)
            return web.json_response(payload, status=status, headers=headers)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.tokens.get(token, 0) < time.monotonic():
            return web.Response(status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return None

    def _stay(self, arrival: str, departure: str) -> int:
        nights = (dt.date.fromisoformat(departure[:10]) - dt.date.fromisoformat(arrival[:10])).days
        if nights < 1:
            raise ValueError("departure must be after arrival")
        return nights

    async def _offers(self, request: web.Request) -> web.Response:
        if (gated := await self._gate(request)) is not None:
            return gated
        q = request.query
        try:
            if q.get("propertyId") != self.property_id:
                raise ValueError("propertyId: unknown property")
            nights, adults = self._stay(q["arrival"], q["departure"]), int(q["adults"])
        except (KeyError, ValueError) as err:
            return web.json_response({"messages": [f"Invalid query: {err}"]}, status=400)
        offers = [
            {
                "arrival": q["arrival"], "departure": q["departure"],
                "unitGroup": {"id": g.id, "code": g.id.split("-")[-1], "name": g.name, "maxPersons": g.max_persons},
                "ratePlan": {"id": f"{g.id}-FLEX", "code": "FLEX", "name": "Flexible"},
                "availableUnits": g.available,
                "totalGrossAmount": {"amount": round(g.nightly * nights, 2), "currency": "EUR"},
                "cityTax": {"grossAmount": 5.0 * nights, "netAmount": 5.0 * nights},
            }
            for g in self.groups
            if g.max_persons >= adults
        ]
        return web.json_response({"property": {"id": self.property_id, "name": "Hotel"}, "offers": offers})

    async def _book(self, request: web.Request) -> web.Response:
        if (gated := await self._gate(request)) is not None:
            return gated
        body = await request.json()
        errors = []
        if not (body.get("booker") or {}).get("lastName"):
            errors.append("booker.lastName is required")
        reservations = body.get("reservations") or []
        for res in reservations:
            plan = (res.get("timeSlices") or [{}])[0].get("ratePlanId", "")
            group = next((g for g in self.groups if plan.startswith(g.id + "-")), None)
            if group is None or group.available <= 0:
                errors.append(f"ratePlanId {plan!r} is not available")
            elif len(res["timeSlices"]) != self._stay(res["arrival"], res["departure"]):
                errors.append("timeSlices must have one entry per night")
        if errors or not reservations:
            return web.json_response({"messages": errors or ["reservations is required"]}, status=422)
        booking_id = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(8))
        for res in reservations:
            plan = res["timeSlices"][0]["ratePlanId"]
            next(g for g in self.groups if plan.startswith(g.id + "-")).available -= 1
        self.bookings.append({"id": booking_id, **body})
        return web.json_response({"id": booking_id, "reservationIds": [{"id": f"{booking_id}-1"}]}, status=201)
