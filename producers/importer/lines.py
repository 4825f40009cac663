"""Reading a file line by line with bounded memory, whatever its longest line.

`readline(limit)` never returns more than `limit` bytes, so a 10 MB line (or a file with no newline at
all) costs at most `limit` bytes of memory: the rest of it is skipped in small reads and the line is
reported as too long instead of being buffered.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from schemas import MAX_BATCH_BYTES

# An event must fit in one message (1 MiB), so no valid line is longer than that.
MAX_LINE_BYTES = MAX_BATCH_BYTES
_SKIP_CHUNK = 64 * 1024


def read_lines(
    stream: BinaryIO, *, first_number: int = 1, start_offset: int = 0, max_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, bytes | None, int]]:
    """Yield (line number, line bytes with their newline, offset just after the line) for each line.

    A line longer than `max_bytes` is yielded as None, having been skipped without being kept.

    Args:
        stream: A binary file positioned at `start_offset`, the start of line `first_number`.
        first_number: The number of the first line read.
        start_offset: The stream's position now (offsets count from the file's start).
        max_bytes: The longest line kept.

    Raises:
        OSError: reading failed.
    """
    number = first_number
    offset = start_offset
    readline = stream.readline
    while True:
        line = readline(max_bytes + 1)
        if not line:
            return
        offset += len(line)
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while True:
                rest = readline(_SKIP_CHUNK)
                offset += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            yield number, None, offset
        else:
            yield number, line, offset
        number += 1
