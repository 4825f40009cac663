"""`pulseseal dead list|redrive`: inspect and re-queue dead letters (codes, reasons, counts — no values)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated

import typer

from keyservice.client.transport_public import TransportSealer
from keyservice.wire.errors import KeyServiceError
from producers.deadletters import DeadLetterError, list_dead, redrive
from pulseseal.logs import configure_logging
from pulseseal.settings import load_settings
from pulseseal.topology import DEAD_QUEUE, EVENTS_EXCHANGE, REDRIVE_ROUTING_KEY
from shell.cli.errors import CliError

app = typer.Typer(
    help="Inspect and re-queue the dead letters in pulseseal.dead (never shows their content).",
    no_args_is_help=True,
)


def _quiet() -> None:
    configure_logging("dead", logging.ERROR)
    # The broker client logs every failed connection attempt; the user gets one line from us instead.
    for noisy in ("aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)


@app.command("list")
def list_command(
    limit: Annotated[int | None, typer.Option(min=1, help="Inspect at most this many.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of a table.")] = False,
) -> None:
    """Count the dead letters by code and reason; every one stays in the queue."""
    settings = load_settings()
    _quiet()
    try:
        report = asyncio.run(
            list_dead(settings.amqp_url, delivery_limit=settings.delivery_limit, limit=limit)
        )
    except DeadLetterError as exc:
        raise CliError(str(exc)) from None
    if as_json:
        groups = [{"code": g.code, "reason": g.reason, "count": g.count} for g in report.groups]
        print(json.dumps({"in_queue": report.in_queue, "inspected": report.inspected, "groups": groups}))
        return
    if report.groups:
        width = max(len(g.code) for g in report.groups)
        print(f"{'count':>7}  {'code':<{width}}  reason")
        for group in report.groups:
            print(f"{group.count:>7}  {group.code:<{width}}  {group.reason}")
    inspected = "" if report.inspected == report.in_queue else f" ({report.inspected} inspected)"
    print(f"{report.in_queue} dead letter(s) in {DEAD_QUEUE}{inspected}")


@app.command("redrive")
def redrive_command(
    code: Annotated[
        str | None, typer.Option(help="Only dead letters with this code (see `pulseseal dead list`).")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Move at most this many.")] = None,
) -> None:
    """Re-queue dead letters to pulseseal.events (routing key events.redrive), e.g. after a fix."""
    settings = load_settings()
    _quiet()
    try:
        sealer = TransportSealer.from_settings(settings)
        report = asyncio.run(
            redrive(
                settings.amqp_url,
                sealer=sealer,
                delivery_limit=settings.delivery_limit,
                code=code,
                limit=limit,
            )
        )
    except DeadLetterError as exc:
        raise CliError(str(exc)) from None
    except KeyServiceError as exc:
        raise CliError(exc.detail) from None
    print(
        f"moved {report.moved} dead letter(s) to {EVENTS_EXCHANGE} ({REDRIVE_ROUTING_KEY}); "
        f"{report.left} left in {DEAD_QUEUE}"
    )
