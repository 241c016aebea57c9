"""The hotel-domain language model and pronouncing dictionary that bias pocketsphinx.

WHY: pocketsphinx's generic English model transcribes synthetic (and telephone) speech badly;
restricted to what hotel callers say - built from caller-side templates and the line's own
facts (hotel name, room type names, amenities, FAQ questions, dates, numbers) - it recognises
it nearly exactly. A trigram back-off model (pocketsphinx's own ``ArpaBoLM``) generalises to
sentences that are not in the corpus, unlike a fixed grammar.

Words missing from the CMU dictionary (hotel and street names) get a pronunciation from
eSpeak NG's phonemizer, mapped from IPA to the acoustic model's ARPAbet phones.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import random
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pocketsphinx
from pocketsphinx.lm import ArpaBoLM

from voicehive.api.models import HotelFacts

from .text import spoken_words

CORPUS_SEED = 7
MAX_SENTENCES = 6000
DISCOUNT_MASS = 0.5
GENERAL_WORDS = 3000  # common English words added to every line's vocabulary
GENERAL_MASS = 0.03  # their share of the unigram counts

MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"]
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
# A small set of common first and last names so "my name is ..." has somewhere to go; unknown
# names will still be misrecognised, which the policy tolerates (it confirms, never relies on it).
FIRST_NAMES = ["anna", "maria", "peter", "john", "james", "michael", "david", "sarah", "laura", "emma", "thomas", "paul", "mark", "julia", "sophie", "lucas", "daniel", "robert", "linda", "susan", "karen", "lisa", "tom", "jan", "eva", "max", "marco", "giulia", "pierre", "claire", "carlos", "lucia"]
LAST_NAMES = ["smith", "jones", "brown", "miller", "schmidt", "schneider", "fischer", "weber", "meyer", "wagner", "becker", "martin", "bernard", "dubois", "rossi", "russo", "garcia", "lopez", "martinez", "taylor", "wilson", "johnson", "williams", "davis", "clark", "walker"]


def _ordinal_words(n: int) -> str:
    return " ".join(spoken_words(f"{n}th" if n not in (1, 2, 3, 21, 22, 23, 31) else str(n) + {1: "st", 2: "nd", 3: "rd"}[n % 10]))


def _date_phrases(rng: random.Random, count: int) -> list[str]:
    phrases: list[str] = ["tonight", "tomorrow", "tomorrow night", "this weekend", "next weekend", "next week"]
    for _ in range(count):
        day = _ordinal_words(rng.randint(1, 31))
        month = rng.choice(MONTHS)
        phrases.append(
            rng.choice(
                (
                    f"the {day} of {month}",
                    f"{month} {day}",
                    f"{month} the {day}",
                    f"the {day}",
                    f"next {rng.choice(WEEKDAYS)}",
                    f"this {rng.choice(WEEKDAYS)}",
                    f"{rng.choice(WEEKDAYS)} the {day}",
                )
            )
        )
    return phrases


def _number(n: int) -> str:
    return " ".join(spoken_words(str(n)))


# Caller-side templates. {room} {date} {date2} {nights} {guests} {people} {name} {hotel}
# {amenity} {question} are filled from the line's facts and the generators above.
TEMPLATES: tuple[str, ...] = (
    # book_room
    "i would like to book a {room} for {nights} nights",
    "i'd like to book a {room} from {date} to {date2}",
    "i want to book a {room} for {guests} people",
    "i would like to make a reservation",
    "i'd like to make a booking for {date}",
    "can i book a {room} for {date}",
    "could i reserve a {room} for {nights} nights from {date}",
    "please book the {room} for me",
    "i need a room for {guests} adults for {nights} nights",
    "we need a {room} for {people} from {date}",
    "book it please",
    "yes please book it",
    "yes book the {room}",
    "i'll take the {room}",
    "we would like to stay for {nights} nights",
    "i want to stay {nights} nights",
    "arriving {date} for {nights} nights",
    "for {nights} nights starting {date}",
    "from {date} until {date2}",
    "just one night",
    "{nights} nights please",
    "for {guests} guests",
    "there will be {guests} of us",
    "it's for {people}",
    "my name is {name}",
    "the name is {name}",
    "the booking is under {name}",
    "it's {name}",
    # check_availability
    "do you have a {room} available on {date}",
    "do you have any rooms available for {date}",
    "is there a {room} free from {date} to {date2}",
    "are there any rooms left for {date}",
    "do you have availability for {nights} nights from {date}",
    "what's the availability for {date}",
    "is the {room} available for {guests} people",
    "do you have space for {guests} people on {date}",
    "are you fully booked on {date}",
    "do you have anything free this weekend",
    "check availability for {date} please",
    # modify_booking
    "i would like to change my booking",
    "i need to change my reservation to {date}",
    "can i move my booking to {date}",
    "i want to extend my stay by {nights} nights",
    "could i change the dates of my reservation",
    "i'd like to add one more night",
    "can i upgrade to the {room}",
    # cancel_booking
    "i want to cancel my booking",
    "i need to cancel my reservation for {date}",
    "please cancel the reservation under {name}",
    "i would like to cancel my room",
    "we won't be coming",
    # request_info
    "{question}",
    "what time is check in",
    "what time is check out",
    "when can i check in",
    "when is check out",
    "can i check in early",
    "is late check out possible",
    "how much is the {room}",
    "how much does the {room} cost per night",
    "what is the price of a {room}",
    "what's the rate for the {room}",
    "what are your rates",
    "is breakfast included",
    "do you have {amenity}",
    "is there {amenity}",
    "how much is {amenity}",
    "where is the hotel",
    "what is the address",
    "what's your address",
    "where are you located",
    "how do i get to the hotel",
    "do you have parking",
    "is there wifi",
    "do you have a restaurant",
    "can i bring my dog",
    "are pets allowed",
    "what room types do you have",
    "tell me about the {room}",
    "how many people fit in the {room}",
    "i have a question",
    "is there a {amenity} at the {hotel}",
    # speak_to_human
    "can i speak to a person",
    "i want to talk to a real person",
    "please transfer me to the front desk",
    "can you put me through to reception",
    "i'd like to speak to someone",
    "connect me to the reception please",
    "i want to speak to a human",
    "let me talk to the manager",
    # complaint
    "i want to make a complaint",
    "my room is dirty",
    "the shower is broken",
    "the room is too noisy",
    "i'm not happy with my room",
    "this is unacceptable",
    "the air conditioning is not working",
    "i was charged twice",
    # goodbye
    "that's all thank you",
    "thank you goodbye",
    "goodbye",
    "bye",
    "thanks bye",
    "no that's everything",
    "no thank you that's all",
    "have a nice day",
    "thank you very much",
    "thanks for your help",
    # small talk and confirmations
    "hello",
    "hi",
    "hello is this the {hotel}",
    "good morning",
    "good afternoon",
    "good evening",
    "yes",
    "yes please",
    "no",
    "no thanks",
    "okay",
    "sure",
    "that sounds good",
    "perfect",
    "great thank you",
    "sorry could you repeat that",
    "what did you say",
    "i'm calling about my booking",
    "i'm calling to ask about {amenity}",
)


def model_path() -> Path:
    """Where the pocketsphinx wheel keeps its English model (the compiled module is untyped)."""
    return Path(str(pocketsphinx.__dict__["get_model_path"]()))


# How callers open a request, and what they ask for: combined freely so the model has seen
# every opener with every action (callers mix them; templates alone would not cover that).
REQUEST_OPENERS: tuple[str, ...] = (
    "i would like to", "i'd like to", "i want to", "i wanted to", "we would like to", "we'd like to",
    "i need to", "we need to", "i have to", "can i", "could i", "may i", "can we", "could we",
    "can you", "could you", "would you", "please", "i'm calling to", "i was hoping to", "is it possible to",
)
REQUEST_ACTIONS: tuple[str, ...] = (
    "book {article} {room}", "reserve {article} {room}", "book two {room}s", "reserve two {room}s", "book {article} room", "reserve {article} room",
    "make a reservation", "make a booking", "book {nights} nights", "stay {nights} nights",
    "book {article} {room} for {date}", "reserve {article} {room} from {date}", "book a room for {people}",
    "check availability", "check if you have {article} {room} available", "cancel my reservation",
    "cancel my booking", "cancel the {room}", "change my reservation", "change my booking",
    "change the dates", "move my booking to {date}", "extend my stay", "upgrade to the {room}",
    "speak to someone", "talk to a person", "speak to a human", "talk to the front desk",
    "ask a question", "know the price of the {room}", "know if you have {amenity}", "bring my dog",
    "check in early", "check out late", "make a complaint",
)
REQUEST_TAILS: tuple[str, ...] = (
    "", "", "", " please", " at the hotel", " in the hotel", " at your hotel", " for {date}", " for {nights} nights", " from {date}", " on {date}",
    " for {people}", " starting {date}", " in {month}", " next month", " next week", " this weekend",
)
QUESTIONS: tuple[str, ...] = (
    "when do i need to leave the room", "what time is breakfast served", "is {amenity} free",
    "how much do you charge for {amenity}", "is {amenity} included", "do you have {amenity} at the hotel",
    "what does the {room} cost per night", "how much does the {room} cost", "where is the hotel located",
    "how far is the hotel from the airport", "how do i get to you from the station",
    "how do i get to the hotel", "how do i find the hotel", "is {amenity} available at the hotel",
    "is the hotel close to the city centre", "what is near the hotel", "does the hotel have {amenity}",
    "do you have a room with a view", "are children welcome", "can i pay by credit card",
)
POLITE: tuple[str, ...] = (
    "thank you", "thanks", "thank you so much", "thank you very much", "many thanks", "goodbye", "bye",
    "bye bye", "good bye", "have a good day", "have a nice day", "see you", "that's all", "that's everything",
    "that is everything", "nothing else", "no that's it", "that was all", "okay", "great", "perfect",
    "wonderful", "excellent", "alright", "all right", "yes", "no", "sure", "of course",
)


# What goes wrong in a room and what guests ask for, for complaints and service requests.
ROOM_PARTS: tuple[str, ...] = (
    "the heating", "the air conditioning", "the shower", "the toilet", "the tv", "the light", "the wifi",
    "the key card", "the window", "the door", "the fridge", "the minibar", "the hair dryer", "the lift",
    "the elevator", "the safe", "the kettle", "the coffee machine", "the internet", "the phone",
)
PROBLEMS: tuple[str, ...] = (
    "{part} does not work", "{part} doesn't work", "{part} is not working", "{part} is broken",
    "my room is too cold", "my room is too hot", "the room is dirty", "the room smells",
    "the bathroom is dirty", "there is no hot water", "it is too noisy", "the people next door are very loud",
    "there was a lot of noise last night", "i could not sleep because of the noise", "the bed is uncomfortable",
    "nobody cleaned my room", "there are no towels", "i was charged twice", "the bill is wrong",
    "i am not happy with the service", "the staff was rude", "i want to complain about {topic}",
    "i'd like to make a complaint about {topic}", "i am very disappointed with {topic}",
)
TOPICS: tuple[str, ...] = (
    "my room", "the noise", "the cleaning", "the service", "the breakfast", "the bill", "the staff", "the wifi",
)
SERVICE: tuple[str, ...] = (
    "could i have some extra towels", "can i get another pillow", "can you send someone to fix {part}",
    "can i leave my luggage at the hotel", "can you call me a taxi", "can i have a wake up call at seven",
    "when is breakfast served", "until when is breakfast", "when does the restaurant open",
    "is the {amenity} open in the evening", "what are the opening hours of the {amenity}",
    "is there a pool", "do you have a spa", "do you have a laundry service", "can i pay by card",
    "do you accept cash", "is the hotel accessible by wheelchair", "are children allowed",
    "do you have a cot for a baby", "is there a bar", "is there an elevator", "is there air conditioning",
    "is parking included", "how much is parking per night", "is there a restaurant in the hotel",
)
CHANGES: tuple[str, ...] = (
    "add another night", "add one more night", "stay one more night", "stay an extra night",
    "arrive one day later", "arrive a day earlier", "leave one day earlier", "leave a day later",
    "change to the {room}", "change the room type", "change the number of guests", "change the name",
    "shorten my stay", "extend my booking", "postpone my arrival",
)
CANCEL_OPENERS: tuple[str, ...] = (
    "unfortunately", "i'm afraid", "sorry but", "i am sorry but", "hello", "hi", "",
)


def _service_sentences(rng: random.Random, fill: Callable[[str], str], count: int) -> list[str]:
    sentences = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.35:
            template = rng.choice(PROBLEMS).replace("{part}", rng.choice(ROOM_PARTS)).replace("{topic}", rng.choice(TOPICS))
        elif kind < 0.6:
            template = rng.choice(SERVICE).replace("{part}", rng.choice(ROOM_PARTS))
        elif kind < 0.85:
            template = rng.choice(REQUEST_OPENERS) + " " + rng.choice(CHANGES) + rng.choice(REQUEST_TAILS)
        else:
            template = rng.choice(CANCEL_OPENERS) + " i have to cancel " + rng.choice(
                ("my booking", "my reservation", "the reservation under the name {name}", "the booking for {date}", "my room")
            )
        sentences.append(fill(template.strip()))
    return sentences


def _request_sentences(rng: random.Random, fill: Callable[[str], str], count: int) -> list[str]:
    sentences = []
    for _ in range(count):
        template = rng.choice(REQUEST_OPENERS) + " " + rng.choice(REQUEST_ACTIONS) + rng.choice(REQUEST_TAILS)
        sentences.append(fill(template))
    for _ in range(count // 3):
        sentences.append(fill(rng.choice(QUESTIONS)))
    for _ in range(count // 3):
        # closing formulas in any order ("okay thank you goodbye", "thanks a lot have a nice day")
        sentences.append(" ".join(rng.sample(POLITE, rng.randint(1, 3))))
    return sentences


@dataclass(frozen=True)
class DomainModel:
    """A built language model and its dictionary, on disk where pocketsphinx can read them."""

    lm_path: Path
    dict_path: Path
    vocabulary: frozenset[str]
    corpus: tuple[str, ...]


def line_vocabulary(facts: HotelFacts | None, hotel_name: str | None) -> dict[str, list[str]]:
    """The slot fillers a line contributes: its room names, amenities, FAQ questions, name."""
    rooms = [room.name for room in facts.room_types] if facts else []
    amenities = list(facts.amenities) if facts else []
    questions = [entry.question for entry in facts.faq] if facts else []
    extras: list[str] = []
    if facts and facts.address:
        extras.append(facts.address)
    return {
        "room": rooms or ["single room", "double room", "twin room", "suite", "family room"],
        "amenity": [_short_amenity(a) for a in amenities] or ["parking", "breakfast", "wifi", "a gym"],
        "question": questions,
        "hotel": [hotel_name] if hotel_name else ["hotel"],
        "extras": extras,
    }


def _short_amenity(amenity: str) -> str:
    """'breakfast buffet from 6:30 to 10:30, 18 euros' -> 'breakfast buffet': what callers say."""
    head = amenity.split(",")[0]
    for cut in (" from ", " on ", " at ", " in ", " with ", " for "):
        head = head.split(cut)[0]
    return head.strip()


def build_corpus(
    facts: HotelFacts | None = None,
    hotel_name: str | None = None,
    extra_sentences: Iterable[str] = (),
    *,
    max_sentences: int = MAX_SENTENCES,
    seed: int = CORPUS_SEED,
) -> list[str]:
    """Caller sentences in spoken form, deterministic for a given line."""
    rng = random.Random(seed)
    vocab = line_vocabulary(facts, hotel_name)
    dates = _date_phrases(rng, 400)
    names = [f"{first} {last}" for first, last in itertools.product(FIRST_NAMES, LAST_NAMES)]
    names += FIRST_NAMES + LAST_NAMES

    def fill_slots(template: str) -> str:
        return template.format(
            room=rng.choice(vocab["room"]),
            date=rng.choice(dates),
            date2=rng.choice(dates),
            nights=_number(rng.choice((1, 2, 2, 3, 3, 4, 5, 6, 7, 10, 14))),
            guests=_number(rng.choice((1, 2, 2, 3, 4, 5, 6))),
            people=rng.choice(("one person", "two people", "two adults", "two adults and a child", "three people", "four people", "a family of four", "me and my wife", "my husband and me", "just me")),
            name=rng.choice(names),
            hotel=rng.choice(vocab["hotel"]),
            amenity=rng.choice(vocab["amenity"]),
            question=rng.choice(vocab["question"]) if vocab["question"] else "what time is breakfast",
            article=rng.choice(("a", "the", "one", "two", "a", "the")),
            month=rng.choice(MONTHS),
        )

    def fill(template: str) -> str:
        return re.sub(r"\bone (night|room|guest|adult|person)s\b", r"one \1", fill_slots(template))

    sentences: list[str] = []
    openers = ("", "", "", "hello ", "hi ", "yes ", "okay ", "well ", "good morning ", "hello there ")
    closers = ("", "", "", " please", " thank you", " thanks", " thank you very much")
    # Every template at least once per filler variety, then random fills up to the budget.
    per_template = max(1, max_sentences // len(TEMPLATES))
    for template in TEMPLATES:
        repeats = per_template if "{" in template else max(3, per_template // 3)
        sentences.extend(rng.choice(openers) + fill(template) + rng.choice(closers) for _ in range(repeats))
    sentences.extend(_request_sentences(rng, fill, max_sentences // 2))
    sentences.extend(_service_sentences(rng, fill, max_sentences // 4))
    for question in vocab["question"]:
        sentences.extend([question] * 5)
    for amenity in vocab["amenity"]:
        sentences.append(f"do you have {amenity}")
        sentences.append(f"tell me about the {amenity}")
    for room in vocab["room"]:
        sentences.append(f"i would like the {room}")
        sentences.append(f"a {room} please")
    for name in vocab["hotel"] + vocab["extras"]:
        sentences.append(f"is this the {name}")
    for n in range(1, 32):
        sentences.append(f"the {_ordinal_words(n)}")
    for n in range(0, 100):
        sentences.append(_number(n))
    sentences.extend(extra_sentences)
    return [" ".join(spoken_words(sentence)) for sentence in sentences if spoken_words(sentence)]


@functools.cache
def _cmudict() -> dict[str, str]:
    """The pronouncing dictionary shipped in the pocketsphinx wheel (first pronunciation each)."""
    entries: dict[str, str] = {}
    with open(model_path() / "en-us" / "cmudict-en-us.dict", encoding="utf-8") as handle:
        for line in handle:
            word, _, phones = line.strip().partition(" ")
            if "(" in word:
                word = word.split("(")[0]
                entries.setdefault(word + "(alt)", phones)  # marker: word has variants
                continue
            entries.setdefault(word, phones)
    return entries


def _cmudict_variants(word: str) -> list[str]:
    """All pronunciations of a word (variants help eSpeak's and callers' accents alike)."""
    return _cmudict_all().get(word, [])


@functools.cache
def _cmudict_all() -> dict[str, list[str]]:
    entries: dict[str, list[str]] = {}
    with open(model_path() / "en-us" / "cmudict-en-us.dict", encoding="utf-8") as handle:
        for line in handle:
            word, _, phones = line.strip().partition(" ")
            entries.setdefault(word.split("(")[0], []).append(phones.strip())
    return entries


# IPA (as eSpeak NG's en-us voice writes it) -> CMU ARPAbet. Longest match first.
_IPA_TO_ARPABET: tuple[tuple[str, str], ...] = (
    ("aɪə", "AY ER"), ("aɪ", "AY"), ("aʊ", "AW"), ("eɪ", "EY"), ("oʊ", "OW"), ("ɔɪ", "OY"),
    ("əʊ", "OW"), ("eə", "EH R"), ("ɪə", "IH R"), ("ʊə", "UH R"), ("iə", "IY AH"),
    ("tʃ", "CH"), ("dʒ", "JH"), ("ɜː", "ER"), ("ɚ", "ER"), ("ɝ", "ER"), ("ɜ", "ER"),
    ("iː", "IY"), ("uː", "UW"), ("ɑː", "AA"), ("ɔː", "AO"),
    ("i", "IY"), ("ɪ", "IH"), ("ᵻ", "IH"), ("ɛ", "EH"), ("e", "EH"), ("æ", "AE"), ("a", "AA"), ("ɑ", "AA"),
    ("ɒ", "AA"), ("ɔ", "AO"), ("ʌ", "AH"), ("ə", "AH"), ("ɐ", "AH"), ("ʊ", "UH"), ("u", "UW"),
    ("o", "OW"), ("y", "UW"), ("ø", "ER"), ("œ", "ER"),
    ("p", "P"), ("b", "B"), ("t", "T"), ("d", "D"), ("k", "K"), ("g", "G"), ("ɡ", "G"),
    ("f", "F"), ("v", "V"), ("θ", "TH"), ("ð", "DH"), ("s", "S"), ("z", "Z"), ("ʃ", "SH"),
    ("ʒ", "ZH"), ("h", "HH"), ("x", "HH"), ("ç", "HH"), ("m", "M"), ("n", "N"), ("ŋ", "NG"),
    ("l", "L"), ("ɫ", "L"), ("r", "R"), ("ɹ", "R"), ("ʁ", "R"), ("j", "Y"), ("w", "W"), ("ɾ", "T"),
)


@functools.cache
def espeak_phones(word: str) -> str | None:
    """ARPAbet phones for a word via eSpeak NG's phonemizer; None when eSpeak NG is missing."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        return None
    result = subprocess.run(  # noqa: S603 - fixed binary, the word is an argument, not shell
        [binary, "-q", "--ipa", "-v", "en-us", word], capture_output=True, text=True, check=False, timeout=10
    )
    ipa = "".join(ch for ch in result.stdout.strip() if ch not in "ˈˌː_ \u0361-")
    phones: list[str] = []
    i = 0
    while i < len(ipa):
        for key, arpa in _IPA_TO_ARPABET:
            if ipa.startswith(key, i):
                phones.extend(arpa.split())
                i += len(key)
                break
        else:
            i += 1  # a mark we do not model (stress, length, glottal stop)
    return " ".join(phones) or None


@functools.cache
def general_vocabulary(size: int) -> tuple[tuple[str, float], ...]:
    """The ``size`` most likely words of the generic English model shipped in the wheel, with
    their probabilities (only words of the pronouncing dictionary).

    WHY: callers use words no template foresaw ("heating", "unfortunately"); a word missing
    from the vocabulary can never be recognised and drags its neighbours wrong. Added as
    unigrams weighted by how common they are, they cost little when unused.
    """
    ngram_model: Any = pocketsphinx.__dict__["NGramModel"]
    config: Any = pocketsphinx.__dict__["Config"]
    logmath_type: Any = pocketsphinx.__dict__["LogMath"]
    logmath = logmath_type()
    model = ngram_model(config(), logmath, str(model_path() / "en-us" / "en-us.lm.bin"))
    scored: list[tuple[float, str]] = []
    for word in _cmudict_all():
        if word.isalpha() or (word.replace("'", "").isalpha() and word.count("'") == 1):
            scored.append((float(logmath.exp(model.prob([word]))), word))
    scored.sort(reverse=True)
    return tuple((word, probability) for probability, word in scored[:size])


def pronunciations(words: Iterable[str]) -> dict[str, list[str]]:
    """Each word's pronunciations: the CMU dictionary, else eSpeak NG's phonemizer."""
    table: dict[str, list[str]] = {}
    for word in sorted(set(words)):
        variants = _cmudict_variants(word)
        if not variants:
            guessed = espeak_phones(word)
            variants = [guessed] if guessed else []
        if variants:
            table[word] = variants
    return table


def build_domain_model(
    facts: HotelFacts | None = None,
    hotel_name: str | None = None,
    extra_sentences: Sequence[str] = (),
    *,
    cache_dir: Path | None = None,
) -> DomainModel:
    """Build (or reuse from ``cache_dir``) the ARPA model and dictionary for one line."""
    corpus = build_corpus(facts, hotel_name, extra_sentences)
    text = "\n".join(corpus) + "\n"
    # "whole": files cached before writes were atomic per writer may hold another file's text
    salt = f"{DISCOUNT_MASS} {GENERAL_WORDS} {GENERAL_MASS} new-only whole"
    digest = hashlib.sha256(f"{salt}\n{text}".encode()).hexdigest()[:16]
    directory = cache_dir or Path(tempfile.gettempdir()) / "voicehive-lm"
    directory.mkdir(parents=True, exist_ok=True)
    lm_path = directory / f"hotel-{digest}.arpa"
    dict_path = directory / f"hotel-{digest}.dict"
    words = {word for sentence in corpus for word in sentence.split()}
    words |= {word for word, _ in general_vocabulary(GENERAL_WORDS)} if GENERAL_WORDS else set()
    table = pronunciations(words)
    if not lm_path.exists() or not dict_path.exists():
        known = "\n".join(line for line in text.splitlines() if all(w in table for w in line.split()))
        model = ArpaBoLM(text=known + "\n", add_start=True, discount_mass=DISCOUNT_MASS)
        if GENERAL_WORDS:
            general = general_vocabulary(GENERAL_WORDS)
            mass = GENERAL_MASS * sum(model.grams_1.values()) / sum(p for _, p in general)
            for word, probability in general:
                if word in table and word not in model.grams_1:  # never reweigh the line's own words
                    model.grams_1[word] = max(1, round(probability * mass))
        model.compute()
        lines: list[str] = []
        for word, variants in table.items():
            for index, phones in enumerate(variants):
                lines.append(f"{word}{'' if index == 0 else f'({index + 1})'} {phones}")
        _publish(lm_path, model.write)
        _publish(dict_path, lambda handle: handle.write("\n".join(lines) + "\n"))
    return DomainModel(lm_path, dict_path, frozenset(table), tuple(corpus))


def _publish(path: Path, write: Callable[[TextIO], object]) -> None:
    """Write ``path`` whole or not at all: a temp file of this writer's own, then an atomic rename.

    WHY its own: every process and thread on a machine shares the cache, and several build the
    same line's files at once (the rig's Riva stand-in and the e2e callers)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with open(fd, "w", encoding="utf-8") as handle:
            write(handle)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; other users on the machine share the cache
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
