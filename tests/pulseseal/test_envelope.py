"""The sealed envelope v1: published AES-GCM vectors, frozen sample documents, round trips, tampering.

The only AESGCM use outside the two recipes is the NIST test below, which checks the primitive itself.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import bson
import pytest
from bson.codec_options import CodecOptions
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pulseseal.envelope import (
    ALG,
    DOCUMENT_FIELDS,
    ENVELOPE_VERSION,
    MAX_KEY_VERSION,
    NONCE_BYTES,
    DataKey,
    IntegrityError,
    KeyExpired,
    associated_data,
    from_millis,
    open_sealed,
    seal,
    to_millis,
)
from schemas import HealthEvent, canonical_json, parse_event, validate_event
from tests.factories import valid_event
from tests.strategies import event_dicts
from tests.vectors.make_vectors import BEGIN, DOCS_PATH, END, load_document, render_markdown

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
NIST = json.loads((VECTORS / "aes256gcm_nist.json").read_text(encoding="utf-8"))["vectors"]
FROZEN = json.loads((VECTORS / "envelopes_v1.json").read_text(encoding="utf-8"))

ALICE_1 = bytes(range(32))
ALICE_2 = bytes(range(32, 64))
BOB_1 = bytes(range(64, 96))
SEALED_AT = datetime(2026, 11, 29, 8, 0, 0, 123_456, tzinfo=UTC)


def key(user_id: str = "user-0001", version: int = 1, material: bytes = ALICE_1) -> DataKey:
    """A handle without expiry."""
    return DataKey(user_id, version, material)


def event(type_: str = "migraine_attack", **overrides: Any) -> HealthEvent:
    """A validated factory event."""
    return validate_event(valid_event(type_, **overrides))


def sealed(
    type_: str = "migraine_attack", data_key: DataKey | None = None, **overrides: Any
) -> dict[str, Any]:
    """A sealed factory event."""
    return seal(event(type_, **overrides), data_key or key(), now=SEALED_AT)


def assert_fails_to_open(document: object, data_key: DataKey) -> None:
    """Opening must raise the one opaque IntegrityError and nothing else."""
    with pytest.raises(IntegrityError) as caught:
        open_sealed(document, data_key)  # type: ignore[arg-type]
    assert str(caught.value) == "sealed document failed to open"
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ or caught.value.__context__ is None


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
    again = seal(
        parse_event(vector["plaintext"]),
        _frozen_key(vector),
        now=document["sealed_at"],
        nonce=document["nonce"],
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
        {"key_version": MAX_KEY_VERSION + 1},
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


def test_an_injected_nonce_is_used() -> None:
    nonce = bytes.fromhex("00112233445566778899aabb")
    first = seal(event(), key(), now=SEALED_AT, nonce=nonce)
    second = seal(event(), key(), now=SEALED_AT, nonce=nonce)
    assert first["nonce"] == nonce
    assert first == second


@pytest.mark.parametrize("size", [0, 8, 11, 13, 16])
def test_an_injected_nonce_must_be_12_bytes(size: int) -> None:
    with pytest.raises(ValueError, match="12 bytes"):
        seal(event(), key(), nonce=b"\x00" * size)


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


# --- tampering ----------------------------------------------------------------------------------------------


def _flip(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


@pytest.mark.parametrize("field", ["nonce", "ciphertext"])
def test_flipping_any_bit_of_nonce_or_ciphertext_fails_to_open(field: str) -> None:
    document = sealed()
    for bit in range(len(document[field]) * 8):
        assert_fails_to_open(document | {field: _flip(document[field], bit)}, key())


@pytest.mark.parametrize(
    "ciphertext",
    [
        lambda c: c[:-1],
        lambda c: c[:-16],
        lambda c: c[:16],
        lambda c: c + b"\x00",
        lambda c: b"",
        lambda c: c[1:],
    ],
    ids=["drop-last-byte", "drop-tag", "tag-only-length", "extra-byte", "empty", "drop-first-byte"],
)
def test_a_shortened_or_lengthened_ciphertext_fails_to_open(ciphertext: Callable[[bytes], bytes]) -> None:
    document = sealed()
    assert_fails_to_open(document | {"ciphertext": ciphertext(document["ciphertext"])}, key())


ANOTHER_ID = "11111111-2222-4333-8444-555555555555"

CHANGED_FIELDS: list[tuple[str, object]] = [
    ("_id", ANOTHER_ID),
    ("_id", "0B6F8D3E-1C2A-4B5E-9F00-0123456789AB"),  # the same UUID, written differently
    ("_id", ""),
    ("_id", uuid.UUID("0b6f8d3e-1c2a-4b5e-9f00-0123456789ab")),
    ("user_id", "user-0002"),
    ("user_id", "USER-0001"),
    ("user_id", None),
    ("occurred_at", datetime(2026, 11, 28, 6, 30, 0, 1000, tzinfo=UTC)),  # +1 ms
    ("occurred_at", datetime(2026, 11, 28, 6, 29, 59, 999_000, tzinfo=UTC)),  # -1 ms
    ("occurred_at", datetime(2026, 11, 28, 7, 30, 0)),  # naive local time read as UTC
    ("occurred_at", "2026-11-28T07:30:00+01:00"),
    ("occurred_at", 1795851000000),
    ("key_version", 2),
    ("key_version", 0),
    ("key_version", 1.0),
    ("key_version", True),
    ("key_version", "1"),
    ("alg", "AES-128-GCM"),
    ("alg", "aes-256-gcm"),
    ("alg", ""),
    ("alg", None),
    ("v", 2),
    ("v", 0),
    ("v", True),
    ("v", 1.0),
    ("v", "1"),
    ("v", None),
    ("nonce", "AAECAwQFBgcICQoL"),
    ("nonce", 12),
    ("nonce", list(range(12))),
    ("nonce", b"\x00" * 16),
    ("ciphertext", 10**9),  # bytes(10**9) would allocate a gigabyte of zeros
    ("ciphertext", "ciphertext"),
    ("ciphertext", None),
]


@pytest.mark.parametrize(("field", "value"), CHANGED_FIELDS)
def test_changing_any_clear_field_fails_to_open(field: str, value: object) -> None:
    assert_fails_to_open(sealed() | {field: value}, key())


@pytest.mark.parametrize("field", ["nonce", "ciphertext"])
def test_the_right_bytes_as_a_list_of_ints_are_not_binary(field: str) -> None:
    document = sealed()
    assert_fails_to_open(document | {field: list(document[field])}, key())


def test_binary_fields_may_come_as_any_bytes_like_object() -> None:
    document = sealed()
    for wrap in (bytearray, memoryview, bson.Binary):
        assert open_sealed(
            document | {"nonce": wrap(document["nonce"]), "ciphertext": wrap(document["ciphertext"])}, key()
        )


def test_integers_may_come_as_bson_int64() -> None:
    # PyMongo returns BSON int64 values as bson.Int64, an int subclass; key versions from 2**31 are int64.
    document = sealed() | {"v": bson.Int64(1), "key_version": bson.Int64(1)}
    assert open_sealed(document, key()) == event()


@pytest.mark.parametrize("field", [f for f in DOCUMENT_FIELDS if f != "sealed_at"])
def test_a_document_missing_a_field_fails_to_open(field: str) -> None:
    document = sealed()
    del document[field]
    assert_fails_to_open(document, key())


@pytest.mark.parametrize("document", [None, [], "document", b"document", 42])
def test_something_that_is_not_a_document_fails_to_open(document: object) -> None:
    assert_fails_to_open(document, key())


def test_the_associated_data_binds_user_and_version_even_for_a_matching_handle() -> None:
    # A handle labelled for the changed field, holding the right key bytes: only the tag check can tell.
    document = sealed()
    assert_fails_to_open(document | {"user_id": "mallory"}, key("mallory"))
    assert_fails_to_open(document | {"key_version": 2}, key(version=2))


def test_moving_nonce_and_ciphertext_to_another_document_of_the_same_user_fails() -> None:
    first = sealed(event_id="aaaaaaaa-0000-4000-8000-000000000001")
    second = sealed(event_id="aaaaaaaa-0000-4000-8000-000000000002")
    assert_fails_to_open(first | {"ciphertext": second["ciphertext"]}, key())
    assert_fails_to_open(first | {"nonce": second["nonce"], "ciphertext": second["ciphertext"]}, key())


def test_moving_nonce_and_ciphertext_between_users_fails() -> None:
    alice, bob = key("alice", material=ALICE_1), key("bob", material=BOB_1)
    alices = sealed(user_id="alice", data_key=alice)
    bobs = sealed(user_id="bob", data_key=bob, event_id=ANOTHER_ID)
    moved = {"nonce": bobs["nonce"], "ciphertext": bobs["ciphertext"]}
    assert_fails_to_open(alices | moved, alice)
    assert_fails_to_open(alices | moved, bob)
    # Even between two users whose keys happen to be the same bytes, the associated data tells them apart.
    twin = key("bob", material=ALICE_1)
    bobs_twin = sealed(user_id="bob", data_key=twin)
    assert_fails_to_open(alices | {"nonce": bobs_twin["nonce"], "ciphertext": bobs_twin["ciphertext"]}, alice)


def test_moving_a_ciphertext_between_key_versions_fails() -> None:
    old, new = key(version=1, material=ALICE_1), key(version=2, material=ALICE_2)
    sealed_new = sealed(data_key=new)
    assert_fails_to_open(sealed_new | {"key_version": 1}, old)


@pytest.mark.parametrize(
    "wrong",
    [
        key("user-0002"),  # another user's handle
        key(version=2, material=ALICE_2),  # another version
        key(material=ALICE_2),  # the right labels, other key bytes
    ],
    ids=["other-user", "other-version", "other-key-bytes"],
)
def test_opening_with_a_key_that_is_not_the_documents_fails(wrong: DataKey) -> None:
    assert_fails_to_open(sealed(), wrong)


def _forge(document: dict[str, Any], plaintext: bytes) -> dict[str, Any]:
    """`document` with a ciphertext of `plaintext` that passes the tag check (sealing-bug simulation)."""
    ad = associated_data(
        v=document["v"],
        event_id=document["_id"],
        user_id=document["user_id"],
        occurred_at_ms=to_millis(document["occurred_at"]),
        key_version=document["key_version"],
    )
    # Reaching into the handle is what a buggy sealer would do; it is the only way to test the checks that
    # come after the tag.
    return document | {"ciphertext": key()._aead().encrypt(document["nonce"], plaintext, ad)}


@pytest.mark.parametrize(
    "inside",
    [
        lambda: canonical_json(event(event_id=ANOTHER_ID)),
        lambda: canonical_json(event(user_id="user-0002")),
        lambda: canonical_json(event(occurred_at="2026-11-28T07:30:00.001+01:00")),
        lambda: b"{}",
        lambda: b"not json",
        lambda: b"",
        lambda: json.dumps(valid_event("heart_rate", data={"bpm": 5})).encode(),
    ],
    ids=[
        "other-event-id",
        "other-user",
        "other-millisecond",
        "empty-object",
        "not-json",
        "empty",
        "invalid-event",
    ],
)
def test_a_tag_valid_document_must_also_hold_its_own_valid_event(inside: Callable[[], bytes]) -> None:
    assert_fails_to_open(_forge(sealed(), inside()), key())


def test_the_forging_helper_does_make_openable_documents() -> None:
    # Guards the test above: with the right plaintext the forged document opens.
    document = sealed()
    assert open_sealed(_forge(document, canonical_json(event())), key()) == event()


# --- properties ---------------------------------------------------------------------------------------------

materials = st.binary(min_size=32, max_size=32)
versions = st.integers(min_value=1, max_value=MAX_KEY_VERSION)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(raw=event_dicts(), material=materials, version=versions)
def test_any_valid_event_round_trips_through_seal_and_open(
    raw: dict[str, Any], material: bytes, version: int
) -> None:
    original = validate_event(raw)
    handle = DataKey(original.user_id, version, material)
    document = seal(original, handle, now=SEALED_AT)
    opened = open_sealed(document, handle)
    assert opened == original
    assert canonical_json(opened) == canonical_json(original)
    assert document["occurred_at"] == from_millis(to_millis(original.occurred_at))
    stored: dict[str, Any] = bson.decode(bson.encode(document), codec_options=CodecOptions(tz_aware=True))
    assert open_sealed(stored, handle) == original


anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=40),
    st.datetimes(),
    st.datetimes(timezones=st.just(UTC)),
    st.lists(st.integers(0, 255), max_size=16),
)


def _maybe(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return good | anything


random_documents = st.fixed_dictionaries(
    {},
    optional={
        "_id": _maybe(st.uuids().map(str)),
        "user_id": _maybe(st.just("user-0001")),
        "occurred_at": _maybe(st.datetimes(timezones=st.just(UTC))),
        "key_version": _maybe(st.just(1)),
        "alg": _maybe(st.just(ALG)),
        "v": _maybe(st.just(1)),
        "nonce": _maybe(st.binary(min_size=12, max_size=12)),
        "ciphertext": _maybe(st.binary(min_size=16, max_size=200)),
        "sealed_at": anything,
        "extra": anything,
    },
)


@settings(max_examples=500)
@given(random_documents)
def test_random_documents_only_ever_raise_integrity_error(document: dict[str, Any]) -> None:
    assert_fails_to_open(document, key())


SEALED = sealed()
AUTHENTICATED = [f for f in DOCUMENT_FIELDS if f != "sealed_at"]


def _same_for_opening(field: str, old: object, new: object) -> bool:
    """Whether `new` is just another spelling of `old` that must still open."""
    if field in ("nonce", "ciphertext") and isinstance(new, bytes | bytearray | memoryview):
        return bytes(new) == old
    if field == "occurred_at" and isinstance(new, datetime):
        return to_millis(new) == to_millis(SEALED["occurred_at"])
    return type(new) is type(old) and new == old


@st.composite
def mutated_documents(draw: st.DrawFn) -> dict[str, Any]:
    """The sealed document with one authenticated field replaced, removed, or bit-flipped."""
    document = dict(SEALED)
    field = draw(st.sampled_from(AUTHENTICATED))
    how = draw(st.sampled_from(["replace", "remove", "flip"]))
    if how == "remove":
        del document[field]
    elif how == "flip" and field in ("nonce", "ciphertext"):
        bits = draw(st.sets(st.integers(0, len(document[field]) * 8 - 1), min_size=1, max_size=8))
        for bit in bits:
            document[field] = _flip(document[field], bit)
    else:
        new = draw(anything | st.datetimes(timezones=st.just(UTC)) | st.binary(min_size=12, max_size=12))
        assume(not _same_for_opening(field, document[field], new))
        document[field] = new
    return document


@settings(max_examples=500)
@given(mutated_documents())
def test_mutated_documents_only_ever_raise_integrity_error(document: dict[str, Any]) -> None:
    assert_fails_to_open(document, key())


def test_the_unmutated_document_opens() -> None:
    # Guards the property above: it is the mutation, not the document, that fails.
    assert open_sealed(dict(SEALED), key()) == event()
