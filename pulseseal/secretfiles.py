"""Reading and writing secret files (keys, passwords) the way ssh treats its private keys.

A secret file that its group or others may read (or write) is refused when it is loaded, with the line
that fixes it: a key that every local account could have copied is no longer a secret, and saying so at
start-up beats finding out in an incident review. Secret files are written through a new temporary file
opened with `O_CREAT | O_EXCL | O_NOFOLLOW` and mode 0600, so a symlink or a file planted at the temporary
name is never followed or reused, then renamed (or linked) into place.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: Permission bits a secret file must not have: any access for group or others.
_LOOSE = stat.S_IRWXG | stat.S_IRWXO
CREATE_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)


class SecretFileError(Exception):
    """A secret file is missing, unreadable or too open; the message names the file and the fix."""


def check_private(path: Path) -> None:
    """Refuse a secret file that its group or others may access.

    Raises:
        SecretFileError: the file's mode gives group or others any access.
        FileNotFoundError: the file does not exist.
        OSError: it cannot be inspected.
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & _LOOSE:
        raise SecretFileError(
            f"{path} is accessible by group or others (mode {mode:04o}), so it is no longer secret: "
            f"run `chmod 600 {path}` (and replace the secret if others may have read it)"
        )


def read_secret(path: Path) -> bytes:
    """The bytes of a secret file after `check_private`.

    Raises:
        SecretFileError: too open (see `check_private`).
        FileNotFoundError: the file does not exist.
        OSError: it cannot be read.
    """
    check_private(path)
    return path.read_bytes()


def open_new_private(path: Path) -> int:
    """A file descriptor of a NEW file `path`, mode 0600, never following a symlink.

    Raises:
        FileExistsError: something (a file, a symlink) exists at `path`.
        OSError: it cannot be created.
    """
    return os.open(path, CREATE_FLAGS, 0o600)
