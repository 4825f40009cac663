"""The sealer on its own, without servers: decoded messages in, one complete result per message out.

The key source and the collection are in-memory fakes here (the real ones are exercised by
tests/consumers/test_encryptor.py and tests/test_pipeline.py); what is pinned down is the bookkeeping —
which message each event, dead letter and refusal belongs to — and the retries.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import AutoReconnect, BulkWriteError

from consumers.messages import ID_CONFLICT, INVALID_EVENT, USER_SHREDDED, Decoded, Rejected
from consumers.sealing import Sealer
from pulseseal.envelope import DataKey, open_sealed
from schemas import HealthEvent, validate_event
from tests.consumers.helpers import FakeKeySource, fixed_key_material
from tests.factories import random_events

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
USERS = ["ann", "bob", "cy"]


class FakeCollection:
    """`insert_many` into a dict by `_id`; can fail with connection losses or refuse chosen ids."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.connection_losses = 0
        self.refuse: set[str] = set()
        self.calls = 0
        self.sent: list[list[str]] = []
        """The `_id`s of each `insert_many`, in call order."""
        self.looked_up: list[str] = []

    async def insert_many(self, docs: list[dict[str, Any]], *, ordered: bool) -> Any:
        assert ordered is False
        self.calls += 1
        self.sent.append([doc["_id"] for doc in docs])
        if self.connection_losses:
            self.connection_losses -= 1
            raise AutoReconnect("connection lost")
        errors, inserted = [], 0
        for index, doc in enumerate(docs):
            if doc["_id"] in self.refuse:
                errors.append({"index": index, "code": 121, "errmsg": "validation"})
            elif doc["_id"] in self.documents:
                errors.append({"index": index, "code": 11000, "errmsg": "duplicate key"})
            else:
                self.documents[doc["_id"]] = doc
                inserted += 1
        if errors:
            raise BulkWriteError({"writeErrors": errors, "nInserted": inserted, "writeConcernErrors": []})
        return type("Result", (), {"inserted_ids": [d["_id"] for d in docs]})()

    async def find_one(self, query: dict[str, Any]) -> dict[str, Any] | None:
        """`{"_id": id}`, as the store looks up ids that are probably stored already."""
        (doc_id,) = query.values()
        self.looked_up.append(doc_id)
        return self.documents.get(doc_id)


class Sleeps:
    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


def make(keys: FakeKeySource | None = None) -> tuple[Sealer, FakeKeySource, FakeCollection, Sleeps]:
    source, collection, sleeps = keys or FakeKeySource(), FakeCollection(), Sleeps()
    sealer = Sealer(
        source, cast("AsyncCollection[dict[str, Any]]", collection), clock=lambda: NOW, sleep=sleeps
    )
    return sealer, source, collection, sleeps


def events(n: int, seed: int, users: list[str] = USERS) -> list[HealthEvent]:
    return [validate_event(e) for e in random_events(n, users, random.Random(seed))]


def rejected(line: int) -> Rejected:
    return Rejected(b"{}", INVALID_EVENT, f"line {line}: missing field", line=line)


async def test_each_message_gets_its_counts_rejects_and_failure_back_in_order() -> None:
    sealer, keys, collection, _ = make()
    first, second = events(3, 1), events(2, 2)
    results = await sealer.flush(
        [
            Decoded(first, [rejected(2)]),
            Decoded(failure="RecursionError"),
            Decoded(second),
        ]
    )
    assert [(r.stored, r.dead, r.retry, r.failure) for r in results] == [
        (3, [rejected(2)], False, None),
        (0, [], False, "RecursionError"),
        (2, [], False, None),
    ]
    assert set(collection.documents) == {e.event_id for e in first + second}
    assert keys.requests == [frozenset(e.user_id for e in first + second)]  # one request per batch


async def test_stored_documents_open_with_the_users_keys() -> None:
    sealer, _, collection, _ = make()
    batch = events(20, 3)
    await sealer.flush([Decoded(batch)])
    for event in batch:
        document = collection.documents[event.event_id]
        assert document["sealed_at"] == NOW
        key = DataKey(event.user_id, 1, fixed_key_material(event.user_id))
        assert open_sealed(document, key) == event


async def test_a_shredded_users_events_are_dead_lettered_after_the_messages_own_rejects() -> None:
    sealer, _, collection, _ = make(FakeKeySource(shredded={"bob"}))
    mixed = events(30, 4)
    results = await sealer.flush([Decoded(mixed, [rejected(9)]), Decoded(events(5, 5, ["ann"]))])
    bobs = [e for e in mixed if e.user_id == "bob"]
    assert bobs, "the seed must give bob some events"
    dead = results[0].dead
    assert dead[0] == rejected(9)
    assert [(d.code, d.event_id) for d in dead[1:]] == [(USER_SHREDDED, e.event_id) for e in bobs]
    assert all("crypto-shredded" in d.reason for d in dead[1:])
    assert (results[0].stored, results[1].stored, results[1].dead) == (len(mixed) - len(bobs), 5, [])
    assert not any(doc["user_id"] == "bob" for doc in collection.documents.values())


async def test_the_key_service_away_is_waited_out_with_backoff() -> None:
    keys = FakeKeySource()
    sealer, _, collection, sleeps = make(keys)
    calls = 0
    real = keys.encrypt_keys

    async def twice_away(user_ids: Any) -> Any:
        nonlocal calls
        calls += 1
        keys.unavailable = calls <= 2
        return await real(user_ids)

    keys.encrypt_keys = twice_away  # type: ignore[method-assign]
    batch = events(4, 6)
    (result,) = await sealer.flush([Decoded(batch)])
    assert result.stored == 4
    assert len(sleeps.seconds) == 2
    assert 0.05 <= sleeps.seconds[0] <= 0.1
    assert 0.1 <= sleeps.seconds[1] <= 0.2
    assert len(collection.documents) == 4


async def test_a_lost_connection_is_retried_and_duplicates_count_as_stored() -> None:
    sealer, _, collection, sleeps = make()
    batch = events(6, 7)
    await sealer.flush([Decoded(batch[:2])])
    collection.connection_losses = 1
    (result,) = await sealer.flush([Decoded(batch)])
    assert result.stored == 6
    assert not result.retry
    assert len(sleeps.seconds) == 1
    assert len(collection.documents) == 6
    # The retry looked every id up first and sent only the four that were not stored.
    assert sorted(collection.looked_up) == sorted(e.event_id for e in batch)
    assert sorted(collection.sent[-1]) == sorted(e.event_id for e in batch[2:])


async def test_the_stored_events_of_a_redelivered_message_are_not_sent_again() -> None:
    sealer, _, collection, _ = make()
    batch, fresh = events(6, 10), events(3, 11)
    await sealer.flush([Decoded(batch[:4])])
    results = await sealer.flush([Decoded(batch, redelivered=True), Decoded(fresh)])
    assert [r.stored for r in results] == [6, 3]
    assert sorted(collection.looked_up) == sorted(e.event_id for e in batch)  # the fresh message's: never
    assert sorted(collection.sent[-1]) == sorted(e.event_id for e in batch[4:] + fresh)
    assert len(collection.documents) == 9


async def test_a_redelivered_event_stored_for_another_user_is_a_conflict() -> None:
    sealer, _, collection, _ = make()
    (event,) = events(1, 12)
    await sealer.flush([Decoded([event])])
    squatted = event.model_copy(update={"user_id": "victim"})
    (result,) = await sealer.flush([Decoded([squatted], redelivered=True)])
    assert result.stored == 0
    assert [d.code for d in result.dead] == [ID_CONFLICT]
    assert collection.documents[event.event_id]["user_id"] == event.user_id
    assert len(collection.sent) == 1  # nothing sent again: the lookup found it


async def test_a_refused_document_sends_only_its_message_back() -> None:
    sealer, _, collection, _ = make()
    first, second = events(3, 8), events(3, 9)
    collection.refuse = {second[1].event_id}
    results = await sealer.flush([Decoded(first), Decoded(second)])
    assert [r.retry for r in results] == [False, True]
    assert set(collection.documents) == {e.event_id for e in first} | {second[0].event_id, second[2].event_id}


@pytest.mark.parametrize("messages", [[], [Decoded()], [Decoded(failure="ValueError")]])
async def test_nothing_to_seal_writes_nothing(messages: list[Decoded]) -> None:
    sealer, _, collection, _ = make()
    results = await sealer.flush(messages)
    assert len(results) == len(messages)
    assert collection.calls == 0
