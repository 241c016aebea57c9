"""Keyed hashing and sealing of personal data (caller numbers, room names, transcripts).

WHY: LiveKit names each caller's room after the caller's phone number, and SIP participant
identities carry it too. Nothing that stores, names or logs a call may therefore use those
strings verbatim. Everything derives from a keyed HMAC-SHA256 (key ``VOICEHIVE_PII_KEY``, from a
Secret), so the same caller always maps to the same hash (erasure by caller hash works) while a
stolen Redis dump or a log file cannot be reversed by enumerating phone numbers.

Small secrets that must be recoverable (transcript text, the room name a worker has to join)
are sealed with AES-256-GCM (key ``VOICEHIVE_TRANSCRIPT_KEY`` for transcripts; the operator and
orchestrator share one key for the VoiceSession's ``sealedCallRef``).

Both keys are 32 random bytes, base64-encoded in the environment; a missing or malformed key
stops start-up with an error that names the variable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PII_KEY_ENV = "VOICEHIVE_PII_KEY"
TRANSCRIPT_KEY_ENV = "VOICEHIVE_TRANSCRIPT_KEY"
KEY_BYTES = 32
CALL_REF_PREFIX = "c-"
# 20 hex chars = 80 bits: collision-free for any realistic number of calls, and short enough
# for Kubernetes names (<= 63), label values and Redis keys.
CALL_REF_HEX_CHARS = 20
_SEAL_VERSION = "v1"
_NONCE_BYTES = 12

_CALL_REF_RE = re.compile(rf"^{CALL_REF_PREFIX}[0-9a-f]{{{CALL_REF_HEX_CHARS}}}$")
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


class KeyConfigError(ValueError):
    """A key from the environment is missing or malformed; ``variable`` names it."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class SealError(ValueError):
    """A sealed value could not be opened (wrong key, tampered, or not a sealed value)."""


def generate_key_b64() -> str:
    """A fresh key in the format the environment variables expect (for tests and setup docs)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def decode_key(variable: str, value: str | None) -> bytes:
    """Decode a base64 32-byte key; errors name ``variable`` and never echo the value."""
    if value is None or not value.strip():
        raise KeyConfigError(variable, f"is not set; expected {KEY_BYTES} random bytes, base64-encoded")
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyConfigError(variable, "is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise KeyConfigError(variable, f"decodes to {len(raw)} bytes; expected exactly {KEY_BYTES}")
    return raw


def load_key(variable: str, environ: Mapping[str, str] | None = None) -> bytes:
    """Read and decode one key from the environment (``os.environ`` unless given)."""
    env = os.environ if environ is None else environ
    return decode_key(variable, env.get(variable))


# --------------------------------------------------------------------------- phone numbers

_PHONE_JUNK = re.compile(r"[\s\-./()\u00a0]")


def normalise_e164(number: str, default_country_code: str | None = None) -> str:
    """Canonical form of a phone number so formatting variants hash to one value.

    Accepts ``+49 30 1234-567``, ``0049301234567``, ``tel:+49301234567``,
    ``sip:+49301234567@trunk;user=phone`` and bare international digits as trunks send them.
    A national number (leading ``0``) is kept as is unless ``default_country_code`` is given.
    Raises ``ValueError`` (without echoing the number) when it is not a phone number.
    """
    text = number.strip().lower()
    for scheme in ("tel:", "sip:", "sips:"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    text = text.split("@", 1)[0].split(";", 1)[0]
    text = _PHONE_JUNK.sub("", text)
    if text.startswith("00"):
        text = "+" + text[2:]
    if text.startswith("+"):
        digits = text[1:]
        international = True
    else:
        digits = text
        international = False
    if not digits.isdigit() or not 3 <= len(digits) <= 15:
        raise ValueError("not a phone number (expected up to 15 digits, optionally E.164 '+')")
    if international:
        return "+" + digits
    if digits.startswith("0"):
        if default_country_code:
            return "+" + default_country_code.lstrip("+") + digits.lstrip("0")
        return digits
    # Trunks often send international numbers without the '+'.
    return "+" + digits


# --------------------------------------------------------------------------- keyed hashing


class PiiHasher:
    """Keyed HMAC-SHA256 of personal strings, domain-separated so a phone hash never equals
    a room hash of the same text."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"PII key must be {KEY_BYTES} bytes")
        self._key = key

    def digest(self, domain: str, value: str) -> str:
        """Hex HMAC of ``value`` in ``domain`` (64 hex chars)."""
        # hmac.digest with a digest name: OpenSSL's one-shot HMAC, not the pure-Python HMAC object
        return hmac.digest(self._key, domain.encode() + b"\x00" + value.encode("utf-8"), "sha256").hex()

    def phone(self, number: str) -> str:
        """Caller hash: stable across formatting variants of the same number."""
        try:
            canonical = normalise_e164(number)
        except ValueError:
            canonical = number.strip()
        return self.digest("phone", canonical)

    def caller(self, number: str | None) -> str:
        """Caller hash of a SIP participant: its number's hash, or :meth:`anonymous_caller`
        when LiveKit delivered no usable number (caller ID withheld: absent, ``anonymous``)."""
        if number:
            try:
                return self.digest("phone", normalise_e164(number))
            except ValueError:
                pass
        return self.anonymous_caller()

    def anonymous_caller(self) -> str:
        """The one caller hash shared by every call without a caller number.

        WHY one value, not none: ``callerHash`` is required, a call without a number must still
        be served, and its own domain means it never equals a phone hash. Erasure by caller
        cannot single out a withheld number; such calls go by retention (docs/orchestrator.md).
        """
        return self.digest("anonymous-caller", "")

    def room(self, room_name: str) -> str:
        return self.digest("room", room_name)

    def identity(self, participant_identity: str) -> str:
        return self.digest("identity", participant_identity)

    def call_ref(self, room_name: str) -> str:
        """Short stable name of a call (``c-<20 hex>``) for Redis keys, k8s names and labels."""
        return call_ref_of(self.room(room_name))

    def event_id(self, raw: str) -> str:
        """Dedupe id of a delivery; keyed so a content-derived id reveals nothing."""
        return self.digest("event", raw)[:32]


def call_ref_of(room_hash: str) -> str:
    """The call reference of a keyed room hash (what a VoiceSession's ``spec.roomHash`` holds)."""
    return CALL_REF_PREFIX + room_hash[:CALL_REF_HEX_CHARS]


def is_call_ref(value: str) -> bool:
    return bool(_CALL_REF_RE.match(value))


def is_hash(value: str) -> bool:
    """Whether ``value`` looks like a full caller/room hash (64 lowercase hex)."""
    return bool(_HASH_RE.match(value))


# --------------------------------------------------------------------------- sealing


class Sealer:
    """AES-256-GCM sealing of small secrets into ASCII tokens ``v1_<base64url(nonce|ct)>``.

    The alphabet (letters, digits, ``-_=``) fits the CRD pattern of ``sealedCallRef``.

    ``context`` is authenticated (AAD): a token sealed for one call cannot be replayed into
    another call's record without failing to open.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"sealing key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, context: str = "") -> str:
        nonce = os.urandom(_NONCE_BYTES)  # what secrets.token_bytes reads, without its Python layers
        ciphertext = self._aead.encrypt(nonce, plaintext, context.encode())
        return f"{_SEAL_VERSION}_{base64.urlsafe_b64encode(nonce + ciphertext).decode('ascii')}"

    def open(self, token: str, context: str = "") -> bytes:
        version, _, body = token.partition("_")
        if version != _SEAL_VERSION or not body:
            raise SealError("not a sealed value")
        try:
            raw = base64.urlsafe_b64decode(body.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise SealError("sealed value is not valid base64") from None
        if len(raw) <= _NONCE_BYTES:
            raise SealError("sealed value is truncated")
        try:
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode())
        except InvalidTag:
            raise SealError("sealed value failed authentication (wrong key or tampered)") from None

    def seal_text(self, text: str, context: str = "") -> str:
        return self.seal(text.encode("utf-8"), context)

    def open_text(self, token: str, context: str = "") -> str:
        return self.open(token, context).decode("utf-8")


@dataclass(frozen=True)
class CallSecret:
    """What a worker needs to join its call, kept sealed in ``VoiceSession.spec.sealedCallRef``."""

    room: str
    participant_identity: str


_CALL_REF_CONTEXT = "voicehive.io/sealedCallRef"


def seal_call_ref(sealer: Sealer, room: str, participant_identity: str) -> str:
    """Seal the room name and SIP identity as JSON ``{"room", "participantIdentity"}``."""
    payload = json.dumps({"room": room, "participantIdentity": participant_identity}, separators=(",", ":"))
    return sealer.seal(payload.encode("utf-8"), _CALL_REF_CONTEXT)


def open_call_ref(sealer: Sealer, sealed: str) -> CallSecret:
    """Inverse of :func:`seal_call_ref`; raises :class:`SealError` on a bad token."""
    try:
        data = json.loads(sealer.open(sealed, _CALL_REF_CONTEXT))
        return CallSecret(room=str(data["room"]), participant_identity=str(data["participantIdentity"]))
    except (ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, SealError):
            raise
        raise SealError("sealed call reference has the wrong shape") from None


# --------------------------------------------------------------------------- per-line keys

# HKDF purpose of a line's transcript key: the operator puts it in the line's Secret (the
# worker's VOICEHIVE_TRANSCRIPT_KEY), the orchestrator derives it from the master key.
TRANSCRIPT_PURPOSE = "transcript"


def derive_line_key(master_key: bytes, namespace: str, line: str, purpose: str = "line") -> bytes:
    """The key of one HotelLine (and purpose), derived from a master key with HKDF-SHA256.

    WHY one function: lines are isolated by key (a line's staff get its key, never the master),
    and every component must derive the same key from the same inputs. ``purpose`` separates
    uses of one line key (e.g. ``"recording"`` wraps recording data keys).
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    if len(master_key) != KEY_BYTES:
        raise ValueError(f"master key must be {KEY_BYTES} bytes")
    info = b"\x00".join((b"voicehive.io/line-key/v1", purpose.encode(), namespace.encode(), line.encode()))
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(master_key)


# --------------------------------------------------------------------------- bundle


@dataclass(frozen=True)
class Privacy:
    """The keys a component needs, loaded once: hashing (PII key) and transcript sealing.

    ``transcripts`` is the component's own transcript key. A worker holds its line's key (from the
    line's Secret). A component given ``transcript_master`` (the orchestrator) holds the master
    key and seals each call's transcript with the key of the call's line, derived here, so one
    line's transcripts open with that line's key whichever component stored them.
    """

    hasher: PiiHasher
    transcripts: Sealer
    call_refs: Sealer
    transcript_master: bytes | None = field(default=None, repr=False)
    _line_sealers: dict[tuple[str, str], Sealer] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_keys(cls, pii_key: bytes, transcript_key: bytes, *, per_line: bool = False) -> Privacy:
        # sealedCallRef is sealed with a key derived from the PII key so the operator needs
        # only VOICEHIVE_PII_KEY to open it; transcripts keep their own key.
        call_ref_key = hmac.new(pii_key, b"voicehive.io/sealedCallRef-key", hashlib.sha256).digest()
        return cls(hasher=PiiHasher(pii_key), transcripts=Sealer(transcript_key), call_refs=Sealer(call_ref_key),
                   transcript_master=transcript_key if per_line else None)

    def transcripts_for(self, namespace: str | None, line: str | None) -> Sealer:
        """The sealer of a call's transcript: its line's key where this component holds the master
        key and the line is known, else this component's own key."""
        if self.transcript_master is None or not namespace or not line:
            return self.transcripts
        sealer = self._line_sealers.get((namespace, line))
        if sealer is None:
            key = derive_line_key(self.transcript_master, namespace, line, TRANSCRIPT_PURPOSE)
            sealer = self._line_sealers[(namespace, line)] = Sealer(key)
        return sealer

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, per_line: bool = False) -> Privacy:
        """Load both keys; reports every missing/malformed variable at once."""
        problems: list[KeyConfigError] = []
        keys: dict[str, bytes] = {}
        for variable in (PII_KEY_ENV, TRANSCRIPT_KEY_ENV):
            try:
                keys[variable] = load_key(variable, environ)
            except KeyConfigError as exc:
                problems.append(exc)
        if problems:
            if len(problems) == 1:
                raise problems[0]
            raise KeyConfigError(
                ", ".join(p.variable for p in problems), "; ".join(str(p) for p in problems)
            )
        return cls.from_keys(keys[PII_KEY_ENV], keys[TRANSCRIPT_KEY_ENV], per_line=per_line)

    def seal_call_ref(self, room: str, participant_identity: str) -> str:
        return seal_call_ref(self.call_refs, room, participant_identity)

    def open_call_ref(self, sealed: str) -> CallSecret:
        return open_call_ref(self.call_refs, sealed)


def call_ref_sealer(pii_key: bytes) -> Sealer:
    """The sealer for ``sealedCallRef`` given only the PII key (what the operator loads)."""
    return Privacy.from_keys(pii_key, bytes(KEY_BYTES)).call_refs
