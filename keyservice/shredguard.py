"""The shred ledger as the key service consults it before any key leaves: the last line of defence.

The ledger is re-applied to the key store at every start and by `pulseseal keys restore`. That leaves
states of the store the service cannot see coming: a key-store Redis restarted from older files, a
failover to a lagging replica, a restore done by hand while the service runs. So every key about to be
handed out is also checked against the ledger held in memory; a key the ledger says was destroyed is
never sent, and the user's entry in the store is brought back in line with the ledger at once.

The in-memory view follows the ledger in Redis (one `LLEN` per request; new entries are read and checked
as a continuation of the chain). A ledger that shrank or whose chain no longer continues the one read
(the key-store Redis itself rolled back to older files) is not trusted to forget shreds: what was known
stays known (only a later reinstate undoes a shred), and the log says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from keyservice.ledger import LedgerEntry, LedgerHead, ShredLedger, UserFloor, apply, summarize
from keyservice.wire.errors import KeyServiceError, KeyServiceUnavailable

log = logging.getLogger(__name__)


class ShredGuard:
    """Which key versions the shred ledger forbids, kept current with the ledger in the key store.

    Args:
        ledger: The shred ledger.
        entries: Its entries as loaded at start-up (the guard reads them again on its first refresh).
    """

    def __init__(self, ledger: ShredLedger, entries: Iterable[LedgerEntry] = ()) -> None:
        self._ledger = ledger
        self._earlier: list[LedgerEntry] = [*entries]  # what was known before the current chain was read
        self._current: list[LedgerEntry] = []  # the chain as read from Redis
        self._noted: list[LedgerEntry] = []  # this process's appends since the chain was last read
        self._head = LedgerHead()
        self.floors: dict[str, UserFloor] = {}
        self._fold()

    def _fold(self) -> None:
        self.floors = summarize([*self._earlier, *self._current, *self._noted])

    async def refresh(self) -> None:
        """Read the entries appended since the last look (one `LLEN` when there are none).

        Raises:
            KeyServiceUnavailable: the ledger cannot be read or no longer verifies (fail closed: no key
                is handed out while the ledger cannot be consulted).
        """
        rewritten = False
        try:
            length = await self._ledger.length()
            if length == self._head.length and not self._noted:
                return
            try:
                if length < self._head.length:
                    raise KeyServiceError("shrank")
                entries, head = await self._ledger.read_after(self._head)
            except KeyServiceError:
                # Shrank, or no longer continues what was read: the key store went back to older files.
                if self._head.length:
                    log.error(
                        "the shred ledger in the key store shrank or was rewritten while the service ran (key "
                        "store rolled back?): every shred known so far still counts"
                    )
                self._earlier += [*self._current, *self._noted]
                self._current, self._noted = [], []
                rewritten = True
                entries, head = await self._ledger.read_after(LedgerHead())
        except KeyServiceError:
            raise KeyServiceUnavailable("the shred ledger does not verify; see the key service log") from None
        self._current += entries
        self._noted = []
        self._head = head
        if rewritten:
            self._fold()
        else:
            for entry in entries:  # in place: O(new entries), not O(ledger), per request
                apply(self.floors, entry)

    def note(self, entry: LedgerEntry) -> None:
        """Take in an entry this process has just appended (so it counts before the next `refresh`)."""
        self._noted.append(entry)
        apply(self.floors, entry)

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
