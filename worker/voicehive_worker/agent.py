"""The hotel agent: what the caller talks to. One ``Agent`` subclass with function tools.

WHY the tools are thin: each one validates, calls the PMS adapter or a :class:`CallActions`
method, records an intent and returns a short result the LLM turns into speech. Everything
with side effects (encrypted storage, SIP transfer, hang-up, call state) sits behind
``CallActions`` so the same agent runs in the pod, in tests and in ``voicehive call``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from livekit import rtc
from livekit.agents import Agent, RunContext, function_tool
from livekit.agents import llm as lk_llm
from livekit.agents import stt as lk_stt
from livekit.agents.voice.agent import ModelSettings

from voicehive.api.models import HotelLineSpec, OpeningHours
from voicehive.intents import Intent
from voicehive.lifecycle import EndReason
from voicehive_worker import phrases
from voicehive_worker.booking import booking_instructions, booking_tools, pms_unavailable_reply
from voicehive_worker.language import LanguageTracker, first_language
from voicehive_worker.pms import (
    PMS_SOURCE,
    FactsPms,
    PmsAdapter,
    PmsError,
    PmsUnavailable,
    answer_from_facts,
    make_request,
)
from voicehive_worker.tool_schemas import ToolSchemaCache, tool_schema_format
from voicehive_worker.turn_taking import TurnStats, TurnTakingOptions, turn_taking_stt_node

log = logging.getLogger("voicehive.worker.agent")

# What each tool records in status.intents: the caller's intent, in the classifier's vocabulary
# (voicehive.intents.Intent), so the status and the per-turn classification speak one language.
# A message for the staff is what a caller who wanted a person gets when nobody is at the desk.
_BOOKING_INTENTS: dict[str, Intent] = {
    "new_booking": Intent.BOOK_ROOM,
    "change": Intent.MODIFY_BOOKING,
    "cancellation": Intent.CANCEL_BOOKING,
}


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

    def record_intent(self, intent: Intent) -> None:
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

    def record_intent(self, intent: Intent) -> None:
        if intent.value not in self.intents:
            self.intents.append(intent.value)


# The fixed phrases live in phrases.py (every one in en, de, fr, es, it); these names stay for callers.
_GREETINGS = phrases.GREETING
_GOODBYES = phrases.GOODBYE
_TRANSFERRING = phrases.TRANSFERRING
_DESK_CLOSED = phrases.DESK_CLOSED
# How long "transferring you" may take to play before the transfer goes ahead regardless: a stuck
# audio output (the watchdog's "audio_output_stuck") must not keep the caller from the desk.
ANNOUNCE_TIMEOUT_S = 8.0
phrase = phrases.phrase


def greeting(spec: HotelLineSpec, language: str | None = None) -> str:
    """The first words of every call: the hotel's name and the AI disclosure."""
    return phrase(_GREETINGS, language or first_language(spec), hotel=spec.display_name)


def goodbye(spec: HotelLineSpec, language: str | None = None) -> str:
    return phrase(_GOODBYES, language or first_language(spec), hotel=spec.display_name)


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
    langs = ", ".join(phrases.LANGUAGE_NAMES.get(phrases.base(code), code) for code in spec.languages)
    speak = phrases.LANGUAGE_NAMES.get(phrases.base(language), language)
    return (
        f"You are {spec.llm.persona}, answering the phone for {spec.display_name}. You are an AI assistant "
        f"and you already said so in the greeting. Today is {today.isoformat()} ({spec.time_zone}). "
        f"The caller speaks {speak}: answer in {speak}. If the caller clearly changes to another of "
        f"{langs}, answer in that language. Tool results may be in another language: say them in the "
        "caller's language. This is a phone call: answer in one "
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
        asr_for: Callable[[str], lk_stt.STT[Any] | None] | None = None,
    ) -> None:
        self.spec = spec
        self.actions = actions
        self.pms: PmsAdapter = pms or FactsPms(spec.facts)
        self.languages = LanguageTracker.for_line(spec.languages, language)
        self.language = self.languages.current
        self.language_listeners: list[Callable[[str], None]] = []
        self._heard = False  # an ASR final arrived since the last committed turn
        self._asr_for = asr_for  # the ASR for another language (None: the line has no model for it)
        self._asr_language = phrases.base(spec.asr_language)
        self.turn_taking = turn_taking
        self.turn_stats = turn_stats or TurnStats()
        self._clock = clock or (lambda: dt.datetime.now(ZoneInfo(spec.time_zone)))
        self._greet = greet
        self._ending = False
        self._tasks: set[asyncio.Future[Any]] = set()
        self.tool_schemas = ToolSchemaCache()
        super().__init__(
            instructions=instructions_for(spec, self._now().date(), self.language) + booking_instructions(spec, self.pms),
            tools=booking_tools(self),
        )

    def _now(self) -> dt.datetime:
        now: dt.datetime = self._clock()
        return now

    # -- pipeline ------------------------------------------------------------------------

    def stt_node(self, audio: AsyncIterable[rtc.AudioFrame], model_settings: ModelSettings) -> Any:
        stt = self.stt if isinstance(self.stt, lk_stt.STT) else self.session.stt  # ours after a switch
        if self.turn_taking is None or stt is None:
            return Agent.default.stt_node(self, audio, model_settings)
        return turn_taking_stt_node(
            stt,
            audio,
            self.turn_taking,
            stats=self.turn_stats,
            vad=self.session.vad,
            conn_options=self.session.conn_options.stt_conn_options,
            on_final=self.on_asr_final,
        )

    def llm_node(self, chat_ctx: lk_llm.ChatContext, tools: list[lk_llm.Tool], model_settings: ModelSettings) -> Any:
        """The framework's LLM node, with the tools' schemas built once per call (tool_schemas.py).

        WHY a new list: the framework writes back edits of ``tools`` to the turn's tool context,
        which runs the tool calls; that must keep the real tools.
        """
        described = self.tool_schemas.describe(tools, tool_schema_format(self._session_llm()))
        return Agent.default.llm_node(self, chat_ctx, described, model_settings)

    def _session_llm(self) -> object:
        return self.llm if isinstance(self.llm, lk_llm.LLM) else self.session.llm

    greeting_extra: str = ""  # said right after the greeting (e.g. the recording notice)

    # -- the caller's language -----------------------------------------------------------

    def on_asr_final(self, ev: lk_stt.SpeechEvent) -> None:
        """Each ASR final, before the reply to it starts: the caller's language.

        WHY here and not when the turn commits: the reply is generated (and synthesised)
        speculatively from the final, so the voice must already be the new language's. The
        ASR's language tag is evidence only when it differs from the language the ASR was asked
        for: a monolingual model tags what it was told, a multilingual one what it heard.
        """
        if not ev.alternatives:
            return
        alt = ev.alternatives[0]
        tag = phrases.base(str(alt.language)) if alt.language else None
        self._heard = True
        heard = tag if tag and tag != phrases.base(self.spec.asr_language) else None
        if self.languages.observe(alt.text, asr_language=heard):
            self._switch_language(self.languages.current)

    async def on_user_turn_completed(self, turn_ctx: Any, new_message: Any) -> None:
        """Typed turns (tests, text mode) have no ASR final: detect the language on the message."""
        heard, self._heard = self._heard, False
        text = getattr(new_message, "text_content", None) or ""
        if not heard and text and self.languages.observe(text):
            self._switch_language(self.languages.current)
        self._switch_asr(self.language)

    def _switch_asr(self, language: str) -> None:
        """Opens the ASR in ``language`` if the line has a model for it (``asr.models``).

        WHY at the commit and not at the final: the turn-taker of the running ASR stream still
        holds the turn's end; a new stream (the framework restarts ``stt_node``) serves from the
        caller's next words on.
        """
        if self._asr_for is None or language == self._asr_language:
            return
        stt = self._asr_for(language)
        if stt is not None:
            self._asr_language = language
            self.update_options(stt=stt)
            log.info("ASR switched", extra={"language": language})

    def _switch_language(self, language: str) -> None:
        """The call continues in ``language``: TTS voice, prompt, fixed phrases, listeners."""
        self.language = language
        log.info("caller language switched", extra={"language": language})
        switch_tts_language(self.session.tts, self.spec, language)
        task = asyncio.ensure_future(
            self.update_instructions(
                instructions_for(self.spec, self._now().date(), language) + booking_instructions(self.spec, self.pms)
            )
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        for listener in list(self.language_listeners):
            listener(language)

    async def on_enter(self) -> None:
        # the tools' schemas are built now, before the caller speaks, not on the first reply
        self.tool_schemas.describe(lk_llm.ToolContext(self.tools).flatten(), tool_schema_format(self._session_llm()))
        # the call may start in another of the line's languages (VoiceSession spec.language)
        switch_tts_language(self.session.tts, self.spec, self.language)
        self._switch_asr(self.language)
        if self._greet:
            text = greeting(self.spec, self.language)
            self.session.say(f"{text} {self.greeting_extra}".strip(), allow_interruptions=True)

    # -- DTMF ----------------------------------------------------------------------------

    async def on_dtmf(self, digit: str) -> None:
        """Keypad input from the SIP leg: 0 reaches the front desk at any point."""
        if digit == "0":
            self.session.interrupt()
            await self.to_front_desk(reason="dtmf")

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
        self.actions.record_intent(Intent.CHECK_AVAILABILITY)
        try:
            request = make_request(check_in, nights, guests, today=self._now().date(), room_code=room_type)
            offers = await self.pms.availability(request)
        except PmsUnavailable as err:
            return pms_unavailable_reply(err)
        except PmsError as err:
            return f"Could not check: {err}."
        if not offers:
            return f"No room type is available for {guests} guests on those dates."
        return (
            f"Available from {request.check_in.isoformat()} for {request.nights} nights, {guests} guests: "
            + "; ".join(o.spoken() for o in offers[:3])
            + (". Rates are from-rates; staff confirm the booking." if isinstance(self.pms, FactsPms) else f". Totals from {PMS_SOURCE}.")
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
        self.actions.record_intent(Intent.CHECK_AVAILABILITY)
        try:
            request = make_request(check_in, nights, guests, today=self._now().date(), room_code=room_type)
            offer = await self.pms.quote(request)
        except PmsUnavailable as err:
            return pms_unavailable_reply(err)
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
        self.actions.record_intent(_BOOKING_INTENTS[kind])
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
        self.actions.record_intent(Intent.REQUEST_INFO)
        answer = answer_from_facts(self.spec.facts, question)
        # caller-facing words (a model relays them; the rule policy speaks them as they are)
        return answer or phrase(phrases.NO_ANSWER, self.language)

    @function_tool
    async def transfer_to_front_desk(self, context: RunContext[Any], reason: str = "") -> str | None:
        """Transfer the caller to a person at the front desk.

        Args:
            reason: Short reason for the transfer.
        """
        return await self.to_front_desk(reason="caller")

    async def to_front_desk(self, *, reason: str) -> str | None:
        """Transfer the caller if the desk is open (the call then ends); otherwise, or when the
        transfer fails, return what the LLM should say instead (None: already said or ended).

        ``reason`` (caller, dtmf, watchdog) is logged; on ``dtmf`` the closed-desk notice is spoken here.
        """
        self.actions.record_intent(Intent.SPEAK_TO_HUMAN)
        if not desk_is_open(self.spec.front_desk.hours, self._now()):
            if reason == "dtmf":
                self.session.say(phrase(_DESK_CLOSED, self.language))
                return None
            return phrase(_DESK_CLOSED, self.language)
        handle = self.session.say(phrase(_TRANSFERRING, self.language), allow_interruptions=False)
        try:
            await asyncio.wait_for(handle.wait_for_playout(), ANNOUNCE_TIMEOUT_S)
        except TimeoutError:
            log.warning("the transfer announcement did not play out; transferring anyway", extra={"reason": reason})
        try:
            await self.actions.transfer_to_front_desk(self.spec.front_desk.transfer_to)
        except Exception:
            log.warning("front-desk transfer failed", extra={"reason": reason})
            if reason == "dtmf":  # no LLM turn follows a key press: say it here (found by tests/e2e)
                self.session.say(phrase(phrases.TRANSFER_FAILED, self.language))
                return None
            return phrase(phrases.TRANSFER_FAILED, self.language)
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
        self.actions.record_intent(Intent.SPEAK_TO_HUMAN)
        if not message.strip():
            return "Not recorded: the message is empty."
        reference = await self.actions.save_request(
            "message",
            {"name": name.strip(), "message": message.strip(), "callback_number": callback_number.strip()},
        )
        return phrase(phrases.MESSAGE_TAKEN, self.language, reference=reference)

    @function_tool
    async def end_call(self, context: RunContext[Any]) -> None:
        """End the call politely when the caller says goodbye or has nothing else."""
        await self.say_goodbye_and_end(EndReason.AGENT_ENDED)

    async def say_goodbye_and_end(self, reason: EndReason) -> None:
        if self._ending:
            return
        self._ending = True
        self.actions.record_intent(Intent.GOODBYE)
        handle = self.session.say(goodbye(self.spec, self.language), allow_interruptions=False)
        await handle.wait_for_playout()
        await self.actions.end_call(reason)


def switch_tts_language(tts: Any, spec: HotelLineSpec, language: str) -> None:
    """Points the TTS at ``language``: the line's voice for it (``tts.voices``) if the engine takes a voice id."""
    update = getattr(tts, "update_options", None)
    if update is None:
        return
    params = inspect.signature(update).parameters
    options: dict[str, Any] = {}
    if "language" in params:
        options["language"] = language
    if "voice_id" in params:
        options["voice_id"] = spec.tts.voices.get(language, spec.tts.voice_id)
    if options:
        update(**options)


def stt_event_text(ev: lk_stt.SpeechEvent) -> str:
    return ev.alternatives[0].text if ev.alternatives else ""
