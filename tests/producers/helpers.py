"""Helpers for producer tests: user tokens, reading what reached the queues, events as bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import jwt

from pulseseal.topology import DEAD_QUEUE, NDJSON, SEAL_QUEUE, declare_topology
from pulseseal.transit import TransportPrivateKey
from shell.processes import free_port, run
from tests.transit import open_raw

SECRET = b"test-gateway-secret-0123456789-abcdefghijklmnop"
AUDIENCE = "authenticated"
USER = "user-0001"
DELIVERY_LIMIT = 5


def token(sub: str | None = USER, *, secret: bytes = SECRET, ttl_s: int = 600, **claims: Any) -> str:
    """An HS256 user token as Supabase issues them; `claims` add, change or (None) drop claims."""
    payload: dict[str, Any] = {
        "sub": sub,
        "aud": AUDIENCE,
        "exp": int(time.time()) + ttl_s,
        "role": "authenticated",
    }
    payload.update(claims)
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    """An Authorization header."""
    return {"Authorization": f"Bearer {value}"}


def ndjson(events: Iterable[dict[str, Any]]) -> bytes:
    """Events as an NDJSON body."""
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


@dataclass(frozen=True, slots=True)
class Delivered:
    """One message taken off a queue: `body` is the opened plaintext, `raw` what the broker held."""

    body: bytes
    content_type: str | None
    routing_key: str | None
    persistent: bool
    headers: dict[str, Any]
    raw: bytes

    def event_ids(self) -> list[str]:
        """The event ids the message carries (one JSON event or NDJSON)."""
        if self.content_type == NDJSON:
            return [json.loads(line)["event_id"] for line in self.body.splitlines() if line.strip()]
        return [json.loads(self.body)["event_id"]]


async def drain(
    url: str, queue_name: str = SEAL_QUEUE, *, keys: dict[str, TransportPrivateKey] | None = None
) -> list[Delivered]:
    """Take every message off a queue (acknowledged: the queue is empty afterwards), asserting that each
    was transport-sealed and opening it with `keys` (default: the tests' local transport key)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await declare_topology(channel, delivery_limit=DELIVERY_LIMIT)
        queue = await channel.get_queue(queue_name, ensure=False)
        taken = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            taken.append(
                Delivered(
                    open_raw(message.body, message.headers, message.content_type, keys),
                    message.content_type,
                    message.routing_key,
                    message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT,
                    dict(message.headers or {}),
                    message.body,
                )
            )
        return taken
    finally:
        await connection.close()


async def purge(url: str) -> None:
    """Empty the seal and dead queues (creating the topology if this vhost has none yet)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await declare_topology(channel, delivery_limit=DELIVERY_LIMIT)
        for name in (SEAL_QUEUE, DEAD_QUEUE):
            await (await channel.get_queue(name, ensure=False)).purge()
    finally:
        await connection.close()


def event_ids(messages: Iterable[Delivered]) -> list[str]:
    """Every event id in the messages, in order, duplicates kept."""
    return [event_id for message in messages for event_id in message.event_ids()]


def dead_url() -> str:
    """An AMQP URL where no broker listens."""
    return f"amqp://guest:secret-password@127.0.0.1:{free_port()}/"


PULSESEAL = str(Path(sys.executable).with_name("pulseseal"))
ROOT = Path(__file__).resolve().parents[2]


def cli_env(amqp_url: str, **settings: str) -> dict[str, str]:
    """The environment for a `pulseseal` subprocess on the test vhost (`settings` are PULSESEAL_* names)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSESEAL_")}
    env["PULSESEAL_HOME"] = str(ROOT / ".pulseseal")
    env["PULSESEAL_AMQP_URL"] = amqp_url
    env.update({f"PULSESEAL_{name.upper()}": value for name, value in settings.items()})
    return env


def run_cli(*args: str, env: dict[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `pulseseal ARGS...` to completion."""
    return run(args, env=env, timeout_s=timeout_s)


def one_line(stderr: str) -> str:
    """The single line a failed command printed (asserting there is exactly one, and no traceback)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]
