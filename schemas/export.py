"""The JSON Schema of a health event, as published in docs/schemas/health-event.schema.json.

`python -m schemas.export PATH` writes it; a test keeps the committed copy current. The schema describes
the shape and every bound of docs/contract.md §3 except the one it cannot express: `occurred_at` at most 24 h in
the future, which is checked against the clock at ingestion.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from schemas.events import HealthEvent

SCHEMA_ID = "urn:pulseseal:schema:health-event:1"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of one `HealthEvent`."""
    schema = TypeAdapter(HealthEvent).json_schema()
    return {
        "$schema": DIALECT,
        "$id": SCHEMA_ID,
        "title": "PulseSeal health event",
        "description": (
            "One health event (PulseSeal docs/contract.md §3). Also checked at ingestion, beyond this schema: "
            "occurred_at is at most 24 h in the future."
        ),
        **schema,
    }


def render() -> str:
    """The schema as committed: sorted keys, two-space indent, UTF-8 text, one trailing newline."""
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    """Write the schema to the one path given; 2 on a usage or I/O error."""
    if len(argv) != 1:
        print("usage: python -m schemas.export PATH", file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(), encoding="utf-8")
    except OSError as exc:
        print(f"cannot write {path}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
