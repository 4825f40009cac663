"""`pulseseal dead list|redrive` against the real RabbitMQ: counts without values, nothing lost."""

from __future__ import annotations

import json
from typing import Any

import aio_pika
import pytest

from producers.deadletters import classify, list_dead, redrive
from pulseseal.topology import (
    DEAD_EXCHANGE,
    ERROR_HEADER,
    JSON,
    NDJSON,
    REASON_HEADER,
    REDRIVE_ROUTING_KEY,
    SEAL_QUEUE,
    declare_topology,
)
from pulseseal.transit import TRANSPORT_HEADER, TRANSPORT_KEY_HEADER
from tests.factories import valid_event
from tests.producers.helpers import DELIVERY_LIMIT, cli_env, dead_url, drain, ndjson, one_line, run_cli
from tests.transit import LocalSealer, open_raw, sealed_body

pytestmark = pytest.mark.integration

CANARY = "CANARY-dead-letter-value-7f3a"


async def plant(
    url: str, body: bytes, headers: dict[str, Any], content_type: str = JSON, *, sealed: bool = True
) -> bytes:
    """Publish straight to the dead exchange, transport-sealed as the encryptor does (or, with
    `sealed=False`, plaintext as before transport sealing); returns the body the broker holds."""
    if sealed:
        body, transport = sealed_body(body, content_type)
        headers = {**headers, **transport}
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await declare_topology(channel, delivery_limit=DELIVERY_LIMIT)
        exchange = await channel.get_exchange(DEAD_EXCHANGE)
        await exchange.publish(
            aio_pika.Message(body, headers=headers, content_type=content_type), routing_key=""
        )
    finally:
        await connection.close()
    return body


async def broker_dead_letter(url: str, body: bytes) -> None:
    """A message the broker dead-letters itself: rejected by a consumer without requeue (x-death)."""
    sealed, transport = sealed_body(body, NDJSON)
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        exchange = await declare_topology(channel, delivery_limit=DELIVERY_LIMIT)
        await exchange.publish(
            aio_pika.Message(sealed, content_type=NDJSON, headers=transport), routing_key="events.batch"
        )
        queue = await channel.get_queue(SEAL_QUEUE, ensure=False)
        message = await queue.get(no_ack=False, timeout=5)
        assert message is not None
        await message.reject(requeue=False)
    finally:
        await connection.close()


async def plant_mix(url: str) -> None:
    event = json.dumps(valid_event(source={"device": CANARY})).encode()
    for line in (3, 8, 12):
        await plant(
            url,
            event,
            {
                ERROR_HEADER: "invalid_event",
                REASON_HEADER: f"line {line}: data.bpm: must be ≤ 300",
                "x-pulseseal-line": line,
            },
        )
    await plant(url, event, {ERROR_HEADER: "user_shredded", REASON_HEADER: "the user's keys were destroyed"})
    await broker_dead_letter(url, ndjson([valid_event(source={"device": CANARY})]))


def test_codes_come_from_pulseseal_headers_or_rabbitmqs_x_death() -> None:
    assert classify({ERROR_HEADER: b"invalid_event", REASON_HEADER: "line 4: type: is required"}) == (
        "invalid_event",
        "type: is required",
    )
    assert classify({"x-death": [{"reason": "delivery_limit", "queue": "pulseseal.seal"}]}) == (
        "delivery_limit",
        "dead-lettered by RabbitMQ from pulseseal.seal",
    )
    assert (
        classify({"x-first-death-reason": "rejected", "x-death": [{"reason": "rejected", "queue": "q"}]})[0]
        == "rejected"
    )
    assert classify(None) == ("unknown", "no PulseSeal or RabbitMQ dead-letter header")


async def test_list_counts_by_code_and_reason_and_leaves_every_letter_in_place(broker: str) -> None:
    await plant_mix(broker)
    report = await list_dead(broker, delivery_limit=DELIVERY_LIMIT)
    assert (report.in_queue, report.inspected) == (5, 5)
    assert {(g.code, g.reason, g.count) for g in report.groups} == {
        ("invalid_event", "data.bpm: must be ≤ 300", 3),
        ("user_shredded", "the user's keys were destroyed", 1),
        ("rejected", "dead-lettered by RabbitMQ from pulseseal.seal", 1),
    }
    again = await list_dead(broker, delivery_limit=DELIVERY_LIMIT)
    assert again.in_queue == 5  # listing consumed nothing
    assert (await list_dead(broker, delivery_limit=DELIVERY_LIMIT, limit=2)).inspected == 2


async def test_dead_letters_rest_sealed_on_the_broker(broker: str) -> None:
    await plant_mix(broker)
    connection = await aio_pika.connect(broker)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue("pulseseal.dead", ensure=False)
        raw = []
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            raw.append(message)
        assert len(raw) == 5
        for message in raw:
            assert CANARY.encode() not in message.body
            assert CANARY.encode() in open_raw(message.body, message.headers, message.content_type)
        await channel.close()  # hands them all back
    finally:
        await connection.close()


async def test_the_cli_list_shows_counts_and_never_a_value(broker: str) -> None:
    await plant_mix(broker)
    table = run_cli("dead", "list", env=cli_env(broker))
    assert table.returncode == 0, table.stderr
    assert "      3  invalid_event  data.bpm: must be ≤ 300" in table.stdout
    assert table.stdout.strip().endswith("5 dead letter(s) in pulseseal.dead")
    as_json = run_cli("dead", "list", "--json", env=cli_env(broker))
    assert json.loads(as_json.stdout)["in_queue"] == 5
    assert CANARY not in table.stdout + table.stderr + as_json.stdout + as_json.stderr


async def test_redrive_moves_everything_back_sealed_with_body_and_content_type(broker: str) -> None:
    await plant_mix(broker)
    sealer = LocalSealer()
    report = await redrive(broker, sealer=sealer, delivery_limit=DELIVERY_LIMIT)
    assert (report.moved, report.left) == (5, 0)
    assert sealer.sealed == 0  # sealed dead letters are passed on as they are, never opened
    moved = await drain(broker)  # asserts that each is transport-sealed, then opens it
    assert len(moved) == 5
    assert {m.routing_key for m in moved} == {REDRIVE_ROUTING_KEY}
    assert sorted(m.content_type or "" for m in moved) == [JSON] * 4 + [NDJSON]
    assert all(CANARY.encode() in m.body for m in moved)  # the original body, untouched
    assert all(CANARY.encode() not in m.raw for m in moved)  # ... and sealed on the broker
    assert all(ERROR_HEADER not in m.headers and "x-death" not in m.headers for m in moved)
    assert all(m.headers["x-pulseseal-redriven"] == 1 for m in moved)
    assert (await list_dead(broker, delivery_limit=DELIVERY_LIMIT)).in_queue == 0


async def test_redrive_seals_a_plaintext_dead_letter_from_before_transport_sealing(broker: str) -> None:
    event = json.dumps(valid_event(source={"device": CANARY})).encode()
    await plant(broker, event, {ERROR_HEADER: "invalid_event", REASON_HEADER: "x"}, sealed=False)
    sealer = LocalSealer()
    assert (await redrive(broker, sealer=sealer, delivery_limit=DELIVERY_LIMIT)).moved == 1
    [moved] = await drain(broker)
    assert sealer.sealed == 1
    assert moved.body == event
    assert CANARY.encode() not in moved.raw


async def test_redrive_leaves_a_letter_whose_envelope_is_malformed(broker: str) -> None:
    headers = {ERROR_HEADER: "x", TRANSPORT_HEADER: "hpke-v0", TRANSPORT_KEY_HEADER: "k"}
    await plant(broker, b"opaque", headers, sealed=False)
    report = await redrive(broker, sealer=LocalSealer(), delivery_limit=DELIVERY_LIMIT)
    assert (report.moved, report.left) == (0, 1)


async def test_redrive_by_code_leaves_the_others(broker: str) -> None:
    await plant_mix(broker)
    result = run_cli("dead", "redrive", "--code", "invalid_event", env=cli_env(broker))
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip()
        == "moved 3 dead letter(s) to pulseseal.events (events.redrive); 2 left in pulseseal.dead"
    )
    assert len(await drain(broker)) == 3
    remaining = await list_dead(broker, delivery_limit=DELIVERY_LIMIT)
    assert {g.code for g in remaining.groups} == {"user_shredded", "rejected"}


async def test_redrive_with_a_limit_moves_no_more(broker: str) -> None:
    await plant_mix(broker)
    assert (await redrive(broker, sealer=LocalSealer(), delivery_limit=DELIVERY_LIMIT, limit=2)).moved == 2
    assert (await list_dead(broker, delivery_limit=DELIVERY_LIMIT)).in_queue == 3


def test_no_broker_is_one_line_and_exit_2() -> None:
    for command in ("list", "redrive"):
        result = run_cli("dead", command, env=cli_env(dead_url()))
        assert result.returncode == 2
        assert "cannot reach RabbitMQ" in one_line(result.stderr)
