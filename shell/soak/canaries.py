"""Canary values planted in every field that can carry a distinctive value, and the hunt for them.

Free text (device, notes, triggers, medication name) carries a token `PSCANARY<hex>` (ASCII, so its
JSON-escaped form contains it too; the notes add a non-ASCII letter to exercise escaping); the number
fields (`spo2.percent`, `medication.dose_mg`) carry a float with twelve significant digits; the time
fields (`occurred_at`, `ended_at`) an instant with microseconds and an unusual offset, in canonical
form. Enumerations, booleans and small integers cannot carry a canary. `event_id` and `user_id` are
clear fields of every sealed document by design (docs/contract.md §5) and are not canaries.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

FIELD_KINDS = (
    "source.device",
    "data.notes",
    "data.triggers",
    "data.name",
    "data.percent",
    "data.dose_mg",
    "occurred_at",
    "data.ended_at",
)
_CHUNK = 16 * 1024 * 1024


_TOKEN = re.compile(r"PSCANARY[0-9a-f]{12}")


@dataclass
class CanarySet:
    """Every canary value planted, by the field it was planted in."""

    values: dict[str, str] = field(default_factory=dict)  # value text → field kind

    def add(self, kind: str, value: str) -> str:
        """Remember `value` as a canary of `kind` and return it."""
        self.values[value] = kind
        self._needle_bytes = None
        return value

    def needles(self) -> list[str]:
        """What is searched for: a text canary's ASCII token (found in its raw UTF-8 and in every
        JSON-escaped form alike), a number's or a time's exact text (ASCII, which escaping keeps)."""
        found = {m.group() if (m := _TOKEN.search(v)) else v for v in self.values}
        return sorted(found, key=len, reverse=True)

    def pattern(self) -> re.Pattern[bytes]:
        """One regular expression for every shape of needle; `is_canary` then keeps the real ones.

        A plain alternation of a thousand literals costs a regex engine a thousand tries per byte of a
        100 MB database file; three shapes and a set lookup cost one.
        """
        return _SHAPES

    def is_canary(self, found: bytes) -> bool:
        """Whether a match of `pattern()` is one of the planted needles."""
        if self._needle_bytes is None:
            self._needle_bytes = frozenset(n.encode() for n in self.needles())
        return found in self._needle_bytes

    _needle_bytes: frozenset[bytes] | None = field(default=None, repr=False, compare=False)


# Tokens; RFC 3339 instants with microseconds and an offset; decimals with many digits, not preceded by
# a digit (a canary number stands alone in JSON text).
_SHAPES = re.compile(
    rb"PSCANARY[0-9a-f]{12}"
    rb"|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?[+-][0-9]{2}:[0-9]{2}"
    rb"|(?<![0-9])[0-9]{2,3}\.[0-9]{6,}"
)


def _token(rng: random.Random) -> str:
    return f"PSCANARY{rng.getrandbits(48):012x}"


def _float(rng: random.Random, low: float, high: float) -> float:
    # Twelve significant digits survive `repr` unchanged, so the canonical JSON has exactly this text.
    while True:
        value = float(f"{rng.uniform(low, high):.12g}")
        if len(repr(value).replace(".", "")) >= 11:
            return value


def _instant(rng: random.Random, now: datetime) -> str:
    minutes = rng.choice((-571, -197, 223, 347, 581))  # offsets no synthetic event uses
    moment = now - timedelta(seconds=rng.randrange(3600, 20 * 3600), microseconds=rng.randrange(1, 10**6))
    local = moment.astimezone(timezone(timedelta(minutes=minutes)))
    if local.microsecond == 0:
        local = local.replace(microsecond=1)
    return local.isoformat()


def canary_events(
    user_ids: Iterable[str], rng: random.Random, canaries: CanarySet, now: datetime
) -> list[dict[str, Any]]:
    """Three events per user (a migraine attack, a medication, an SpO2 reading) whose every free-text,
    number and time field is a canary."""
    events = []
    for user in user_ids:
        migraine_at = canaries.add("occurred_at", _instant(rng, now))
        ended = datetime.fromisoformat(migraine_at) + timedelta(
            minutes=rng.randrange(30, 600), microseconds=7
        )
        events.append(
            {
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "user_id": user,
                "type": "migraine_attack",
                "occurred_at": migraine_at,
                "source": {"kind": "app", "device": canaries.add("source.device", f"Band {_token(rng)}")},
                "data": {
                    "severity": 7,
                    "aura": True,
                    "ended_at": canaries.add("data.ended_at", ended.isoformat()),
                    "triggers": [canaries.add("data.triggers", f"trigger {_token(rng)}")],
                    "notes": canaries.add("data.notes", f"Kopfschmerz übel {_token(rng)}"),
                },
            }
        )
        dose = _float(rng, 100.0, 999.0)
        events.append(
            {
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "user_id": user,
                "type": "medication",
                "occurred_at": canaries.add("occurred_at", _instant(rng, now)),
                "data": {
                    "name": canaries.add("data.name", f"Medication {_token(rng)}"),
                    "dose_mg": dose,
                },
            }
        )
        canaries.add("data.dose_mg", repr(dose))
        percent = _float(rng, 90.0, 99.9)
        canaries.add("data.percent", repr(percent))
        events.append(
            {
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "user_id": user,
                "type": "spo2",
                "occurred_at": canaries.add("occurred_at", _instant(rng, now)),
                "source": {
                    "kind": "wearable",
                    "device": canaries.add("source.device", f"Ring {_token(rng)}"),
                },
                "data": {"percent": percent},
            }
        )
    return events


def invalid_canary_event(
    user_id: str, rng: random.Random, canaries: CanarySet, now: datetime
) -> dict[str, Any]:
    """An event that every producer must refuse (severity 11), carrying canaries in its text fields."""
    return {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "user_id": user_id,
        "type": "migraine_attack",
        "occurred_at": canaries.add("occurred_at", _instant(rng, now)),
        "source": {"kind": "app", "device": canaries.add("source.device", f"Rejected {_token(rng)}")},
        "data": {
            "severity": 11,
            "aura": False,
            "ended_at": None,
            "triggers": [canaries.add("data.triggers", f"bad {_token(rng)}")],
            "notes": canaries.add("data.notes", f"abgelehnt {_token(rng)}"),
        },
    }


@dataclass
class PlaceCount:
    """Canary occurrences found in one place, and how many distinct canaries they were."""

    occurrences: int = 0
    distinct: set[str] = field(default_factory=set)
    files: int = 0
    bytes_scanned: int = 0

    def add_text(self, data: bytes, canaries: CanarySet) -> None:
        """Count the canaries in `data`."""
        self.bytes_scanned += len(data)
        for match in canaries.pattern().finditer(data):
            if canaries.is_canary(match.group()):
                self.occurrences += 1
                self.distinct.add(match.group().decode(errors="replace"))


def scan_paths(paths: Iterable[Path], canaries: CanarySet, *, skip: Iterable[Path] = ()) -> PlaceCount:
    """Count canaries in every file under `paths` (chunked, with an overlap so no match is cut)."""
    skipped = {p.resolve() for p in skip}
    pattern = canaries.pattern()
    count = PlaceCount()
    overlap = 256
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if path.resolve() in skipped:
                continue
            count.files += 1
            try:
                with path.open("rb") as stream:
                    tail = b""
                    while chunk := stream.read(_CHUNK):
                        data = tail + chunk
                        # Count only matches that end past the overlap kept from the previous chunk.
                        for match in pattern.finditer(data):
                            if match.end() > len(tail) and canaries.is_canary(match.group()):
                                count.occurrences += 1
                                count.distinct.add(match.group().decode(errors="replace"))
                        count.bytes_scanned += len(chunk)
                        tail = data[-overlap:]
            except OSError:
                continue  # a file removed while we walked (a rotated log, a compacted segment)
    return count
