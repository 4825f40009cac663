"""Checkpoints: atomic, durable, and refused when they do not belong to the file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from producers.importer.checkpoint import (
    Checkpoint,
    CheckpointError,
    check_matches,
    checkpoint_path,
    fingerprint,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"line\n" * 1000)
    return path


def at(path: Path, **changes: object) -> Checkpoint:
    checkpoint = Checkpoint(
        "ndjson", fingerprint(path), line=10, offset=50, imported=9, rejected=1, rejected_bytes=60
    )
    return replace(checkpoint, **changes)  # type: ignore[arg-type]


def test_a_saved_checkpoint_loads_back_and_leaves_no_temporary_file(data: Path) -> None:
    save_checkpoint(data, at(data))
    assert load_checkpoint(data) == at(data)
    assert sorted(p.name for p in data.parent.iterdir()) == sorted([data.name, checkpoint_path(data).name])
    assert checkpoint_path(data).stat().st_mode & 0o077 == 0


def test_saving_again_replaces_the_checkpoint(data: Path) -> None:
    save_checkpoint(data, at(data))
    save_checkpoint(data, at(data, line=20, offset=100))
    loaded = load_checkpoint(data)
    assert loaded is not None
    assert (loaded.line, loaded.offset) == (20, 100)


def test_no_checkpoint_is_none_and_removing_twice_is_fine(data: Path) -> None:
    assert load_checkpoint(data) is None
    save_checkpoint(data, at(data))
    remove_checkpoint(data)
    remove_checkpoint(data)
    assert load_checkpoint(data) is None


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"line": 1}',
        "[]",
        '{"version": 99, "format": "ndjson", "head_sha256": "", "line": 1, "offset": 1, "imported": 1, "rejected": 0, "rejected_bytes": 0}',
    ],
)
def test_a_damaged_checkpoint_is_an_error_that_says_what_to_do(data: Path, content: str) -> None:
    checkpoint_path(data).write_text(content)
    with pytest.raises(CheckpointError, match="delete it"):
        load_checkpoint(data)


def test_a_checkpoint_matches_its_file_even_after_it_grew(data: Path) -> None:
    check_matches(data, at(data), file_format="ndjson")
    with data.open("ab") as out:
        out.write(b"more\n")
    check_matches(data, at(data), file_format="ndjson")


def test_a_checkpoint_of_another_file_is_refused(data: Path) -> None:
    checkpoint = at(data)
    data.write_bytes(b"other\n" * 1000)
    with pytest.raises(CheckpointError, match="changed since"):
        check_matches(data, checkpoint, file_format="ndjson")


def test_a_checkpoint_past_the_end_of_the_file_is_refused(data: Path) -> None:
    with pytest.raises(CheckpointError, match="changed since"):
        check_matches(data, at(data, offset=10**9), file_format="ndjson")


def test_a_checkpoint_of_another_format_is_refused(data: Path) -> None:
    with pytest.raises(CheckpointError, match="--format ndjson"):
        check_matches(data, at(data), file_format="csv")
