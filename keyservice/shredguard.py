"""The shred ledger as the key service consults it before any key leaves: the last line of defence.

The ledger is re-applied to the key store at every start and by `pulseseal keys restore`. That leaves
states of the store the service cannot see coming: a key-store Redis restarted from older files, a
failover to a lagging replica, a restore done by hand while the service runs. So every key about to be
handed out is also checked against the ledger held in memory; a key the ledger says was destroyed is
never sent, and the user's entry in the store is brought back in line with the ledger at once.

The in-memory view follows the file: when it grew (a shred or reinstate by this or another key-service
process on the same ledger), it is read again. A file that shrank, vanished or was replaced is not
trusted to forget shreds: what was known stays known (only a later reinstate undoes a shred), and the
log says so; the next start checks the file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

from keyservice.ledger import LedgerEntry, ShredLedger, UserFloor, summarize
from keyservice.wire.errors import KeyServiceError, KeyServiceUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Stamp:
    inode: int
    size: int


class ShredGuard:
    """Which key versions the shred ledger forbids, kept current with the ledger file.

    Args:
        ledger: The shred ledger.
        entries: Its entries as loaded at start-up.
    """

    def __init__(self, ledger: ShredLedger, entries: Iterable[LedgerEntry]) -> None:
        self._ledger = ledger
        self._earlier: list[LedgerEntry] = []  # what files since vanished or replaced said
        self._current = list(entries)  # what the file says now
        self._noted: list[LedgerEntry] = []  # this process's appends since the file was last read
        self._stamp = self._stat()
        self.floors: dict[str, UserFloor] = {}
        self._fold()

    def _fold(self) -> None:
        self.floors = summarize([*self._earlier, *self._current, *self._noted])

    def _stat(self) -> _Stamp | None:
        try:
            status = os.stat(self._ledger.path)
        except FileNotFoundError:
            return None
        except OSError:
            raise KeyServiceUnavailable("cannot read the shred ledger") from None
        return _Stamp(status.st_ino, status.st_size)

    def refresh(self) -> None:
        """Re-read the ledger if it changed since the last look (one `stat` when it did not).

        Raises:
            KeyServiceUnavailable: the ledger cannot be read or no longer verifies (fail closed: no key
                is handed out while the ledger cannot be consulted).
        """
        stamp = self._stat()
        if stamp == self._stamp:
            return
        grown = (
            stamp is not None
            and self._stamp is not None
            and stamp.inode == self._stamp.inode
            and stamp.size > self._stamp.size
        )
        if not grown:
            # Vanished, shrank, replaced — or created since the start: what was known stays known, and
            # the new file's entries count after it (so only a later reinstate undoes a shred).
            if self._stamp is not None:
                log.error(
                    "the shred ledger %s shrank, vanished or was replaced while the service ran; every "
                    "shred known so far still counts (restart the service to re-check the file)",
                    self._ledger.path,
                )
            self._earlier += [*self._current, *self._noted]
            self._current, self._noted = [], []
        self._stamp = stamp
        if stamp is not None:
            try:
                self._current = self._ledger.load(repair=False)
            except KeyServiceError:
                raise KeyServiceUnavailable(
                    "the shred ledger does not verify; see the key service log"
                ) from None
            self._noted = []
        self._fold()

    def note(self, entry: LedgerEntry) -> None:
        """Take in an entry this process has just appended (so it counts before the next `refresh`)."""
        self._noted.append(entry)
        self._fold()

    def shredded(self, user_id: str) -> bool:
        """True when the ledger's last word on the user is a shred."""
        floor = self.floors.get(user_id)
        return floor is not None and floor.shredded

    def forbids(self, user_id: str, version: int) -> bool:
        """True when the ledger says this key version was destroyed (or the user is shredded)."""
        floor = self.floors.get(user_id)
        return floor is not None and (floor.shredded or version <= floor.max_destroyed)

    def floors_of(self, user_ids: Iterable[str]) -> dict[str, UserFloor]:
        """The ledger's floors of those users that it names."""
        return {u: self.floors[u] for u in user_ids if u in self.floors}
