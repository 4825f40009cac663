"""`pulseseal bench [--quick] [--json FILE] [--scenario ID]... [--events N]`: the benchmark (docs/benchmarks.md).

Runs the scenarios of `bench.harness.SCENARIOS` in this one process against the local servers, prints a
table per scenario and the targets, and optionally writes the same as JSON. Exit 0 when every scenario
that ran measured everything; 1 when some figure could not be measured (the table says why); 2 when a
server is missing or the options are wrong. Targets not met do not change the exit code: the benchmark
reports, it does not judge a build.

The benchmark stands above the shell, so the shell does not import it: `register` adds the command to the
`pulseseal` app through the `pulseseal.commands` entry point (pyproject.toml).
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.console import Console

from pulseseal.settings import Settings, load_settings, redact_url
from schemas import MAX_BATCH_EVENTS  # the drain's messages are full batches (bench.traffic)
from shell.cli.errors import CliError, ExitCode

HELP = "Run the benchmark (seal, key service, ...) and print figures, ratios and targets."


def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="Short run (well under a minute), same scenarios.")
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results as JSON to this file.")
    ] = None,
    scenario: Annotated[
        list[str] | None,
        typer.Option("--scenario", help="Run only this scenario (id or number); repeatable."),
    ] = None,
    events: Annotated[
        int | None,
        typer.Option(
            "--events",
            help="Events of the end-to-end and scale-out drains, a multiple of 1000 "
            "(default 200000; 10000 with --quick).",
        ),
    ] = None,
) -> int:
    """Run the benchmark and print its tables."""
    # Imported when the command runs: the competitors' libraries are heavy, and a missing one is a clear
    # line rather than a `pulseseal` that does not start.
    try:
        from bench import harness, report
    except ImportError as exc:
        raise CliError(
            f"the benchmark needs its extra dependencies ({exc.name} is missing): "
            "install them with `pip install 'pulseseal[bench]'`"
        ) from None
    try:
        specs = harness.select(scenario or [])
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if events is not None and (events < MAX_BATCH_EVENTS or events % MAX_BATCH_EVENTS):
        raise CliError(
            f"--events must be a positive multiple of {MAX_BATCH_EVENTS} (whole messages), not {events}"
        )
    if json_path is not None and not json_path.parent.is_dir():
        raise CliError(f"cannot write {json_path}: no such directory")
    settings = load_settings()
    _require_servers(settings, {need for spec in specs if spec.module for need in spec.needs})
    err = Console(stderr=True)
    result = asyncio.run(
        harness.run_bench(
            specs,
            quick=quick,
            settings=settings,
            events=events,
            progress=lambda line: err.print(f"[dim]{line}[/]", highlight=False),
        )
    )
    report.render(result, Console(highlight=False, width=max(Console().width, 140)))
    if json_path is not None:
        try:
            report.write_json(result, json_path)
        except OSError as exc:
            raise CliError(f"cannot write {json_path}: {exc.strerror}") from None
        print(f"results written to {json_path}", file=sys.stderr)
    return int(ExitCode.OK if result.complete else ExitCode.PARTIAL)


def _require_servers(settings: Settings, needs: set[str]) -> None:
    urls = {
        "amqp": ("RabbitMQ", settings.amqp_url, 5672),
        "mongo": ("The MongoDB-compatible server", settings.mongo_url, 27017),
        "keystore": ("The key-store Redis", settings.keystore_redis_url, 6380),
    }
    for need in sorted(needs):
        name, url, default_port = urls[need]
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or default_port
        try:
            socket.create_connection((host, port), timeout=3).close()
        except OSError:
            raise CliError(
                f"{name} is not answering at {redact_url(url)}: start the local servers with "
                "`pulseseal services up`"
            ) from None


def register(app: typer.Typer) -> None:
    """Add `pulseseal bench` to the command line (the `pulseseal.commands` entry point)."""
    app.command("bench", help=HELP)(bench)
