"""Looking for destroyed keys where the key store rests: every file under its Redis data directory.

Used by the demo (after its shred it shows that none of the user's wrapped keys is left on disk) and by
the tests that hold PulseSeal to contract §6. A wrapped key is 69 random-looking bytes; in the AOF's
incremental files it is stored as is, but the base file is an RDB image whose strings Redis may compress
(LZF copies random bytes in literal runs of at most 32), so the search looks for every 16-byte window of
each needle: any surviving run of a key is found, and 16 random bytes never match by chance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

WINDOW = 16


@dataclass(frozen=True, slots=True)
class Residue:
    """What a search found: files and bytes searched, and (file, needle index) pairs that matched."""

    files: int
    bytes_searched: int
    found: list[tuple[Path, int]]


async def data_dir(redis: Redis) -> Path:
    """The data directory of the key-store Redis (`CONFIG GET dir`), as that server sees it."""
    reply: dict[Any, Any] = await redis.config_get("dir")
    value = next(v for k, v in reply.items() if (k.decode() if isinstance(k, bytes) else k) == "dir")
    return Path(value.decode() if isinstance(value, bytes) else value)


def _windows(needle: bytes) -> set[bytes]:
    if len(needle) <= WINDOW:
        return {needle}
    return {needle[i : i + WINDOW] for i in range(len(needle) - WINDOW + 1)}


def search_files(
    directory: Path, needles: Sequence[bytes], *, skip: Iterable[str] = ("redis.log",)
) -> Residue:
    """Search every regular file under `directory` (recursively) for any 16-byte run of each needle.

    Files that vanish while searched (Redis deleting old AOF files) are skipped; the log is skipped (it
    never holds data, and it is large).
    """
    windows = [_windows(n) for n in needles]
    found: list[tuple[Path, int]] = []
    files = searched = 0
    skipped = set(skip)
    for path in sorted(directory.rglob("*")):
        if path.name in skipped or not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        files += 1
        searched += len(data)
        for index, parts in enumerate(windows):
            if any(part in data for part in parts):
                found.append((path, index))
    return Residue(files, searched, found)
