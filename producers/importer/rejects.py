"""`PATH.rejected.ndjson`: one `{"line", "field", "reason"}` object per rejected line — never a value."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import BinaryIO

from producers.importer.readers import Rejected


def rejects_path(path: Path) -> Path:
    """`PATH.rejected.ndjson`, beside the imported file."""
    return path.with_name(path.name + ".rejected.ndjson")


class RejectsFile:
    """The rejected-lines file of one import, opened only when a first line is rejected.

    Args:
        path: The imported file.
        keep_bytes: On resume, the size the file had at the checkpoint (later lines will be rejected
            again and must not be listed twice); None for a fresh import, which removes an old file.

    Raises:
        OSError: an old file cannot be removed or truncated.
    """

    def __init__(self, path: Path, *, keep_bytes: int | None) -> None:
        self.path = rejects_path(path)
        self._stream: BinaryIO | None = None
        self.position = 0
        self.count = 0
        if keep_bytes is None:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            self._stream = self.path.open("r+b")
            self._stream.truncate(keep_bytes)
            self.position = self._stream.seek(0, os.SEEK_END)

    def write(self, rejected: Rejected) -> None:
        """Append one rejection.

        Raises:
            OSError: writing failed.
        """
        if self._stream is None:
            self._stream = self.path.open("ab")
        entry = {"line": rejected.line, "field": rejected.field, "reason": rejected.reason}
        data = json.dumps(entry, ensure_ascii=False).encode() + b"\n"
        self._stream.write(data)
        self.position += len(data)
        self.count += 1

    def sync(self) -> None:
        """Make everything written so far durable (before a checkpoint refers to it).

        Raises:
            OSError: flushing failed.
        """
        if self._stream is not None:
            self._stream.flush()
            os.fsync(self._stream.fileno())

    def close(self) -> None:
        """Flush and close."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
