"""Where a replay's NDJSON goes: standard output, or a file that appears only once the replay is complete.

A file is written beside its target under a temporary name, mode 0600 (it holds health data in the
clear), fsync'd and renamed over the target at the end; a replay that stops part-way removes it. So a file
named by `--out` is always a whole replay, never the first half of one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO, Protocol

from pulseseal.files import AtomicFile


class ReplayOutput(Protocol):
    """A destination for NDJSON bytes."""

    where: str

    def write(self, data: bytes) -> None:
        """Write bytes (raises OSError)."""
        ...

    def commit(self) -> None:
        """Make everything written final (raises OSError)."""
        ...

    def discard(self) -> None:
        """Give up: drop what a file holds; never raises."""
        ...


class StdoutOutput:
    """Standard output, written through (a pipe's reader sees each chunk as it is opened)."""

    where = "standard output"

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer

    def write(self, data: bytes) -> None:
        """Write and flush.

        Raises:
            OSError: the reader went away (BrokenPipeError) or the device failed.
        """
        self._stream.write(data)
        self._stream.flush()

    def commit(self) -> None:
        """Flush.

        Raises:
            OSError: the reader went away or the device failed.
        """
        self._stream.flush()

    def discard(self) -> None:
        """Nothing to take back: what was written was read."""


class FileOutput:
    """A file that is replaced only by a complete replay (an `AtomicFile`, mode 0600).

    Args:
        target: The file to write (replaced if it exists).

    Raises:
        OSError: the temporary file cannot be created (missing directory, no permission).
    """

    def __init__(self, target: Path) -> None:
        self.where = str(target)
        self._file = AtomicFile(target, mode=0o600)

    def write(self, data: bytes) -> None:
        """Append bytes to the temporary file.

        Raises:
            OSError: the write failed (disk full, I/O error).
        """
        self._file.write(data)

    def commit(self) -> None:
        """fsync the temporary file and rename it over the target.

        Raises:
            OSError: the file could not be synced or renamed (the temporary file is removed).
        """
        self._file.commit()

    def discard(self) -> None:
        """Close and remove the temporary file."""
        self._file.discard()
