"""Resume points: `PATH.checkpoint.json`, the last line whose batch — and every batch before it — the
broker confirmed.

Written atomically (a temporary file, fsync, rename) so a crash leaves the old checkpoint or the new one,
never half of one. Everything after the checkpoint is read and published again on `--resume`, which may
publish some events twice; `event_id` is the idempotency key, so that is harmless, while losing one is
not. The checkpoint also fingerprints the file's head, so a resume against a different file is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from pulseseal.files import write_atomic

VERSION = 1
_HEAD_BYTES = 64 * 1024


class CheckpointError(Exception):
    """A checkpoint that cannot be read, or that does not match its file."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where an import stands; every count includes everything before `line`."""

    format: str
    head_sha256: str
    line: int
    offset: int
    imported: int
    rejected: int
    rejected_bytes: int
    version: int = VERSION


def checkpoint_path(path: Path) -> Path:
    """`PATH.checkpoint.json`, beside the imported file."""
    return path.with_name(path.name + ".checkpoint.json")


def fingerprint(path: Path) -> str:
    """SHA-256 of the file's first 64 KiB: enough to tell another file from a grown or the same one.

    Raises:
        OSError: the file cannot be read.
    """
    with path.open("rb") as stream:
        return hashlib.sha256(stream.read(_HEAD_BYTES)).hexdigest()


def load_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint of `path`, or None when there is none.

    Raises:
        CheckpointError: it exists but cannot be read or is not a checkpoint of this version.
    """
    target = checkpoint_path(path)
    try:
        raw = json.loads(target.read_text(encoding="utf-8"))
        checkpoint = Checkpoint(**raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        raise CheckpointError(
            f"{target} is unreadable or damaged; delete it to import from the start"
        ) from None
    if checkpoint.version != VERSION:
        raise CheckpointError(f"{target} was written by another version; delete it to import from the start")
    return checkpoint


def check_matches(path: Path, checkpoint: Checkpoint, *, file_format: str) -> None:
    """Refuse a checkpoint that was written for another file or format.

    Raises:
        CheckpointError: the file's head changed, it is shorter than the checkpoint, or the format differs.
        OSError: the file cannot be read.
    """
    target = checkpoint_path(path)
    if checkpoint.format != file_format:
        raise CheckpointError(
            f"{target} is for a {checkpoint.format} import, not {file_format}; "
            f"pass --format {checkpoint.format} or delete it"
        )
    if path.stat().st_size < checkpoint.offset or fingerprint(path) != checkpoint.head_sha256:
        raise CheckpointError(
            f"{path} changed since {target} was written; delete the checkpoint to import from the start"
        )


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write the checkpoint atomically and durably.

    Raises:
        OSError: it cannot be written.
    """
    write_atomic(checkpoint_path(path), json.dumps(asdict(checkpoint), sort_keys=True).encode())


def remove_checkpoint(path: Path) -> None:
    """Delete the checkpoint (the import finished).

    Raises:
        OSError: it exists and cannot be deleted.
    """
    checkpoint_path(path).unlink(missing_ok=True)
