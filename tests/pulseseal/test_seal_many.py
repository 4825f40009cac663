"""`seal_many`, the micro-batch form of `seal`: the same documents, byte for byte, and the same refusals.

Also pins the faster millisecond conversion to the original `(moment - epoch) // 1 ms` definition.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pulseseal.envelope import (
    DOCUMENT_FIELDS,
    NONCE_BYTES,
    DataKey,
    KeyExpired,
    _seal_with_nonce,
    from_millis,
    open_sealed,
    seal_many,
    to_millis,
)
from schemas import HealthEvent, parse_event, validate_event
from tests.factories import random_events
from tests.strategies import aware_datetimes
from tests.vectors.make_vectors import load_document

FROZEN = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "envelopes_v1.json").read_text(encoding="utf-8")
)
SEALED_AT = datetime(2026, 11, 29, 8, 0, 0, 123_456, tzinfo=UTC)
USERS = [f"user-{n:03d}" for n in range(7)]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def keys_for(users: list[str]) -> dict[str, DataKey]:
    """One key per user, distinct material, no expiry."""
    return {user: DataKey(user, 1 + n % 3, bytes([n]) * 32) for n, user in enumerate(users)}


def batch(n: int = 50, seed: int = 3) -> list[HealthEvent]:
    """`n` validated events of `USERS`, every type mixed in."""
    return [validate_event(e) for e in random_events(n, USERS, random.Random(seed))]


def counting_random(start: int = 0) -> Callable[[int], bytes]:
    """A deterministic stand-in for `os.urandom`: consecutive byte values."""

    def draw(size: int) -> bytes:
        return bytes((start + i) % 256 for i in range(size))

    return draw


def test_a_batch_gives_exactly_the_documents_seal_gives_for_the_same_nonces() -> None:
    events, keys = batch(), keys_for(USERS)
    randomness = counting_random()(NONCE_BYTES * len(events))
    documents = seal_many(events, keys, now=SEALED_AT, random_bytes=counting_random())
    one_by_one = [
        _seal_with_nonce(
            e, keys[e.user_id], randomness[i * NONCE_BYTES : (i + 1) * NONCE_BYTES], now=SEALED_AT
        )
        for i, e in enumerate(events)
    ]
    assert documents == one_by_one
    assert [bson.encode(d) for d in documents] == [bson.encode(d) for d in one_by_one]
    assert all(list(d) == list(DOCUMENT_FIELDS) for d in documents)
    assert [open_sealed(d, keys[d["user_id"]]) for d in documents] == events


@pytest.mark.parametrize("vector", FROZEN["vectors"], ids=[v["name"] for v in FROZEN["vectors"]])
def test_a_batch_reproduces_every_frozen_document(vector: dict[str, Any]) -> None:
    document = load_document(vector)
    key = DataKey.from_base64(document["user_id"], document["key_version"], vector["key"])
    nonce: bytes = document["nonce"]
    again = seal_many(
        [parse_event(vector["plaintext"])],
        {key.user_id: key},
        now=document["sealed_at"],
        random_bytes=lambda size: nonce * (size // NONCE_BYTES),
    )
    assert again == [document]
    assert bson.encode(again[0]) == bson.encode(document)


def test_every_event_gets_its_own_nonce_from_one_draw() -> None:
    draws: list[int] = []

    def recording(size: int) -> bytes:
        draws.append(size)
        return random.Random(9).randbytes(size)

    documents = seal_many(batch(300), keys_for(USERS), random_bytes=recording)
    assert draws == [NONCE_BYTES * 300]
    assert len({d["nonce"] for d in documents}) == 300
    assert all(len(d["nonce"]) == NONCE_BYTES for d in documents)


def test_the_default_randomness_gives_fresh_nonces_every_batch() -> None:
    events, keys = batch(100), keys_for(USERS)
    nonces = {d["nonce"] for _ in range(20) for d in seal_many(events, keys)}
    assert len(nonces) == 2000


def test_the_batch_has_one_sealed_at_floored_to_the_millisecond() -> None:
    documents = seal_many(batch(), keys_for(USERS), now=SEALED_AT)
    assert {d["sealed_at"] for d in documents} == {datetime(2026, 11, 29, 8, 0, 0, 123_000, tzinfo=UTC)}


def test_sealed_at_defaults_to_the_clock_read_once() -> None:
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    documents = seal_many(batch(), keys_for(USERS))
    after = datetime.now(UTC)
    assert len({d["sealed_at"] for d in documents}) == 1
    assert before <= documents[0]["sealed_at"] <= after


def test_an_empty_batch_is_an_empty_list() -> None:
    assert seal_many([], {}) == []


def test_an_event_without_a_key_is_refused() -> None:
    with pytest.raises(ValueError, match="no data key"):
        seal_many(batch(), keys_for(USERS[:-1]))


def test_a_key_of_another_user_is_refused() -> None:
    keys = keys_for(USERS)
    keys[USERS[0]] = keys[USERS[1]]
    with pytest.raises(ValueError, match="another user"):
        seal_many(batch(), keys)


def test_an_expired_key_is_refused() -> None:
    keys = keys_for(USERS)
    keys[USERS[2]] = DataKey(USERS[2], 1, bytes(32), expires_at=10.0, clock=lambda: 10.0)
    with pytest.raises(KeyExpired):
        seal_many(batch(), keys)


@pytest.mark.parametrize("extra", [-1, 1])
def test_randomness_of_the_wrong_length_is_refused(extra: int) -> None:
    events = batch(5)
    with pytest.raises(ValueError, match="wrong number of bytes"):
        seal_many(events, keys_for(USERS), random_bytes=lambda size: bytes(size + extra))


@given(aware_datetimes)
def test_milliseconds_match_the_timedelta_floor_division(moment: datetime) -> None:
    expected = (moment - _EPOCH) // timedelta(milliseconds=1)
    assert to_millis(moment) == expected
    assert to_millis(moment.replace(tzinfo=None) - (moment.utcoffset() or timedelta(0))) == expected
    assert from_millis(expected) == _EPOCH + expected * timedelta(milliseconds=1)


@given(st.integers(min_value=-(10**6), max_value=10**6))
def test_milliseconds_around_the_epoch_floor(microseconds: int) -> None:
    moment = _EPOCH + timedelta(microseconds=microseconds)
    assert to_millis(moment) == microseconds // 1000
