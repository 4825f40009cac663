"""The published JSON Schema: current, well-formed, and saying what the models enforce."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas import EVENT_TYPES
from schemas.export import SCHEMA_ID, json_schema, main, render

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "health-event.schema.json"


def test_the_committed_schema_is_current() -> None:
    # If this fails after a model change: python -m schemas.export docs/schemas/health-event.schema.json
    assert COMMITTED.read_text(encoding="utf-8") == render()


def test_the_schema_is_stable_text_with_one_trailing_newline() -> None:
    text = render()
    assert text == render()
    assert text.endswith("}\n")
    assert not text.endswith("\n\n")
    assert json.loads(text) == json_schema()


def test_the_schema_is_identified_and_selects_the_model_by_type() -> None:
    schema = json_schema()
    assert schema["$id"] == SCHEMA_ID
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["discriminator"]["propertyName"] == "type"
    assert set(schema["discriminator"]["mapping"]) == set(EVENT_TYPES)


def _model(name: str) -> dict[str, Any]:
    model: dict[str, Any] = json_schema()["$defs"][name]
    return model


@pytest.mark.parametrize(
    "name",
    [
        "HeartRateEvent",
        "StepsEvent",
        "Spo2Event",
        "SleepEvent",
        "MigraineAttackEvent",
        "MedicationEvent",
        "Source",
        "HeartRateData",
        "MigraineAttackData",
    ],
)
def test_every_object_refuses_unknown_fields(name: str) -> None:
    assert _model(name)["additionalProperties"] is False


def test_the_common_fields_carry_their_rules() -> None:
    properties = _model("StepsEvent")["properties"]
    assert properties["event_id"]["format"] == "uuid"
    assert properties["user_id"]["maxLength"] == 128
    assert properties["user_id"]["pattern"] == "^[A-Za-z0-9._:@-]+$"
    assert properties["occurred_at"]["format"] == "date-time"
    assert _model("StepsEvent")["required"] == ["event_id", "user_id", "occurred_at", "type", "data"]


def test_bounds_are_in_the_schema() -> None:
    assert _model("HeartRateData")["properties"]["bpm"] == {
        "maximum": 300,
        "minimum": 20,
        "title": "Bpm",
        "type": "integer",
    }
    dose = _model("MedicationData")["properties"]["dose_mg"]["anyOf"][0]
    assert dose == {"exclusiveMinimum": 0, "type": "number"}


def test_the_script_writes_the_schema(tmp_path: Path) -> None:
    target = tmp_path / "out" / "health-event.schema.json"
    assert main([str(target)]) == 0
    assert target.read_text(encoding="utf-8") == render()


def test_the_script_wants_exactly_one_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err
