"""Seals per key version, counted by the encryptor and reported to the key service every few seconds.

The key service rotates a user's key when a version reaches its seal budget (keyservice/usage.py); it
can only count what encryptors tell it. Counting is one dictionary update per flush, reporting one
request per interval with everything counted since the last one. A report that fails is kept and added
to the next one (sending it twice over-counts, which only brings a rotation forward). At shutdown the
last counts are sent, within the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

log = logging.getLogger("pulseseal.encryptor")

Counts = Mapping[tuple[str, int], int]
Send = Callable[[Counts], Awaitable[object]]


class UsageReporter:
    """Count seals per `(user_id, key_version)` and send the counts every `interval_s`.

    Args:
        send: Sends one report (e.g. `keyservice.client.usage.report_usage` bound to a client).
        interval_s: Time between two reports.
    """

    def __init__(self, send: Send, *, interval_s: float) -> None:
        self._send = send
        self._interval_s = interval_s
        self._pending: Counter[tuple[str, int]] = Counter()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> Counts:
        """Counted and not yet reported."""
        return self._pending

    def count(self, docs: Iterable[Mapping[str, Any]]) -> None:
        """Add one flush's sealed documents."""
        self._pending.update((doc["user_id"], doc["key_version"]) for doc in docs)

    def start(self) -> None:
        """Start reporting in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pulseseal-usage")

    async def report(self) -> None:
        """Send what was counted now; on failure keep it for the next report."""
        if not self._pending:
            return
        sending, self._pending = self._pending, Counter()
        try:
            await self._send(sending)
        except Exception as exc:  # noqa: BLE001 - any failure: keep the counts, try again next interval
            self._pending.update(sending)
            log.warning("key usage not reported (%s); will retry", type(exc).__name__)

    async def close(self, timeout_s: float) -> None:
        """Stop the background task and send the last counts, giving up after `timeout_s`."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.report(), timeout_s)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.report()
