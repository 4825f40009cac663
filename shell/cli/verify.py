"""`pulseseal verify [--since T]`: the whole store against the signed batch manifests (docs/replay.md)."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from typing import Annotated

import typer
from pymongo.errors import ConnectionFailure, PyMongoError

from producers.verify import Finding, StoreSummary, verify_store
from pulseseal import mongo
from pulseseal.settings import Settings, load_settings, redact_url
from schemas.rfc3339 import parse_rfc3339
from shell.cli.errors import CliError, ExitCode
from shell.cli.manifestkeys import PublicKeys, load_manifest_keys

HELP = """Check every sealed record and every batch manifest; print one summary line.

\b
Every record a manifest lists must be present and unchanged, every record
must be listed, and every manifest chain must be whole (signatures, sequence
numbers, links). With --since T (RFC 3339), only records sealed and
manifests written at or after T. Each problem goes to stderr by _id; the
summary line to stdout. Streams the store in partitions of bounded size.
Needs no key: nothing is decrypted.

\b
Exit codes: 0 clean, 2 usage, configuration or I/O error, 3 problems found.
"""


def verify_command(
    since: Annotated[
        str | None, typer.Option("--since", help="Only records sealed at or after this RFC 3339 time.")
    ] = None,
) -> int:
    """Verify the store (see HELP)."""
    start: datetime | None = None
    if since is not None:
        try:
            start = parse_rfc3339(since)
        except ValueError as exc:
            raise CliError(f"--since {exc}") from None
    settings = load_settings()
    public_keys = load_manifest_keys(settings)
    summary = asyncio.run(_verify(settings, public_keys, start))
    print(summary.line(), flush=True)
    return ExitCode.INTEGRITY if summary.problems else ExitCode.OK


def _print(finding: Finding) -> None:
    print(f"verify: {finding.line()}", file=sys.stderr, flush=True)


async def _verify(settings: Settings, public_keys: PublicKeys, since: datetime | None) -> StoreSummary:
    client = mongo.connect(settings.mongo_url)
    try:
        return await verify_store(
            mongo.sealed_events(client, settings.mongo_db),
            mongo.seal_manifests(client, settings.mongo_db),
            public_keys,
            _print,
            since=since,
        )
    except PyMongoError as exc:
        what = "is not answering" if isinstance(exc, ConnectionFailure) else f"failed ({type(exc).__name__})"
        raise CliError(
            f"MongoDB at {redact_url(settings.mongo_url)} {what}: start it (`pulseseal services up`) or "
            "set PULSESEAL_MONGO_URL"
        ) from None
    finally:
        await client.close()
