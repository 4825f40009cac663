"""The shared event factory: what it builds is valid, reproducible and mixed like real traffic."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from schemas import EVENT_TYPES, validate_event
from tests.factories import MISSING, TYPE_WEIGHTS, random_events, valid_event

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("type_", EVENT_TYPES)
def test_valid_event_is_valid_now_and_later(type_: str) -> None:
    event = validate_event(valid_event(type_), now=datetime.now(UTC))
    assert event.type == type_


def test_overrides_merge_into_data_and_missing_removes() -> None:
    event = valid_event("steps", user_id="bob", data={"count": 7, "period_s": MISSING}, source=MISSING)
    assert event["user_id"] == "bob"
    assert event["data"] == {"count": 7}
    assert "source" not in event


def test_each_call_returns_an_independent_dict() -> None:
    first = valid_event("migraine_attack")
    first["data"]["triggers"].append("changed")
    assert valid_event("migraine_attack")["data"]["triggers"] == ["bright light", "poor sleep"]


def test_random_events_are_valid_reproducible_and_in_the_window() -> None:
    users = ["alice", "bob", "carol"]
    events = random_events(2000, users, random.Random(7), now=NOW)
    assert events == random_events(2000, users, random.Random(7), now=NOW)
    validated = [validate_event(event, now=NOW) for event in events]
    assert {event.user_id for event in validated} == set(users)
    assert len({event.event_id for event in validated}) == 2000
    assert all(NOW - timedelta(days=7) <= event.occurred_at < NOW for event in validated)


def test_random_events_mix_types_like_real_traffic() -> None:
    counts = Counter(event["type"] for event in random_events(20_000, ["u"], random.Random(1), now=NOW))
    total = sum(TYPE_WEIGHTS.values())
    for type_, weight in TYPE_WEIGHTS.items():
        assert counts[type_] / 20_000 == pytest.approx(weight / total, abs=0.015)
