"""The sealed envelope v1: published AES-GCM vectors, frozen sample documents, the document, nonces.

The only AESGCM use outside the two recipes is the NIST test below, which checks the primitive itself.
Tampering and property tests are in test_envelope_tampering.py.
"""

from __future__ import annotations

import inspect
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import bson
import pytest
from bson.codec_options import CodecOptions
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pulseseal.envelope import (
    ALG,
    DOCUMENT_FIELDS,
    ENVELOPE_VERSION,
    NONCE_BYTES,
    DataKey,
    KeyExpired,
    _seal_with_nonce,
    associated_data,
    from_millis,
    open_sealed,
    seal,
    to_millis,
)
from schemas import canonical_json, parse_event
from tests.pulseseal.envelope_helpers import (
    ALICE_1,
    SEALED_AT,
    event,
    key,
    sealed,
)
from tests.vectors.make_vectors import BEGIN, DOCS_PATH, END, load_document, render_markdown

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
NIST = json.loads((VECTORS / "aes256gcm_nist.json").read_text(encoding="utf-8"))["vectors"]
FROZEN = json.loads((VECTORS / "envelopes_v1.json").read_text(encoding="utf-8"))


# --- AES-256-GCM itself ----------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", NIST, ids=[v["name"] for v in NIST])
def test_aes_256_gcm_matches_published_vectors(vector: dict[str, str]) -> None:
    aead = AESGCM(bytes.fromhex(vector["key"]))
    iv, aad = bytes.fromhex(vector["iv"]), bytes.fromhex(vector["aad"])
    plaintext = bytes.fromhex(vector["plaintext"])
    expected = bytes.fromhex(vector["ciphertext"] + vector["tag"])
    assert aead.encrypt(iv, plaintext, aad) == expected
    assert aead.decrypt(iv, expected, aad) == plaintext
    forged = expected[:-1] + bytes([expected[-1] ^ 1])
    with pytest.raises(InvalidTag):
        aead.decrypt(iv, forged, aad)


def test_the_published_vectors_cover_both_sources_and_all_six_spec_cases() -> None:
    assert {v["source"] for v in NIST} == {"cavp", "mcgrew-viega"}
    spec_cases = [v["name"].split(" (")[0] for v in NIST if v["source"] == "mcgrew-viega"]
    assert spec_cases == [f"Test Case {n}" for n in range(13, 19)]


# --- frozen sample documents ------------------------------------------------------------------------------

FROZEN_IDS = [v["name"] for v in FROZEN["vectors"]]


def _frozen_key(vector: dict[str, Any]) -> DataKey:
    document = load_document(vector)
    return DataKey.from_base64(document["user_id"], document["key_version"], vector["key"])


@pytest.mark.parametrize("vector", FROZEN["vectors"], ids=FROZEN_IDS)
def test_every_frozen_v1_document_still_opens(vector: dict[str, Any]) -> None:
    document = load_document(vector)
    opened = open_sealed(document, _frozen_key(vector))
    assert canonical_json(opened) == vector["plaintext"].encode()
    assert opened.event_id == document["_id"]


@pytest.mark.parametrize("vector", FROZEN["vectors"], ids=FROZEN_IDS)
def test_sealing_again_with_the_same_key_nonce_and_time_reproduces_the_frozen_document(
    vector: dict[str, Any],
) -> None:
    document = load_document(vector)
    again = _seal_with_nonce(
        parse_event(vector["plaintext"]), _frozen_key(vector), document["nonce"], now=document["sealed_at"]
    )
    assert list(again) == list(DOCUMENT_FIELDS)
    assert again == document
    assert bson.encode(again) == bson.encode(document)


@pytest.mark.parametrize("vector", FROZEN["vectors"], ids=FROZEN_IDS)
def test_the_frozen_associated_data_is_what_associated_data_builds(vector: dict[str, Any]) -> None:
    document = load_document(vector)
    built = associated_data(
        v=document["v"],
        event_id=document["_id"],
        user_id=document["user_id"],
        occurred_at_ms=to_millis(document["occurred_at"]),
        key_version=document["key_version"],
    )
    assert built.hex() == vector["associated_data_hex"]


def test_the_frozen_set_covers_every_event_type_and_a_rotated_key() -> None:
    documents = [load_document(vector) for vector in FROZEN["vectors"]]
    types = {json.loads(vector["plaintext"])["type"] for vector in FROZEN["vectors"]}
    assert types == {"heart_rate", "steps", "spo2", "sleep", "migraine_attack", "medication"}
    assert any(document["key_version"] > 1 for document in documents)
    assert any(to_millis(document["occurred_at"]) < 0 for document in documents)


def test_the_docs_show_the_frozen_vectors() -> None:
    docs = DOCS_PATH.read_text(encoding="utf-8")
    section = docs[docs.index(BEGIN) : docs.index(END) + len(END)]
    # If this fails: python -m tests.vectors.make_vectors
    assert section == render_markdown(FROZEN)


def test_the_docs_worked_example_is_the_first_vectors_associated_data() -> None:
    docs = DOCS_PATH.read_text(encoding="utf-8")
    block = docs.split("Worked example", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    words = [line.split()[0] for line in block.strip().splitlines()]
    hex_words = [word for word in words if all(c in "0123456789abcdef" for c in word)]
    assert "".join(hex_words) == FROZEN["vectors"][0]["associated_data_hex"]


# --- the document ---------------------------------------------------------------------------------------


def test_a_sealed_document_has_exactly_the_contract_fields() -> None:
    original = event("migraine_attack", occurred_at="2026-11-28T07:30:00.123999+01:00")
    document = seal(original, key(version=3), now=SEALED_AT)
    assert list(document) == list(DOCUMENT_FIELDS)
    assert document["_id"] == original.event_id
    assert document["user_id"] == original.user_id
    assert document["occurred_at"] == datetime(2026, 11, 28, 6, 30, 0, 123_000, tzinfo=UTC)
    assert document["key_version"] == 3
    assert document["alg"] == ALG == "AES-256-GCM"
    assert document["v"] == ENVELOPE_VERSION == 1
    assert isinstance(document["nonce"], bytes)
    assert len(document["nonce"]) == NONCE_BYTES == 12
    assert len(document["ciphertext"]) == len(canonical_json(original)) + 16
    assert document["sealed_at"] == datetime(2026, 11, 29, 8, 0, 0, 123_000, tzinfo=UTC)


def test_the_plaintext_is_not_in_the_document() -> None:
    document = sealed("migraine_attack", data={"notes": "private-note-text"})
    encoded = bson.encode(document)
    assert b"private-note-text" not in encoded
    assert b"bright light" not in encoded


def test_the_document_has_the_contract_bson_types() -> None:
    encoded = bson.encode(sealed())
    # BSON element = type byte, name, NUL: 0x02 string, 0x09 date, 0x10 int32, 0x05 binary.
    for type_byte, name in [
        (0x02, "_id"),
        (0x02, "user_id"),
        (0x09, "occurred_at"),
        (0x10, "key_version"),
        (0x02, "alg"),
        (0x10, "v"),
        (0x05, "nonce"),
        (0x05, "ciphertext"),
        (0x09, "sealed_at"),
    ]:
        assert bytes([type_byte]) + name.encode() + b"\x00" in encoded
    # The nonce is binary of length 12, subtype 0.
    assert b"\x05nonce\x00\x0c\x00\x00\x00\x00" in encoded


@pytest.mark.parametrize("tz_aware", [True, False])
def test_a_document_opens_after_a_trip_through_bson(tz_aware: bool) -> None:
    original = event()
    document = seal(original, key(), now=SEALED_AT)
    stored: dict[str, Any] = bson.decode(bson.encode(document), codec_options=CodecOptions(tz_aware=tz_aware))
    assert open_sealed(stored, key()) == original


def test_sealed_at_defaults_to_the_clock() -> None:
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    document = seal(event(), key())
    assert before <= document["sealed_at"] <= datetime.now(UTC)
    assert document["sealed_at"].microsecond % 1000 == 0


def test_sealed_at_is_bookkeeping_outside_the_authenticated_fields() -> None:
    # Documented in docs/envelope.md: not needed to open, not bound by the associated data.
    document = sealed()
    del document["sealed_at"]
    assert open_sealed(document, key()) == event()


# --- associated data and milliseconds ---------------------------------------------------------------------


def test_associated_data_layout() -> None:
    built = associated_data(v=1, event_id="E", user_id="bob", occurred_at_ms=-2, key_version=0x01020304)
    assert built == (
        b"pulseseal/sealed-event\x00"
        + b"\x01"
        + b"\x00\x01E"
        + b"\x00\x03bob"
        + b"\xff\xff\xff\xff\xff\xff\xff\xfe"
        + b"\x01\x02\x03\x04"
    )
    assert len(built) == 40 + 1 + 3


def test_the_length_prefixes_keep_field_boundaries_apart() -> None:
    one = associated_data(v=1, event_id="ab", user_id="c", occurred_at_ms=0, key_version=1)
    two = associated_data(v=1, event_id="a", user_id="bc", occurred_at_ms=0, key_version=1)
    assert one != two


@pytest.mark.parametrize(
    "fields",
    [
        {"v": 256},
        {"v": -1},
        {"key_version": 2**32},  # the u32 slot (key versions themselves stop at MAX_KEY_VERSION)
        {"key_version": -1},
        {"occurred_at_ms": 2**63},
        {"event_id": "x" * 65_536},
    ],
)
def test_a_field_that_does_not_fit_its_slot_is_a_value_error(fields: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {
        "v": 1,
        "event_id": "e",
        "user_id": "u",
        "occurred_at_ms": 0,
        "key_version": 1,
    }
    with pytest.raises(ValueError, match="does not fit"):
        associated_data(**(arguments | fields))


@pytest.mark.parametrize(
    ("moment", "millis"),
    [
        (datetime(1970, 1, 1, tzinfo=UTC), 0),
        (datetime(1970, 1, 1, 0, 0, 0, 999, tzinfo=UTC), 0),
        (datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC), 1),
        (datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), -1),
        (datetime(1969, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC), -1),
        (datetime(1969, 12, 31, 23, 59, 59, 998_999, tzinfo=UTC), -2),
        (datetime(1970, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1))), 0),
        (datetime(1970, 1, 1, 0, 0, 0, 5000), 5),  # naive is UTC, as PyMongo returns dates
    ],
)
def test_milliseconds_are_floored_utc(moment: datetime, millis: int) -> None:
    assert to_millis(moment) == millis
    assert from_millis(millis) == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)


# --- nonces and sealing errors ------------------------------------------------------------------------------


def test_every_seal_draws_a_fresh_nonce() -> None:
    original = event()
    documents = [seal(original, key(), now=SEALED_AT) for _ in range(2000)]
    assert len({document["nonce"] for document in documents}) == 2000
    assert len({document["ciphertext"] for document in documents}) == 2000
    assert all(open_sealed(document, key()) == original for document in documents[:20])


def test_an_injected_nonce_is_used_by_the_test_only_path() -> None:
    nonce = bytes.fromhex("00112233445566778899aabb")
    first = _seal_with_nonce(event(), key(), nonce, now=SEALED_AT)
    second = _seal_with_nonce(event(), key(), nonce, now=SEALED_AT)
    assert first["nonce"] == nonce
    assert first == second


@pytest.mark.parametrize("size", [0, 8, 11, 13, 16])
def test_an_injected_nonce_must_be_12_bytes(size: int) -> None:
    with pytest.raises(ValueError, match="12 bytes"):
        _seal_with_nonce(event(), key(), b"\x00" * size)


def test_the_public_seal_takes_no_nonce() -> None:
    # A caller-chosen nonce reused under one key breaks AES-GCM; only test vectors may choose one.
    assert "nonce" not in inspect.signature(seal).parameters
    with pytest.raises(TypeError):
        seal(event(), key(), nonce=bytes(12))  # type: ignore[call-arg]


def test_sealing_with_another_users_key_is_refused() -> None:
    with pytest.raises(ValueError, match="another user"):
        seal(event(user_id="alice"), key("bob"))


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_expired_key_neither_seals_nor_opens() -> None:
    clock = FakeClock()
    handle = DataKey("user-0001", 1, ALICE_1, expires_at=60.0, clock=clock)
    document = seal(event(), handle, now=SEALED_AT)
    clock.now = 60.0
    with pytest.raises(KeyExpired):
        seal(event(), handle)
    with pytest.raises(KeyExpired):
        open_sealed(document, handle)
