"""`pulseseal keys transport-rotate|transport-retire`: the transport keys that seal broker messages
(contract §4 and §6; rotation policy in docs/operations.md).

Both call the running key service with the admin caller key. `transport-retire` destroys a key that is
no longer current: every message still sealed under it, in the queues or in any copy of the broker's
disk, can never be opened again. So it first says how many messages `pulseseal.seal` and
`pulseseal.dead` hold and asks, unless `--yes`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer
from aiormq.exceptions import AMQPError

from keyservice.client.transport_keys import (
    current_transport_key_id,
    retire_transport_key,
    rotate_transport_key,
)
from keyservice.client.transport_public import TransportSealer
from keyservice.wire.errors import KeyServiceError
from pulseseal import amqp_failover
from pulseseal.settings import Settings, load_settings
from pulseseal.topology import DEAD_QUEUE, SEAL_QUEUE, TopologyMismatch, declare_topology
from shell.cli.admin import call_as_admin
from shell.cli.errors import CliError

KeyFileOpt = Annotated[
    Path | None,
    typer.Option("--key-file", help="Admin caller key (default PULSESEAL_CALLER_KEY_FILE or admin.pem)."),
]


def rotate(key_file: KeyFileOpt = None) -> None:
    """Make a new transport key current; producers pick it up within a minute, older keys still open."""
    key_id = call_as_admin(key_file, "transport-rotate", rotate_transport_key)
    print(
        f"transport key {key_id} is current; producers seal under it within a minute. Retire the old key "
        "once the queues have drained (`pulseseal keys transport-retire --key-id OLD`)"
    )


def retire(
    key_id: Annotated[
        str, typer.Option("--key-id", help="The transport key to retire (not the current one).")
    ],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    key_file: KeyFileOpt = None,
) -> None:
    """Destroy a transport key that is not current: messages still sealed under it can never be opened."""
    settings = load_settings()
    current = _current(settings)
    if key_id == current:
        raise CliError(
            f"{key_id} is the current transport key: run `pulseseal keys transport-rotate` first, wait for "
            "the queues to drain, then retire it"
        )
    print(_queue_report(settings))
    if not yes:
        if not sys.stdin.isatty():
            raise CliError("transport-retire destroys a key for good: confirm on a terminal or pass --yes")
        typer.confirm(
            f"Destroy transport key {key_id}? Messages still sealed under it can never be opened.", abort=True
        )
    retired_at = call_as_admin(
        key_file, "transport-retire", lambda client: retire_transport_key(client, key_id)
    )
    print(f"transport key {key_id} retired at {retired_at}")


def _current(settings: Settings) -> str:
    async def ask() -> str:
        async with TransportSealer.from_settings(settings, retries=1) as sealer:
            return await current_transport_key_id(sealer)

    try:
        return asyncio.run(ask())
    except KeyServiceError as exc:
        raise CliError(
            f"transport-retire failed: {exc.detail}; start the key service (`pulseseal keyservice`)"
        ) from None


def _queue_report(settings: Settings) -> str:
    async def count() -> dict[str, int]:
        connection = await amqp_failover.connect(settings.amqp_url, timeout_s=5)
        async with connection:
            channel = await connection.channel()
            await declare_topology(channel, delivery_limit=settings.delivery_limit)
            counts = {}
            for name in (SEAL_QUEUE, DEAD_QUEUE):
                queue = await channel.declare_queue(name, passive=True)
                counts[name] = int(queue.declaration_result.message_count or 0)
            return counts

    try:
        counts = asyncio.run(count())
    except (AMQPError, OSError, TimeoutError, TopologyMismatch):
        return "cannot count the queued messages (RabbitMQ not reachable): make sure the queues have drained"
    return (
        f"{SEAL_QUEUE} holds {counts[SEAL_QUEUE]} message(s) and {DEAD_QUEUE} {counts[DEAD_QUEUE]}; "
        "any sealed under this key can never be opened after it is retired"
    )
