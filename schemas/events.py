"""The health events of docs/contract.md §3, as strict pydantic models behind one discriminated union.

Strictness is deliberate: numbers must be JSON numbers (never strings or booleans), unknown fields are
rejected, times must be RFC 3339 with an offset. Any event type added later gets a new model here and a
new member of `HealthEvent`; the six below may not change.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
)

from schemas.rfc3339 import parse_rfc3339
from schemas.userids import USER_ID_MAX_LENGTH, USER_ID_PATTERN

MAX_FUTURE_S = 24 * 3600
_MAX_FUTURE = timedelta(seconds=MAX_FUTURE_S)

# Any 32 hex digits in 8-4-4-4-12 form is a UUID, so the pattern is the whole check. It runs in
# pydantic-core's Rust regex engine, where `$` is the end of the text (no trailing-newline leniency).
_UUID_PATTERN = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"


def _require_rfc3339(value: object) -> object:
    if isinstance(value, datetime):
        offset = value.utcoffset()
        if offset is None:
            raise ValueError("must be an RFC 3339 time with an offset")
        # RFC 3339 offsets are whole minutes; pydantic would silently drop the seconds when serialising,
        # so the canonical JSON would name another instant and the sealed event would not open.
        if offset % timedelta(minutes=1):
            raise ValueError("must have a UTC offset in whole minutes (RFC 3339)")
    elif isinstance(value, str):
        value = parse_rfc3339(value)
    else:
        raise ValueError("must be an RFC 3339 time string with an offset")
    try:
        # Sealing stores the instant in UTC; 0001-01-01T00:00+01:00 has none in Python's range.
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("must fall between years 0001 and 9999 in UTC") from None
    return value


def _not_too_far_in_future(value: datetime, info: ValidationInfo) -> datetime:
    # `now` comes from the validation context so tests (and replays of old data) control the clock;
    # without one the bound is not applied. Compared as timedeltas so the bound is exact to the µs.
    context = info.context
    now = context.get("now") if isinstance(context, dict) else None
    if isinstance(now, datetime) and value - now > _MAX_FUTURE:
        raise ValueError("must not be more than 24 h in the future")
    return value


Rfc3339 = Annotated[datetime, BeforeValidator(_require_rfc3339)]
StrictInt = Annotated[int, Strict()]
# Strict floats accept JSON integers (97 → 97.0) but never strings or booleans.
Number = Annotated[float, Strict()]
EventId = Annotated[
    str,
    Strict(),
    StringConstraints(pattern=_UUID_PATTERN),
    WithJsonSchema({"type": "string", "format": "uuid", "pattern": _UUID_PATTERN}),
]
UserId = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=USER_ID_MAX_LENGTH, pattern=USER_ID_PATTERN),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=False)


class Source(_Strict):
    """Where an event came from."""

    kind: Literal["wearable", "app", "import"]
    device: Annotated[str, Strict(), StringConstraints(max_length=128)]


class HeartRateData(_Strict):
    """`heart_rate` data."""

    bpm: Annotated[StrictInt, Field(ge=20, le=300)]


class StepsData(_Strict):
    """`steps` data."""

    count: Annotated[StrictInt, Field(ge=0, le=100_000)]
    period_s: Annotated[StrictInt, Field(ge=1, le=86_400)]


class Spo2Data(_Strict):
    """`spo2` data."""

    percent: Annotated[Number, Field(ge=50, le=100)]


class SleepData(_Strict):
    """`sleep` data."""

    stage: Literal["awake", "light", "deep", "rem"]
    duration_s: Annotated[StrictInt, Field(ge=1, le=86_400)]


class MigraineAttackData(_Strict):
    """`migraine_attack` data."""

    severity: Annotated[StrictInt, Field(ge=0, le=10)]
    aura: Annotated[bool, Strict()]
    ended_at: Rfc3339 | None
    triggers: Annotated[
        list[Annotated[str, Strict(), StringConstraints(max_length=64)]], Field(max_length=20)
    ]
    notes: Annotated[str, Strict(), StringConstraints(max_length=2000)] | None = None


class MedicationData(_Strict):
    """`medication` data."""

    name: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=200)]
    dose_mg: Annotated[Number, Field(gt=0)] | None


class _Event(_Strict):
    event_id: EventId
    user_id: UserId
    occurred_at: Annotated[Rfc3339, AfterValidator(_not_too_far_in_future)]
    source: Source | None = None


class HeartRateEvent(_Event):
    """A heart-rate sample."""

    type: Literal["heart_rate"]
    data: HeartRateData


class StepsEvent(_Event):
    """A step count over a period."""

    type: Literal["steps"]
    data: StepsData


class Spo2Event(_Event):
    """A blood-oxygen saturation sample."""

    type: Literal["spo2"]
    data: Spo2Data


class SleepEvent(_Event):
    """A sleep stage and how long it lasted."""

    type: Literal["sleep"]
    data: SleepData


class MigraineAttackEvent(_Event):
    """A migraine attack."""

    type: Literal["migraine_attack"]
    data: MigraineAttackData


class MedicationEvent(_Event):
    """A medication taken."""

    type: Literal["medication"]
    data: MedicationData


HealthEvent = Annotated[
    HeartRateEvent | StepsEvent | Spo2Event | SleepEvent | MigraineAttackEvent | MedicationEvent,
    Field(discriminator="type"),
]
"""Any valid event; the `type` field selects the model."""

EVENT_TYPES: tuple[str, ...] = ("heart_rate", "steps", "spo2", "sleep", "migraine_attack", "medication")
