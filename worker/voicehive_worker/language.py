"""Which of the line's languages the caller speaks, decided per utterance with hysteresis.

WHY our own detector: caller turns are short ("Ich möchte ein Zimmer buchen"), the candidates
are only the line's languages (at most en, de, fr, es, it), and the decision sits on the hot
path before the reply starts. Function words and a few spelling cues separate these five on
phone-length sentences in microseconds, deterministically, with no model to download.
General detectors (langdetect, lingua) guess among ~75 languages and are unreliable on five
words; here the candidate set is known.

Hysteresis (:class:`LanguageTracker`): one clear sentence in another line language switches
at once (the reply to that very turn is in the new language), a single foreign word inside a
sentence or a one-word utterance ("Danke", "Merci") never does, and two weak utterances in
a row in the same other language do. A language tag from a multilingual ASR counts as one
more piece of evidence, never alone.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from voicehive_worker.phrases import SUPPORTED, base

if TYPE_CHECKING:
    from voicehive.api.models import HotelLineSpec

CLEAR_SCORE = 2.0
"""Evidence an utterance needs to count as clearly in one language."""
CLEAR_MARGIN = 1.5
"""... and by how much it must beat the runner-up."""
ASR_TAG_WEIGHT = 1.0
RIVA_LANGUAGE_CODES = {"en": "en-US", "de": "de-DE", "fr": "fr-FR", "es": "es-US", "it": "it-IT"}
"""Riva's code for a line language given without a region."""

_FUNCTION_WORDS: dict[str, frozenset[str]] = {
    lang: frozenset(words.split())
    for lang, words in {
        "en": "the a an i you is are to for my me have has do does can could would like with please your it this "
        "what and of we our there how when where which at on be will from any about time thanks thank",
        "de": "der die das den dem des ich sie wir ist sind ein eine einen einem zu fur mein meine haben habe hatte "
        "mochte mochten bitte mit und nicht noch wie was gibt es bei ihnen ihr auf fur wann wo welche kann konnen "
        "zimmer nacht nachte uhr gern gerne vom bis danke nein",
        "fr": "le la les je vous est un une des pour mon ma mes avez voudrais plait avec et pas ne du quel quelle ce "
        "c est nous votre vos au aux chambre nuit nuits bonjour quand ou comment puis suis heure merci",
        "es": "el los las yo usted es un una para mi tengo tiene tienen quiero quisiera por favor con y no del que hay como "
        "su sus habitacion noche noches cuanto cuando donde puedo esta estoy al buenas hola hora gracias",
        "it": "il lo gli io lei un una per mio mia ho ha vorrei con non di del che ci sono avete come della delle "
        "dei sua camera notte notti quanto quando dove posso buongiorno al alle dal dalla ora grazie",
    }.items()
}
# Spelling that only one of the five uses (on the unfolded, lower-case text).
_SPELLING: dict[str, re.Pattern[str]] = {
    "de": re.compile(r"ß|\b\w*(ä|ö|ü)\w*\b|\b\w+(sch|tz|chen|ung|keit)\b"),
    "fr": re.compile(r"ç|œ|\b\w*(è|ê|à|ù|â|î|ô)\w*\b|\b(qu|j|l|d|n|c|s)'"),
    "es": re.compile(r"ñ|¿|¡|\b\w*(á|í|ó|ú)\w*\b"),
    "it": re.compile(r"(?:^|\s)è(?=\s|$)|\b\w*(ò|ì)\b|\b\w+(zz|gli|cch|ggi)\w*\b"),
}


def _fold(text: str) -> list[str]:
    text = unicodedata.normalize("NFKD", text.lower().replace("ß", "ss"))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return re.findall(r"[a-z]+", text)


def scores(text: str, candidates: tuple[str, ...] = SUPPORTED) -> dict[str, float]:
    """Evidence per candidate language: function words (1 each) + distinctive spelling (0.5 each)."""
    words = _fold(text)
    lower = text.lower()
    out: dict[str, float] = {}
    for lang in candidates:
        stop = _FUNCTION_WORDS.get(lang, frozenset())
        spelling = _SPELLING.get(lang)
        cues = len(spelling.findall(lower)) if spelling is not None else 0
        out[lang] = float(sum(1 for w in words if w in stop)) + 0.5 * min(cues, 4)
    return out


def detect(text: str, candidates: tuple[str, ...] = SUPPORTED) -> tuple[str | None, bool]:
    """``(best language or None, clearly?)`` for one utterance among ``candidates``."""
    ranked = sorted(scores(text, candidates).items(), key=lambda kv: -kv[1])
    if not ranked or ranked[0][1] <= 0:
        return None, False
    best, top = ranked[0]
    runner_up = ranked[1][1] if len(ranked) > 1 else 0.0
    if top == runner_up:
        return None, False
    return best, top >= CLEAR_SCORE and top - runner_up >= CLEAR_MARGIN


def line_languages(languages: list[str]) -> tuple[str, ...]:
    """The line's languages as base codes we support, in the line's order, without repeats."""
    out: list[str] = []
    for code in languages:
        lang = base(code)
        if lang in SUPPORTED and lang not in out:
            out.append(lang)
    return tuple(out) or ("en",)


def first_language(spec: HotelLineSpec) -> str:
    """The language a call starts in: the line's first one we speak (English if none). Greeting,
    goodbye, voices and the TTS all default to it, as the agent does."""
    return line_languages(spec.languages)[0]


@dataclass
class LanguageTracker:
    """The call's current language; :meth:`observe` each caller utterance, it says when to switch."""

    candidates: tuple[str, ...]
    current: str
    switches: list[str] = field(default_factory=list)
    _pending: str | None = None

    @classmethod
    def for_line(cls, languages: list[str], start: str | None = None) -> LanguageTracker:
        candidates = line_languages(languages)
        first = base(start) if start and base(start) in candidates else candidates[0]
        return cls(candidates=candidates, current=first)

    def observe(self, text: str, asr_language: str | None = None) -> bool:
        """Feed one utterance (and the ASR's language tag if it has one); True if the language switched."""
        evidence = scores(text, self.candidates)
        tag = base(asr_language) if asr_language else None
        if tag in evidence:
            evidence[tag] += ASR_TAG_WEIGHT
        ranked = sorted(evidence.items(), key=lambda kv: -kv[1])
        best, top = ranked[0]
        runner_up = ranked[1][1] if len(ranked) > 1 else 0.0
        if top <= 0 or top == runner_up or best == self.current:
            self._pending = None
            return False
        clear = top >= CLEAR_SCORE and top - runner_up >= CLEAR_MARGIN
        weak_again = self._pending == best and evidence[self.current] == 0
        if clear or weak_again:
            self.current = best
            self.switches.append(best)
            self._pending = None
            return True
        self._pending = best if evidence[self.current] == 0 else None
        return False


def asr_language_code(languages: list[str], language: str) -> str:
    """The BCP-47 code to open the ASR with: the line's own spelling if it has a region, else Riva's."""
    for code in languages:
        if base(code) == language and "-" in code:
            return code
    return RIVA_LANGUAGE_CODES.get(language, language)


def replay(languages: list[str], utterances: list[str], start: str | None = None) -> str:
    """The language after these caller utterances (the stateless policy recomputes it this way)."""
    tracker = LanguageTracker.for_line(languages, start)
    for text in utterances:
        tracker.observe(text)
    return tracker.current
