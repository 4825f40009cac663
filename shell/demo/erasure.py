"""The demo's proof that a shred holds on disk (contract §6): the shredded user's wrapped keys are read
from the key-store Redis before the shred, the key store's files are searched for them before (found)
and after the shred's answer (none left)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from keyservice.bootstrap import connect_redis
from keyservice.residue import Residue, data_dir, search_files
from pulseseal.settings import Settings


@dataclass(frozen=True, slots=True)
class DiskCheck:
    """The user's wrapped keys (still wrapped under the master key) and where the key store rests."""

    directory: Path
    wrapped: list[bytes]
    before: Residue


async def before_shred(settings: Settings, user_id: str) -> DiskCheck:
    """Read the user's wrapped keys and search the key store's files for them."""
    redis = connect_redis(settings.keystore_redis_url)
    try:
        fields = await redis.hgetall(f"{settings.keystore_prefix}u:{user_id}")
        directory = await data_dir(redis)
    finally:
        await redis.aclose()
    wrapped = [
        v for f, v in fields.items() if isinstance(f, bytes) and isinstance(v, bytes) and f[:2] == b"v:"
    ]
    return DiskCheck(directory, wrapped, search_files(directory, wrapped))


def after_shred(console: Console, check: DiskCheck) -> bool:
    """Search again and say what is left; True when nothing is."""
    after = search_files(check.directory, check.wrapped)
    found_before = len({i for _, i in check.before.found})
    left = len({i for _, i in after.found})
    # Lines of at most 80 columns (the demo's rule); the directory is in the log, not on screen.
    console.print(
        f"  key store's files before: {found_before} of the user's {len(check.wrapped)} wrapped "
        f"keys found in {check.before.files} files"
    )
    verdict = "[green]none is left ✓[/]" if left == 0 else f"[red]{left} still there ✗[/]"
    console.print(f"  after: searched {after.files} files ({after.bytes_searched:,} bytes): {verdict}")
    return left == 0
