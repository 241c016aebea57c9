"""Multilingual intent recognition for caller utterances (en, de, fr, es, it).

WHY: the transcription endpoint answers with ``intent_detected`` and the worker's deterministic
dialogue policy routes on it, on the hot path of every caller turn. A weighted lexicon of word
stems and short phrases is deterministic, explainable (``IntentResult.matched`` says why),
runs in microseconds and needs no model download. Text is folded first (lower case, accents
stripped, ``ß`` -> ``ss``) so ASR spelling variants match one pattern.

Scoring: every pattern that matches adds its weight to its intent. Strong, specific cues
(cancel, change, complain, a person) weigh more than generic booking words, so "cancel my
booking" is a cancellation, not a booking. The highest score wins; confidence grows with the
score and with the margin over the runner-up. No cue at all gives ``unknown``.

Confidence of a recorded intent (``with_asr_confidence``, the one place this rule lives): the
classifier's confidence times the ASR's confidence of the words. The classifier scores the words
as transcribed; the intent can only be right if the words are, so a sure intent read from a
transcript the ASR was unsure of is unsure too.

With a language hint (the ASR's language tag) only that language's patterns are tried first;
if none match, all languages are tried (callers switch language, ASR tags are sometimes wrong).
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, replace
from enum import StrEnum

from voicehive.negation import split_negation


class Intent(StrEnum):
    BOOK_ROOM = "book_room"
    CHECK_AVAILABILITY = "check_availability"
    MODIFY_BOOKING = "modify_booking"
    CANCEL_BOOKING = "cancel_booking"
    REQUEST_INFO = "request_info"
    SPEAK_TO_HUMAN = "speak_to_human"
    COMPLAINT = "complaint"
    GOODBYE = "goodbye"
    UNKNOWN = "unknown"


SUPPORTED_LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es", "it")


@dataclass(frozen=True)
class IntentResult:
    intent: Intent
    confidence: float
    language: str | None
    matched: tuple[str, ...] = ()
    negated: tuple[str, ...] = ()  # intents whose cues the caller negated ("do not cancel")


def fold(text: str) -> str:
    """Lower-case, strip accents, unify apostrophes/hyphens to spaces: the matching form."""
    text = text.lower().replace("ß", "ss").replace("œ", "oe").replace("æ", "ae")
    if not text.isascii():  # ASCII has no accents to strip (NFKD leaves it as it is)
        decomposed = unicodedata.normalize("NFKD", text)
        text = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    text = _NOT_MATCHED.sub(" ", text)  # apostrophes and hyphens too: "won't" -> "won t"
    return " " + " ".join(text.split()) + " "


_NOT_MATCHED = re.compile(r"[^\w\s?]")


# (intent, weight, languages, pattern over folded text). ``*`` = all languages.
_W_STRONG = 3.0
_W_MED = 2.0
_W_WEAK = 1.0

_RULES: list[tuple[Intent, float, str, str]] = [
    # ---------------------------------------------------------------- cancel_booking
    (Intent.CANCEL_BOOKING, _W_STRONG, "en", r"\bcancel\w*"),
    (Intent.CANCEL_BOOKING, _W_MED, "en", r"\bcall(ing)? off\b|\bwon t be (coming|able to come)\b|\bno longer (need|come|coming)\b"),
    (Intent.CANCEL_BOOKING, _W_STRONG, "de", r"\bstorn\w*|\babsage\b|\babsagen\b|\bsage\w* \w* ?ab\b|\bannull\w*"),
    (Intent.CANCEL_BOOKING, _W_MED, "de", r"\bnicht mehr kommen\b|\bkommen nicht\b|\bzuruckziehen\b"),
    (Intent.CANCEL_BOOKING, _W_STRONG, "de", r"\b(sage|sagen|sagt|sag)\b[\w ]{0,30}\bab\b|\bfallt[\w ]{0,20}\baus\b"),
    (Intent.CANCEL_BOOKING, _W_STRONG, "fr", r"\bannul\w*|\bdecommander\b"),
    (Intent.CANCEL_BOOKING, _W_MED, "fr", r"\bne (pourrai|pourrons|viendrai|viendrons) (pas|plus)\b"),
    (Intent.CANCEL_BOOKING, _W_STRONG, "es", r"\bcancel\w*|\banul\w*"),
    (Intent.CANCEL_BOOKING, _W_MED, "es", r"\bno (podre|podremos|vamos a poder|voy a poder) (ir|venir)\b"),
    (Intent.CANCEL_BOOKING, _W_STRONG, "it", r"\bcancell\w*|\bannull\w*|\bdisdir\w*|\bdisdett\w*|\bdisdic\w*"),
    (Intent.CANCEL_BOOKING, _W_MED, "it", r"\bnon (potro|potremo|possiamo piu|posso piu) venire\b"),
    # ---------------------------------------------------------------- modify_booking
    (Intent.MODIFY_BOOKING, _W_STRONG, "en", r"\b(change|changing|modify|amend|move|moving|update|reschedule|postpone|shift)\b[\w ]{0,30}\b(booking|reservation|dates?|stay|arrival|departure|check ?in|check ?out|room type|nights?)\b"),
    (Intent.MODIFY_BOOKING, _W_STRONG, "en", r"\b(extend|shorten)\b[\w ]{0,20}\b(stay|booking|reservation)\b|\b(add|one more|an extra|extra) (an? )?(extra )?nights?\b|\bupgrade\b"),
    (Intent.MODIFY_BOOKING, _W_MED, "en", r"\b(different|other|new) dates?\b|\barrive (a day )?(later|earlier)\b|\binstead of\b"),
    (Intent.MODIFY_BOOKING, _W_STRONG, "de", r"\b(andern|abandern|umbuchen|umbuchung|verschieben|verlangern|verkurzen|anpassen)\b"),
    (Intent.MODIFY_BOOKING, _W_MED, "de", r"\banderes datum\b|\bandere(n)? (daten|termin|zimmer)\b|\beine nacht (mehr|langer|zusatzlich)\b|\bspater anreisen\b|\bfruher anreisen\b|\bstatt\b"),
    (Intent.MODIFY_BOOKING, _W_STRONG, "fr", r"\b(modifi\w*|changer|decaler|reporter|prolonger|raccourcir|deplacer)\b"),
    (Intent.MODIFY_BOOKING, _W_MED, "fr", r"\b(autres?|nouvelles?) dates?\b|\bune nuit (de plus|supplementaire)\b|\barriver plus (tard|tot)\b|\bau lieu d"),
    (Intent.MODIFY_BOOKING, _W_STRONG, "es", r"\b(cambiar|cambio|cambie|cambien|modific\w*|mover|aplazar|posponer|ampliar|alargar|acortar|extender)\b"),
    (Intent.MODIFY_BOOKING, _W_MED, "es", r"\b(otras?|nuevas?) fechas?\b|\buna noche mas\b|\bllegar mas (tarde|temprano)\b|\ben lugar de\b|\ben vez de\b"),
    (Intent.MODIFY_BOOKING, _W_STRONG, "it", r"\b(modific\w*|cambiare|spostare|posticipare|anticipare|prolungare|allungare|estendere|accorciare)\b"),
    (Intent.MODIFY_BOOKING, _W_MED, "it", r"\b(altre|nuove) date\b|\buna notte in piu\b|\barrivare (piu tardi|prima)\b|\binvece d"),
    # ---------------------------------------------------------------- speak_to_human
    (Intent.SPEAK_TO_HUMAN, _W_STRONG, "en", r"\b(speak|talk|connect|transfer|put me through|get me)\b[\w ]{0,25}\b(person|human|someone|somebody|receptionist|reception|front desk|operator|agent|manager|staff|employee|concierge|real)\b"),
    (Intent.SPEAK_TO_HUMAN, _W_STRONG, "en", r"\b(person|human|someone|somebody|receptionist|operator|agent|manager|staff)\b[\w ]{0,25}\b(speak|talk)\b"),
    (Intent.SPEAK_TO_HUMAN, _W_STRONG, "en", r"\b(real|actual|live) (person|human)\b|\bhuman being\b|\bnot a (robot|machine|bot)\b|\boperator\b|\brepresentative\b"),
    (Intent.SPEAK_TO_HUMAN, _W_STRONG, "de", r"\b(sprechen|reden|verbinden|durchstellen|weiterleiten|weiterverbinden|verbunden)\b[\w ]{0,40}\b(mensch\w*|mitarbeiter\w*|person|rezeption|empfang|jemand\w*|kollegin|kollegen|chef\w*|vorgesetzte\w*|manager\w*)\b|\b(mensch\w*|mitarbeiter\w*|person|rezeption|empfang|jemand\w*|kollegin|kollegen|chef\w*|vorgesetzte\w*|manager\w*)\b[\w ]{0,40}\b(sprechen|reden|verbinden|durchstellen|durch|weiterleiten|weiterverbinden|verbunden)\b"),
    (Intent.SPEAK_TO_HUMAN, _W_STRONG, "de", r"\b(echte\w* (person|mensch\w*)|kein\w* (roboter|maschine|computer))\b"),
    (Intent.SPEAK_TO_HUMAN, _W_STRONG, "fr", r"\b(parler|joindre|pass(er|ez)|transfer\w*|mett(re|ez) (moi )?en relation|me mettre en relation)\b[\w ]{0,25}\b(quelqu un|personne|humain|reception|receptionniste|conseiller|conseillere|agent|employe|operateur|responsable|accueil|vrai)\b"),
    (Intent.SPEAK_TO_HUMAN, _W_STRONG, "fr", r"\b(vraie personne|etre humain|pas un robot)\b"),
    (Intent.SPEAK_TO_HUMAN, _W_STRONG, "es", r"\b(hablar|comunica\w*|pas[ae]\w*|transferi\w*|pon\w*)\b[\w ]{0,25}\b(persona|humano|alguien|recepcion|recepcionista|agente|empleado|operador\w*|encargado|responsable|real)\b"),
    (Intent.SPEAK_TO_HUMAN, _W_STRONG, "es", r"\b(persona real|ser humano|no (con )?una maquina|no (con )?un robot)\b"),
    (Intent.SPEAK_TO_HUMAN, _W_STRONG, "it", r"\b(parlare|passare|passarmi|passami|passi|passa|passate|trasferi\w*|mettere in contatto|mettermi in contatto|collega\w*)\b[\w ]{0,25}\b(persona|umano|qualcuno|reception|receptionist|operatore|operatrice|addetto|responsabile|impiegato|vera)\b"),
    (Intent.SPEAK_TO_HUMAN, _W_STRONG, "it", r"\b(persona vera|essere umano|non (con )?una macchina|non (con )?un robot)\b"),
    # ---------------------------------------------------------------- complaint
    (Intent.COMPLAINT, _W_STRONG, "en", r"\bcomplain\w*|\bunacceptable\b|\bdisgust\w*|\bterrible\b|\bawful\b|\bhorrible\b|\bdisappoint\w*|\bfurious\b|\bangry\b|\bupset\b|\brefund\b"),
    (Intent.COMPLAINT, _W_MED, "en", r"\b(dirty|filthy|noisy|loud|broken|not working|doesn t work|does not work|rude|smells?|stain\w*|cold shower|no hot water|bugs|cockroach\w*|mould|mold|overcharged|charged twice|still waiting|too (cold|hot|small|loud|noisy))\b"),
    (Intent.COMPLAINT, _W_STRONG, "de", r"\bbeschwer\w*|\breklamation\w*|\bunverschamt\w*|\binakzeptabel\b|\bentsetzlich\b|\bschrecklich\b|\bfurchtbar\b|\benttausch\w*|\bverargert\b|\bwutend\b|\bunmoglich\b|\berstattung\b"),
    (Intent.COMPLAINT, _W_MED, "de", r"\b(schmutzig\w*|dreckig\w*|laut\w*|kaputt\w*|funktioniert nicht|geht nicht|unfreundlich\w*|stinkt|kein warmes wasser|kalt|flecken|zu viel berechnet|doppelt abgebucht|warte\w* seit)\b"),
    (Intent.COMPLAINT, _W_STRONG, "fr", r"\bplainte\b|\bplaindre\b|\breclamation\b|\binadmissible\b|\binacceptable\b|\bhorrible\b|\bdeplorable\b|\bdecu\w*|\bfurieux\b|\bmecontent\w*|\bscandal\w*|\brembours\w*"),
    (Intent.COMPLAINT, _W_MED, "fr", r"\b(sale|sales|crasseu\w*|bruyant\w*|casse\w*|ne marche pas|ne fonctionne pas|en panne|impoli\w*|desagreable|pas d eau chaude|odeur|taches?|facture deux fois|trop facture|j attends depuis)\b"),
    (Intent.COMPLAINT, _W_STRONG, "es", r"\bqueja\w*|\bquejar\w*|\breclamacion\w*|\breclamar\b|\binaceptable\b|\bhorrible\b|\bterrible\b|\bdecepcion\w*|\bfurioso\b|\benfadad\w*|\bmolest\w*|\bindignad\w*|\breembolso\b"),
    (Intent.COMPLAINT, _W_MED, "es", r"\b(sucia|sucio|ruido\w*|roto|rota|no funciona|estropead\w*|maleducad\w*|grosero|mal olor|huele|manchas?|no hay agua caliente|cobrado dos veces|cobraron de mas|llevo esperando)\b"),
    (Intent.COMPLAINT, _W_STRONG, "it", r"\breclam\w*|\blament\w*|\blamentel\w*|\binaccettabil\w*|\borribile\b|\bterribile\b|\bdeluso\b|\bdelusa\b|\bdeludente\b|\bfurioso\b|\barrabbiat\w*|\bvergogn\w*|\brimborso\b"),
    (Intent.COMPLAINT, _W_MED, "it", r"\b(sporc\w*|rumoros\w*|rotto|rotta|non funziona|guasto|guasta|scortese|maleducat\w*|puzza|macchie|non c e acqua calda|addebitato due volte|aspetto da)\b"),
    # ---------------------------------------------------------------- goodbye
    (Intent.GOODBYE, _W_STRONG, "en", r"\b(good ?bye|bye|bye bye|see you|farewell|have a (nice|good|great) (day|evening|night)|that s (all|everything|it)|that was (all|everything)|nothing else|no more questions|i m done|take care)\b"),
    (Intent.GOODBYE, _W_STRONG, "de", r"\b(tschuss|auf wiedersehen|auf wiederhoren|wiederhoren|ciao|bis dann|bis bald|schonen tag|einen schonen (tag|abend)|das war s|das wars|das ist alles|das war alles|sonst nichts|nichts weiter|mach s gut)\b"),
    (Intent.GOODBYE, _W_STRONG, "fr", r"\b(au revoir|adieu|a bientot|a plus tard|bonne (journee|soiree|nuit)|c est tout|ce sera tout|rien d autre|plus de questions|salut)\b"),
    (Intent.GOODBYE, _W_STRONG, "es", r"\b(adios|hasta luego|hasta pronto|hasta manana|chao|chau|buen dia|buenas noches|que tenga un buen dia|eso es todo|es todo|nada mas|ninguna pregunta mas)\b"),
    (Intent.GOODBYE, _W_STRONG, "it", r"\b(arrivederci|arrivederla|ciao|a presto|buona (giornata|serata|notte)|e tutto|era tutto|nient altro|nessun altra domanda|alla prossima)\b"),
    # ---------------------------------------------------------------- check_availability
    (Intent.CHECK_AVAILABILITY, _W_STRONG, "en", r"\bavailab\w*|\bvacanc\w*|\bfully booked\b|\bsold out\b|\b(any|a) (free|spare|open) rooms?\b|\b(rooms?|anything) (left|free|open)\b|\bdo you have (any )?(rooms?|space|a (double|single|twin|suite|family))\b|\bis there (any )?room\b"),
    (Intent.CHECK_AVAILABILITY, _W_STRONG, "de", r"\bverfugbar\w*|\bausgebucht\b|\b(noch )?(ein |zimmer )?frei(e|es|en)?\b|\bnoch (ein )?zimmer\b|\bhaben sie (noch )?(ein |einen )?(freies |freie )?(zimmer|platz)\b|\bgibt es (noch )?(ein |freie )?zimmer\b|\bplatz\b"),
    (Intent.CHECK_AVAILABILITY, _W_STRONG, "fr", r"\bdisponib\w*|\bcomplet\b|\b(chambres?|places?) (libres?|de libre)\b|\breste t il\b|\bil (vous |nous )?reste\b|\bde la place\b|\bavez vous (encore )?(une|des) chambres?\b|\by a t il (encore )?(une|des) chambres?\b"),
    (Intent.CHECK_AVAILABILITY, _W_STRONG, "es", r"\bdisponib\w*|\bcomplet[oa]s?\b|\b(habitacion|habitaciones) (libres?)\b|\bqueda\w* (alguna )?(habitacion\w*|sitio)\b|\bhay (alguna )?(habitacion\w*|sitio)\b|\btienen (alguna )?habitacion\w*"),
    (Intent.CHECK_AVAILABILITY, _W_STRONG, "it", r"\bdisponib\w*|\bal completo\b|\b(camere?|stanze?) (libere?|libera)\b|\bavete (ancora )?(una |delle )?(camer\w*|stanz\w*|posto)\b|\bc e (ancora )?(una |un )?(camera|stanza|posto)\b|\bci sono (ancora )?(camere|stanze)\b"),
    # ---------------------------------------------------------------- book_room
    (Intent.BOOK_ROOM, _W_MED, "en", r"\bbook\b|\bbooking a\b|\breserve\b|\bmake a (reservation|booking)\b|\b(need|want|like|looking for|get) (a|two|three|an?) [\w ]{0,15}\b(room|suite|double|single|twin)\b|\bstay with you\b|\b(like|want|planning|plan) to stay\b|\bfor \w+ nights?\b"),
    (Intent.BOOK_ROOM, _W_WEAK, "en", r"\breservation\b|\broom for\b|\bnights?\b"),
    (Intent.BOOK_ROOM, _W_MED, "de", r"\bbuchen\b|\breservier\w*|\b(brauche|brauchen|mochte|mochten|hatte gern|hatte gerne|hatten gern|hatten gerne|suche|suchen|wurde gern|wurde gerne|wurden gern|wurden gerne)\b[\w ]{0,25}\b(\w*zimmer|suite)\b|\bubernachten\b|\bfur \w+ nachte?\b"),
    (Intent.BOOK_ROOM, _W_WEAK, "de", r"\bbuchung\b|\bzimmer fur\b|\bnachte?\b"),
    (Intent.BOOK_ROOM, _W_MED, "fr", r"\breserver\b|\bfaire une reservation\b|\b(voudrais|veux|souhaite|souhaiterais|aimerais|cherche|besoin d)\b[\w ]{0,25}\b(chambre|suite)\b|\bpour \w+ nuits?\b|\bsejourner\b"),
    (Intent.BOOK_ROOM, _W_WEAK, "fr", r"\breservation\b|\bchambre pour\b|\bnuits?\b"),
    (Intent.BOOK_ROOM, _W_MED, "es", r"\breservar\b|\bhacer una reserva\b|\b(quiero|quisiera|necesito|busco|me gustaria)\b[\w ]{0,25}\b(habitacion|suite|doble|individual)\b|\bpor \w+ noches?\b|\balojar\w*|\bhospedar\w*"),
    (Intent.BOOK_ROOM, _W_WEAK, "es", r"\breserva\b|\bhabitacion para\b|\bnoches?\b"),
    (Intent.BOOK_ROOM, _W_MED, "it", r"\bprenotare\b|\bfare una prenotazione\b|\b(vorrei|voglio|desidero|cerco|ho bisogno di|mi servirebbe|mi serve)\b[\w ]{0,25}\b(camera|stanza|suite|doppia|singola|matrimoniale)\b|\bper \w+ notti?\b|\bsoggiornare\b"),
    (Intent.BOOK_ROOM, _W_WEAK, "it", r"\bprenotazione\b|\bcamera per\b|\bnotti?\b"),
    # ---------------------------------------------------------------- request_info
    (Intent.REQUEST_INFO, _W_MED, "en", r"\b(breakfast|parking|park|wi ?fi|internet|pool|gym|fitness|spa|sauna|restaurant|bar|pets?|dogs?|cats?|airport|shuttle|taxi|address|located|location|directions|check ?in time|check ?out time|late check ?out|early check ?in|luggage|towels?|laundry|elevator|lift|wheelchair|accessible|cots?|crib|minibar|air conditioning|price|prices|rate|rates|cost|costs|how much|included|include|open|opening hours|deposit|payment|credit card)\b"),
    (Intent.REQUEST_INFO, _W_WEAK, "en", r"\b(what time|when|where|which|how (do|can|far|long)|is there|do you (have|offer|allow|accept)|can i|information|tell me|question)\b"),
    (Intent.REQUEST_INFO, _W_MED, "de", r"\b(fruhstuck|parkplatz\w*|parken|tiefgarage|wlan|wifi|internet|schwimmbad|pool|fitness\w*|spa|sauna|restaurant|bar|haustier\w*|hund\w*|katze|flughafen|shuttle|taxi|adresse|anfahrt|check ?in|check ?out|gepack|handtuch\w*|aufzug|rollstuhl\w*|barrierefrei|babybett|klimaanlage|preis\w*|kostet|kosten|wie viel|inklusive|inbegriffen|geoffnet|offnungszeiten|kaution|bezahlen|kreditkarte)\b"),
    (Intent.REQUEST_INFO, _W_WEAK, "de", r"\b(wann|wo|welche\w*|wie (komme|weit|lange)|gibt es|haben sie|darf ich|kann ich|information\w*|frage)\b"),
    (Intent.REQUEST_INFO, _W_MED, "fr", r"\b(petit dejeuner|parking|garer|wifi|wi fi|internet|piscine|salle de sport|fitness|spa|sauna|restaurant|bar|animaux|chiens?|chats?|aeroport|navette|taxi|adresse|situe|acces|arrivee|depart|check ?in|check ?out|bagages|serviettes?|ascenseur|fauteuil roulant|accessible|lit bebe|climatisation|prix|tarifs?|coute|combien|compris|inclus|ouvert|horaires|caution|payer|paiement|carte bancaire)\b"),
    (Intent.REQUEST_INFO, _W_WEAK, "fr", r"\b(a quelle heure|quand|ou se trouve|ou est|quel\w*|comment|est ce qu il y a|y a t il|acceptez vous|puis je|renseignements?|informations?|question)\b"),
    (Intent.REQUEST_INFO, _W_MED, "es", r"\b(desayuno|aparcamiento|aparcar|parking|estacionamiento|wifi|internet|piscina|gimnasio|spa|sauna|restaurante|bar|mascotas?|perros?|gatos?|aeropuerto|traslado|taxi|direccion|ubicad\w*|llegar|entrada|salida|check ?in|check ?out|equipaje|toallas?|ascensor|silla de ruedas|accesible|cuna|aire acondicionado|precios?|tarifas?|cuesta|cuanto|incluido|incluye|abierto|horario|deposito|pagar|pago|tarjeta)\b"),
    (Intent.REQUEST_INFO, _W_WEAK, "es", r"\b(a que hora|cuando|donde|cual\w*|como|hay|tienen|aceptan|puedo|informacion|pregunta)\b"),
    (Intent.REQUEST_INFO, _W_MED, "it", r"\b(colazione|parcheggi\w*|parcheggiare|garage|wifi|wi fi|internet|piscina|palestra|spa|sauna|ristorante|bar|animali|cani|cane|gatti|aeroporto|navetta|taxi|indirizzo|si trova|arrivo|partenza|check ?in|check ?out|bagagli|asciugamani|ascensore|sedia a rotelle|accessibile|culla|aria condizionata|prezz\w*|tariff\w*|costa|quanto|incluso|inclusa|compreso|compresa|aperto|orari\w*|cauzione|pagare|pagamento|carta di credito)\b"),
    (Intent.REQUEST_INFO, _W_WEAK, "it", r"\b(a che ora|quando|dove|qual\w*|come|c e|avete|accettate|posso|informazion\w*|domanda)\b"),
]

_COMPILED: list[tuple[Intent, float, str, re.Pattern[str]]] = [
    (intent, weight, lang, re.compile(pattern)) for intent, weight, lang, pattern in _RULES
]

# Tie-break order: the more consequential or specific intent wins an exact tie.
_PRIORITY: dict[Intent, int] = {
    Intent.SPEAK_TO_HUMAN: 0,
    Intent.CANCEL_BOOKING: 1,
    Intent.COMPLAINT: 2,
    Intent.MODIFY_BOOKING: 3,
    Intent.CHECK_AVAILABILITY: 4,
    Intent.BOOK_ROOM: 5,
    Intent.REQUEST_INFO: 6,
    Intent.GOODBYE: 7,
}

def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Function words that tell the languages apart (folded form).
_STOPWORDS: dict[str, frozenset[str]] = {
    "en": _words("the a an i you is are to for my me have do can would like with please my your it this what and of not"),
    "de": _words("der die das ich sie ist ein eine einen zu fur mein meine haben habe mochte bitte mit und nicht ich noch wie was gibt es bei ihnen"),
    "fr": _words("le la les je vous est un une des pour mon ma mes avez voudrais sil plait avec et pas ne de du quel quelle est ce c"),
    "es": _words("el la los las yo usted es un una para mi tengo tiene quiero quisiera por favor con y no de del que hay como"),
    "it": _words("il lo la gli le io lei e un una per mio mia ho ha vorrei per favore con non di del che ci sono avete come della"),
}


def normalise_language(language: str | None) -> str | None:
    """``"de-DE"`` -> ``"de"``; unsupported or empty -> ``None``."""
    if not language:
        return None
    base = language.strip().lower().replace("_", "-").split("-", 1)[0]
    return base if base in SUPPORTED_LANGUAGES else None


def guess_language(text: str) -> str | None:
    """The supported language whose function words occur most; ``None`` when unclear."""
    words = fold(text).split()
    if not words:
        return None
    counts = {lang: sum(1 for w in words if w in stop) for lang, stop in _STOPWORDS.items()}
    best = max(counts, key=lambda lang: counts[lang])
    ranked = sorted(counts.values(), reverse=True)
    if ranked[0] == 0 or ranked[0] == ranked[1]:
        return None
    return best


# Rules that read the whole utterance even when part of it is negated: goodbyes are often
# negative ("nothing else"), and some rules spell a negation out ("not working", "won't be coming").
_NEGATION_WORDS = re.compile(r"\b(not|no|nicht|kein|pas|non|ne|won t|doesn t|don t|nada|nient|nessun)\b")
_NEGATION_PROOF: frozenset[int] = frozenset(
    i for i, (intent, _, _, pattern) in enumerate(_RULES)
    if intent == Intent.GOODBYE or _NEGATION_WORDS.search(pattern.replace("\\b", " "))
)


# The rules of each language (None: all), each with its label in ``matched`` and whether it is
# negation-proof, in rule order.
_RULES_OF: dict[str | None, tuple[tuple[Intent, float, str, re.Pattern[str], bool], ...]] = {
    language: tuple(
        (intent, weight, f"{intent.value}/{lang}", pattern, index in _NEGATION_PROOF)
        for index, (intent, weight, lang, pattern) in enumerate(_COMPILED)
        if language is None or lang == language
    )
    for language in (None, *SUPPORTED_LANGUAGES)
}


def _score(folded: str, language: str | None, affirmed: str | None = None) -> tuple[dict[Intent, float], list[str]]:
    """Sums rule weights (``language`` None: every language's rules); with ``affirmed``
    (negated words removed) only proof rules see ``folded``."""
    scores: dict[Intent, float] = {}
    matched: list[str] = []
    for intent, weight, label, pattern, proof in _RULES_OF[language]:
        if pattern.search(folded if affirmed is None or proof else affirmed):
            scores[intent] = scores.get(intent, 0.0) + weight
            matched.append(label)
    return scores, matched


def classify(text: str, language: str | None = None) -> IntentResult:
    """Classify one caller utterance; ``language`` is the ASR's tag if known."""
    folded = fold(text)
    hint = normalise_language(language)
    detected = hint or guess_language(text)
    negation = split_negation(text, detected)
    affirmed = fold(negation.kept) if negation.has_negation else None
    scores: dict[Intent, float] = {}
    matched: list[str] = []
    for languages in ((detected,) if detected else ()) + (None,):
        scores, matched = _score(folded, languages, affirmed)
        if scores:
            break
    negated = tuple(sorted(i.value for i in _score(folded, None)[0].keys() - scores.keys())) if affirmed else ()
    if not scores:
        return IntentResult(Intent.UNKNOWN, 0.5 if folded.strip() else 1.0, detected, negated=negated)
    ranked = sorted(scores.items(), key=lambda item: (-item[1], _PRIORITY[item[0]]))
    best, top = ranked[0]
    runner_up = ranked[1][1] if len(ranked) > 1 else 0.0
    strength = min(1.0, top / _W_STRONG)
    margin = (top - runner_up) / top
    confidence = round(0.35 + 0.4 * strength + 0.24 * margin, 3)
    return IntentResult(best, min(confidence, 0.99), detected, tuple(matched), negated)


def with_asr_confidence(result: IntentResult, asr_confidence: float) -> IntentResult:
    """``result`` with its confidence scaled by the ASR's confidence of the words (see the module doc).

    The ASR's figure is clamped to [0, 1]; a missing one (NaN) leaves the classifier's as is.
    """
    if math.isnan(asr_confidence):
        return result
    scale = min(1.0, max(0.0, asr_confidence))
    return replace(result, confidence=round(result.confidence * scale, 3))
