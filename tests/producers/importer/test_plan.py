"""Checking files before anything is published: each problem is one line naming the file and the fix."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NoReturn

import pytest

from producers.importer.checkpoint import checkpoint_path
from producers.importer.plan import ImportFileError, format_of, plan_file
from tests.factories import valid_event


def test_the_format_follows_the_extension_unless_given() -> None:
    assert format_of(Path("a.CSV"), None) == "csv"
    assert format_of(Path("a.ndjson"), None) == "ndjson"
    assert format_of(Path("a.jsonl"), None) == "ndjson"
    assert format_of(Path("a.csv"), "ndjson") == "ndjson"


def test_a_missing_file_is_named_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match=r"nope\.ndjson: no such file — check the path"):
        plan_file(tmp_path / "nope.ndjson", None, resume=False)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="is a directory"):
        plan_file(tmp_path, None, resume=False)


def test_an_unreadable_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root, who reads any file whatever its mode, so the refusal is simulated.
    path = tmp_path / "locked.ndjson"
    path.write_text("{}\n")

    def refuse(self: Path, *args: object, **kwargs: object) -> NoReturn:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(ImportFileError, match="permission denied — make it readable"):
        plan_file(path, None, resume=False)


def test_a_binary_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + os.urandom(200))
    with pytest.raises(ImportFileError, match="binary file"):
        plan_file(path, "ndjson", resume=False)


def test_an_empty_file_is_planned_not_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.touch()
    assert plan_file(path, None, resume=False).size == 0


def test_a_csv_file_is_planned_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("event_id,user_id,type,occurred_at,data.bpm\n1,2,3,4,5\n")
    plan = plan_file(path, None, resume=False)
    assert plan.header is not None
    assert plan.body_start == (2, len("event_id,user_id,type,occurred_at,data.bpm\n"))


def test_a_csv_file_with_a_bad_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("id,user,kind\n")
    with pytest.raises(ImportFileError, match="lacks the column"):
        plan_file(path, None, resume=False)


def test_resume_uses_a_matching_checkpoint_and_refuses_a_stale_one(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    path.write_text(json.dumps(valid_event()) + "\n")
    assert plan_file(path, None, resume=True).resume_from is None
    checkpoint_path(path).write_text("garbage")
    assert plan_file(path, None, resume=False).resume_from is None  # without --resume it is not read
    with pytest.raises(ImportFileError, match="delete it"):
        plan_file(path, None, resume=True)
