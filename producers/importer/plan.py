"""Checking every file before anything is published: exists, readable, text, a usable header, a
matching checkpoint. A problem with any one file stops the whole import before it starts, so a typo in
one of several paths never leaves a half-done run to sort out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from producers.importer.checkpoint import (
    Checkpoint,
    CheckpointError,
    check_matches,
    fingerprint,
    load_checkpoint,
)
from producers.importer.csvrows import HeaderError, RowConverter
from producers.importer.readers import read_csv_header

Format = Literal["ndjson", "csv"]
_SNIFF_BYTES = 8192


class ImportFileError(Exception):
    """One file cannot be imported; the message is one line naming the file, the problem and the fix."""


@dataclass(frozen=True, slots=True)
class FilePlan:
    """What importing one file will do.

    `resume_from` is the checkpoint to continue from (`resume` says whether one was asked for);
    `header` and `body_start` (line, offset) locate a CSV file's first data line.
    """

    path: Path
    format: Format
    size: int
    head_sha256: str
    resume_from: Checkpoint | None
    header: RowConverter | None
    body_start: tuple[int, int]
    resume: bool = False


def format_of(path: Path, requested: Format | None) -> Format:
    """The requested format, or the one the extension names (`.csv` is CSV, anything else NDJSON)."""
    if requested is not None:
        return requested
    return "csv" if path.suffix.lower() == ".csv" else "ndjson"


def plan_file(path: Path, requested: Format | None, *, resume: bool) -> FilePlan:
    """Check one file and say how it will be imported.

    Args:
        path: The file.
        requested: `--format`, or None to go by the extension.
        resume: Whether to continue from its checkpoint (when there is one).

    Raises:
        ImportFileError: missing, unreadable, binary, a bad CSV header, or a checkpoint that does not fit.
    """
    file_format = format_of(path, requested)
    try:
        with path.open("rb") as stream:
            head = stream.read(_SNIFF_BYTES)
            size = path.stat().st_size
            if b"\x00" in head:
                raise ImportFileError(
                    f"{path}: looks like a binary file (it has NUL bytes), not {file_format.upper()} text "
                    "— check the path, or decompress or convert it first"
                )
            header: RowConverter | None = None
            body_start = (1, 0)
            if file_format == "csv" and size:
                stream.seek(0)
                header, line, offset = read_csv_header(stream)
                body_start = (line + 1, offset)
        digest = fingerprint(path)
        checkpoint = load_checkpoint(path) if resume else None
        if checkpoint is not None:
            check_matches(path, checkpoint, file_format=file_format)
    except FileNotFoundError:
        raise ImportFileError(f"{path}: no such file — check the path") from None
    except IsADirectoryError:
        raise ImportFileError(f"{path}: is a directory — give the files inside it") from None
    except PermissionError:
        raise ImportFileError(f"{path}: permission denied — make it readable") from None
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    except HeaderError as exc:
        raise ImportFileError(
            f"{path}: {exc} — the first row must name the columns (see `pulseseal import --help`)"
        ) from None
    except CheckpointError as exc:
        raise ImportFileError(str(exc)) from None
    return FilePlan(path, file_format, size, digest, checkpoint, header, body_start, resume)
