"""`pulseseal import PATH... [--format ndjson|csv] [--resume]` (docs/contract.md §8)."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from keyservice.client.transport_public import TransportSealer
from keyservice.wire.errors import KeyServiceError
from producers.importer.plan import FilePlan, Format, ImportFileError, plan_file
from producers.importer.progress import progress_for
from producers.importer.run import Importer, ImportOptions, ImportTotals
from producers.publisher import BrokerUnavailable, Publisher
from pulseseal.logs import configure_logging
from pulseseal.settings import Settings, load_settings
from shell.cli.errors import CliError, ExitCode

HELP = """Publish the events of NDJSON or CSV files, with broker confirms.

\b
NDJSON: one event (docs/contract.md §3) per line; blank lines are skipped.
CSV: a header row, then one event per row. Columns: event_id, user_id, type,
occurred_at (required), source_kind, source_device (optional), and
data.<field> for the data fields of the types in the file (data.bpm,
data.count, data.period_s, ...). Numbers as decimals, booleans true/false,
lists (data.triggers) as JSON text or ';'-separated. An empty cell is null
where the field allows null, an empty list for a list, absent otherwise.

\b
Rejected lines go to PATH.rejected.ndjson ({"line", "field", "reason"}, no
values); the rest is imported. PATH.checkpoint.json records the last line
whose events the broker confirmed, so --resume continues after a crash or
Ctrl-C (some events may be published twice; event_id makes that harmless).
Every file is checked first: if any is missing, unreadable, binary, or has a
bad CSV header, nothing is imported.

\b
Exit codes: 0 all imported, 1 some lines rejected, 2 usage or I/O error.
"""


def import_command(
    paths: Annotated[list[Path], typer.Argument(help="NDJSON or CSV files.", show_default=False)],
    file_format: Annotated[
        str | None,
        typer.Option(
            "--format", help="ndjson or csv (default: .csv files are CSV, others NDJSON).", show_default=False
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue each file from its checkpoint, if it has one.")
    ] = False,
) -> int:
    """Import files (see HELP)."""
    if file_format not in (None, "ndjson", "csv"):
        raise CliError("--format must be ndjson or csv")
    settings = load_settings()
    configure_logging("importer", logging.ERROR)
    # The broker client logs every failed connection attempt; the user gets one line from us instead.
    for noisy in ("aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    plans = _plan(paths, file_format, resume)  # type: ignore[arg-type]
    started = time.perf_counter()
    totals = asyncio.run(_import(settings, plans))
    seconds = time.perf_counter() - started
    rate = totals.published_now / seconds if seconds > 0 else 0.0
    print(
        f"imported {totals.imported} events, rejected {totals.rejected}, in {seconds:.1f} s ({rate:.0f} events/s)"
    )
    return ExitCode.PARTIAL if totals.rejected else ExitCode.OK


def _plan(paths: list[Path], file_format: Format | None, resume: bool) -> list[FilePlan]:
    plans, problems = [], []
    for path in paths:
        try:
            plans.append(plan_file(path, file_format, resume=resume))
        except ImportFileError as exc:
            problems.append(str(exc))
    if problems:
        for problem in problems[:-1]:
            print(f"pulseseal: {problem}", file=sys.stderr)
        raise CliError(f"{problems[-1]} (nothing was imported)")
    return plans


async def _import(settings: Settings, plans: list[FilePlan]) -> ImportTotals:
    try:
        sealer = TransportSealer.from_settings(settings)
    except KeyServiceError as exc:
        raise CliError(exc.detail) from None
    publisher = Publisher(
        settings.amqp_url,
        sealer=sealer,
        delivery_limit=settings.delivery_limit,
        confirm_timeout_s=30.0,  # a batch import can wait for a busy broker; the gateway cannot
        app_id="pulseseal-import",
    )
    try:
        await publisher.connect()
    except BrokerUnavailable as exc:
        await publisher.close()
        raise CliError(f"{exc} — start it (`pulseseal services up`) or set PULSESEAL_AMQP_URL") from None
    try:
        await sealer.public_key()  # fail now, with one clear line, rather than on the first batch
    except KeyServiceError as exc:
        await publisher.close()
        raise CliError(
            f"{exc.detail} — every message is sealed for the encryptors: start the key service "
            "(`pulseseal keyservice`) or set PULSESEAL_KEYSERVICE_URL"
        ) from None
    progress = progress_for(sys.stderr)
    try:
        options = ImportOptions(
            batch_events=settings.import_batch_events,
            in_flight=settings.import_in_flight,
            retry_s=settings.import_retry_s,
        )
        importer = Importer(publisher, progress, options)
        return await importer.run(plans)
    except ImportFileError as exc:
        raise CliError(str(exc)) from None
    finally:
        progress.close()
        await publisher.close()
