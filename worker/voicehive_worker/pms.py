"""The property-management-system (PMS) seam: availability and quotes.

WHY a protocol: hotels run Mews, Apaleo, OPERA Cloud...; the agent's tools must not care which.
The built-in :class:`FactsPms` answers from the HotelLine's own facts (room types, rates,
room counts) so a line works on day one; a real adapter implements the same three methods.
Everything here is pure and synchronous-cheap, so the tools can await it without a thread.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from voicehive.api.models import HotelFacts, RoomType

MAX_NIGHTS = 60


PMS_SOURCE = "the hotel's booking system"
"""Every tool answer that carries PMS data or a PMS outage names its source with these words."""


class PmsError(ValueError):
    """A request the PMS cannot answer, in words the agent can say back (no internals)."""


class PmsUnavailable(PmsError):
    """The PMS is slow, down, rate-limiting or refusing our credentials: offer a staff request instead."""


@dataclass(frozen=True)
class StayRequest:
    """What a caller asked for, validated."""

    check_in: dt.date
    nights: int
    guests: int
    room_code: str | None = None

    @property
    def check_out(self) -> dt.date:
        return self.check_in + dt.timedelta(days=self.nights)


@dataclass(frozen=True)
class Offer:
    """One bookable option with its price for the whole stay."""

    room_code: str
    room_name: str
    max_guests: int
    nightly_rate: float
    total: float
    currency: str
    rate_id: str = ""  # the PMS's rate/rate-plan id this price belongs to (empty: built-in facts)

    def spoken(self) -> str:
        if self.rate_id:  # from a PMS: only its total (a per-night average could be a number it never gave)
            return f"{self.room_name}: {money(self.total)} {self.currency} in total"
        return (
            f"{self.room_name}: {money(self.nightly_rate)} {self.currency} per night, "
            f"{money(self.total)} {self.currency} in total"
        )


def money(amount: float) -> str:
    """An amount as the PMS gave it: whole units without decimals, otherwise to the cent (never rounded away)."""
    return f"{amount:.0f}" if amount == int(amount) else f"{amount:.2f}"


@runtime_checkable
class PmsAdapter(Protocol):
    """What the agent needs from a PMS. Implementations must never raise anything but PmsError."""

    async def availability(self, request: StayRequest) -> list[Offer]:
        """Room types that can take the stay, cheapest first (empty: nothing available)."""
        ...

    async def quote(self, request: StayRequest) -> Offer:
        """The price of one room type for the stay (``request.room_code`` must be set)."""
        ...

    def room_types(self) -> list[RoomType]:
        """The bookable room types, for matching what a caller calls a room."""
        ...


@dataclass(frozen=True)
class Guest:
    """Who the reservation is for: a name, nothing else (no phone, no card)."""

    first_name: str
    last_name: str

    @classmethod
    def from_full_name(cls, name: str) -> Guest:
        parts = name.strip().split()
        if not parts:
            raise PmsError("the guest's name is missing")
        return cls(" ".join(parts[:-1]), parts[-1])


@dataclass(frozen=True)
class Reservation:
    """What the PMS answered to a booking: its confirmation number and state."""

    confirmation: str
    confirmed: bool  # False: an option/hold that staff confirm
    total: float
    currency: str


@runtime_checkable
class BookingPms(PmsAdapter, Protocol):
    """A PMS that can also create reservations (Mews, Apaleo); the built-in adapter cannot."""

    supports_hold: bool

    async def book(self, request: StayRequest, guest: Guest, offer: Offer, *, hold: bool) -> Reservation:
        """Creates the reservation (or option when ``hold``) at ``offer``'s rate; never from a cached price."""
        ...


def parse_date(value: str, *, today: dt.date) -> dt.date:
    """An ISO date, or 'today'/'tomorrow'; the LLM is told to send ISO dates."""
    text = value.strip().lower()
    if text == "today":
        return today
    if text == "tomorrow":
        return today + dt.timedelta(days=1)
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise PmsError(f"I could not understand the date {value!r}; please give it as year-month-day") from None


def make_request(
    check_in: str, nights: int, guests: int, *, today: dt.date, room_code: str | None = None
) -> StayRequest:
    """Validates a stay in plain words (the agent says the error back to the caller)."""
    day = parse_date(check_in, today=today)
    if day < today:
        raise PmsError("that arrival date is in the past")
    if not 1 <= nights <= MAX_NIGHTS:
        raise PmsError(f"stays can be booked for 1 to {MAX_NIGHTS} nights")
    if not 1 <= guests <= 20:
        raise PmsError("I can check stays for 1 to 20 guests")
    return StayRequest(check_in=day, nights=nights, guests=guests, room_code=room_code)


def norm_name(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


class FactsPms:
    """The built-in adapter: rooms and rates from the line's facts, no occupancy feed.

    A room type is offered when the hotel has rooms of it and it fits the party; the total is
    ``rate_from * nights``. Callers are told prices are "from" rates and staff confirm.
    """

    def __init__(self, facts: HotelFacts) -> None:
        self._facts = facts

    def room_types(self) -> list[RoomType]:
        return list(self._facts.room_types)

    def match_room(self, name_or_code: str) -> RoomType:
        """A room type by code or (part of) its name, as a caller or the LLM says it."""
        wanted = norm_name(name_or_code)
        for room in self._facts.room_types:
            if wanted in (norm_name(room.code), norm_name(room.name)):
                return room
        for room in self._facts.room_types:
            name = norm_name(room.name)
            if wanted and (wanted in name or name in wanted):
                return room
        known = ", ".join(r.name for r in self._facts.room_types) or "none"
        raise PmsError(f"there is no room type called {name_or_code!r}; the hotel has: {known}")

    def _offer(self, room: RoomType, request: StayRequest) -> Offer:
        return Offer(
            room_code=room.code,
            room_name=room.name,
            max_guests=room.max_guests,
            nightly_rate=room.rate_from,
            total=round(room.rate_from * request.nights, 2),
            currency=self._facts.currency,
        )

    async def availability(self, request: StayRequest) -> list[Offer]:
        rooms = [r for r in self._facts.room_types if r.rooms > 0 and r.max_guests >= request.guests]
        if request.room_code:
            wanted = self.match_room(request.room_code)
            rooms = [r for r in rooms if r.code == wanted.code]
        return sorted((self._offer(r, request) for r in rooms), key=lambda o: o.total)

    async def quote(self, request: StayRequest) -> Offer:
        if not request.room_code:
            raise PmsError("which room type should I quote?")
        room = self.match_room(request.room_code)
        if room.max_guests < request.guests:
            raise PmsError(f"the {room.name} takes at most {room.max_guests} guests")
        return self._offer(room, request)


def answer_from_facts(facts: HotelFacts, question: str) -> str | None:
    """The best FAQ answer or fact for a question, by word overlap; None when nothing fits.

    WHY not only the LLM: the tool result grounds the model in the hotel's own words, and the
    local dialogue policy (fallback, demo) uses the same lookup.
    """
    words = set(norm_name(question).split()) - _STOPWORDS
    if not words:
        return None
    best: tuple[float, str] | None = None
    for entry in facts.faq:
        q_words = set(norm_name(entry.question).split()) - _STOPWORDS
        a_words = set(norm_name(entry.answer).split()) - _STOPWORDS
        score = len(words & q_words) * 2 + len(words & a_words) * 0.5
        if score > 0 and (best is None or score > best[0]):
            best = (score, entry.answer)
    topics: list[tuple[set[str], str]] = [
        ({"check", "checkin", "arrive", "arrival"}, f"Check-in is from {facts.check_in}."),
        ({"checkout", "leave", "departure", "check"}, f"Check-out is until {facts.check_out}."),
        ({"address", "where", "located", "location", "find"}, f"The address is {facts.address}." if facts.address else ""),
        ({"amenities", "facilities", "offer", "have"}, ("The hotel offers " + ", ".join(facts.amenities) + ".") if facts.amenities else ""),
    ]
    for keys, answer in topics:
        hits = len(words & keys)
        if answer and hits and (best is None or hits * 1.5 > best[0]):
            best = (hits * 1.5, answer)
    return best[1] if best else None


_STOPWORDS = frozenset(
    ["a", "an", "the", "is", "are", "do", "does", "you", "your", "i", "me", "my", "we", "our", "to", "of", "for", "in", "on", "at", "and", "or", "what", "when", "how", "can", "there", "it", "be", "with", "please", "tell", "about", "hotel"]
)
