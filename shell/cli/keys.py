"""`pulseseal keys rotate|shred|reinstate|audit|rewrap|backup|restore|transport-rotate|transport-retire`:
key administration.

`rotate`, `shred`, `reinstate` and `audit` call the running key service with the admin caller key
(`PULSESEAL_CALLER_KEY_FILE`, default `HOME/credentials/admin.pem`). `rewrap` is different: it runs the key
service's own code against the key store, with both master keys, so data keys never leave this process;
so do `backup` and `restore` (pulseseal/cli/keystore.py). The transport-key commands are in
shell/cli/transport.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from keyservice.audit import AuditLog
from keyservice.auditchain import verify as verify_chain
from keyservice.bootstrap import connect_redis, keystore_redis_password, load_master_key
from keyservice.client.tokens import load_private_key
from keyservice.rewrap import RewrapReport
from keyservice.rewrap import rewrap as rewrap_store
from keyservice.wire.errors import KeyServiceError
from keyservice.wrapping import MasterKey
from pulseseal.settings import Settings, load_settings, redact_url
from schemas.rfc3339 import parse_rfc3339
from shell.cli import keystore, transport
from shell.cli.admin import call_as_admin
from shell.cli.errors import CliError, ExitCode

app = typer.Typer(
    help="Key administration: rotate, shred, reinstate, audit, rewrap, backup, restore, and the transport "
    "keys that seal broker messages (transport-rotate, transport-retire).",
    no_args_is_help=True,
)
app.command("backup")(keystore.backup)
app.command("restore")(keystore.restore)
app.command("transport-rotate")(transport.rotate)
app.command("transport-retire")(transport.retire)

T = TypeVar("T")
UserOpt = Annotated[str, typer.Option("--user-id", help="The user.")]
KeyFileOpt = Annotated[
    Path | None,
    typer.Option("--key-file", help="Admin caller key (default PULSESEAL_CALLER_KEY_FILE or admin.pem)."),
]


@app.command()
def rotate(user_id: UserOpt, key_file: KeyFileOpt = None) -> None:
    """Add a key version for the user; old versions still decrypt."""
    version = call_as_admin(key_file, "rotate", lambda c: c.rotate(user_id))
    print(f"user {user_id}: key version {version} is current")


@app.command()
def shred(
    user_id: UserOpt,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    key_file: KeyFileOpt = None,
) -> None:
    """Destroy every key version of the user (crypto-shredding) and print the signed erasure receipt."""
    if not yes:
        if not sys.stdin.isatty():
            raise CliError("shred destroys keys for good: confirm on a terminal or pass --yes")
        typer.confirm(
            f"Destroy every key of user {user_id}? Their sealed events can never be read again.", abort=True
        )
    receipt = call_as_admin(key_file, "shred", lambda c: c.shred(user_id))
    print(receipt.model_dump_json())


@app.command()
def reinstate(user_id: UserOpt, key_file: KeyFileOpt = None) -> None:
    """Let a shredded user have keys again (destroyed versions stay destroyed)."""
    version = call_as_admin(key_file, "reinstate", lambda c: c.reinstate(user_id))
    print(f"user {user_id} reinstated: key version {version} is current")


@app.command()
def audit(
    user_id: Annotated[str | None, typer.Option("--user-id", help="Only records naming this user.")] = None,
    since: Annotated[str | None, typer.Option(help="Only records at or after this RFC 3339 time.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Records at most.")] = 1000,
    key_file: KeyFileOpt = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Check the whole trail (archive and key store) for edited, deleted or inserted records "
            "instead of printing it; exit 3 when it fails. Reads the key store directly.",
        ),
    ] = False,
) -> None:
    """Print audit records as NDJSON, oldest first (or, with --verify, check their chain and signatures)."""
    if verify:
        _verify_audit(load_settings())
        return
    try:
        since_time = parse_rfc3339(since) if since is not None else None
    except ValueError as exc:
        raise CliError(f"--since {exc}") from None
    records = call_as_admin(
        key_file, "audit", lambda c: c.audit(user_id=user_id, since=since_time, limit=limit)
    )
    for record in records:
        print(json.dumps(record.to_json()))


@app.command()
def rewrap(
    new_master_key: Annotated[
        Path, typer.Option("--new-master-key", help="File with the new base64 master key.")
    ],
) -> None:
    """Re-wrap every data key under a new master key (safe to re-run after an interruption).

    Stop the key service first; afterwards point PULSESEAL_MASTER_KEY_FILE at the new file and start it.
    """
    settings = load_settings()
    try:
        old = load_master_key(settings)
        new = MasterKey.from_file(new_master_key)
        report = asyncio.run(_rewrap(settings, old, new))
    except KeyServiceError as exc:
        raise CliError(f"rewrap failed: {exc.detail}") from None
    if report.already_done:
        print(f"the key store is already wrapped under master key {new.key_id_hex}; nothing to do")
    else:
        print(
            f"re-wrapped {report.keys_rewrapped} data keys under master key {new.key_id_hex}; now set "
            f"PULSESEAL_MASTER_KEY_FILE={new_master_key} and start the key service"
        )


def _verify_audit(settings: Settings) -> None:
    try:
        signing_key = load_private_key(settings.credential(settings.keyservice_signing_key, "keyservice.pem"))
        password = keystore_redis_password(settings)
    except KeyServiceError as exc:
        raise CliError(f"audit --verify: {exc.detail}") from None

    async def read() -> list[tuple[bytes, bytes | None]]:
        redis = connect_redis(settings.keystore_redis_url, password)
        try:
            log = AuditLog(
                redis,
                settings.keystore_prefix,
                signer=signing_key,
                archive=settings.audit_archive_file
                or settings.home_dir / "keyservice" / "audit-archive.ndjson",
            )
            return await log.entries()
        finally:
            await redis.aclose()

    try:
        entries = asyncio.run(read())
    except KeyServiceError:
        raise CliError(
            f"audit --verify: the key store at {redact_url(settings.keystore_redis_url)} is not answering"
        ) from None
    result = verify_chain(entries, signing_key.public_key())
    for problem in result.problems:
        print(f"audit: {problem}", file=sys.stderr)
    newest = ", ".join(f"{w}#{n}" for w, n in sorted(result.writers.items())) or "none"
    summary = (
        f"{result.records} records ({result.unsigned} unsigned, written before signing) by "
        f"{len(result.writers)} writers; newest record of each writer: {newest}"
    )
    if not result.ok:
        raise CliError(
            f"audit log FAILED verification ({len(result.problems)} problems): {summary}", ExitCode.INTEGRITY
        )
    print(f"audit log verified: {summary}")


async def _rewrap(settings: Settings, old: MasterKey, new: MasterKey) -> RewrapReport:
    redis = connect_redis(settings.keystore_redis_url, keystore_redis_password(settings))
    try:
        return await rewrap_store(redis, old, new, prefix=settings.keystore_prefix)
    finally:
        await redis.aclose()
