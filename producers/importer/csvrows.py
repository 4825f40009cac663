"""The importer's CSV layout: a header row naming the columns, one event a row.

Columns: `event_id`, `user_id`, `type`, `occurred_at` (required), `source_kind`, `source_device`
(optional), and `data.<field>` for each data field of the types the file holds (`data.bpm`,
`data.count`, ...), in any order. A row fills the `data.` columns of its own type and leaves the others
empty. Cells become JSON values by the field's type in the schema:

- integers and numbers: decimal text (`72`, `97.5`); booleans: `true` / `false` (any case);
- lists (`triggers`): JSON text (`["stress", "poor sleep"]`) or `;`-separated (`stress; poor sleep`);
- an empty cell is null where the schema allows null (`ended_at`, `dose_mg`), an empty list for a list
  (`triggers`), and absent otherwise, so an empty required cell is reported as missing; both source
  cells empty means no `source`.

Anything that does not convert is passed on as text, so the event schema reports the field and rule.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from schemas import HealthEvent

REQUIRED = ("event_id", "user_id", "type", "occurred_at")
SOURCE = ("source_kind", "source_device")
DATA_PREFIX = "data."

Kind = Literal["int", "float", "bool", "list", "str"]

# Bounded: int() refuses strings of more than 4300 digits, and no field needs more than a few.
_INT = re.compile(r"-?\d{1,18}")
_FLOAT = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


class HeaderError(ValueError):
    """The header row is missing, lacks a required column, or names an unknown or repeated one."""


@dataclass(frozen=True, slots=True)
class _Field:
    kind: Kind
    nullable: bool
    required: bool


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    nullable = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(members) < len(typing.get_args(annotation))
        annotation = members[0]
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation, nullable


def _kind(annotation: Any) -> Kind:
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    if typing.get_origin(annotation) is list:
        return "list"
    return "str"  # str, Literal choices and RFC 3339 times are all text in JSON


def _data_fields() -> dict[str, dict[str, _Field]]:
    # Derived from the models, so a new event type gets its CSV columns without a change here.
    union = typing.get_args(HealthEvent)[0]
    fields: dict[str, dict[str, _Field]] = {}
    for model in typing.get_args(union):
        type_name = typing.get_args(model.model_fields["type"].annotation)[0]
        data_model = typing.cast(type[BaseModel], model.model_fields["data"].annotation)
        per_type = {}
        for name, info in data_model.model_fields.items():
            base, nullable = _unwrap(info.annotation)
            per_type[name] = _Field(_kind(base), nullable, info.is_required())
        fields[type_name] = per_type
    return fields


DATA_FIELDS = _data_fields()
DATA_COLUMNS = frozenset(f"{DATA_PREFIX}{name}" for per_type in DATA_FIELDS.values() for name in per_type)


class RowConverter:
    """Turns rows of one CSV file into event dicts, by the columns its header names.

    Args:
        header: The header row.

    Raises:
        HeaderError: a required column is missing, or a column is unknown or repeated.
    """

    def __init__(self, header: Sequence[str]) -> None:
        names = [cell.strip() for cell in header]
        if names and names[0].startswith("\ufeff"):
            names[0] = names[0][1:]  # a byte-order mark, as spreadsheet programs write
        missing = [name for name in REQUIRED if name not in names]
        if missing:
            raise HeaderError(f"the CSV header lacks the column(s) {', '.join(missing)}")
        unknown = [n for n in names if n not in REQUIRED and n not in SOURCE and n not in DATA_COLUMNS]
        if unknown:
            # Header cells are column names, not event data; still, only safe-looking ones are shown.
            shown = [n for n in unknown if re.fullmatch(r"[A-Za-z_.][A-Za-z0-9_.]{0,63}", n)]
            what = ", ".join(shown) if len(shown) == len(unknown) else f"{len(unknown)} column(s)"
            raise HeaderError(f"the CSV header has unknown {what}")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise HeaderError(f"the CSV header repeats the column(s) {', '.join(repeated)}")
        self.width = len(names)
        self._core = [(names.index(name), name) for name in REQUIRED]
        self._source = [names.index(name) if name in names else None for name in SOURCE]
        self._data = [(i, n[len(DATA_PREFIX) :]) for i, n in enumerate(names) if n.startswith(DATA_PREFIX)]

    def convert(self, row: Sequence[str]) -> dict[str, Any]:
        """One row (of exactly `width` cells) as an event dict for `validate_event`."""
        event: dict[str, Any] = {name: row[i] for i, name in self._core if row[i] != ""}
        kind_cell, device_cell = (row[i] if i is not None else "" for i in self._source)
        if kind_cell or device_cell:
            source: dict[str, Any] = {}
            if kind_cell:
                source["kind"] = kind_cell
            if device_cell:
                source["device"] = device_cell
            event["source"] = source
        fields = DATA_FIELDS.get(event.get("type", ""), {})
        data: dict[str, Any] = {}
        for index, name in self._data:
            cell = row[index]
            field = fields.get(name)
            if cell == "":
                if field is not None and field.required:
                    # A required list with no items is empty, not missing; a nullable field is null.
                    if field.kind == "list":
                        data[name] = []
                    elif field.nullable:
                        data[name] = None
                continue
            data[name] = _value(cell, field.kind) if field is not None else cell
        event["data"] = data
        return event


def _value(cell: str, kind: Kind) -> Any:
    text = cell.strip()
    if kind == "int" and _INT.fullmatch(text):
        return int(text)
    if kind == "float" and _FLOAT.fullmatch(text):
        return float(text)
    if kind == "bool" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if kind == "list":
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                return cell
        return [item.strip() for item in text.split(";") if item.strip()]
    return cell
