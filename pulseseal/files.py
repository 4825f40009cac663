"""Atomic, durable file writes: a reader sees the old file or the new one, never half of either.

The content goes to a private temporary file next to the target (`O_EXCL | O_NOFOLLOW`, so a planted
file or symlink is never written through), which is fsync'd, renamed over the target (or hard-linked into
place when an existing file must not be replaced), and then the directory is fsync'd so the rename itself
survives a power loss. Used by the importer's checkpoints, key-store backups, dev credentials and replay
output files.

    with atomic_write(path, mode=0o600) as out:
        out.write(b"...")              # committed when the block ends; removed if it raises
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def fsync_directory(directory: Path) -> None:
    """fsync a directory, making a rename or a new name in it durable.

    Raises:
        OSError: the directory cannot be opened or synced.
    """
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """A temporary file that becomes `target` on `commit` and disappears on `discard`.

    Args:
        target: The file to write.
        mode: Permission bits of the new file (the process umask may remove some).

    Raises:
        OSError: the temporary file cannot be created (missing directory, no permission).
    """

    def __init__(self, target: Path, *, mode: int = 0o600) -> None:
        self.target = target
        self._temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
        fd = os.open(self._temporary, _FLAGS, mode)
        self._file = os.fdopen(fd, "wb")
        self._done = False

    def write(self, data: bytes) -> None:
        """Append bytes to the temporary file.

        Raises:
            OSError: the write failed (disk full, I/O error).
        """
        self._file.write(data)

    def commit(self, *, replace: bool = True) -> bool:
        """Make the content durable under `target`.

        Args:
            replace: Replace an existing target (rename); with False an existing target is kept and the
                content is dropped (hard link, which fails if the name exists, even racing another writer).

        Returns:
            True when `target` now holds the content; False when `replace` is False and it existed.

        Raises:
            OSError: the file could not be synced, renamed or linked (the temporary file is removed).
        """
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            if replace:
                os.replace(self._temporary, self.target)
            else:
                try:
                    os.link(self._temporary, self.target)
                except FileExistsError:
                    self._done = True
                    return False
                finally:
                    self._temporary.unlink(missing_ok=True)
        except BaseException:
            self.discard()
            raise
        self._done = True
        # The rename is done and the data synced; a directory that cannot be synced (some filesystems
        # refuse it) only risks the name, not half a file.
        with contextlib.suppress(OSError):
            fsync_directory(self.target.parent)
        return True

    def discard(self) -> None:
        """Close and remove the temporary file; the target is left as it was."""
        self._done = True
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self._temporary.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.discard()


@contextlib.contextmanager
def atomic_write(target: Path, *, mode: int = 0o600) -> Iterator[AtomicFile]:
    """An `AtomicFile` committed over `target` when the block ends, discarded when it raises.

    Raises:
        OSError: the file cannot be created, written, synced or renamed.
    """
    with AtomicFile(target, mode=mode) as out:
        yield out


def write_atomic(target: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace `target` with `data`, atomically and durably.

    Raises:
        OSError: the file cannot be written.
    """
    with atomic_write(target, mode=mode) as out:
        out.write(data)


def create_atomic(target: Path, data: bytes, *, mode: int = 0o600) -> bool:
    """Write `data` to `target` unless it exists; False (and nothing written) when it does.

    Raises:
        OSError: the file cannot be written.
    """
    out = AtomicFile(target, mode=mode)
    try:
        out.write(data)
    except BaseException:
        out.discard()
        raise
    return out.commit(replace=False)
