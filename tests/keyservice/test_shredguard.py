"""The key service's in-memory copy of the shred ledger: follows the file as it grows, never forgets."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keyservice.ledger import LedgerEntry, ShredLedger
from keyservice.shredguard import ShredGuard

KEY = Ed25519PrivateKey.generate()
AT = "2026-11-29T00:00:00Z"


def shred(user: str, top: int) -> LedgerEntry:
    return LedgerEntry("shred", user, AT, versions_destroyed=tuple(range(1, top + 1)), max_destroyed=top)


def test_it_follows_appends_by_other_processes_and_forbids_destroyed_versions(tmp_path: Path) -> None:
    ledger = ShredLedger(tmp_path / "ledger.ndjson", KEY)
    guard = ShredGuard(ledger, ledger.load())
    assert not guard.forbids("a", 1)
    other = ShredLedger(ledger.path, KEY)  # another key-service process on the same file
    asyncio.run(other.append(shred("a", 2)))
    asyncio.run(other.append(LedgerEntry("reinstate", "a", AT, version=3)))
    guard.refresh()
    assert guard.forbids("a", 2)
    assert not guard.forbids("a", 3)
    assert not guard.shredded("a")
    asyncio.run(other.append(shred("b", 1)))
    guard.refresh()
    assert guard.shredded("b")
    assert guard.forbids("b", 7)


def test_a_half_written_last_line_is_skipped_not_cut(tmp_path: Path) -> None:
    ledger = ShredLedger(tmp_path / "ledger.ndjson", KEY)
    asyncio.run(ledger.append(shred("a", 1)))
    guard = ShredGuard(ledger, ledger.load())
    with ledger.path.open("ab") as out:
        out.write(b'{"event":"shred","user_id":"b"')  # another process mid-append
    guard.refresh()
    assert guard.shredded("a")
    assert not guard.shredded("b")
    assert ledger.path.read_bytes().endswith(b'"b"')  # left alone for its writer to finish


def test_a_ledger_that_shrinks_or_vanishes_does_not_make_it_forget(tmp_path: Path) -> None:
    ledger = ShredLedger(tmp_path / "ledger.ndjson", KEY)
    asyncio.run(ledger.append(shred("a", 1)))
    guard = ShredGuard(ledger, ledger.load())
    ledger.path.unlink()
    guard.refresh()
    assert guard.shredded("a")
    asyncio.run(ledger.append(shred("b", 1)))  # a new, shorter file
    guard.refresh()
    assert guard.shredded("a")
