"""Fixtures of the schema tests."""

from __future__ import annotations

import pytest

from schemas import validate_event
from tests.schemas.helpers import Validate, via_json


@pytest.fixture(params=[via_json, validate_event], ids=["json", "python"])
def validate(request: pytest.FixtureRequest) -> Validate:
    """Validate an event dict through JSON text or as a Python object."""
    function: Validate = request.param
    return function
