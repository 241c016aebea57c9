"""Booking in the hotel's PMS during the call: the ``book_stay`` tool and its rules.

WHY a separate tool (not ``capture_booking_request``): with Mews or Apaleo the agent can give
the caller a real confirmation number. The rules that make that safe live here, in code,
not only in the prompt:

- the agent must have read back dates, room type, guest name and total and heard a "yes"
  (``caller_confirmed``); the total it read back must equal a fresh PMS quote, otherwise
  the new price is read back first (a cached price never becomes a booking);
- a line whose policy is ``hold`` creates an option (Mews ``Optional``) or, where the PMS has
  none (Apaleo), a request for staff with the quoted price;
- when the PMS is slow or down the caller hears so and is offered a request for staff;
- card data is never taken by voice: the hotel sends its PMS's payment link.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from livekit.agents import RunContext, function_tool
from livekit.agents.llm import Tool, Toolset

from voicehive.api.models import BookingPolicy, HotelLineSpec
from voicehive_worker.pms import (
    PMS_SOURCE,
    BookingPms,
    Guest,
    Offer,
    PmsAdapter,
    PmsError,
    PmsUnavailable,
    StayRequest,
    make_request,
    money,
)

if TYPE_CHECKING:
    from voicehive_worker.agent import HotelAgent

log = logging.getLogger("voicehive.worker.booking")

NO_CARDS = (
    "Never ask for or accept card numbers by phone; if the caller offers one, stop them and say the hotel "
    "sends a secure payment link."
)


def pms_unavailable_reply(err: PmsError) -> str:
    """What a tool returns when the PMS cannot answer: say so, offer staff (never invent a rate)."""
    return (
        f"{PMS_SOURCE[0].upper()}{PMS_SOURCE[1:]} is unavailable ({err}). Tell the caller so, quote no price, and offer to "
        "pass the request to staff who will call back (capture_booking_request or take_message)."
    )


def booking_instructions(spec: HotelLineSpec, pms: PmsAdapter) -> str:
    """Extra system-prompt rules when the line's PMS can book."""
    if not isinstance(pms, BookingPms):
        return ""
    hold = spec.pms.booking == BookingPolicy.HOLD
    return (
        "\nPrices come from the hotel's booking system: quote only the totals the tools return, with the "
        "currency, never another number. To book: read back arrival date, nights, room type, guest name and "
        "the total, ask the caller to confirm, and only after a clear yes call book_stay with that total; "
        "then read the confirmation number back digit by digit. "
        + ("Bookings are held for staff to confirm: say so. " if hold else "")
        + NO_CARDS
    )


def price_matches(offer: Offer, quoted_total: float) -> bool:
    return abs(offer.total - quoted_total) < 0.005


def spell(number: str) -> str:
    """'4101' -> '4 1 0 1': read back digit by digit."""
    return " ".join(number)


async def book_stay_for(
    agent: HotelAgent, guest_name: str, check_in: str, nights: int, guests: int, room_type: str,
    quoted_total: float, caller_confirmed: bool,
) -> str:
    """The body of the ``book_stay`` tool (kept apart so it reads at once)."""
    if not caller_confirmed:
        return "Not booked: read back dates, room type, guest name and total, and ask the caller to confirm first."
    pms = agent.pms
    if not isinstance(pms, BookingPms):
        return "Not booked: this hotel takes booking requests only (capture_booking_request)."
    try:
        guest = Guest.from_full_name(guest_name)
        request = make_request(check_in, nights, guests, today=agent._now().date(), room_code=room_type)
        offer = await pms.quote(request)
    except PmsUnavailable as err:
        return pms_unavailable_reply(err)
    except PmsError as err:
        return f"Not booked: {err}."
    if not price_matches(offer, quoted_total):
        return (
            f"Not booked: the price is now {money(offer.total)} {offer.currency} in total, not {money(quoted_total)}. "
            "Read the new total back and ask the caller to confirm again."
        )
    return await _create(agent, pms, request, guest, offer)


async def _create(agent: HotelAgent, pms: BookingPms, request: StayRequest, guest: Guest, offer: Offer) -> str:
    hold = agent.spec.pms.booking == BookingPolicy.HOLD
    fields = {
        "guest_name": f"{guest.first_name} {guest.last_name}".strip(),
        "check_in": request.check_in.isoformat(),
        "nights": str(request.nights),
        "guests": str(request.guests),
        "room_type": offer.room_name,
        "quoted_total": f"{money(offer.total)} {offer.currency}",
        "language": agent.language,
    }
    if hold and not pms.supports_hold:
        reference = await agent.actions.save_request("booking_request", fields)
        return (
            f"Passed to staff with reference {reference}: they confirm the {offer.room_name} at {money(offer.total)} "
            f"{offer.currency} and send a secure payment link. {NO_CARDS}"
        )
    try:
        reservation = await pms.book(request, guest, offer, hold=hold)
    except PmsUnavailable as err:
        return pms_unavailable_reply(err)
    except PmsError as err:
        return f"Not booked: {err}."
    if not reservation.confirmed:
        await agent.actions.save_request("booking_hold", {**fields, "confirmation": reservation.confirmation})
    state = "Booked" if reservation.confirmed else "Held as an option for staff to confirm"
    return (
        f"{state}: confirmation number {spell(reservation.confirmation)}, {money(reservation.total)} "
        f"{reservation.currency} in total. Read the confirmation number back. Payment: the hotel sends a secure "
        f"payment link. {NO_CARDS}"
    )


def booking_tools(agent: HotelAgent) -> list[Tool | Toolset]:
    """``book_stay`` bound to one agent; empty when its PMS cannot book (built-in facts)."""
    if not isinstance(agent.pms, BookingPms):
        return []

    @function_tool
    async def book_stay(
        context: RunContext[Any], guest_name: str, check_in: str, nights: int, guests: int, room_type: str,
        quoted_total: float, caller_confirmed: bool,
    ) -> str:
        """Book a stay in the hotel's booking system after the caller confirmed the read-back.

        Args:
            guest_name: Guest's full name as confirmed.
            check_in: Arrival date as YYYY-MM-DD.
            nights: Number of nights.
            guests: Number of guests.
            room_type: Room type name as quoted.
            quoted_total: The total price you read back to the caller.
            caller_confirmed: True only if the caller said yes to the read-back.
        """
        return await book_stay_for(agent, guest_name, check_in, nights, guests, room_type, quoted_total, caller_confirmed)

    return [book_stay]
