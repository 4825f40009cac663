"""The key-store disaster drill at the end of a soak: back up, shred one user, lose the key store, restore.

Afterwards every sealed document must open again with the restored keys — except the shredded user's,
which must stay unopenable although the backup was taken before the shred (the shred ledger is
re-applied by the restore and by the key service).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as redis

from shell.processes import command
from shell.soak.pipeline import Pipeline
from shell.soak.servers import SoakSetupError


@dataclass(slots=True)
class RestoreDrill:
    """What the drill did; the openings after it are checked by the caller."""

    backup: Path
    victim: str
    backup_line: str = ""
    restore_line: str = ""


async def pulseseal(env: dict[str, str], *args: str) -> str:
    """Run `pulseseal ARGS` and return its last line of output.

    Raises:
        SoakSetupError: it failed (exit status and last line in the message).
    """
    process = await asyncio.create_subprocess_exec(
        *command(args),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await process.communicate()
    lines = (out + err).decode(errors="replace").strip().splitlines()
    last = lines[-1] if lines else ""
    if process.returncode != 0:
        raise SoakSetupError(f"pulseseal {args[0]} {args[1] if len(args) > 1 else ''} failed: {last}")
    return last


async def drill(pipeline: Pipeline, redis_url: str, backup: Path, victim: str) -> RestoreDrill:
    """Back up the key store, shred `victim`, lose every user's keys, restore them and restart the key service.

    Raises:
        SoakSetupError: a step failed.
    """
    result = RestoreDrill(backup, victim)
    env = pipeline.env
    result.backup_line = await pulseseal(env, "keys", "backup", "--out", str(backup))
    await pulseseal(env, "keys", "shred", "--user-id", victim, "--yes")
    await pipeline.stop_keyservice()
    store = redis.Redis.from_url(redis_url)
    prefix = env.get("PULSESEAL_KEYSTORE_PREFIX", "pulseseal:ks:")
    try:
        # The disaster: every user's keys are lost. Not the ledger and the backup keys beside them: a backup
        # can be read only while its backup key exists (docs/keyservice.md, "What erasure covers").
        async for name in store.scan_iter(match=f"{prefix}u:*", count=1000):
            await store.delete(name)
    finally:
        await store.aclose()
    result.restore_line = await pulseseal(env, "keys", "restore", str(backup))
    await pipeline.start_keyservice()
    return result
