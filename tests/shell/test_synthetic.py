"""The synthetic wearable traffic of the demo, the soak and the benchmark: valid, mixed, reproducible."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

from schemas import EVENT_TYPES, validate_event
from shell.synthetic import TYPE_WEIGHTS, events, user_ids

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_the_mix_is_valid_reproducible_and_covers_every_event_type() -> None:
    users = user_ids(50)
    first = list(events(3000, users, random.Random(1), now=NOW))
    again = list(events(3000, users, random.Random(1), now=NOW))
    assert first == again
    assert all(validate_event(event, now=NOW) for event in first)
    counts = Counter(event["type"] for event in first)
    assert set(TYPE_WEIGHTS) == set(EVENT_TYPES)  # a new event type must be given a share
    assert set(counts) == set(EVENT_TYPES)
    assert counts["heart_rate"] > counts["steps"] > counts["migraine_attack"]
    assert {event["user_id"] for event in first} <= set(users)
