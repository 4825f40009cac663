"""How an import shows its progress: a rich progress bar on a terminal, plain periodic lines otherwise.

Both write to stderr, so stdout carries only the summary line. Nothing here sees an event, only byte
offsets and counts.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ImportProgress(Protocol):
    """What the importer reports while it runs."""

    def start(self, name: str, total_bytes: int, done_bytes: int) -> None:
        """A file starts (`done_bytes` > 0 when resuming)."""

    def update(self, done_bytes: int, imported: int, rejected: int) -> None:
        """The current file advanced."""

    def finish(self) -> None:
        """The current file is done."""

    def note(self, text: str) -> None:
        """One line for the user."""

    def close(self) -> None:
        """The import is over."""


class PlainProgress:
    """A line every `interval_s` seconds: for logs, pipes and CI.

    Args:
        stream: Where lines go (default stderr).
        interval_s: The least time between two progress lines.
        clock: Monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream or sys.stderr
        self._interval_s = interval_s
        self._clock = clock
        self._name = ""
        self._total = 0
        self._last = 0.0

    def start(self, name: str, total_bytes: int, done_bytes: int) -> None:
        self._name, self._total, self._last = name, total_bytes, self._clock()

    def update(self, done_bytes: int, imported: int, rejected: int) -> None:
        now = self._clock()
        if now - self._last >= self._interval_s:
            self._last = now
            share = 100 * done_bytes / self._total if self._total else 100.0
            self.note(f"{self._name}: {share:.0f}% read, {imported} events imported, {rejected} rejected")

    def finish(self) -> None:
        pass

    def note(self, text: str) -> None:
        print(text, file=self._stream, flush=True)

    def close(self) -> None:
        pass


class RichProgress:
    """A progress bar per file on the terminal (stderr unless another console is given)."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[imported]} events, {task.fields[rejected]} rejected"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self._console,
        )
        self._task: TaskID | None = None
        self._progress.start()

    def start(self, name: str, total_bytes: int, done_bytes: int) -> None:
        self._task = self._progress.add_task(
            name, total=total_bytes, completed=done_bytes, imported=0, rejected=0
        )

    def update(self, done_bytes: int, imported: int, rejected: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=done_bytes, imported=imported, rejected=rejected)

    def finish(self) -> None:
        if self._task is not None:
            total = self._progress.tasks[-1].total
            self._progress.update(self._task, completed=total)
            self._task = None

    def note(self, text: str) -> None:
        self._progress.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        self._progress.stop()


def progress_for(stream: TextIO | None = None) -> ImportProgress:
    """A progress bar when `stream` (default stderr) is a terminal, plain lines otherwise."""
    target = stream or sys.stderr
    return RichProgress() if target.isatty() else PlainProgress(target)
