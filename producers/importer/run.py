"""Importing planned files: read, batch, publish with pipelined confirms, checkpoint, report.

Per file: items stream from the reader; valid events fill NDJSON batches (≤ 1000 events, ≤ 1 MiB),
rejections go to `PATH.rejected.ndjson`. Each batch carries the checkpoint that becomes true once it and
every earlier batch are confirmed; the newest such checkpoint is written at most every
`checkpoint_interval_s`, and on interrupt or abort. A finished file's checkpoint is removed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from producers.importer.checkpoint import Checkpoint, checkpoint_path, remove_checkpoint, save_checkpoint
from producers.importer.plan import FilePlan, ImportFileError
from producers.importer.progress import ImportProgress
from producers.importer.readers import Item, Rejected, csv_items, ndjson_items
from producers.importer.rejects import RejectsFile
from producers.importer.window import Batch, ConfirmWindow, ImportAborted, Sender
from producers.ndjson import Body, NdjsonPacker
from schemas import MAX_BATCH_EVENTS


@dataclass(slots=True)
class ImportTotals:
    """Counts over all files; `imported` and `rejected` include what resumed files had done before."""

    imported: int = 0
    rejected: int = 0
    published_now: int = 0
    rejects_files: list[Path] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """How an import runs (`pulseseal import` takes them from the settings).

    Args:
        batch_events: Events per message (at most 1000).
        in_flight: Unconfirmed messages at most.
        retry_s: How long a lost broker is retried before stopping.
        checkpoint_interval_s: The least time between two checkpoint writes.
        now: The clock for the 24 h future bound (injectable for tests).
    """

    batch_events: int = MAX_BATCH_EVENTS
    in_flight: int = 16
    retry_s: float = 60.0
    checkpoint_interval_s: float = 0.5
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


class Importer:
    """Imports files through one publisher.

    Args:
        publisher: The confirmed publisher.
        progress: Where progress and notes go.
        options: Batch size, confirms in flight, broker retry time, checkpoint interval, clock.
    """

    def __init__(
        self, publisher: Sender, progress: ImportProgress, options: ImportOptions | None = None
    ) -> None:
        self._publisher = publisher
        self._progress = progress
        self._options = options if options is not None else ImportOptions()

    async def run(self, plans: Sequence[FilePlan]) -> ImportTotals:
        """Import every planned file in order.

        Raises:
            ImportFileError: a file could not be read or the broker was lost for too long; the message
                says how to continue (the checkpoint of the file in progress is saved).
            asyncio.CancelledError: interrupted (the checkpoint is saved and a note says how to resume).
        """
        totals = ImportTotals()
        for plan in plans:
            await _FileImport(self._publisher, self._progress, self._options, plan, totals).run()
        return totals


class _FileImport:
    """The state of importing one file."""

    def __init__(
        self,
        publisher: Sender,
        progress: ImportProgress,
        options: ImportOptions,
        plan: FilePlan,
        totals: ImportTotals,
    ) -> None:
        self.publisher, self.progress, self.options = publisher, progress, options
        self.plan, self.totals = plan, totals
        start = plan.resume_from
        self.confirmed: Checkpoint | None = start
        self.imported = start.imported if start else 0
        self.rejected = start.rejected if start else 0
        self.queued = self.imported
        self.written_at = time.monotonic()
        self.rejects = RejectsFile(plan.path, keep_bytes=start.rejected_bytes if start else None)

    async def run(self) -> None:
        plan, progress, options = self.plan, self.progress, self.options
        if plan.size == 0:
            progress.note(f"{plan.path}: empty file, nothing to import")
            return
        if plan.resume_from is not None:
            at = plan.resume_from
            progress.note(
                f"{plan.path}: resuming after line {at.line} ({at.imported} events already imported)"
            )
        elif plan.resume:
            progress.note(f"{plan.path}: no checkpoint to resume from; importing from the start")
        elif checkpoint_path(plan.path).exists():
            progress.note(
                f"{plan.path}: an earlier import was interrupted; starting over (--resume continues)"
            )
            remove_checkpoint(plan.path)
        window = ConfirmWindow(
            self.publisher,
            max_in_flight=options.in_flight,
            retry_s=options.retry_s,
            on_confirmed=self._confirmed,
            on_retry=lambda why: progress.note(
                f"{plan.path}: {why}; retrying for up to {options.retry_s:g} s"
            ),
        )
        progress.start(plan.path.name, plan.size, self.confirmed.offset if self.confirmed else 0)
        try:
            with plan.path.open("rb") as stream:
                await self._pump(window, self._items(stream))
            await window.drain()
        except BaseException as exc:  # noqa: BLE001 - interrupts too must save the checkpoint; re-raised below
            window.abandon()
            try:
                self._save()
            except OSError as save_error:
                progress.note(f"{plan.path}: the checkpoint could not be saved ({save_error.strerror})")
            self.rejects.close()
            raise self._explain(exc) from None
        self.rejects.close()
        remove_checkpoint(plan.path)
        progress.update(plan.size, self.imported, self.rejected)
        progress.finish()
        self.totals.imported += self.imported
        self.totals.rejected += self.rejected
        if self.rejected:
            self.totals.rejects_files.append(self.rejects.path)
            progress.note(f"{plan.path}: {self.rejected} line(s) rejected, listed in {self.rejects.path}")

    def _items(self, stream: BinaryIO) -> Iterator[Item]:
        plan, now = self.plan, self.options.now
        line, offset = plan.body_start
        if plan.resume_from is not None:
            line, offset = plan.resume_from.line + 1, plan.resume_from.offset
        stream.seek(offset)
        if plan.header is not None:
            return csv_items(stream, plan.header, now=now, first_line=line, start_offset=offset)
        return ndjson_items(stream, now=now, first_line=line, start_offset=offset)

    async def _pump(self, window: ConfirmWindow, items: Iterator[Item]) -> None:
        packer = NdjsonPacker(max_events=self.options.batch_events)
        last_line, last_offset = 0, 0
        for line, offset, payload in items:
            if isinstance(payload, Rejected):
                self.rejects.write(payload)
                self.rejected += 1
            else:
                # A full body ends at the line before this one: that is where its checkpoint points.
                full = packer.add(payload)
                if full is not None:
                    await self._submit(window, full, last_line, last_offset)
            last_line, last_offset = line, offset
        rest = packer.flush()
        if rest is not None:
            await self._submit(window, rest, last_line, last_offset)

    async def _submit(self, window: ConfirmWindow, packed: Body, line: int, offset: int) -> None:
        body, events = packed
        self.queued += events
        checkpoint = Checkpoint(
            format=self.plan.format,
            head_sha256=self.plan.head_sha256,
            line=line,
            offset=offset,
            imported=self.queued,
            rejected=self.rejected,
            rejected_bytes=self.rejects.position,
        )
        await window.submit(Batch(body, events, checkpoint))
        self.progress.update(offset, self.imported, self.rejected)

    def _confirmed(self, batch: Batch) -> None:
        self.confirmed = batch.checkpoint
        self.imported = batch.checkpoint.imported
        self.totals.published_now += batch.events
        if time.monotonic() - self.written_at >= self.options.checkpoint_interval_s:
            self._save()

    def _save(self) -> None:
        if self.confirmed is None:
            return
        # The rejected lines the checkpoint counts must be on disk before the checkpoint is.
        self.rejects.sync()
        save_checkpoint(self.plan.path, self.confirmed)
        self.written_at = time.monotonic()

    def _explain(self, exc: BaseException) -> BaseException:
        path, at = self.plan.path, self.confirmed
        where = f"checkpoint after line {at.line}" if at else "no line confirmed yet"
        if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
            self.progress.note(f"{path}: interrupted ({where}); continue with --resume")
            return exc
        if isinstance(exc, ImportAborted):
            return ImportFileError(f"{path}: {exc}; {where} — start RabbitMQ and rerun with --resume")
        if isinstance(exc, OSError):
            why = exc.strerror or type(exc).__name__
            return ImportFileError(
                f"{path}: cannot read or write ({why}); {where} — fix it and rerun with --resume"
            )
        return exc
