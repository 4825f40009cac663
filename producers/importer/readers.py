"""Streaming readers: a file in, one item per event-bearing line out — canonical event JSON or a rejection.

Each item is `(line, offset, payload)`: the 1-based line number where the event starts, the file offset
just after it (where a resumed import picks up), and either the event's canonical JSON or a `Rejected`
naming the field and rule. Blank lines yield nothing. Memory is bounded by the longest line kept (1 MiB).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import BinaryIO, NamedTuple

from producers.importer.csvrows import HeaderError, RowConverter
from producers.importer.lines import MAX_LINE_BYTES, read_lines
from schemas import InvalidEvent, canonical_json, parse_event, validate_event

TOO_LONG = "line is longer than 1 MiB, the most one event may take"
NOT_UTF8 = "is not valid UTF-8"
_BOM = b"\xef\xbb\xbf"

# A CSV field may be as long as a line; the csv module's default limit (128 KiB) is lower.
csv.field_size_limit(MAX_LINE_BYTES + 1)


class Rejected(NamedTuple):
    """A line that is not imported: where, which field (None: the line as a whole) and why."""

    line: int
    field: str | None
    reason: str


Item = tuple[int, int, bytes | Rejected]


def rejected_from(line: int, exc: InvalidEvent) -> Rejected:
    """A `Rejected` for a failed validation: the first problem's field, every problem in the reason."""
    first, rest = exc.problems[0], exc.problems[1:]
    reason = first.message
    if rest:
        reason += f" (and {len(rest)} more: {'; '.join(str(p) for p in rest)})"
    return Rejected(line, first.field, reason)


def ndjson_items(
    stream: BinaryIO, *, now: Callable[[], datetime], first_line: int = 1, start_offset: int = 0
) -> Iterator[Item]:
    """Read NDJSON events from `stream`, positioned at `start_offset` (the start of `first_line`).

    Raises:
        OSError: reading failed.
    """
    reference = now()
    for number, data, offset in read_lines(stream, first_number=first_line, start_offset=start_offset):
        if data is None:
            yield number, offset, Rejected(number, None, TOO_LONG)
            continue
        line = data.strip()
        if number == 1 and line.startswith(_BOM):
            line = line[len(_BOM) :].strip()
        if not line:
            continue
        try:
            yield number, offset, canonical_json(parse_event(line, now=reference))
        except InvalidEvent as exc:
            yield number, offset, _ndjson_rejection(number, line, exc, terminated=data.endswith(b"\n"))
        if number % 10_000 == 0:
            reference = now()  # a long import keeps the 24 h bound current


def _ndjson_rejection(number: int, line: bytes, exc: InvalidEvent, *, terminated: bool) -> Rejected:
    if exc.field is None and exc.problems[0].message == "is not valid JSON":
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return Rejected(number, None, NOT_UTF8)
        if not terminated:
            return Rejected(number, None, "is not valid JSON (the last line has no newline: cut short?)")
    return rejected_from(number, exc)


class _CsvSource:
    """The lines of a CSV file as text for `csv.reader`, noting lines it had to replace."""

    def __init__(self, stream: BinaryIO, first_line: int, start_offset: int) -> None:
        self._lines = read_lines(stream, first_number=first_line, start_offset=start_offset)
        self.number = first_line - 1
        self.offset = start_offset
        self.flags: dict[int, str] = {}

    def __iter__(self) -> _CsvSource:
        return self

    def __next__(self) -> str:
        number, data, offset = next(self._lines)
        self.number, self.offset = number, offset
        if data is None:
            self.flags[number] = TOO_LONG
            return "\n"
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            self.flags[number] = NOT_UTF8
            return data.decode("utf-8", "replace")

    def flag_between(self, first: int, last: int) -> str | None:
        """The reason a replaced line among `first..last` was replaced, if any (and forget them)."""
        found = None
        for number in [n for n in self.flags if first <= n <= last]:
            found = found or self.flags[number]
            del self.flags[number]
        return found


def read_csv_header(stream: BinaryIO) -> tuple[RowConverter, int, int]:
    """Read the header row from the start of `stream`.

    Returns:
        The row converter, the header's last line number and the offset just after it.

    Raises:
        HeaderError: no header row, or an unusable one.
        OSError: reading failed.
    """
    source = _CsvSource(stream, 1, 0)
    try:
        for row in csv.reader(source):
            if _blank(row):
                continue
            if source.flag_between(1, source.number):
                raise HeaderError("the CSV header row is not valid UTF-8 or is too long")
            return RowConverter(row), source.number, source.offset
    except csv.Error:
        # Found by fuzzing: a bare carriage return inside the header row made csv raise past us.
        raise HeaderError("the CSV header row is not valid CSV (a stray carriage return or quote)") from None
    raise HeaderError("the file has no CSV header row")


def csv_items(
    stream: BinaryIO,
    converter: RowConverter,
    *,
    now: Callable[[], datetime],
    first_line: int,
    start_offset: int,
) -> Iterator[Item]:
    """Read CSV events from `stream`, positioned after the header (or at a checkpoint).

    Raises:
        OSError: reading failed.
    """
    source = _CsvSource(stream, first_line, start_offset)
    reader = csv.reader(source)
    reference = now()
    while True:
        start = source.number + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:
            source.flag_between(start, source.number)
            yield (
                start,
                source.offset,
                Rejected(start, None, "is not valid CSV (a field longer than 1 MiB, or unbalanced quotes)"),
            )
            continue
        flag = source.flag_between(start, source.number)
        if flag is not None:
            yield start, source.offset, Rejected(start, None, flag)
        elif _blank(row):
            continue
        elif len(row) != converter.width:
            reason = f"has {len(row)} cells where the header has {converter.width}"
            yield start, source.offset, Rejected(start, None, reason)
        else:
            try:
                event = validate_event(converter.convert(row), now=reference)
            except InvalidEvent as exc:
                yield start, source.offset, rejected_from(start, exc)
            else:
                yield start, source.offset, canonical_json(event)


def _blank(row: list[str]) -> bool:
    return not any(cell.strip() for cell in row)
