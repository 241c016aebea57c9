"""Every fixed sentence the caller can hear, in each supported language, and the model-text guard.

WHY one module: a fixed phrase (greeting with the AI disclosure, transfer, the watchdog's
fallback, goodbye, what a tool result tells the caller) must exist in every language a line
can run in, and a test checks exactly that; and text written *for a model* ("offer the front
desk", "(take_message)") must never reach the caller, which :func:`is_model_instruction`
recognises for the policy's guard and for the test that scans every spoken reply.
"""

from __future__ import annotations

import re
from typing import Final

SUPPORTED: Final = ("en", "de", "fr", "es", "it")
"""Languages every fixed phrase exists in (the intents, slots and policy cover the same five)."""

LANGUAGE_NAMES: dict[str, str] = {"en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian"}

GREETING: dict[str, str] = {
    "en": "Hello, thank you for calling {hotel}. I am the hotel's automated AI assistant. How can I help you?",
    "de": "Guten Tag, danke für Ihren Anruf im {hotel}. Ich bin der automatische KI-Assistent des Hotels. Wie kann ich helfen?",
    "fr": "Bonjour, merci d'avoir appelé {hotel}. Je suis l'assistant automatique à intelligence artificielle de l'hôtel. Comment puis-je vous aider ?",
    "es": "Hola, gracias por llamar a {hotel}. Soy el asistente automático de inteligencia artificial del hotel. ¿En qué puedo ayudarle?",
    "it": "Buongiorno, grazie per aver chiamato {hotel}. Sono l'assistente automatico di intelligenza artificiale dell'hotel. Come posso aiutarla?",
    "nl": "Goedendag, bedankt voor uw telefoontje naar {hotel}. Ik ben de automatische AI-assistent van het hotel. Waarmee kan ik u helpen?",
    "pt": "Olá, obrigado por ligar para {hotel}. Sou o assistente automático de inteligência artificial do hotel. Como posso ajudar?",
    "pl": "Dzień dobry, dziękujemy za telefon do {hotel}. Jestem automatycznym asystentem AI hotelu. W czym mogę pomóc?",
}
AI_DISCLOSURE: dict[str, str] = {
    "en": "AI assistant",
    "de": "KI-Assistent",
    "fr": "intelligence artificielle",
    "es": "inteligencia artificial",
    "it": "intelligenza artificiale",
}
"""The words of each greeting that disclose the AI (checked by the phrase test)."""
GOODBYE: dict[str, str] = {
    "en": "Thank you for calling {hotel}. Goodbye!",
    "de": "Vielen Dank für Ihren Anruf im {hotel}. Auf Wiederhören!",
    "fr": "Merci d'avoir appelé {hotel}. Au revoir !",
    "es": "Gracias por llamar a {hotel}. ¡Adiós!",
    "it": "Grazie per aver chiamato {hotel}. Arrivederci!",
    "nl": "Bedankt voor uw telefoontje naar {hotel}. Tot ziens!",
    "pt": "Obrigado por ligar para {hotel}. Adeus!",
    "pl": "Dziękujemy za telefon do {hotel}. Do widzenia!",
}
TRANSFERRING: dict[str, str] = {
    "en": "One moment please, I am connecting you to the front desk.",
    "de": "Einen Moment bitte, ich verbinde Sie mit der Rezeption.",
    "fr": "Un instant s'il vous plaît, je vous passe la réception.",
    "es": "Un momento por favor, le paso con la recepción.",
    "it": "Un attimo prego, la metto in contatto con la reception.",
}
DESK_CLOSED: dict[str, str] = {
    "en": "The front desk is not staffed right now. I can take a message and they will call you back.",
    "de": "Die Rezeption ist gerade nicht besetzt. Ich kann gern eine Nachricht aufnehmen.",
    "fr": "La réception n'est pas disponible pour le moment. Je peux prendre un message.",
    "es": "La recepción no está disponible ahora. Puedo tomar un mensaje.",
    "it": "La reception non è disponibile ora. Posso prendere un messaggio.",
}
TRANSFER_FAILED: dict[str, str] = {
    "en": "I am sorry, I could not reach the front desk. I can take a message for them instead.",
    "de": "Entschuldigung, ich konnte die Rezeption nicht erreichen. Ich kann gern eine Nachricht aufnehmen.",
    "fr": "Désolé, je n'ai pas pu joindre la réception. Je peux prendre un message à la place.",
    "es": "Lo siento, no he podido contactar con la recepción. Puedo tomar un mensaje.",
    "it": "Mi dispiace, non sono riuscito a contattare la reception. Posso prendere un messaggio.",
}
NO_ANSWER: dict[str, str] = {
    "en": "I am sorry, I do not have that information. I can connect you to the front desk or take a message.",
    "de": "Das weiß ich leider nicht. Ich kann Sie mit der Rezeption verbinden oder eine Nachricht aufnehmen.",
    "fr": "Je n'ai malheureusement pas cette information. Je peux vous passer la réception ou prendre un message.",
    "es": "Lo siento, no tengo esa información. Puedo pasarle con recepción o tomar un mensaje.",
    "it": "Mi dispiace, non ho questa informazione. Posso passarla alla reception o prendere un messaggio.",
}
MESSAGE_TAKEN: dict[str, str] = {
    "en": "Thank you, I have passed your message to our staff, reference {reference}. They will get back to you.",
    "de": "Danke, ich habe Ihre Nachricht an unser Team weitergegeben, Referenz {reference}. Man meldet sich bei Ihnen.",
    "fr": "Merci, j'ai transmis votre message à notre équipe, référence {reference}. Elle vous recontactera.",
    "es": "Gracias, he pasado su mensaje a nuestro equipo, referencia {reference}. Se pondrán en contacto con usted.",
    "it": "Grazie, ho inoltrato il suo messaggio al nostro staff, riferimento {reference}. La ricontatteranno.",
}
FALLBACK: dict[str, str] = {
    "en": "Sorry, I am having a technical problem. You can press zero at any time to reach the front desk.",
    "de": "Entschuldigung, ich habe ein technisches Problem. Mit der Taste null erreichen Sie jederzeit die Rezeption.",
    "fr": "Désolé, j'ai un problème technique. Appuyez sur zéro pour joindre la réception.",
    "es": "Lo siento, tengo un problema técnico. Pulse cero para hablar con la recepción.",
    "it": "Mi scusi, ho un problema tecnico. Prema zero per parlare con la reception.",
}
GIVE_UP: dict[str, str] = {
    "en": "I am sorry, I cannot help right now.",
    "de": "Es tut mir leid, ich kann gerade nicht helfen.",
    "fr": "Je suis désolé, je ne peux pas vous aider pour le moment.",
    "es": "Lo siento, ahora no puedo ayudarle.",
    "it": "Mi dispiace, ora non posso aiutarla.",
}

FIXED_PHRASES: dict[str, dict[str, str]] = {
    "greeting": GREETING,
    "ai_disclosure": AI_DISCLOSURE,
    "goodbye": GOODBYE,
    "transferring": TRANSFERRING,
    "desk_closed": DESK_CLOSED,
    "transfer_failed": TRANSFER_FAILED,
    "no_answer": NO_ANSWER,
    "message_taken": MESSAGE_TAKEN,
    "fallback": FALLBACK,
    "give_up": GIVE_UP,
}


def base(language: str) -> str:
    """``"de-DE"`` -> ``"de"``."""
    return language.split("-")[0].lower()


def phrase(table: dict[str, str], language: str, **values: str) -> str:
    """A fixed phrase in the caller's language (English when we do not have it)."""
    return table.get(base(language), table["en"]).format(**values)


# Text meant for a model, not a caller: imperatives about "the caller", tool names, prompt talk.
_MODEL_TEXT = re.compile(
    r"\b(offer|apologi[sz]e|tell|ask|inform|remind)\b[^.]{0,40}\b(the caller|them)\b"
    r"|\bthe caller\b"
    r"|\b(the )?hotel facts\b"
    r"|\b(instead|please) \(\w+\)"
    r"|\(\s*[a-z]+(_[a-z]+)+\s*\)"
    r"|\b(check_availability|quote_stay|capture_booking_request|answer_question|transfer_to_front_desk|take_message|end_call)\b"
    r"|\b(system prompt|as an ai language model|tool (call|result|output)|function call)\b"
    r"|\boffer the front desk\b|\boffer to take a message\b",
    re.IGNORECASE,
)


def is_model_instruction(text: str) -> bool:
    """Whether ``text`` reads like an instruction or tool output meant for a model."""
    return _MODEL_TEXT.search(text) is not None
