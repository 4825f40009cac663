"""The one atomic-write helper: whole files or none, mode as asked, never written through a symlink."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pulseseal.files import AtomicFile, atomic_write, create_atomic, write_atomic


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".partial"))


def test_write_atomic_replaces_the_file_with_the_mode_asked(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.json"
    target.write_bytes(b"old")
    write_atomic(target, b"new", mode=0o600)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert _leftovers(tmp_path) == []


def test_a_block_that_raises_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "backup.ndjson"
    target.write_bytes(b"old")

    def interrupted_backup() -> None:
        with atomic_write(target) as out:
            out.write(b"half of a ")
            raise RuntimeError("the source stopped answering")

    with pytest.raises(RuntimeError):
        interrupted_backup()
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_nothing_is_visible_under_the_target_name_before_commit(tmp_path: Path) -> None:
    target = tmp_path / "replay.ndjson"
    out = AtomicFile(target)
    out.write(b"line\n")
    assert not target.exists()
    out.commit()
    assert target.read_bytes() == b"line\n"


def test_create_atomic_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "master.key"
    assert create_atomic(target, b"first")
    assert not create_atomic(target, b"second")
    assert target.read_bytes() == b"first"
    assert _leftovers(tmp_path) == []


def test_a_symlink_at_the_target_is_replaced_not_written_through(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"keep me")
    target = tmp_path / "out.json"
    target.symlink_to(elsewhere)
    write_atomic(target, b"new")
    assert elsewhere.read_bytes() == b"keep me"
    assert not target.is_symlink()
    assert target.read_bytes() == b"new"
