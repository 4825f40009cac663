"""The sealed envelope v1 under attack: bit flips, changed fields, moved ciphertexts, random documents."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import bson
import pytest
from bson.codec_options import CodecOptions
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pulseseal.envelope import (
    ALG,
    DOCUMENT_FIELDS,
    MAX_KEY_VERSION,
    DataKey,
    associated_data,
    from_millis,
    open_sealed,
    seal,
    to_millis,
)
from schemas import canonical_json, validate_event
from tests.factories import valid_event
from tests.pulseseal.envelope_helpers import (
    ALICE_1,
    ALICE_2,
    BOB_1,
    SEALED_AT,
    assert_fails_to_open,
    event,
    key,
    sealed,
)
from tests.strategies import event_dicts

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
