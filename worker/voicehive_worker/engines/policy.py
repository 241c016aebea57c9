"""The deterministic hotel dialogue policy: intent + slots + the line's facts -> a reply or a tool call.

WHY deterministic: it is the demo's "LLM" and the fallback when Azure OpenAI is down, so it must
give the same answer to the same call every time, never invent a fact, and cost microseconds.
It is stateless: the dialogue state is recomputed from the conversation (what the caller said,
which tools ran), so it runs inside any AgentSession exactly like a chat-completion model.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from voicehive.api.models import HotelFacts, HotelLineSpec, RoomType
from voicehive.intents import Intent, classify, guess_language
from voicehive.negation import split_negation
from voicehive_worker import phrases
from voicehive_worker.language import replay
from voicehive_worker.phrases import is_model_instruction
from voicehive_worker.pms import PMS_SOURCE

from .slots import MONTHS, WEEKDAYS, Slots, extract_slots, fold
from .text import base_language, clock_time

TASK_INTENTS = (Intent.BOOK_ROOM, Intent.CHECK_AVAILABILITY, Intent.MODIFY_BOOKING, Intent.CANCEL_BOOKING)
_MESSAGE = re.compile(r"\b(leave|take|pass on) (a |my )?message\b|\bmessage for\b|\bnachricht\b|\blaisser un message\b|\bmensaje\b|\brecado\b|\bmessaggio\b")
_YES = r"\b(yes|yeah|yep|sure|okay|ok|please do|go ahead|ja|gerne|gern|oui|volontiers|si|claro|certo|va bene|d accordo)\b"

PHRASES: dict[str, dict[str, str]] = {
    "ask_dates": {
        "en": "Of course. On which date would you like to arrive, and for how many nights?",
        "de": "Gern. An welchem Datum möchten Sie anreisen, und für wie viele Nächte?",
        "fr": "Bien sûr. À quelle date souhaitez-vous arriver, et pour combien de nuits ?",
        "es": "Por supuesto. ¿Qué día desea llegar y cuántas noches?",
        "it": "Certamente. In che data vorrebbe arrivare, e per quante notti?",
    },
    "ask_nights": {
        "en": "For how many nights?",
        "de": "Für wie viele Nächte?",
        "fr": "Pour combien de nuits ?",
        "es": "¿Para cuántas noches?",
        "it": "Per quante notti?",
    },
    "ask_guests": {
        "en": "For how many guests?",
        "de": "Für wie viele Personen?",
        "fr": "Pour combien de personnes ?",
        "es": "¿Para cuántas personas?",
        "it": "Per quante persone?",
    },
    "ask_name": {
        "en": "May I have your name for the booking?",
        "de": "Auf welchen Namen darf ich die Buchung aufnehmen?",
        "fr": "À quel nom dois-je enregistrer la réservation ?",
        "es": "¿A nombre de quién hago la reserva?",
        "it": "A che nome registro la prenotazione?",
    },
    "ask_cancel": {
        "en": "I can pass your cancellation to our staff. Under which name is the booking, and when do you arrive?",
        "de": "Ich gebe Ihre Stornierung an unser Team weiter. Auf welchen Namen läuft die Buchung, und wann reisen Sie an?",
        "fr": "Je transmets votre annulation à notre équipe. À quel nom est la réservation, et quelle est la date d'arrivée ?",
        "es": "Paso su cancelación a nuestro equipo. ¿A nombre de quién está la reserva y cuándo llega?",
        "it": "Inoltro la cancellazione al nostro staff. A che nome è la prenotazione, e quando arriva?",
    },
    "offer": {
        "en": "Good news: the {room} is available from {date} for {nights} nights, at {rate} {currency} per night, {total} {currency} in total. Shall I book it for you?",
        "de": "Gute Nachricht: Das {room} ist ab {date} für {nights} Nächte frei, für {rate} {currency} pro Nacht, insgesamt {total} {currency}. Soll ich es für Sie buchen?",
        "fr": "Bonne nouvelle : la {room} est disponible à partir du {date} pour {nights} nuits, à {rate} {currency} la nuit, {total} {currency} au total. Voulez-vous que je la réserve ?",
        "es": "Buenas noticias: la {room} está disponible desde el {date} por {nights} noches, a {rate} {currency} por noche, {total} {currency} en total. ¿Quiere que la reserve?",
        "it": "Buone notizie: la {room} è disponibile dal {date} per {nights} notti, a {rate} {currency} a notte, {total} {currency} in totale. Vuole che la prenoti?",
    },
    "offer_many": {
        "en": "From {date} for {nights} nights we have: {options}. Which would you like?",
        "de": "Ab {date} für {nights} Nächte haben wir: {options}. Was möchten Sie?",
        "fr": "À partir du {date} pour {nights} nuits, nous avons : {options}. Laquelle préférez-vous ?",
        "es": "Desde el {date} por {nights} noches tenemos: {options}. ¿Cuál prefiere?",
        "it": "Dal {date} per {nights} notti abbiamo: {options}. Quale preferisce?",
    },
    "option": {
        "en": "the {room} at {rate} {currency} per night",
        "de": "das {room} für {rate} {currency} pro Nacht",
        "fr": "la {room} à {rate} {currency} la nuit",
        "es": "la {room} a {rate} {currency} por noche",
        "it": "la {room} a {rate} {currency} a notte",
    },
    "none_available": {
        "en": "I am sorry, I have no room for {guests} guests on those dates. Would you like to try other dates, or speak to the front desk?",
        "de": "Leider habe ich für {guests} Personen an diesen Tagen nichts frei. Möchten Sie andere Daten probieren oder mit der Rezeption sprechen?",
        "fr": "Désolé, je n'ai pas de chambre pour {guests} personnes à ces dates. Voulez-vous essayer d'autres dates ou parler à la réception ?",
        "es": "Lo siento, no tengo habitación para {guests} personas en esas fechas. ¿Prueba otras fechas o prefiere hablar con recepción?",
        "it": "Mi dispiace, non ho camere per {guests} persone in quelle date. Vuole provare altre date o parlare con la reception?",
    },
    "recorded": {
        "en": "Thank you, {name}. I have recorded your request for the {room} from {date} for {nights} nights, reference {reference}. Our staff will confirm it shortly. Is there anything else I can help you with?",
        "de": "Danke, {name}. Ich habe Ihre Anfrage für das {room} ab {date} für {nights} Nächte aufgenommen, Referenz {reference}. Unser Team bestätigt sie in Kürze. Kann ich sonst noch helfen?",
        "fr": "Merci, {name}. J'ai enregistré votre demande pour la {room} à partir du {date} pour {nights} nuits, référence {reference}. Notre équipe vous la confirmera. Puis-je vous aider pour autre chose ?",
        "es": "Gracias, {name}. He registrado su solicitud de la {room} desde el {date} por {nights} noches, referencia {reference}. Nuestro equipo se la confirmará. ¿Algo más en que pueda ayudarle?",
        "it": "Grazie, {name}. Ho registrato la richiesta per la {room} dal {date} per {nights} notti, riferimento {reference}. Il nostro staff la confermerà a breve. Posso aiutarla in altro?",
    },
    "recorded_change": {
        "en": "Thank you, {name}. I have passed your request to our staff, reference {reference}; they will confirm it shortly. Anything else?",
        "de": "Danke, {name}. Ich habe Ihre Anfrage an unser Team weitergegeben, Referenz {reference}; es meldet sich in Kürze. Sonst noch etwas?",
        "fr": "Merci, {name}. J'ai transmis votre demande à notre équipe, référence {reference} ; elle vous confirmera rapidement. Autre chose ?",
        "es": "Gracias, {name}. He pasado su solicitud a nuestro equipo, referencia {reference}; se la confirmarán pronto. ¿Algo más?",
        "it": "Grazie, {name}. Ho inoltrato la richiesta al nostro staff, riferimento {reference}; la confermeranno a breve. Altro?",
    },
    "times": {
        "en": "Check-in is from {check_in} and check-out is until {check_out}.",
        "de": "Check-in ist ab {check_in}, Check-out bis {check_out}.",
        "fr": "L'arrivée se fait à partir de {check_in} et le départ jusqu'à {check_out}.",
        "es": "La entrada es a partir de {check_in} y la salida hasta {check_out}.",
        "it": "Il check-in è dalle {check_in} e il check-out entro le {check_out}.",
    },
    "price": {
        "en": "The {room} is from {rate} {currency} per night, for up to {guests} guests.",
        "de": "Das {room} kostet ab {rate} {currency} pro Nacht, für bis zu {guests} Personen.",
        "fr": "La {room} est à partir de {rate} {currency} la nuit, jusqu'à {guests} personnes.",
        "es": "La {room} cuesta desde {rate} {currency} por noche, hasta {guests} personas.",
        "it": "La {room} costa da {rate} {currency} a notte, fino a {guests} persone.",
    },
    "rooms": {
        "en": "We have {options}.",
        "de": "Wir haben {options}.",
        "fr": "Nous avons {options}.",
        "es": "Tenemos {options}.",
        "it": "Abbiamo {options}.",
    },
    "address": {
        "en": "The hotel is at {address}.",
        "de": "Das Hotel liegt in der {address}.",
        "fr": "L'hôtel se trouve {address}.",
        "es": "El hotel está en {address}.",
        "it": "L'hotel si trova in {address}.",
    },
    "no_answer": phrases.NO_ANSWER,
    "complaint": {
        "en": "I am very sorry to hear that. Let me connect you to the front desk so someone can help right away.",
        "de": "Das tut mir sehr leid. Ich verbinde Sie mit der Rezeption, damit Ihnen sofort geholfen wird.",
        "fr": "Je suis vraiment désolé. Je vous passe la réception pour qu'on vous aide tout de suite.",
        "es": "Lo siento mucho. Le paso con recepción para que le ayuden enseguida.",
        "it": "Mi dispiace molto. La metto in contatto con la reception perché la aiutino subito.",
    },
    "transfer": {
        "en": "Of course, I will connect you to the front desk.",
        "de": "Natürlich, ich verbinde Sie mit der Rezeption.",
        "fr": "Bien sûr, je vous passe la réception.",
        "es": "Por supuesto, le paso con recepción.",
        "it": "Certo, la metto in contatto con la reception.",
    },
    "goodbye": {
        "en": "Thank you for calling. Goodbye!",
        "de": "Vielen Dank für Ihren Anruf. Auf Wiederhören!",
        "fr": "Merci de votre appel. Au revoir !",
        "es": "Gracias por su llamada. ¡Adiós!",
        "it": "Grazie per la chiamata. Arrivederci!",
    },
    "not_understood": {
        "en": "Sorry, I did not catch that. I can check rooms and prices, take a booking request, or answer questions about the hotel.",
        "de": "Entschuldigung, das habe ich nicht verstanden. Ich kann Zimmer und Preise prüfen, eine Buchungsanfrage aufnehmen oder Fragen zum Hotel beantworten.",
        "fr": "Pardon, je n'ai pas compris. Je peux vérifier les chambres et les prix, prendre une demande de réservation ou répondre à vos questions sur l'hôtel.",
        "es": "Perdone, no le he entendido. Puedo consultar habitaciones y precios, tomar una solicitud de reserva o responder preguntas sobre el hotel.",
        "it": "Mi scusi, non ho capito. Posso verificare camere e prezzi, registrare una richiesta di prenotazione o rispondere a domande sull'hotel.",
    },
    "ask_message": {
        "en": "Of course. Please tell me your name and your message, and I will pass it on to our staff.",
        "de": "Gern. Sagen Sie mir bitte Ihren Namen und Ihre Nachricht, ich gebe sie an unser Team weiter.",
        "fr": "Bien sûr. Dites-moi votre nom et votre message, je le transmettrai à notre équipe.",
        "es": "Por supuesto. Dígame su nombre y su mensaje y se lo paso a nuestro equipo.",
        "it": "Certo. Mi dica il suo nome e il messaggio, lo passerò al nostro staff.",
    },
    "message_noted": {
        "en": "Thank you, I have noted your message for our staff.",
        "de": "Danke, ich habe Ihre Nachricht für unser Team notiert.",
        "fr": "Merci, j'ai noté votre message pour notre équipe.",
        "es": "Gracias, he anotado su mensaje para nuestro equipo.",
        "it": "Grazie, ho annotato il suo messaggio per il nostro staff.",
    },
    "tool_error": {
        "en": "I am sorry, {error}. Could you tell me again?",
        "de": "Entschuldigung: {error}. Können Sie es noch einmal sagen?",
        "fr": "Désolé : {error}. Pouvez-vous répéter ?",
        "es": "Lo siento: {error}. ¿Puede repetirlo?",
        "it": "Mi scusi: {error}. Può ripetere?",
    },
}


_SLOT_UNITS = frozenset(word for table in (WEEKDAYS, MONTHS) for words in table.values() for word in words)


def affirmed(text: str) -> str:
    """What the caller affirms: negated words dropped, so "not Friday, Saturday" reads as Saturday."""
    return split_negation(text, guess_language(text), _SLOT_UNITS).kept


def say(key: str, language: str, **values: Any) -> str:
    table = PHRASES[key]
    text = table.get(base_language(language), table["en"]).format(**values)
    return text.replace("..", ".").replace(".,", ",")


def spoken_date(date: dt.date, language: str) -> str:
    """'Thursday, March 12' / 'Donnerstag, 12. März' - what a receptionist says."""
    lang = base_language(language)
    weekday = WEEKDAYS[lang][date.weekday()]
    month = MONTHS[lang][date.month - 1]
    if lang == "de":
        month = {"marz": "März"}.get(month, month.capitalize())
        return f"{weekday.capitalize()}, {date.day}. {month}"
    if lang == "en":
        return f"{weekday.capitalize()}, {month.capitalize()} {date.day}"
    accents = {
        "fevrier": "février", "aout": "août", "decembre": "décembre", "miercoles": "miércoles",
        "sabado": "sábado", "lunedi": "lunedì", "martedi": "martedì", "mercoledi": "mercoledì",
        "giovedi": "giovedì", "venerdi": "venerdì",
    }
    weekday, month = accents.get(weekday, weekday), accents.get(month, month)
    if lang == "es":
        return f"{weekday} {date.day} de {month}"
    return f"{weekday} {date.day} {month}"


def _amount(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Decision:
    """What the policy does this turn: say ``text``, or call ``tool`` (then say its outcome)."""

    intent: Intent
    confidence: float
    language: str
    text: str = ""
    tool: ToolCall | None = None
    slots: Slots = field(default_factory=Slots)


@dataclass(frozen=True)
class Turn:
    """One item of the conversation as the policy sees it."""

    role: str  # "user", "assistant", "tool_call", "tool_output"
    text: str
    tool: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    is_error: bool = False


class HotelPolicy:
    """``HotelPolicy(spec).decide(conversation, tools=...)``: the next move of the receptionist."""

    def __init__(self, spec: HotelLineSpec, *, today: dt.date | None = None) -> None:
        self.spec = spec
        self.facts: HotelFacts = spec.facts
        self._today = today

    def today(self) -> dt.date:
        if self._today is not None:
            return self._today
        from zoneinfo import ZoneInfo

        return dt.datetime.now(ZoneInfo(self.spec.time_zone)).date()

    def caller_language(self, conversation: list[Turn]) -> str:
        """The language the caller speaks among the line's, with the worker's hysteresis (``language.replay``)."""
        return replay(self.spec.languages, [t.text for t in conversation if t.role == "user"])

    def slots(self, conversation: list[Turn]) -> Slots:
        """The stay so far; a correction ("no, not Friday, Saturday") replaces the earlier value."""
        state = Slots()
        for turn in conversation:
            if turn.role == "user":
                state = state.merged(extract_slots(affirmed(turn.text), self.facts, self.today()))
        return state

    def room(self, code: str | None) -> RoomType | None:
        return next((r for r in self.facts.room_types if r.code == code), None)

    def _task(self, conversation: list[Turn]) -> Intent | None:
        """The booking-type task in progress (questions in between do not end it)."""
        task: Intent | None = None
        for turn in conversation:
            if turn.role == "user":
                intent = classify(turn.text).intent
                if intent in TASK_INTENTS:
                    task = Intent.BOOK_ROOM if intent == Intent.CHECK_AVAILABILITY and task == Intent.BOOK_ROOM else intent
            if turn.role == "tool_call" and turn.tool == "capture_booking_request":
                task = None
        return task

    def decide(self, conversation: list[Turn], tools: frozenset[str] = frozenset()) -> Decision:
        language = self.caller_language(conversation)
        last_user = next((t for t in reversed(conversation) if t.role == "user"), None)
        if conversation and conversation[-1].role == "tool_output":
            return self._after_tool(conversation, language)
        if last_user is None:
            return Decision(Intent.UNKNOWN, 1.0, language, text=say("not_understood", language))
        result = classify(last_user.text, language)
        intent, confidence = result.intent, result.confidence
        slots = self.slots(conversation)
        task = self._task(conversation)
        said_yes = re.search(_YES, fold(last_user.text)) is not None
        new_slots = extract_slots(affirmed(last_user.text), self.facts, self.today())

        message = self._message(conversation, last_user, language, tools)
        if message is not None:
            return message
        if intent == Intent.SPEAK_TO_HUMAN:
            if "transfer_to_front_desk" in tools:
                return Decision(intent, confidence, language, tool=ToolCall("transfer_to_front_desk", {"reason": "caller asked"}))
            return Decision(intent, confidence, language, text=say("transfer", language))
        if intent == Intent.GOODBYE and not (task and new_slots.name):
            if "end_call" in tools:
                return Decision(intent, confidence, language, tool=ToolCall("end_call", {}))
            return Decision(intent, confidence, language, text=say("goodbye", language))
        if intent == Intent.COMPLAINT:
            if "transfer_to_front_desk" in tools:
                return Decision(intent, confidence, language, text=say("complaint", language), tool=ToolCall("transfer_to_front_desk", {"reason": "complaint"}))
            return Decision(intent, confidence, language, text=say("complaint", language))
        if intent == Intent.REQUEST_INFO and not (task and new_slots != Slots()):
            return self._answer(last_user.text, intent, confidence, language, tools)

        if intent in TASK_INTENTS or (task and (new_slots != Slots() or said_yes)):
            effective = intent if intent in TASK_INTENTS else (task or intent)
            if intent == Intent.UNKNOWN and task:
                effective = task
            if said_yes and effective == Intent.CHECK_AVAILABILITY:
                effective = Intent.BOOK_ROOM
            return self._booking_flow(conversation, effective, confidence, language, slots, tools)
        if intent == Intent.REQUEST_INFO:
            return self._answer(last_user.text, intent, confidence, language, tools)
        return Decision(intent, confidence, language, text=say("not_understood", language))

    # -- messages for the staff --------------------------------------------------------------

    def _message(self, conversation: list[Turn], last_user: Turn, language: str, tools: frozenset[str]) -> Decision | None:
        """Leaving a message: asked for it, gave it after we asked, or said yes to our offer of one."""
        asked = self._last_assistant(conversation)
        folded = fold(last_user.text)
        request = _MESSAGE.search(folded)
        said_yes = re.search(_YES, folded) is not None
        wants = request is not None
        given = request is not None and len(folded[request.end():].split()) >= 5  # the message came with it
        if asked == "ask_message" or given:
            name = self.slots(conversation).name or ""
            if "take_message" in tools:
                call = ToolCall("take_message", {"name": name, "message": last_user.text})
                return Decision(Intent.UNKNOWN, 1.0, language, tool=call)
            return Decision(Intent.UNKNOWN, 1.0, language, text=say("message_noted", language))
        if wants or (said_yes and asked == "offered_message"):
            return Decision(Intent.UNKNOWN, 1.0, language, text=say("ask_message", language))
        return None

    def _last_assistant(self, conversation: list[Turn]) -> str | None:
        """What our last spoken turn did: 'ask_message', 'offered_message' or None."""
        offers = (*phrases.DESK_CLOSED.values(), *phrases.TRANSFER_FAILED.values(), *phrases.NO_ANSWER.values())
        for turn in reversed(conversation[:-1]):
            if turn.role == "user":
                return None
            if turn.role == "assistant" and turn.text:
                if turn.text in PHRASES["ask_message"].values():
                    return "ask_message"
                return "offered_message" if any(o in turn.text for o in offers) else None
        return None

    # -- booking ---------------------------------------------------------------------------

    def _checked(self, conversation: list[Turn], slots: Slots) -> bool:
        """Whether availability was already checked for exactly these slots."""
        for turn in conversation:
            if turn.role == "tool_call" and turn.tool == "check_availability":
                args = turn.arguments
                if (
                    args.get("check_in") == (slots.check_in.isoformat() if slots.check_in else None)
                    and args.get("nights") == slots.effective_nights
                ):
                    return True
        return False

    def _booking_flow(
        self, conversation: list[Turn], intent: Intent, confidence: float, language: str, slots: Slots, tools: frozenset[str]
    ) -> Decision:
        room = self.room(slots.room_code)
        guests = slots.guests or (min(2, room.max_guests) if room else None)
        nights = slots.effective_nights
        if intent == Intent.CANCEL_BOOKING:
            if not (slots.name and slots.check_in):
                return Decision(intent, confidence, language, text=say("ask_cancel", language), slots=slots)
            return self._capture(intent, confidence, language, slots, "cancellation", tools)
        if slots.check_in is None:
            return Decision(intent, confidence, language, text=say("ask_dates", language), slots=slots)
        if nights is None:
            return Decision(intent, confidence, language, text=say("ask_nights", language), slots=slots)
        if guests is None:
            return Decision(intent, confidence, language, text=say("ask_guests", language), slots=slots)
        slots = Slots(slots.check_in, slots.check_out, nights, guests, slots.room_code, slots.name)
        if not self._checked(conversation, slots) and intent != Intent.MODIFY_BOOKING:
            args: dict[str, Any] = {"check_in": slots.check_in.isoformat() if slots.check_in else "", "nights": nights, "guests": guests}
            if room:
                args["room_type"] = room.name
            if "check_availability" in tools:
                return Decision(intent, confidence, language, tool=ToolCall("check_availability", args), slots=slots)
            return Decision(intent, confidence, language, text=self.offer_text(slots, language), slots=slots)
        if intent == Intent.CHECK_AVAILABILITY:
            return Decision(intent, confidence, language, text=self.offer_text(slots, language), slots=slots)
        if not slots.name:
            return Decision(intent, confidence, language, text=say("ask_name", language), slots=slots)
        kind = "change" if intent == Intent.MODIFY_BOOKING else "new_booking"
        return self._capture(intent, confidence, language, slots, kind, tools)

    def _capture(self, intent: Intent, confidence: float, language: str, slots: Slots, kind: str, tools: frozenset[str]) -> Decision:
        room = self.room(slots.room_code)
        offers = self.offers(slots)
        if room is None and offers:
            room = self.room(offers[0][0].code)
        args = {
            "kind": kind,
            "guest_name": slots.name or "",
            "check_in": slots.check_in.isoformat() if slots.check_in else "",
            "nights": slots.effective_nights or 1,
            "guests": slots.guests or (min(2, room.max_guests) if room else 1),
            "room_type": room.name if room else "",
        }
        if "capture_booking_request" in tools:
            return Decision(intent, confidence, language, tool=ToolCall("capture_booking_request", args), slots=slots)
        return Decision(intent, confidence, language, text=self._recorded_text(args, "-", language), slots=slots)

    def offers(self, slots: Slots) -> list[tuple[RoomType, float]]:
        """Room types that fit the party (and the requested type), cheapest first: (room, total)."""
        nights = slots.effective_nights or 1
        rooms = [r for r in self.facts.room_types if r.rooms > 0 and r.max_guests >= (slots.guests or 1)]
        if slots.room_code:
            rooms = [r for r in rooms if r.code == slots.room_code]
        return sorted(((r, r.rate_from * nights) for r in rooms), key=lambda pair: pair[1])

    def offer_text(self, slots: Slots, language: str) -> str:
        offers = self.offers(slots)
        date = spoken_date(slots.check_in, language) if slots.check_in else ""
        nights = slots.effective_nights or 1
        currency = self.facts.currency
        if not offers:
            return say("none_available", language, guests=slots.guests or 1)
        if len(offers) == 1 or slots.room_code:
            room, total = offers[0]
            return say("offer", language, room=room.name, date=date, nights=nights, rate=_amount(room.rate_from), total=_amount(total), currency=currency)
        options = ", ".join(say("option", language, room=r.name, rate=_amount(r.rate_from), currency=currency) for r, _ in offers[:3])
        return say("offer_many", language, date=date, nights=nights, options=options)

    def _recorded_text(self, args: dict[str, Any], reference: str, language: str) -> str:
        date = spoken_date(dt.date.fromisoformat(args["check_in"]), language) if args.get("check_in") else ""
        if args.get("kind") == "new_booking":
            return say("recorded", language, name=args.get("guest_name", ""), room=args.get("room_type") or "room", date=date, nights=args.get("nights", 1), reference=reference)
        return say("recorded_change", language, name=args.get("guest_name", ""), reference=reference)

    # -- questions -------------------------------------------------------------------------

    def answer_text(self, question: str, language: str) -> str | None:
        """An answer from the line's facts, or None."""
        folded = fold(question)
        facts = self.facts
        if re.search(r"\b(check ?in|check ?out|arrive|arrival|leave|departure|anreise|abreise|arrivee|depart|entrada|salida|arrivo|partenza)\b", folded):
            return say("times", language, check_in=clock_time(facts.check_in, language), check_out=clock_time(facts.check_out, language))
        room = None
        from .slots import match_room

        room = match_room(folded, list(facts.room_types))
        if re.search(r"\b(price|prices|cost|costs|rate|rates|how much|kostet|preis\w*|prix|coute|tarif\w*|cuesta|precio\w*|costa|prezz\w*)\b", folded):
            if room:
                return say("price", language, room=room.name, rate=_amount(room.rate_from), currency=facts.currency, guests=room.max_guests)
            options = ", ".join(say("option", language, room=r.name, rate=_amount(r.rate_from), currency=facts.currency) for r in facts.room_types)
            return say("rooms", language, options=options) if options else None
        if re.search(r"\b(room types?|rooms do you have|what rooms|welche zimmer|quelles chambres|que habitaciones|quali camere)\b", folded):
            options = ", ".join(say("option", language, room=r.name, rate=_amount(r.rate_from), currency=facts.currency) for r in facts.room_types)
            return say("rooms", language, options=options) if options else None
        if facts.address and re.search(r"\b(address|where|located|location|adresse|wo liegt|ou se trouve|direccion|donde|indirizzo|dove)\b", folded) and not re.search(r"\b(airport|flughafen|aeroport|aeropuerto|aeroporto|from the)\b", folded):
            return say("address", language, address=facts.address)
        from voicehive_worker.pms import answer_from_facts

        answer = answer_from_facts(facts, question)
        if answer:
            return answer
        words = set(folded.split()) - {"is", "there", "do", "you", "have", "a", "the", "any", "what", "how", "much"}
        for amenity in facts.amenities:
            if words & set(fold(amenity).split()):
                return amenity[0].upper() + amenity[1:] + "."
        return None

    def _answer(self, question: str, intent: Intent, confidence: float, language: str, tools: frozenset[str]) -> Decision:
        answer = self.answer_text(question, language)
        if answer is None and "answer_question" in tools:
            return Decision(intent, confidence, language, tool=ToolCall("answer_question", {"question": question}))
        return Decision(intent, confidence, language, text=answer or say("no_answer", language))

    # -- after a tool ran ------------------------------------------------------------------

    def _after_tool(self, conversation: list[Turn], language: str) -> Decision:
        output = conversation[-1]
        call = next((t for t in reversed(conversation) if t.role == "tool_call" and t.tool == output.tool), None)
        args = call.arguments if call else {}
        last_user = next((t for t in reversed(conversation) if t.role == "user"), None)
        result = classify(last_user.text, language) if last_user else None
        intent = result.intent if result else Intent.UNKNOWN
        confidence = result.confidence if result else 1.0
        failed = output.is_error or re.match(r"^(Could not|Not recorded)", output.text) is not None
        if failed:
            error = re.sub(r"^(Could not \w+|Not recorded):\s*", "", output.text).rstrip(".")
            return Decision(intent, confidence, language, text=say("tool_error", language, error=error))
        if output.tool == "check_availability" and PMS_SOURCE in output.text.lower():
            # a PMS line: its totals (or its outage) are the answer, never the facts' from-rates
            return Decision(intent, confidence, language, text=caller_facing(output.text, language))
        if output.tool == "check_availability":
            slots = self.slots(conversation)
            slots = Slots(
                dt.date.fromisoformat(args["check_in"]) if args.get("check_in") else slots.check_in,
                None,
                int(args.get("nights") or slots.effective_nights or 1),
                int(args.get("guests") or slots.guests or 1),
                slots.room_code,
                slots.name,
            )
            return Decision(intent, confidence, language, text=self.offer_text(slots, language))
        if output.tool == "capture_booking_request":
            match = re.search(r"reference ([A-Za-z0-9-]+)", output.text)
            return Decision(intent, confidence, language, text=self._recorded_text(args, match.group(1) if match else "-", language))
        if output.tool in ("answer_question", "quote_stay", "take_message", "transfer_to_front_desk"):
            return Decision(intent, confidence, language, text=caller_facing(output.text, language))
        return Decision(intent, confidence, language, text=caller_facing(output.text, language) or say("not_understood", language))


# A sentence that tells the model what to do ("Read the number back.", "Never ask for cards.").
_IMPERATIVE = re.compile(r"^(read|tell|offer|ask|never|do not|don't|quote|say|apologi[sz]e|use|call|mention)\b",
                         re.IGNORECASE)


def caller_facing(tool_output: str, language: str) -> str:
    """A tool's output as the caller may hear it: its sentences written for a model are dropped
    (a booking's confirmation number stays, "Read the confirmation number back." goes)."""
    sentences = re.split(r"(?<=[.!?])\s+", tool_output.strip())
    kept = [s for s in sentences if s and not is_model_instruction(s) and not _IMPERATIVE.match(s)]
    return " ".join(kept) if kept else say("no_answer", language)
