"""PulseSeal's event schemas: pure pydantic models and the standard library, no I/O."""

from schemas.events import (
    EVENT_TYPES,
    HealthEvent,
    HeartRateEvent,
    MedicationEvent,
    MigraineAttackEvent,
    SleepEvent,
    Spo2Event,
    StepsEvent,
)
from schemas.parsing import (
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    FieldProblem,
    InvalidEvent,
    canonical_json,
    iter_ndjson_lines,
    load_json,
    parse_event,
    validate_event,
)

__all__ = [
    "EVENT_TYPES",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_EVENTS",
    "FieldProblem",
    "HealthEvent",
    "HeartRateEvent",
    "InvalidEvent",
    "MedicationEvent",
    "MigraineAttackEvent",
    "SleepEvent",
    "Spo2Event",
    "StepsEvent",
    "canonical_json",
    "iter_ndjson_lines",
    "load_json",
    "parse_event",
    "validate_event",
]
