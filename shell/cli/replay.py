"""`pulseseal replay --user-id U [--since T] [--until T] --purpose TEXT [--out FILE]` (docs/contract.md §8)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from pymongo.errors import ConnectionFailure, PyMongoError

from keyservice.client import KeyServiceClient
from keyservice.wire.errors import CallerNotAllowed, KeyServiceError, KeyServiceUnavailable, TokenRejected
from producers.completeness import UserCompleteness
from producers.replay import ReplaySummary, TimeRange, find_sealed, replay_user
from producers.replay_output import FileOutput, ReplayOutput, StdoutOutput
from producers.verify import Finding
from pulseseal import mongo
from pulseseal.logs import configure_logging
from pulseseal.settings import Settings, load_settings, redact_url
from schemas.rfc3339 import parse_rfc3339
from schemas.userids import USER_ID_RULE, is_user_id
from shell.cli.errors import CliError, ExitCode
from shell.cli.manifestkeys import PublicKeys, load_manifest_keys

HELP = """Decrypt one user's sealed events for an audit and write them as NDJSON.

\b
Events with --since <= occurred_at < --until (RFC 3339 times with an offset;
either may be left out) are written in occurred_at order, one canonical JSON
event a line, exactly as they were ingested: to standard output, or to --out
FILE (mode 0600, replaced only once the replay is complete). Needs the
auditor caller key (keys:decrypt; PULSESEAL_CALLER_KEY_FILE, default
HOME/credentials/auditor.pem). --purpose is recorded in the key service's
audit log with every key request and, at the end, with the counts.

\b
A record that fails to open (tampered, or swapped) is reported on stderr by
its _id and the replay goes on; records whose keys were destroyed (the user
was crypto-shredded) are reported as unreadable, with the date.

\b
Completeness is checked against the encryptors' signed batch manifests
(docs/replay.md; public keys from PULSESEAL_MANIFEST_KEYS_FILE, default
HOME/credentials/manifest-keys.json): a record a manifest lists that is
missing, altered or rolled back to an older copy, a record no manifest
lists, and a gap or a bad signature in a manifest chain are each reported
on stderr by _id.

\b
Exit codes: 0 every record in the range written (or none there), 1 some
records unreadable (keys destroyed), 2 usage, configuration or I/O error,
3 some records failed to open, or the range is not complete and unchanged.
"""


def replay_command(
    user_id: Annotated[str, typer.Option("--user-id", help="The user whose events to replay.")],
    purpose: Annotated[
        str, typer.Option("--purpose", help="Why (1-500 characters); goes to the key service's audit log.")
    ],
    since: Annotated[
        str | None, typer.Option("--since", help="Earliest occurred_at (RFC 3339, included).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="End of the range (RFC 3339, excluded).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this file instead of standard output.")
    ] = None,
) -> int:
    """Replay one user's events (see HELP)."""
    window = _window(since, until)
    _check_user_and_purpose(user_id, purpose)
    settings = load_settings()
    configure_logging("replay", logging.ERROR)
    public_keys = load_manifest_keys(settings)
    try:
        keys = KeyServiceClient.from_settings(settings, "auditor")
    except KeyServiceError as exc:
        raise CliError(f"{exc.detail}; replay needs a caller key with keys:decrypt") from None
    output = _open_output(out)
    try:
        summary, problems = asyncio.run(
            _replay(settings, keys, public_keys, output, user_id, purpose, window)
        )
        output.commit()
    except BaseException:
        output.discard()
        raise
    return _report(summary, user_id, problems)


def _window(since: str | None, until: str | None) -> TimeRange:
    times = {}
    for name, text in (("--since", since), ("--until", until)):
        try:
            times[name] = parse_rfc3339(text) if text is not None else None
        except ValueError as exc:
            raise CliError(f"{name} {exc}") from None
    try:
        return TimeRange(times["--since"], times["--until"])
    except ValueError:
        raise CliError("--since must be before --until (the range is since <= occurred_at < until)") from None


def _check_user_and_purpose(user_id: str, purpose: str) -> None:
    if not is_user_id(user_id):
        raise CliError(f"--user-id must be {USER_ID_RULE}")
    if not purpose.strip() or len(purpose) > 500:
        raise CliError("--purpose must say why, in 1 to 500 characters (it goes to the audit log)")


def _open_output(out: Path | None) -> ReplayOutput:
    if out is None:
        return StdoutOutput()
    try:
        return FileOutput(out)
    except OSError as exc:
        raise CliError(f"cannot write --out {out}: {exc.strerror or type(exc).__name__}") from None


async def _replay(
    settings: Settings,
    keys: KeyServiceClient,
    public_keys: PublicKeys,
    output: ReplayOutput,
    user_id: str,
    purpose: str,
    window: TimeRange,
) -> tuple[ReplaySummary, int]:
    client = mongo.connect(settings.mongo_url)
    try:
        async with keys:
            manifests = mongo.seal_manifests(client, settings.mongo_db)
            check = await UserCompleteness.load(manifests, public_keys, user_id, window, _print_finding)
            cursor = find_sealed(mongo.sealed_events(client, settings.mongo_db), user_id, window)
            try:
                summary = await replay_user(
                    check.watch(cursor),
                    keys,
                    output.write,
                    user_id=user_id,
                    purpose=purpose,
                    window=window,
                    on_failed=_print_failed,
                )
            finally:
                await cursor.close()
            check.finish()
            return summary, check.problems
    except PyMongoError as exc:
        what = "is not answering" if isinstance(exc, ConnectionFailure) else f"failed ({type(exc).__name__})"
        raise CliError(
            f"MongoDB at {redact_url(settings.mongo_url)} {what}: start it (`pulseseal services up`) or "
            "set PULSESEAL_MONGO_URL"
        ) from None
    except KeyServiceUnavailable:
        raise CliError(
            f"key service at {settings.keyservice_url} not reachable: start it with `pulseseal keyservice` "
            "or set PULSESEAL_KEYSERVICE_URL"
        ) from None
    except (CallerNotAllowed, TokenRejected) as exc:
        raise CliError(
            f"the key service refused caller {keys.caller_id} ({exc.detail}); replay needs keys:decrypt"
        ) from None
    except KeyServiceError as exc:
        raise CliError(f"key service error: {exc.detail}") from None
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            _silence_stdout()
        raise CliError(
            f"cannot write the replay to {output.where}: {exc.strerror or type(exc).__name__}"
        ) from None
    finally:
        await client.close()


def _print_failed(document_id: str, why: str) -> None:
    print(f"replay: {document_id} failed to open ({why})", file=sys.stderr, flush=True)


def _print_finding(finding: Finding) -> None:
    print(f"replay: {finding.line()}", file=sys.stderr, flush=True)


def _report(summary: ReplaySummary, user_id: str, problems: int) -> int:
    if problems:
        print(
            f"replay: the range of user {user_id} is not complete and unchanged: {problems} problems "
            "(missing, altered or unlisted records, or manifest chain gaps)",
            file=sys.stderr,
        )
    if summary.records == 0:
        print(f"replay: no records for user {user_id} in that range", file=sys.stderr)
        return ExitCode.INTEGRITY if problems else ExitCode.OK
    for destroyed_at, count in sorted(summary.destroyed.items(), key=lambda i: (i[0] is None, i[0] or "")):
        when = f"on {destroyed_at}" if destroyed_at else "(date not recorded)"
        print(f"replay: {count} records of user {user_id} unreadable: keys destroyed {when}", file=sys.stderr)
    print(
        f"replayed {summary.opened} events of user {user_id} "
        f"({summary.failed} failed to open, {summary.unreadable} unreadable)",
        file=sys.stderr,
    )
    if summary.failed or problems:
        return ExitCode.INTEGRITY
    return ExitCode.PARTIAL if summary.unreadable else ExitCode.OK


def _silence_stdout() -> None:
    # The reader went away: point stdout at /dev/null so the interpreter's final flush stays quiet.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
