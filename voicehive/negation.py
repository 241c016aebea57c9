"""Negation scope and corrections in caller utterances (en, de, fr, es, it).

WHY: "do not cancel my booking" must not cancel, "I don't need a room, I have a question" is a
question, and "no, not Friday, Saturday" means Saturday. A bag-of-cues classifier sees
"cancel", "room" and "Friday" in all three. This module splits an utterance into what the
caller affirms (``kept``) and what falls inside a negation (``negated``), so the intent
engine scores only the affirmed words and the slot extractor reads only the corrected value.

Scope, deliberately simple and explainable:
- a cue (not/n't/never; nicht/kein*/nie; pas/jamais/aucun; no/nunca/ni; non/mai) opens it;
- it closes at clause punctuation, at a contrast or new-clause word (but, instead, I; aber,
  sondern, ich; mais, je; pero, sino, yo; ma, invece, io) or after ``MAX_SCOPE`` words;
- when the first content word is a *unit* (a weekday, a month, a number: the caller's
  ``units``) the scope is that unit only: "not Friday Saturday" negates Friday, keeps Saturday;
- a cue that ends its clause negates the clause before it ("el viernes no", "Buchung nicht");
- German puts the object before ``nicht`` ("die Buchung bitte nicht stornieren") or ``nicht``
  last ("stornieren Sie die Buchung nicht"): a German scope that reaches the clause end
  negates the whole clause.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

MAX_SCOPE = 6

CUES: dict[str, frozenset[str]] = {
    "en": frozenset({"not", "never", "dont", "doesnt", "didnt", "wont", "cant", "t"}),
    "de": frozenset({"nicht", "nichts", "kein", "keine", "keinen", "keinem", "keiner", "nie", "niemals"}),
    "fr": frozenset({"ne", "n", "pas", "jamais", "aucun", "aucune"}),  # "ne ... pas": the verb sits between
    "es": frozenset({"no", "nunca", "ni", "tampoco"}),
    "it": frozenset({"non", "mai", "nessun", "nessuna"}),
}
# Words that end a negation's scope (and are kept): contrast, a new subject, "only".
STOPS: dict[str, frozenset[str]] = {
    "en": frozenset({"but", "instead", "rather", "i", "we", "just", "only", "and", "because", "so", "it", "please"}),
    "de": frozenset({"aber", "sondern", "stattdessen", "lieber", "ich", "wir", "nur", "und", "weil", "bitte", "doch"}),
    "fr": frozenset({"mais", "plutot", "je", "j", "nous", "seulement", "juste", "et", "car"}),
    "es": frozenset({"pero", "sino", "mejor", "yo", "solo", "solamente", "y", "porque", "tengo"}),
    "it": frozenset({"ma", "bensi", "invece", "piuttosto", "io", "solo", "soltanto", "e", "perche", "ho"}),
}
# Words skipped between a cue and a unit ("not on the 12th", "nicht am Freitag").
_LEAD = frozenset(["the", "on", "for", "a", "at", "am", "um", "den", "der", "dem", "le", "la", "les", "l", "au", "du", "de", "el", "los", "del", "en", "il", "lo", "di", "per", "a", "da"])
# English contractions fold to "<stem> t"; "t" is a cue only after these stems.
_NT_STEMS = frozenset({"don", "doesn", "didn", "won", "can", "isn", "aren", "wasn", "weren", "shouldn", "wouldn", "haven", "hasn"})
_TAIL = frozenset({"", "mehr", "bitte", "please", "por", "favor", "per", "favore", "plus", "merci", "gracias", "grazie"})
_CLAUSE = re.compile(r"[,.;:!?¡¿]+|\s[-\u2013\u2014]\s")
_NON_WORD = re.compile(r"[^\w]+")


def fold_word(word: str) -> str:
    """One token in the matching form of voicehive.intents.fold (lower case, no accents)."""
    text = word.lower()
    if not text.isascii():  # ASCII has no accents to strip (NFKD leaves it as it is)
        text = unicodedata.normalize("NFKD", text.replace("ß", "ss"))
        text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return _NON_WORD.sub(" ", text).strip()


@dataclass(frozen=True)
class Negation:
    """``kept``: the utterance without negated words (raw spelling); ``negated``: what was negated."""

    kept: str
    negated: str

    @property
    def has_negation(self) -> bool:
        return bool(self.negated.strip())


def _is_cue(parts: list[str], previous: str, cues: frozenset[str]) -> bool:
    for i, part in enumerate(parts):
        before = parts[i - 1] if i else previous
        if part in cues and (part != "t" or before in _NT_STEMS):
            return True
    return False


def _scope_end(folded: list[str], start: int, stops: frozenset[str], units: frozenset[str]) -> int:
    """Index after the last negated token, for a cue just before ``start``."""
    j = start
    while j < len(folded) and folded[j] in _LEAD:
        j += 1
    if j < len(folded) and (folded[j] in units or folded[j][:1].isdigit()):
        return j + 1
    end = start
    while end < len(folded) and end - start < MAX_SCOPE and folded[end] not in stops:
        end += 1
    return end


def _clause(
    raw: list[str], cues: frozenset[str], stops: frozenset[str], units: frozenset[str], german: bool
) -> tuple[list[str], list[str]]:
    folded = [fold_word(w) for w in raw]
    kept: list[str] = []
    negated: list[str] = []
    i = 0
    while i < len(raw):
        parts = folded[i].split()
        if folded[i] in units or not _is_cue(parts, folded[i - 1].split()[-1] if i and folded[i - 1] else "", cues):
            kept.append(raw[i])
            i += 1
            continue
        if i > 0 and all(f in _TAIL for f in folded[i + 1:]):
            negated.extend(kept)  # clause-final cue ("el viernes no", "stornieren Sie nicht"): the clause before it
            kept = []
            i = len(raw)
            continue
        end = _scope_end(folded, i + 1, stops, units)
        if german and end == len(raw) and not (end > i + 1 and (folded[end - 1] in units or folded[end - 1][:1].isdigit())):
            negated.extend(kept)  # German object before "nicht V": the whole clause is negated
            kept = []
        negated.extend(raw[i:end])
        i = end
    return kept, negated


def _vocabulary(langs: list[str]) -> tuple[frozenset[str], frozenset[str]]:
    return frozenset().union(*(CUES[lang] for lang in langs)), frozenset().union(*(STOPS[lang] for lang in langs))


# The cues and stops of each language, and of all (None): built once, not per utterance.
_VOCABULARY: dict[str | None, tuple[frozenset[str], frozenset[str]]] = {
    language: _vocabulary([language] if language else list(CUES)) for language in (None, *CUES)
}


def split_negation(text: str, language: str | None = None, units: frozenset[str] = frozenset()) -> Negation:
    """Splits ``text`` into affirmed and negated words; ``language`` None uses every language's cues."""
    cues, stops = _VOCABULARY[language if language in CUES else None]
    clauses = _CLAUSE.split(text)
    if text.isascii() and cues.isdisjoint(_NON_WORD.sub(" ", text.lower()).split()):
        # no word holds a cue (ASCII folds to its lower case): every clause is kept whole
        return Negation(", ".join(" ".join(words) for clause in clauses if (words := clause.split())), "")
    kept_clauses: list[str] = []
    negated: list[str] = []
    for clause in clauses:
        kept, dropped = _clause(clause.split(), cues, stops, units, german=language == "de")
        if kept:
            kept_clauses.append(" ".join(kept))
        negated.extend(dropped)
    return Negation(", ".join(kept_clauses), " ".join(negated))
