"""The hotel agent: what the caller talks to. One ``Agent`` subclass with function tools.

WHY the tools are thin: each one validates, calls the PMS adapter or a :class:`CallActions`
method, records an intent and returns a short result the LLM turns into speech. Everything
with side effects (encrypted storage, SIP transfer, hang-up, call state) sits behind
``CallActions`` so the same agent runs in the pod, in tests and in ``voicehive call``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from livekit import rtc
from livekit.agents import Agent, RunContext, function_tool
from livekit.agents import stt as lk_stt
from livekit.agents.voice.agent import ModelSettings

from voicehive.api.models import HotelLineSpec, OpeningHours
from voicehive.lifecycle import EndReason
from voicehive_worker.pms import FactsPms, PmsAdapter, PmsError, answer_from_facts, make_request
from voicehive_worker.turn_taking import TurnStats, TurnTakingOptions, turn_taking_stt_node

log = logging.getLogger("voicehive.worker.agent")

# Intent names recorded in the VoiceSession status and Redis (one vocabulary).
INTENT_AVAILABILITY = "availability"
INTENT_QUOTE = "quote"
INTENT_BOOKING = "booking"
INTENT_CHANGE = "change_request"
INTENT_QUESTION = "question"
INTENT_TRANSFER = "transfer"
INTENT_MESSAGE = "message"
INTENT_GOODBYE = "goodbye"


class CallActions(Protocol):
    """Side effects of one call. The worker's implementation lives in ``state.py``."""

    async def save_request(self, kind: str, fields: dict[str, str]) -> str:
        """Stores a booking/change request or message ENCRYPTED for staff; returns a short reference."""
        ...

    async def transfer_to_front_desk(self, target: str) -> None:
        """SIP-transfers the caller (raises on failure)."""
        ...

    async def end_call(self, reason: EndReason) -> None:
        """Hangs up and ends the call (after the goodbye has played)."""
        ...

    def record_intent(self, intent: str) -> None:
        """Adds an intent to the call's status (never the words said)."""
        ...


@dataclass
class LocalCallActions:
    """In-memory actions for tests, benches and ``voicehive call`` (nothing leaves the process).

    ``requests`` holds what would be encrypted in production; it is only ever shown to the
    local user who ran the simulated call.
    """

    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    intents: list[str] = field(default_factory=list)
    transfers: list[str] = field(default_factory=list)
    ended: EndReason | None = None

    async def save_request(self, kind: str, fields: dict[str, str]) -> str:
        self.requests.append((kind, dict(fields)))
        return f"R{len(self.requests):04d}"

    async def transfer_to_front_desk(self, target: str) -> None:
        self.transfers.append(target)

    async def end_call(self, reason: EndReason) -> None:
        self.ended = reason

    def record_intent(self, intent: str) -> None:
        if intent not in self.intents:
            self.intents.append(intent)


_GREETINGS: dict[str, str] = {
    "en": "Hello, thank you for calling {hotel}. I am the hotel's automated AI assistant. How can I help you?",
    "de": "Guten Tag, danke für Ihren Anruf im {hotel}. Ich bin der automatische KI-Assistent des Hotels. Wie kann ich helfen?",
    "fr": "Bonjour, merci d'avoir appelé {hotel}. Je suis l'assistant automatique à intelligence artificielle de l'hôtel. Comment puis-je vous aider ?",
    "es": "Hola, gracias por llamar a {hotel}. Soy el asistente automático de inteligencia artificial del hotel. ¿En qué puedo ayudarle?",
    "it": "Buongiorno, grazie per aver chiamato {hotel}. Sono l'assistente automatico di intelligenza artificiale dell'hotel. Come posso aiutarla?",
    "nl": "Goedendag, bedankt voor uw telefoontje naar {hotel}. Ik ben de automatische AI-assistent van het hotel. Waarmee kan ik u helpen?",
    "pt": "Olá, obrigado por ligar para {hotel}. Sou o assistente automático de inteligência artificial do hotel. Como posso ajudar?",
    "pl": "Dzień dobry, dziękujemy za telefon do {hotel}. Jestem automatycznym asystentem AI hotelu. W czym mogę pomóc?",
}
_GOODBYES: dict[str, str] = {
    "en": "Thank you for calling {hotel}. Goodbye!",
    "de": "Vielen Dank für Ihren Anruf im {hotel}. Auf Wiederhören!",
    "fr": "Merci d'avoir appelé {hotel}. Au revoir !",
    "es": "Gracias por llamar a {hotel}. ¡Adiós!",
    "it": "Grazie per aver chiamato {hotel}. Arrivederci!",
    "nl": "Bedankt voor uw telefoontje naar {hotel}. Tot ziens!",
    "pt": "Obrigado por ligar para {hotel}. Adeus!",
    "pl": "Dziękujemy za telefon do {hotel}. Do widzenia!",
}
_TRANSFERRING: dict[str, str] = {
    "en": "One moment please, I am connecting you to the front desk.",
    "de": "Einen Moment bitte, ich verbinde Sie mit der Rezeption.",
    "fr": "Un instant s'il vous plaît, je vous passe la réception.",
    "es": "Un momento por favor, le paso con la recepción.",
    "it": "Un attimo prego, la metto in contatto con la reception.",
}
_DESK_CLOSED: dict[str, str] = {
    "en": "The front desk is not staffed right now. I can take a message and they will call you back.",
    "de": "Die Rezeption ist gerade nicht besetzt. Ich kann gern eine Nachricht aufnehmen.",
    "fr": "La réception n'est pas disponible pour le moment. Je peux prendre un message.",
    "es": "La recepción no está disponible ahora. Puedo tomar un mensaje.",
    "it": "La reception non è disponibile ora. Posso prendere un messaggio.",
}


def _lang(language: str) -> str:
    return language.split("-")[0].lower()


def phrase(table: dict[str, str], language: str, **values: str) -> str:
    """A fixed phrase in the caller's language (English when we do not have it)."""
    return table.get(_lang(language), table["en"]).format(**values)


def greeting(spec: HotelLineSpec, language: str | None = None) -> str:
    """The first words of every call: the hotel's name and the AI disclosure."""
    return phrase(_GREETINGS, language or spec.languages[0], hotel=spec.display_name)


def goodbye(spec: HotelLineSpec, language: str | None = None) -> str:
    return phrase(_GOODBYES, language or spec.languages[0], hotel=spec.display_name)


def desk_is_open(hours: list[OpeningHours], now: dt.datetime) -> bool:
    """Whether the front desk is staffed at ``now`` (aware, in the hotel's time zone). Empty: always."""
    if not hours:
        return True
    day = now.strftime("%a")
    hhmm = now.strftime("%H:%M")
    return any(day in window.days and window.open <= hhmm < window.close for window in hours)


def instructions_for(spec: HotelLineSpec, today: dt.date, language: str) -> str:
    """System prompt: persona, hotel facts and rules. Facts are data, not instructions."""
    facts = spec.facts
    rooms = "; ".join(
        f"{r.name} (code {r.code}, up to {r.max_guests} guests, from {r.rate_from:.0f} {facts.currency}/night)"
        for r in facts.room_types
    ) or "no room types listed"
    faq = "\n".join(f"- Q: {e.question} A: {e.answer}" for e in facts.faq[:50])
    langs = ", ".join(spec.languages)
    return (
        f"You are {spec.llm.persona}, answering the phone for {spec.display_name}. You are an AI assistant "
        f"and you already said so in the greeting. Today is {today.isoformat()} ({spec.time_zone}). "
        f"Speak {language} unless the caller uses another of: {langs}. This is a phone call: answer in one "
        "or two short sentences, no lists, no markdown, say prices and dates in words.\n"
        "Use the tools: check_availability and quote_stay for rooms and prices (dates as YYYY-MM-DD), "
        "capture_booking_request once you have name, arrival, nights, guests and room type (staff confirm "
        "it later; never promise a confirmed booking), answer_question for anything about the hotel, "
        "transfer_to_front_desk when the caller wants a person, take_message for messages, end_call when "
        "the caller says goodbye. Never invent facts; if a tool has no answer, offer the front desk.\n"
        f"Hotel facts (data only): address {facts.address or 'unknown'}; check-in from {facts.check_in}, "
        f"check-out until {facts.check_out}; amenities: {', '.join(facts.amenities) or 'none listed'}; "
        f"rooms: {rooms}.\nFAQ:\n{faq}"
    )


class HotelAgent(Agent):
    """The hotel receptionist agent for one line and one call.

    ``turn_taking`` selects our STT-side turn taking (see turn_taking.py); ``None`` keeps the
    framework's default stt_node (the bare baseline of the benchmark).
    """

    def __init__(
        self,
        spec: HotelLineSpec,
        actions: CallActions,
        *,
        pms: PmsAdapter | None = None,
        language: str | None = None,
        turn_taking: TurnTakingOptions | None = None,
        turn_stats: TurnStats | None = None,
        clock: Any = None,
        greet: bool = True,
    ) -> None:
        self.spec = spec
        self.actions = actions
        self.pms: PmsAdapter = pms or FactsPms(spec.facts)
        self.language = language or spec.languages[0]
        self.turn_taking = turn_taking
        self.turn_stats = turn_stats or TurnStats()
        self._clock = clock or (lambda: dt.datetime.now(ZoneInfo(spec.time_zone)))
        self._greet = greet
        self._ending = False
        super().__init__(instructions=instructions_for(spec, self._now().date(), self.language))

    def _now(self) -> dt.datetime:
        now: dt.datetime = self._clock()
        return now

    # -- pipeline ------------------------------------------------------------------------

    def stt_node(self, audio: AsyncIterable[rtc.AudioFrame], model_settings: ModelSettings) -> Any:
        if self.turn_taking is None or self.session.stt is None:
            return Agent.default.stt_node(self, audio, model_settings)
        return turn_taking_stt_node(
            self.session.stt,
            audio,
            self.turn_taking,
            stats=self.turn_stats,
            vad=self.session.vad,
            conn_options=self.session.conn_options.stt_conn_options,
        )

    greeting_extra: str = ""  # said right after the greeting (e.g. the recording notice)

    async def on_enter(self) -> None:
        if self._greet:
            text = greeting(self.spec, self.language)
            self.session.say(f"{text} {self.greeting_extra}".strip(), allow_interruptions=True)

    # -- DTMF ----------------------------------------------------------------------------

    async def on_dtmf(self, digit: str) -> None:
        """Keypad input from the SIP leg: 0 reaches the front desk at any point."""
        if digit == "0":
            self.session.interrupt()
            await self._to_front_desk(reason="dtmf")

    # -- tools ---------------------------------------------------------------------------

    @function_tool
    async def check_availability(
        self, context: RunContext[Any], check_in: str, nights: int, guests: int, room_type: str | None = None
    ) -> str:
        """Check which rooms are available for a stay and their prices.

        Args:
            check_in: Arrival date as YYYY-MM-DD.
            nights: Number of nights.
            guests: Number of guests.
            room_type: Optional room type name or code the caller asked for.
        """
        self.actions.record_intent(INTENT_AVAILABILITY)
        try:
            request = make_request(check_in, nights, guests, today=self._now().date(), room_code=room_type)
            offers = await self.pms.availability(request)
        except PmsError as err:
            return f"Could not check: {err}."
        if not offers:
            return f"No room type is available for {guests} guests on those dates."
        return (
            f"Available from {request.check_in.isoformat()} for {request.nights} nights, {guests} guests: "
            + "; ".join(o.spoken() for o in offers[:3])
            + ". Rates are from-rates; staff confirm the booking."
        )

    @function_tool
    async def quote_stay(self, context: RunContext[Any], room_type: str, check_in: str, nights: int, guests: int) -> str:
        """Quote the price of one room type for a stay.

        Args:
            room_type: Room type name or code.
            check_in: Arrival date as YYYY-MM-DD.
            nights: Number of nights.
            guests: Number of guests.
        """
        self.actions.record_intent(INTENT_QUOTE)
        try:
            request = make_request(check_in, nights, guests, today=self._now().date(), room_code=room_type)
            offer = await self.pms.quote(request)
        except PmsError as err:
            return f"Could not quote: {err}."
        return f"Quote: {offer.spoken()} for {request.nights} nights from {request.check_in.isoformat()}."

    @function_tool
    async def capture_booking_request(
        self,
        context: RunContext[Any],
        kind: Literal["new_booking", "change", "cancellation"],
        guest_name: str,
        check_in: str,
        nights: int,
        guests: int,
        room_type: str = "",
        notes: str = "",
    ) -> str:
        """Record a booking, change or cancellation request for the staff to confirm.

        Args:
            kind: new_booking, change or cancellation.
            guest_name: Name the booking is (or will be) under.
            check_in: Arrival date as YYYY-MM-DD.
            nights: Number of nights.
            guests: Number of guests.
            room_type: Room type name or code, if known.
            notes: Anything else the caller asked for (existing booking reference for changes).
        """
        self.actions.record_intent(INTENT_BOOKING if kind == "new_booking" else INTENT_CHANGE)
        try:
            request = make_request(check_in, nights, guests, today=self._now().date())
        except PmsError as err:
            return f"Not recorded: {err}."
        if not guest_name.strip():
            return "Not recorded: the guest's name is missing."
        reference = await self.actions.save_request(
            kind,
            {
                "guest_name": guest_name.strip(),
                "check_in": request.check_in.isoformat(),
                "nights": str(request.nights),
                "guests": str(request.guests),
                "room_type": room_type.strip(),
                "notes": notes.strip(),
                "language": self.language,
            },
        )
        return f"Request recorded with reference {reference}; staff will confirm by phone or e-mail."

    @function_tool
    async def answer_question(self, context: RunContext[Any], question: str) -> str:
        """Look up the answer to a question about the hotel in its facts.

        Args:
            question: The caller's question.
        """
        self.actions.record_intent(INTENT_QUESTION)
        answer = answer_from_facts(self.spec.facts, question)
        return answer or "The hotel facts do not answer this; offer the front desk or a message."

    @function_tool
    async def transfer_to_front_desk(self, context: RunContext[Any], reason: str = "") -> str | None:
        """Transfer the caller to a person at the front desk.

        Args:
            reason: Short reason for the transfer.
        """
        return await self._to_front_desk(reason="caller")

    async def _to_front_desk(self, *, reason: str) -> str | None:
        self.actions.record_intent(INTENT_TRANSFER)
        if not desk_is_open(self.spec.front_desk.hours, self._now()):
            self.actions.record_intent(INTENT_MESSAGE)
            if reason == "dtmf":
                self.session.say(phrase(_DESK_CLOSED, self.language))
                return None
            return "The front desk is closed now: offer to take a message instead (take_message)."
        handle = self.session.say(phrase(_TRANSFERRING, self.language), allow_interruptions=False)
        await handle.wait_for_playout()
        try:
            await self.actions.transfer_to_front_desk(self.spec.front_desk.transfer_to)
        except Exception:
            log.warning("front-desk transfer failed", extra={"reason": reason})
            self.actions.record_intent(INTENT_MESSAGE)
            return "The transfer failed: apologise and offer to take a message (take_message)."
        await self.actions.end_call(EndReason.TRANSFERRED)
        return None

    @function_tool
    async def take_message(self, context: RunContext[Any], name: str, message: str, callback_number: str = "") -> str:
        """Take a message for the hotel staff.

        Args:
            name: Caller's name.
            message: The message.
            callback_number: Number to call back, if the caller gives one.
        """
        self.actions.record_intent(INTENT_MESSAGE)
        if not message.strip():
            return "Not recorded: the message is empty."
        reference = await self.actions.save_request(
            "message",
            {"name": name.strip(), "message": message.strip(), "callback_number": callback_number.strip()},
        )
        return f"Message recorded with reference {reference}; staff will get back to the caller."

    @function_tool
    async def end_call(self, context: RunContext[Any]) -> None:
        """End the call politely when the caller says goodbye or has nothing else."""
        await self.say_goodbye_and_end(EndReason.AGENT_ENDED)

    async def say_goodbye_and_end(self, reason: EndReason) -> None:
        if self._ending:
            return
        self._ending = True
        self.actions.record_intent(INTENT_GOODBYE)
        handle = self.session.say(goodbye(self.spec, self.language), allow_interruptions=False)
        await handle.wait_for_playout()
        await self.actions.end_call(reason)


def stt_event_text(ev: lk_stt.SpeechEvent) -> str:
    return ev.alternatives[0].text if ev.alternatives else ""
