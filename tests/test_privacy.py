"""Keyed hashing, sealing and key loading (pure logic, no I/O)."""

from __future__ import annotations

import base64
import re

import pytest

from voicehive.api.models import HASH_PATTERN, VoiceSessionSpec
from voicehive.privacy import (
    KeyConfigError,
    PiiHasher,
    Privacy,
    Sealer,
    SealError,
    call_ref_sealer,
    generate_key_b64,
    is_call_ref,
    load_key,
    normalise_e164,
)

KEY = base64.b64decode(generate_key_b64())


@pytest.mark.parametrize(
    "variant",
    ["+49 30 1234567", "+49-30-123 45 67", "0049301234567", "tel:+49301234567", "sip:+49301234567@trunk.example;user=phone",
     "49301234567", "(+49) 30/1234567"],
)
def test_formatting_variants_give_one_caller_hash(variant: str) -> None:
    hasher = PiiHasher(KEY)
    assert normalise_e164(variant) == "+49301234567"
    assert hasher.phone(variant) == hasher.phone("+49301234567")
    assert re.match(HASH_PATTERN, hasher.phone(variant))


def test_hashes_are_keyed_and_domain_separated() -> None:
    one, other = PiiHasher(KEY), PiiHasher(base64.b64decode(generate_key_b64()))
    assert one.phone("+49301234567") != other.phone("+49301234567")
    assert one.room("+49301234567") != one.phone("+49301234567")
    ref = one.call_ref("vh-abc-_+49301234567_x")
    assert is_call_ref(ref) and len(ref) <= 63 and "49301234567" not in ref
    assert ref == one.call_ref("vh-abc-_+49301234567_x")


def test_hashes_are_hmac_sha256_of_domain_and_value_unchanged_across_releases() -> None:
    """Caller hashes and call refs are stored in Redis and CRs: a new release must compute the
    same ones (HMAC-SHA256 over ``domain NUL value``; vectors from Python's ``hmac.new``)."""
    hasher = PiiHasher(bytes(range(32)))
    assert hasher.phone("+49 30 1234567") == "d3fa3afd780cdb13df5a7d030e410a72e25b679cb500e0fae6f3fdf3ceaef966"
    assert hasher.call_ref("vh-abc-_+49301234567_x") == "c-" + "7bfb2c8c6ace5b15a03a"


def test_national_numbers_need_a_country_code() -> None:
    assert normalise_e164("030 1234567") == "0301234567"
    assert normalise_e164("030 1234567", default_country_code="49") == "+49301234567"
    with pytest.raises(ValueError, match="not a phone number"):
        normalise_e164("call me maybe")


def test_sealing_round_trip_and_tamper_detection() -> None:
    sealer = Sealer(KEY)
    token = sealer.seal_text("Mein Name ist Anna Schmidt", context="c-1")
    assert "Anna" not in token
    assert sealer.open_text(token, context="c-1") == "Mein Name ist Anna Schmidt"
    with pytest.raises(SealError):
        sealer.open_text(token, context="c-2")  # bound to its call
    body = bytearray(base64.urlsafe_b64decode(token[3:]))
    body[-1] ^= 1
    with pytest.raises(SealError):
        sealer.open(token[:3] + base64.urlsafe_b64encode(bytes(body)).decode())
    with pytest.raises(SealError):
        Sealer(base64.b64decode(generate_key_b64())).open(token, context="c-1")
    for junk in ("", "v1_", "v2_abc", "v1_!!!", "v1_AAAA"):
        with pytest.raises(SealError):
            sealer.open(junk)


def test_sealed_call_ref_fits_the_crd_and_opens_with_the_pii_key_alone() -> None:
    privacy = Privacy.from_keys(KEY, base64.b64decode(generate_key_b64()))
    sealed = privacy.seal_call_ref("vh-abc-_+49301234567_x", "sip_+49301234567")
    assert "49301234567" not in sealed
    VoiceSessionSpec(line_ref={"name": "x"}, room_hash="a" * 64, caller_hash="b" * 64, sealed_call_ref=sealed)
    secret = call_ref_sealer(KEY)  # what the operator holds: only VOICEHIVE_PII_KEY
    from voicehive.privacy import open_call_ref

    opened = open_call_ref(secret, sealed)
    assert opened.room == "vh-abc-_+49301234567_x" and opened.participant_identity == "sip_+49301234567"


@pytest.mark.parametrize(
    ("value", "problem"),
    [(None, "is not set"), ("", "is not set"), ("%%%not-base64", "not valid base64"),
     (base64.b64encode(b"short").decode(), "decodes to 5 bytes")],
)
def test_key_errors_name_the_variable(value: str | None, problem: str) -> None:
    env = {} if value is None else {"VOICEHIVE_PII_KEY": value}
    with pytest.raises(KeyConfigError, match=problem) as info:
        load_key("VOICEHIVE_PII_KEY", env)
    assert info.value.variable == "VOICEHIVE_PII_KEY"
    assert str(info.value).startswith("VOICEHIVE_PII_KEY")


def test_both_missing_keys_are_reported_at_once() -> None:
    with pytest.raises(KeyConfigError) as info:
        Privacy.from_env({})
    assert "VOICEHIVE_PII_KEY" in str(info.value) and "VOICEHIVE_TRANSCRIPT_KEY" in str(info.value)

