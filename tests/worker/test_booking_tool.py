"""The rules of ``book_stay`` against the PMS fakes: confirmation first, fresh price, hold policy, outages."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests.fakes.apaleo import ApaleoFake
from tests.fakes.mews import MewsFake
from tests.fakes.tls import TlsFiles
from tests.worker.callrig import line_spec
from tests.worker.test_pms_adapters import apaleo_pms, mews_pms
from voicehive_worker.agent import HotelAgent, LocalCallActions
from voicehive_worker.booking import book_stay_for, booking_tools
from voicehive_worker.pms import FactsPms

TODAY = dt.date(2026, 12, 1)
STAY: dict[str, Any] = {"guest_name": "Anna Schmidt", "check_in": "2026-12-12", "nights": 2, "guests": 2, "room_type": "Double Room"}


def agent(pms: Any, booking: str) -> HotelAgent:
    spec = line_spec(pms={"kind": "mews", "endpoint": "https://pms.example", "credentials": {"secretName": "p"},
                          "propertyId": "p", "booking": booking})
    clock = lambda: dt.datetime.combine(TODAY, dt.time(10)).astimezone()  # noqa: E731
    return HotelAgent(spec, LocalCallActions(), pms=pms, greet=False, clock=clock)


async def test_mews_booking_needs_confirmation_and_the_current_price(mews: MewsFake, tls: TlsFiles) -> None:
    hotel = agent(mews_pms(mews, tls.client_context()), "book")
    assert [t.id for t in booking_tools(hotel)] == ["book_stay"]
    assert "book_stay" in hotel.instructions and "card" in hotel.instructions
    said = await book_stay_for(hotel, **STAY, quoted_total=238.0, caller_confirmed=False)
    assert said.startswith("Not booked") and not mews.reservations
    mews.categories[0].nightly = 129.0  # the PMS changed the rate since the caller heard it
    said = await book_stay_for(hotel, **STAY, quoted_total=238.0, caller_confirmed=True)
    assert "the price is now 258 EUR" in said and not mews.reservations
    said = await book_stay_for(hotel, **STAY, quoted_total=258.0, caller_confirmed=True)
    assert said.startswith(f"Booked: confirmation number {' '.join(mews.reservations[0]['Number'])}")


async def test_hold_policy_mews_option_and_apaleo_staff_request(mews: MewsFake, apaleo: ApaleoFake, tls: TlsFiles) -> None:
    held = agent(mews_pms(mews, tls.client_context()), "hold")
    said = await book_stay_for(held, **STAY, quoted_total=238.0, caller_confirmed=True)
    assert said.startswith("Held as an option") and mews.reservations[0]["State"] == "Optional"
    assert held.actions.requests[0][0] == "booking_hold"  # type: ignore[attr-defined]
    staff = agent(apaleo_pms(apaleo, tls.client_context()), "hold")
    said = await book_stay_for(staff, **STAY, quoted_total=248.0, caller_confirmed=True)
    assert said.startswith("Passed to staff") and not apaleo.bookings
    kind, fields = staff.actions.requests[0]  # type: ignore[attr-defined]
    assert kind == "booking_request" and fields["quoted_total"] == "248 EUR"


async def test_pms_down_at_booking_offers_staff(apaleo: ApaleoFake, tls: TlsFiles) -> None:
    hotel = agent(apaleo_pms(apaleo, tls.client_context()), "book")
    apaleo.down = True
    said = await book_stay_for(hotel, **STAY, quoted_total=248.0, caller_confirmed=True)
    assert "booking system is unavailable" in said and "staff" in said and not apaleo.bookings


def test_builtin_line_has_no_booking_tool() -> None:
    hotel = agent(FactsPms(line_spec().facts), "book")
    assert booking_tools(hotel) == [] and "book_stay" not in hotel.instructions


async def test_fallback_policy_speaks_the_pms_total_not_the_facts(mews: MewsFake, tls: TlsFiles) -> None:
    from livekit.agents import AgentSession

    from voicehive_worker.engines import HotelPolicy, HotelPolicyLLM

    hotel = agent(mews_pms(mews, tls.client_context()), "book")
    llm = HotelPolicyLLM(hotel.spec, policy=HotelPolicy(hotel.spec, today=TODAY))
    async with AgentSession(llm=llm) as session:
        await session.start(hotel)
        result = await session.run(user_input="Do you have a double room on the 12th of December for two nights for two guests?")
        replies = " ".join(ev.item.text_content or "" for ev in result.events if ev.type == "message")
        mews.down = True
        result = await session.run(user_input="And the 14th of December for two nights for two guests?")
        down = " ".join(ev.item.text_content or "" for ev in result.events if ev.type == "message")
    assert "Double Room: 238 EUR in total" in replies
    facts_rate = next(r for r in hotel.spec.facts.room_types if r.code == "DBL").rate_from
    assert f"{facts_rate:.0f}" not in replies.replace("238", "")
    assert "unavailable" in down and "EUR" not in down
