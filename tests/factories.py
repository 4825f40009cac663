"""Valid health events as JSON-ready dicts, for any test that needs some.

`valid_event("steps")` is one fixed, valid event of a type; overrides change or remove single fields.
`random_events(n, users, rng)` is synthetic traffic with a realistic mix of types, reproducible from the
`random.Random` it is given. Times are RFC 3339 strings, exactly as producers send them.
"""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from schemas import EVENT_TYPES


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""An override value that removes the field: `valid_event("sleep", data={"stage": MISSING})`."""

FIXED_EVENT_ID = "0b6f8d3e-1c2a-4b5e-9f00-0123456789ab"
FIXED_USER_ID = "user-0001"
# In the past, so it is valid against any later clock, and with an offset so offsets are exercised.
FIXED_OCCURRED_AT = "2026-11-28T07:30:00+01:00"

DEFAULT_DATA: Final[dict[str, dict[str, Any]]] = {
    "heart_rate": {"bpm": 72},
    "steps": {"count": 1250, "period_s": 900},
    "spo2": {"percent": 97.5},
    "sleep": {"stage": "deep", "duration_s": 1800},
    "migraine_attack": {
        "severity": 6,
        "aura": True,
        "ended_at": "2026-11-28T11:05:00+01:00",
        "triggers": ["bright light", "poor sleep"],
        "notes": "Started behind the left eye.",
    },
    "medication": {"name": "Sumatriptan", "dose_mg": 50},
}

# Share of each type in synthetic traffic: wearables stream heart rate and steps, people log the rest.
TYPE_WEIGHTS: Final[dict[str, int]] = {
    "heart_rate": 55,
    "steps": 20,
    "spo2": 10,
    "sleep": 10,
    "medication": 3,
    "migraine_attack": 2,
}
assert set(TYPE_WEIGHTS) == set(EVENT_TYPES)  # a new event type must be given a share here

_OFFSETS = (timedelta(0), timedelta(hours=1), timedelta(hours=-5), timedelta(hours=5, minutes=30))
_DEVICES = ("Pulse Band 2", "Fitbit Charge 6", "Apple Watch Series 9", "Withings ScanWatch")
_TRIGGERS = ("bright light", "poor sleep", "stress", "red wine", "skipped meal", "weather change")
_MEDICATIONS = (("Sumatriptan", 50.0), ("Ibuprofen", 400.0), ("Paracetamol", 1000.0), ("Magnesium", None))


def valid_event(type_: str = "heart_rate", **overrides: Any) -> dict[str, Any]:
    """One valid event of `type_`, as a fresh dict that the test may change freely.

    Args:
        type_: One of `schemas.EVENT_TYPES`.
        **overrides: Top-level fields to set. A dict given for `data` or `source` is merged into the
            default one (so `data={"bpm": 300}` changes one field); any other value replaces it. The value
            `MISSING` removes a field, at the top level or inside `data`/`source`.

    Raises:
        KeyError: `type_` is not an event type.
    """
    event: dict[str, Any] = {
        "event_id": FIXED_EVENT_ID,
        "user_id": FIXED_USER_ID,
        "type": type_,
        "occurred_at": FIXED_OCCURRED_AT,
        "source": {"kind": "wearable", "device": "Pulse Band 2"},
        "data": copy.deepcopy(DEFAULT_DATA[type_]),
    }
    for name, value in overrides.items():
        if isinstance(value, dict) and isinstance(event.get(name), dict):
            event[name] = _merge(event[name], value)
        elif value is MISSING:
            event.pop(name, None)
        else:
            event[name] = value
    return event


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for name, value in changes.items():
        if value is MISSING:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def random_events(
    n: int,
    users: Sequence[str],
    rng: random.Random,
    *,
    now: datetime | None = None,
    span: timedelta = timedelta(days=7),
) -> list[dict[str, Any]]:
    """`n` valid events of `users`, types mixed as in `TYPE_WEIGHTS`, at times in `[now - span, now)`.

    Everything (ids, values, times, offsets) comes from `rng`, so a seeded generator gives the same events
    for the same `now`.

    Args:
        n: How many events.
        users: The user ids to spread them over (uniformly).
        rng: The source of randomness.
        now: The latest time an event may have (default: the clock).
        span: How far back the events reach.
    """
    end = now if now is not None else datetime.now(UTC)
    types = list(TYPE_WEIGHTS)
    weights = list(TYPE_WEIGHTS.values())
    events = []
    for type_ in rng.choices(types, weights=weights, k=n):
        offset = rng.choice(_OFFSETS)
        occurred = end - timedelta(microseconds=rng.randrange(1, int(span / timedelta(microseconds=1))))
        occurred = occurred.astimezone(timezone(offset))
        event: dict[str, Any] = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "user_id": rng.choice(users),
            "type": type_,
            "occurred_at": occurred.isoformat(),
            "data": _random_data(type_, occurred, rng),
        }
        if rng.random() < 0.9:
            kind = "wearable" if type_ in ("heart_rate", "steps", "spo2", "sleep") else "app"
            event["source"] = {"kind": kind, "device": rng.choice(_DEVICES)}
        events.append(event)
    return events


def _random_data(type_: str, occurred: datetime, rng: random.Random) -> dict[str, Any]:
    if type_ == "heart_rate":
        return {"bpm": max(20, min(300, round(rng.gauss(74, 14))))}
    if type_ == "steps":
        period = rng.choice((60, 300, 900, 3600))
        return {"count": min(100_000, int(rng.expovariate(1 / (period * 1.2)))), "period_s": period}
    if type_ == "spo2":
        return {"percent": round(rng.uniform(92.0, 100.0), 1)}
    if type_ == "sleep":
        return {"stage": rng.choice(("awake", "light", "deep", "rem")), "duration_s": rng.randint(60, 7200)}
    if type_ == "migraine_attack":
        ended = occurred + timedelta(minutes=rng.randint(30, 1440)) if rng.random() < 0.8 else None
        data: dict[str, Any] = {
            "severity": rng.randint(0, 10),
            "aura": rng.random() < 0.3,
            "ended_at": None if ended is None else ended.isoformat(),
            "triggers": rng.sample(_TRIGGERS, rng.randint(0, 3)),
        }
        if rng.random() < 0.5:
            data["notes"] = "Light-sensitive, lay down in a dark room."
        return data
    if type_ == "medication":
        name, dose = rng.choice(_MEDICATIONS)
        return {"name": name, "dose_mg": dose}
    raise KeyError(type_)
