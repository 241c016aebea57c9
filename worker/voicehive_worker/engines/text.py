"""Text normalisation shared by the local engines: what is written vs. what is spoken.

WHY one module: the TTS must say "15:00" as "3 p.m." (eSpeak NG reads "fifteen zero zero"),
the ASR's language model and dictionary need the spoken word forms ("twelfth", not "12th"),
and word error rate is only meaningful when reference and hypothesis are normalised the
same way. num2words covers numbers and ordinals in all five line languages.
"""

from __future__ import annotations

import re
import unicodedata

from num2words import num2words

LINE_LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es", "it")

_ORDINAL_SUFFIX = {
    "en": r"(?:st|nd|rd|th)\b",
    "de": r"\.(?=\s+[A-Za-zÄÖÜäöü])",
    "fr": r"(?:er|e|ème|eme)\b",
    "es": r"(?:º|o|a)\b",
    "it": r"(?:º|°)",
}
_CURRENCY_WORDS = {
    "en": {"EUR": "euros", "€": "euros", "GBP": "pounds", "£": "pounds", "USD": "dollars", "$": "dollars", "CHF": "francs"},
    "de": {"EUR": "Euro", "€": "Euro", "GBP": "Pfund", "£": "Pfund", "USD": "Dollar", "$": "Dollar", "CHF": "Franken"},
    "fr": {"EUR": "euros", "€": "euros", "GBP": "livres", "£": "livres", "USD": "dollars", "$": "dollars", "CHF": "francs"},
    "es": {"EUR": "euros", "€": "euros", "GBP": "libras", "£": "libras", "USD": "dólares", "$": "dólares", "CHF": "francos"},
    "it": {"EUR": "euro", "€": "euro", "GBP": "sterline", "£": "sterline", "USD": "dollari", "$": "dollari", "CHF": "franchi"},
}


def base_language(language: str | None) -> str:
    """``"de-DE"`` -> ``"de"``; anything we cannot speak falls back to English."""
    base = (language or "en").strip().lower().replace("_", "-").split("-", 1)[0]
    return base if base in LINE_LANGUAGES else "en"


def clock_time(hhmm: str, language: str) -> str:
    """A 24-hour HH:MM as people say it on the phone in that language (digits kept for TTS)."""
    hour, minute = (int(part) for part in hhmm.split(":"))
    lang = base_language(language)
    if lang == "en":
        suffix = "a.m." if hour < 12 else "p.m."
        h12 = hour % 12 or 12
        if hour == 12 and minute == 0:
            return "noon"
        if hour == 0 and minute == 0:
            return "midnight"
        return f"{h12} {suffix}" if minute == 0 else f"{h12}:{minute:02d} {suffix}"
    if lang == "de":
        return f"{hour} Uhr" if minute == 0 else f"{hour} Uhr {minute}"
    if lang == "fr":
        return f"{hour} heures" if minute == 0 else f"{hour} heures {minute}"
    if lang == "es":
        return f"las {hour}" if minute == 0 else f"las {hour} y {minute}"
    return f"{hour}" if minute == 0 else f"{hour} e {minute}"  # "dalle 15", "entro le 11"


def for_speech(text: str, language: str) -> str:
    """Rewrite what eSpeak NG would read badly: clock times and currency codes."""
    lang = base_language(language)
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text)  # a NUL cannot reach eSpeak's argv; no control char is speech
    text = re.sub(r"\b([01]?[0-9]|2[0-3]):([0-5][0-9])\b", lambda m: clock_time(m.group(0), lang), text)
    words = _CURRENCY_WORDS[lang]
    text = re.sub(
        r"([€£$])\s?(\d+(?:[.,]\d+)?)", lambda m: f"{m.group(2)} {words.get(m.group(1), m.group(1))}", text
    )
    return re.sub(r"\b(EUR|GBP|USD|CHF)\b", lambda m: words.get(m.group(1), m.group(1)), text)


def _number_words(match: re.Match[str], lang: str, ordinal: bool) -> str:
    value = int(match.group(1))
    try:
        return str(num2words(value, lang=lang, to="ordinal" if ordinal else "cardinal"))
    except (NotImplementedError, OverflowError):
        return match.group(1)


def spoken_words(text: str, language: str = "en") -> list[str]:
    """The words a person says for ``text``: lower case, numbers spelled out, no punctuation.

    Used for the ASR vocabulary, the language-model corpus and both sides of word error rate.
    Apostrophes inside words stay ("i'd", "what's"), because the pronouncing dictionary has them.
    """
    lang = base_language(language)
    text = for_speech(text, lang)
    text = unicodedata.normalize("NFC", text)
    text = re.sub(r"\b(\d+)" + _ORDINAL_SUFFIX[lang], lambda m: _number_words(m, lang, True), text)
    text = re.sub(r"\b(\d+)\b", lambda m: _number_words(m, lang, False), text)
    text = text.lower().replace("’", "'")
    text = re.sub(r"(?<=[a-z])\.(?=[a-z])", " ", text)  # a.m. -> a m
    text = re.sub(r"\bwi-?fi\b", "wifi", text)  # one word, however it is written
    text = re.sub(r"[-‐–—/]", " ", text)
    text = re.sub(r"[^\w\s']", " ", text)
    return [word.strip("'") for word in text.split() if word.strip("'")]


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance over words (substitutions + deletions + insertions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_word in enumerate(hypothesis, start=1):
            current[j] = min(
                previous[j] + 1,
                current[j - 1] + 1,
                previous[j - 1] + (ref_word != hyp_word),
            )
        previous = current
    return previous[-1]
