"""Shared by the schema tests: validating through JSON text or as a Python object, and its problems."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from schemas import HealthEvent, InvalidEvent, parse_event

Validate = Callable[[dict[str, Any]], HealthEvent]


def via_json(event: dict[str, Any]) -> HealthEvent:
    return parse_event(json.dumps(event))


def problems(validate: Validate, event: dict[str, Any]) -> list[tuple[str | None, str]]:
    """The (field, message) pairs an invalid event is refused with."""
    with pytest.raises(InvalidEvent) as caught:
        validate(event)
    return [(problem.field, problem.message) for problem in caught.value.problems]
