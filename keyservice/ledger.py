"""The shred ledger: an append-only, fsync'd, signed record of every shred and reinstate, kept apart from
the key store and re-applied on every start.

Its job is backups: a key store restored from a snapshot taken before a shred still holds the shredded
keys, and re-applying the ledger destroys them again before any is handed out. Each line is one JSON object
signed (Ed25519, the key service's receipt key) over `pulseseal-shred-ledger/v1\\n` + its compact,
key-sorted JSON without `signature`; a line that does not verify stops the service from starting. A last
line without its newline is a write torn by a crash and is cut off (the admin saw that shred fail).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fcntl
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keyservice.wire.errors import LedgerError
from pulseseal.files import fsync_directory

log = logging.getLogger(__name__)
_CONTEXT = b"pulseseal-shred-ledger/v1\n"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One shred (versions destroyed, highest version ever destroyed) or reinstate (new version)."""

    event: Literal["shred", "reinstate"]
    user_id: str
    at: str
    versions_destroyed: tuple[int, ...] = ()
    max_destroyed: int = 0
    version: int = 0

    def body(self) -> dict[str, Any]:
        """The signed fields."""
        if self.event == "shred":
            return {
                "event": "shred",
                "user_id": self.user_id,
                "at": self.at,
                "versions_destroyed": list(self.versions_destroyed),
                "max_destroyed": self.max_destroyed,
            }
        return {"event": "reinstate", "user_id": self.user_id, "at": self.at, "version": self.version}


@dataclass(frozen=True, slots=True)
class UserFloor:
    """What the ledger says about one user: the highest destroyed version, and whether keys are allowed."""

    max_destroyed: int
    shredded: bool
    reinstated_version: int


def _signed(body: dict[str, Any]) -> bytes:
    return _CONTEXT + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


class ShredLedger:
    """The ledger file.

    Args:
        path: The NDJSON file (created, with its directory, on first append).
        signing_key: The key service's Ed25519 key; lines are verified with its public half.
    """

    def __init__(self, path: Path, signing_key: Ed25519PrivateKey) -> None:
        self.path = path
        self._key = signing_key
        self._lock = asyncio.Lock()

    def load(self, *, repair: bool = True) -> list[LedgerEntry]:
        """Read and verify every entry, cutting off a torn last line.

        Args:
            repair: Cut a torn last line off the file (at start-up). Without it, an unfinished last line
                is only skipped: a running service re-reading the ledger may meet another process's
                append half-way, which must not be cut.

        Raises:
            LedgerError: unreadable, or a line that is not a valid signed entry (named by line number).
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise LedgerError(f"cannot read shred ledger {self.path}: {type(exc).__name__}") from None
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            if repair:
                log.warning(
                    "shred ledger %s: cutting off a torn last line (%d bytes)", self.path, len(data) - keep
                )
                os.truncate(self.path, keep)
            data = data[:keep]
        return [self._parse(n, line) for n, line in enumerate(data.splitlines(), 1) if line.strip()]

    def _parse(self, number: int, line: bytes) -> LedgerEntry:
        where = f"shred ledger {self.path} line {number}"
        try:
            document = json.loads(line)
            signature = base64.b64decode(document.pop("signature"), validate=True)
            self._key.public_key().verify(signature, _signed(document))
            if document["event"] == "shred":
                return LedgerEntry(
                    "shred",
                    str(document["user_id"]),
                    str(document["at"]),
                    versions_destroyed=tuple(int(v) for v in document["versions_destroyed"]),
                    max_destroyed=int(document["max_destroyed"]),
                )
            if document["event"] == "reinstate":
                return LedgerEntry(
                    "reinstate",
                    str(document["user_id"]),
                    str(document["at"]),
                    version=int(document["version"]),
                )
        except InvalidSignature:
            raise LedgerError(
                f"{where}: signature does not verify (tampered, or another signing key)"
            ) from None
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            raise LedgerError(f"{where}: not a ledger entry") from None
        raise LedgerError(f"{where}: unknown event")

    async def append(self, entry: LedgerEntry) -> None:
        """Append one signed entry and fsync it before returning.

        Raises:
            LedgerError: the file cannot be written.
        """
        body = entry.body()
        signature = base64.b64encode(self._key.sign(_signed(body))).decode("ascii")
        line = json.dumps({**body, "signature": signature}, separators=(",", ":")).encode() + b"\n"
        async with self._lock:
            try:
                await asyncio.to_thread(self._append_sync, line)
            except OSError as exc:
                raise LedgerError(
                    f"cannot append to shred ledger {self.path}: {type(exc).__name__}"
                ) from None

    def _append_sync(self, line: bytes) -> None:
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            # flock: a second key-service process on the same ledger must not interleave lines.
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_directory(self.path.parent)


def summarize(entries: Iterable[LedgerEntry]) -> dict[str, UserFloor]:
    """Fold the ledger into one `UserFloor` per user, in file order."""
    floors: dict[str, UserFloor] = {}
    for entry in entries:
        prev = floors.get(entry.user_id, UserFloor(0, False, 0))
        if entry.event == "shred":
            top = max([prev.max_destroyed, entry.max_destroyed, *entry.versions_destroyed])
            floors[entry.user_id] = UserFloor(top, True, prev.reinstated_version)
        else:
            floors[entry.user_id] = UserFloor(
                prev.max_destroyed, False, max(prev.reinstated_version, entry.version)
            )
    return floors
