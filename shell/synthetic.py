"""Synthetic wearable traffic for the demo and the benchmark: plausible events, reproducible from a seed.

Each user wears a band that reports heart rate and steps through the day, SpO2 now and then, sleep
stages at night; some users log a migraine attack or a medication in an app. Times fall in the last
`span` before `now`, each user in their own UTC offset, so every event is valid against the 24 h
future bound at any later clock.
"""

from __future__ import annotations

import random
import uuid
import zlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

# Share of each type in wearable traffic (heart rate dominates, as it does on real devices).
TYPE_WEIGHTS = {
    "heart_rate": 55,
    "steps": 20,
    "spo2": 10,
    "sleep": 10,
    "migraine_attack": 3,
    "medication": 2,
}
DEVICES = ("Pulse Band 2", "Fitbit Charge 6", "Apple Watch Series 9", "Withings ScanWatch", "Oura Ring 3")
TRIGGERS = (
    "bright light",
    "poor sleep",
    "stress",
    "red wine",
    "skipped meal",
    "weather change",
    "screen time",
)
MEDICATIONS = (("Sumatriptan", 50.0), ("Ibuprofen", 400.0), ("Paracetamol", 1000.0), ("Magnesium", None))
NOTES = (
    "Started behind the left eye, worse with light.",
    "Woke up with it; nausea in the afternoon.",
    "Aura for twenty minutes, then throbbing pain.",
    "Mild, eased after resting in a dark room.",
)
OFFSETS = tuple(timedelta(hours=h) for h in (-8, -5, -3, 0, 1, 2, 5.5, 9))
WEARABLE_TYPES = frozenset({"heart_rate", "steps", "spo2", "sleep"})


def user_ids(count: int, prefix: str = "user") -> list[str]:
    """`count` user ids such as `user-0007` (valid against the contract's user id rule)."""
    return [f"{prefix}-{i:04d}" for i in range(count)]


def events(
    count: int,
    users: Sequence[str],
    rng: random.Random,
    *,
    now: datetime | None = None,
    span: timedelta = timedelta(hours=23),
) -> Iterator[dict[str, Any]]:
    """Yield `count` events spread over `users`, types mixed as in `TYPE_WEIGHTS`.

    Args:
        count: How many events.
        users: The user ids to spread them over.
        rng: The randomness; a seeded generator gives the same events for the same `now`.
        now: The latest time an event may have (default: the clock).
        span: How far back events reach.
    """
    end = now or datetime.now(UTC)
    types = list(TYPE_WEIGHTS)
    weights = list(TYPE_WEIGHTS.values())
    span_us = int(span / timedelta(microseconds=1))
    for _ in range(count):
        user = rng.choice(users)
        type_ = rng.choices(types, weights=weights)[0]
        yield event_for(user, type_, end - timedelta(microseconds=rng.randrange(1, span_us)), rng)


def event_for(user: str, type_: str, occurred: datetime, rng: random.Random) -> dict[str, Any]:
    """One event of `type_` for `user` at `occurred`, with plausible values."""
    # A stable hash (not `hash()`, which changes between processes) keeps a user's zone and device fixed.
    stable = zlib.crc32(user.encode())
    offset = OFFSETS[stable % len(OFFSETS)]
    local = occurred.astimezone(timezone(offset))
    event: dict[str, Any] = {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "user_id": user,
        "type": type_,
        "occurred_at": local.isoformat(timespec="milliseconds"),
        "source": {
            "kind": "wearable" if type_ in WEARABLE_TYPES else "app",
            "device": DEVICES[stable % len(DEVICES)],
        },
        "data": _data(type_, local, rng),
    }
    return event


def _data(type_: str, local: datetime, rng: random.Random) -> dict[str, Any]:
    night = local.hour < 6 or local.hour >= 23
    if type_ == "heart_rate":
        resting = 58 if night else 74
        return {"bpm": max(20, min(300, round(rng.gauss(resting, 9))))}
    if type_ == "steps":
        return {"count": 0 if night else rng.randrange(0, 2400), "period_s": 900}
    if type_ == "spo2":
        return {"percent": round(min(100.0, rng.gauss(97.2, 1.1)), 1)}
    if type_ == "sleep":
        stage = rng.choice(("light", "deep", "rem", "awake") if night else ("light", "awake"))
        return {"stage": stage, "duration_s": rng.randrange(60, 5400)}
    if type_ == "migraine_attack":
        ended = local + timedelta(minutes=rng.randrange(30, 600))
        data: dict[str, Any] = {
            "severity": rng.randrange(2, 11),
            "aura": rng.random() < 0.3,
            "ended_at": ended.isoformat(timespec="seconds") if rng.random() < 0.7 else None,
            "triggers": rng.sample(TRIGGERS, rng.randrange(0, 4)),
        }
        if rng.random() < 0.5:
            data["notes"] = rng.choice(NOTES)
        return data
    name, dose = rng.choice(MEDICATIONS)
    return {"name": name, "dose_mg": dose}
