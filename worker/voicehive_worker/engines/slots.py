"""Slot extraction from caller utterances (dates, nights, guests, room type, name) in 5 languages.

WHY hand-written tables: the deterministic policy must understand both typed text ("12th of
March") and what the offline ASR writes ("the twelfth of march"), in en/de/fr/es/it, with no
model download. Number words come from num2words, so every language gets the same coverage.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import unicodedata
from dataclasses import dataclass, replace

from num2words import num2words

from voicehive.api.models import HotelFacts, RoomType

from .text import LINE_LANGUAGES

MONTHS: dict[str, tuple[str, ...]] = {
    "en": ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"),
    "de": ("januar", "februar", "marz", "april", "mai", "juni", "juli", "august", "september", "oktober", "november", "dezember"),
    "fr": ("janvier", "fevrier", "mars", "avril", "mai", "juin", "juillet", "aout", "septembre", "octobre", "novembre", "decembre"),
    "es": ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre", "noviembre", "diciembre"),
    "it": ("gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno", "luglio", "agosto", "settembre", "ottobre", "novembre", "dicembre"),
}
WEEKDAYS: dict[str, tuple[str, ...]] = {
    "en": ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
    "de": ("montag", "dienstag", "mittwoch", "donnerstag", "freitag", "samstag", "sonntag"),
    "fr": ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"),
    "es": ("lunes", "martes", "miercoles", "jueves", "viernes", "sabado", "domingo"),
    "it": ("lunedi", "martedi", "mercoledi", "giovedi", "venerdi", "sabato", "domenica"),
}
_TODAY = r"\b(today|tonight|heute|ce soir|aujourd hui|hoy|esta noche|oggi|stasera|stanotte)\b"
_TOMORROW = r"\b(tomorrow|morgen|demain|manana|domani)\b"
_WEEKEND = r"\b(weekend|wochenende|week end|fin de semana|fine settimana)\b"
_NEXT = r"\b(next|nachsten|nachste|kommenden|prochain|prochaine|proximo|proxima|que viene|prossimo|prossima)\b"
_NIGHT = r"(nights?|nachte?|nuits?|noches?|notti|notte)"
_GUEST = r"(people|persons?|guests?|adults?|of us|personen|gaste|erwachsene|personnes|adultes|personas|adultos|huespedes|persone|adulti|ospiti)"
_NAME_CUES = (
    r"\bmy name is\b", r"\bthe name is\b", r"\bname s\b", r"\bthis is\b", r"\bunder the name\b", r"\bunder\b",
    r"\bich heisse\b", r"\bmein name ist\b", r"\bauf den namen\b", r"\bje m appelle\b", r"\bmon nom est\b",
    r"\bau nom de\b", r"\bme llamo\b", r"\bmi nombre es\b", r"\ba nombre de\b", r"\bmi chiamo\b",
    r"\bil mio nome e\b", r"\ba nome di\b",
)
_NAME_STOP = {
    "and", "please", "thank", "thanks", "for", "from", "i", "we", "the", "und", "bitte", "danke", "et", "merci",
    "y", "gracias", "e", "grazie", "per", "para", "pour", "fur", "im", "in", "a", "on", "at", "calling",
}
# Room words callers use, mapped to words that appear in English room-type names.
_ROOM_WORDS: dict[str, str] = {
    "doppelzimmer": "double", "einzelzimmer": "single", "zweibettzimmer": "twin", "familienzimmer": "family",
    "doppel": "double", "einzel": "single", "double": "double", "simple": "single", "individuelle": "single",
    "doble": "double", "individual": "single", "sencilla": "single", "doppia": "double", "matrimoniale": "double",
    "singola": "single", "suite": "suite", "junior": "junior", "familiale": "family", "familiar": "family",
    "famiglia": "family", "twin": "twin", "single": "single", "family": "family",
}


def fold(text: str) -> str:
    """Lower case, no accents, punctuation to spaces: the form all patterns match."""
    text = text.lower().replace("ß", "ss")
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = re.sub(r"[’'`\-]", " ", text)
    text = re.sub(r"(\d)(st|nd|rd|th|er|e|o|a|º|°)\b", r"\1", text)
    text = re.sub(r"(\d)\.(?=\s)", r"\1", text)
    text = re.sub(r"[^\w\s]", " ", text)
    return " " + re.sub(r"\s+", " ", text).strip() + " "


@functools.cache
def _number_words() -> dict[str, int]:
    """Cardinal and ordinal words 1..31 in every line language, folded, longest first."""
    table: dict[str, int] = {}
    for lang in LINE_LANGUAGES:
        for n in range(1, 32):
            for kind in ("cardinal", "ordinal"):
                try:
                    word = str(num2words(n, lang=lang, to=kind))
                except NotImplementedError:
                    continue
                folded = fold(word).strip()
                table.setdefault(folded, n)
                if lang == "de" and kind == "ordinal":
                    for ending in ("n", "r", "s", "m"):
                        table.setdefault(folded + ending, n)
                if lang in ("es", "it") and kind == "ordinal" and folded.endswith("o"):
                    table.setdefault(folded[:-1] + "a", n)
    for word, n in {"a": 1, "an": 1, "one": 1, "ein": 1, "eine": 1, "einen": 1, "einer": 1, "un": 1, "une": 1,
                    "una": 1, "uno": 1, "zwei": 2, "couple": 2, "primo": 1, "premier": 1, "premiere": 1,
                    "primero": 1, "erste": 1, "ersten": 1, "first": 1}.items():
        table[word] = n
    return dict(sorted(table.items(), key=lambda item: -len(item[0])))


@functools.cache
def _number_pattern() -> re.Pattern[str]:
    words = "|".join(re.escape(w) for w in _number_words())
    return re.compile(rf"\b(\d{{1,2}}|{words})\b")


def _to_int(token: str) -> int | None:
    if token.isdigit():
        return int(token)
    return _number_words().get(token)


def numbers_in(folded: str) -> list[tuple[int, int, int]]:
    """(value, start, end) of every number word or digit group, multi-word numbers first."""
    found: list[tuple[int, int, int]] = []
    for match in _number_pattern().finditer(folded):
        value = _to_int(match.group(1))
        if value is not None:
            found.append((value, match.start(1), match.end(1)))
    return found


@dataclass(frozen=True)
class Slots:
    """What the caller has told us so far. Later values override earlier ones."""

    check_in: dt.date | None = None
    check_out: dt.date | None = None
    nights: int | None = None
    guests: int | None = None
    room_code: str | None = None
    name: str | None = None

    def merged(self, newer: Slots) -> Slots:
        updates = {k: v for k, v in vars(newer).items() if v is not None}
        merged = replace(self, **updates)
        if merged.check_in and merged.check_out and merged.check_out > merged.check_in and newer.nights is None:
            merged = replace(merged, nights=(merged.check_out - merged.check_in).days)
        return merged

    @property
    def effective_nights(self) -> int | None:
        if self.nights:
            return self.nights
        if self.check_in and self.check_out and self.check_out > self.check_in:
            return (self.check_out - self.check_in).days
        return None


def _future_date(day: int, month: int, today: dt.date) -> dt.date | None:
    for year in (today.year, today.year + 1):
        try:
            candidate = dt.date(year, month, day)
        except ValueError:
            return None
        if candidate >= today:
            return candidate
    return None


def _dates(folded: str, today: dt.date) -> list[tuple[int, dt.date]]:
    """(position, date) of every date expression."""
    found: list[tuple[int, dt.date]] = []
    month_alts = {name: i + 1 for names in MONTHS.values() for i, name in enumerate(names)}
    month_re = "|".join(sorted(month_alts, key=len, reverse=True))
    numbers = numbers_in(folded)
    for match in re.finditer(rf"\b({month_re})\b", folded):
        month = month_alts[match.group(1)]
        # the closest day number before ("12 march", "the twelfth of march") or after ("march 12")
        best: tuple[int, int] | None = None
        for value, start, end in numbers:
            if not 1 <= value <= 31:
                continue
            gap = match.start() - end if end <= match.start() else start - match.end()
            if 0 <= gap <= 12 and (best is None or gap < best[0]):
                best = (gap, value)
        if best is not None:
            date = _future_date(best[1], month, today)
            if date:
                found.append((match.start(), date))
    if not found:
        # "the twelfth" / "le 12" without a month: this month or the next
        for match in re.finditer(r"\b(the|am|den|le|el|il|del|al|dal|vom|bis|au|zum)\s+(\S+)", folded):
            day = _to_int(match.group(2))
            if day and 1 <= day <= 31:
                date = _future_date(day, today.month, today)
                if date is None or date.year > today.year:  # already past this month: the next one
                    date = _future_date(day, today.month % 12 + 1, today)
                if date:
                    found.append((match.start(), date))
    for match in re.finditer(_TODAY, folded):
        found.append((match.start(), today))
    for match in re.finditer(_TOMORROW, folded):
        found.append((match.start(), today + dt.timedelta(days=1)))
    weekday_alts = {name: i for names in WEEKDAYS.values() for i, name in enumerate(names)}
    weekday_re = "|".join(sorted(weekday_alts, key=len, reverse=True))
    for match in re.finditer(rf"\b({weekday_re})\b", folded):
        # "friday" and "next friday" both mean the coming one, as most callers mean it
        ahead = (weekday_alts[match.group(1)] - today.weekday()) % 7 or 7
        found.append((match.start(), today + dt.timedelta(days=ahead)))
    for match in re.finditer(_WEEKEND, folded):
        ahead = (4 - today.weekday()) % 7
        if re.search(_NEXT, folded[max(0, match.start() - 14) : match.start()]) and ahead < 7:
            ahead += 7 if ahead < 3 else 0
        found.append((match.start(), today + dt.timedelta(days=ahead)))
    return sorted(found)


def match_room(folded: str, rooms: list[RoomType]) -> RoomType | None:
    """The room type the caller means: its name, its code, or a translated room word."""
    best: tuple[int, RoomType] | None = None
    words = set(folded.split())
    translated = {_ROOM_WORDS[w] for w in words if w in _ROOM_WORDS}
    for room in rooms:
        name = fold(room.name).strip()
        name_words = set(name.split()) - {"room", "zimmer", "chambre", "habitacion", "camera"}
        score = 0
        if f" {name} " in folded:
            score = 100
        elif f" {room.code.lower()} " in folded:
            score = 90
        else:
            score = 10 * len(name_words & (words | translated))
        if score and (best is None or score > best[0]):
            best = (score, room)
    return best[1] if best else None


def extract_name(text: str) -> str | None:
    """A caller's name after "my name is" and its translations; capitalised as a name."""
    folded = fold(text)
    for cue in _NAME_CUES:
        match = re.search(cue + r"\s+(.*)$", folded)
        if not match:
            continue
        words: list[str] = []
        for word in match.group(1).split():
            if word in _NAME_STOP or word.isdigit() or (words and word in {"is", "ist", "es"}):
                break
            if word in {"mr", "mrs", "ms", "herr", "frau", "monsieur", "madame", "senor", "senora", "signor", "signora"}:
                continue
            words.append(word)
            if len(words) == 3:
                break
        if words:
            return " ".join(w.capitalize() for w in words)
    return None


def _first_number(folded: str, pattern: str) -> int | None:
    """The number in group 1 of the first match whose group 1 is a number ("for three nights")."""
    for match in re.finditer(pattern, folded):
        value = _to_int(match.group(1))
        if value is not None:
            return value
    return None


def extract_slots(text: str, facts: HotelFacts, today: dt.date) -> Slots:
    """Everything one utterance says about the stay."""
    folded = fold(text)
    dates = _dates(folded, today)
    check_in = dates[0][1] if dates else None
    check_out = dates[1][1] if len(dates) > 1 and dates[1][1] > dates[0][1] else None
    nights: int | None = None
    nights = _first_number(folded, rf"\b(\S+)\s+(?:more\s+|extra\s+)?{_NIGHT}\b")
    if nights is None and re.search(rf"\b(just|only|nur|seulement|solo|soltanto)\s+(one|a|eine|une|una|un)\s+{_NIGHT}", folded):
        nights = 1
    guests = _first_number(folded, rf"\b(\S+)\s+{_GUEST}\b") or _first_number(folded, rf"\b(\S+)\s+\w+\s+{_GUEST}\b")
    if guests is None and re.search(r"\b(my (wife|husband|partner|girlfriend|boyfriend) and (me|i)|(me|i) and my (wife|husband|partner))\b", folded):
        guests = 2
    if re.search(r"\b(and|plus|with) (a|one) (child|kid|baby)\b", folded) and guests:
        guests += 1
    if guests is None and re.search(r"\bjust (me|myself)\b|\balone\b|\bmyself\b", folded):
        guests = 1
    room = match_room(folded, list(facts.room_types))
    return Slots(
        check_in=check_in,
        check_out=check_out,
        nights=nights if nights and 0 < nights <= 60 else None,
        guests=guests if guests and 0 < guests <= 20 else None,
        room_code=room.code if room else None,
        name=extract_name(text),
    )
