"""Hypothesis strategies for valid events (every bound of docs/contract.md §3, unicode text, any offset).

`event_dicts()` draws JSON-ready dicts (times as RFC 3339 strings) of every type; `json_values()` draws
arbitrary JSON values for the tests that feed rubbish to the parsers.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from schemas import EVENT_TYPES

# Whole-minute offsets strictly inside a day, as RFC 3339 allows them.
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)

# Years 2..9998 keep every instant inside Python's range once converted to UTC; before 1970 is included
# on purpose (negative milliseconds in the associated data).
aware_datetimes = st.datetimes(
    min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=offsets
)

user_ids = st.from_regex(r"[A-Za-z0-9._:@-]{1,128}", fullmatch=True)
event_ids = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper())


def rfc3339(moment: datetime) -> str:
    """`moment` as RFC 3339 text (Python's isoformat is RFC 3339 for aware datetimes of whole minutes)."""
    return moment.isoformat()


times = aware_datetimes.map(rfc3339)


def _text(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    # Any code point UTF-8 can carry (no lone surrogates), so bounds count code points.
    return st.text(st.characters(codec="utf-8"), min_size=min_size, max_size=max_size)


sources = st.fixed_dictionaries(
    {"kind": st.sampled_from(["wearable", "app", "import"]), "device": _text(128)}
)

_DATA: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "heart_rate": st.fixed_dictionaries({"bpm": st.integers(20, 300)}),
    "steps": st.fixed_dictionaries({"count": st.integers(0, 100_000), "period_s": st.integers(1, 86_400)}),
    "spo2": st.fixed_dictionaries({"percent": st.integers(50, 100) | st.floats(50, 100)}),
    "sleep": st.fixed_dictionaries(
        {"stage": st.sampled_from(["awake", "light", "deep", "rem"]), "duration_s": st.integers(1, 86_400)}
    ),
    "migraine_attack": st.fixed_dictionaries(
        {
            "severity": st.integers(0, 10),
            "aura": st.booleans(),
            "ended_at": st.none() | times,
            "triggers": st.lists(_text(64), max_size=20),
        },
        optional={"notes": _text(2000)},
    ),
    "medication": st.fixed_dictionaries(
        {
            "name": _text(200, min_size=1),
            "dose_mg": st.none()
            | st.integers(1, 10**6)
            | st.floats(min_value=0, exclude_min=True, allow_infinity=False),
        }
    ),
}


@st.composite
def event_dicts(draw: st.DrawFn, type_: str | None = None) -> dict[str, Any]:
    """One valid event of `type_` (default: any type) as a JSON-ready dict."""
    chosen = type_ if type_ is not None else draw(st.sampled_from(EVENT_TYPES))
    event: dict[str, Any] = {
        "event_id": draw(event_ids),
        "user_id": draw(user_ids),
        "type": chosen,
        "occurred_at": draw(times),
        "data": draw(_DATA[chosen]),
    }
    if draw(st.booleans()):
        event["source"] = draw(sources)
    return event


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)
