"""Sending PulseSeal's own dead letters: the original bytes, transport-sealed, with a code, a value-free
reason and the event id when it can be read (docs/contract.md §4).

A dead letter replaces the original message, which is acknowledged only after it: so the publish must
prove that a queue took it. It goes out `mandatory` on a channel with publisher confirms whose returns
raise (the encryptor's broker sets that up: `DEAD_LETTER_CHANNEL`), and the confirm is awaited with a
timeout. An unbound `pulseseal.dead`, a nack or a silent broker all raise, and the original is handed
back instead of being acknowledged with its events nowhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from faststream.rabbit import Channel, RabbitBroker

from consumers import metrics
from consumers.messages import Rejected, readable_event_id
from consumers.transit import TRANSPORT_UNOPENABLE, MessageSealer
from pulseseal.topology import DEAD_EXCHANGE, ERROR_HEADER, JSON, REASON_HEADER

log = logging.getLogger("pulseseal.encryptor")
#: Seconds to wait for the broker's confirm of one dead letter.
CONFIRM_TIMEOUT_S = 10.0
#: The channel dead letters are published on: confirms on, an unroutable (returned) message raises.
DEAD_LETTER_CHANNEL = Channel(publisher_confirms=True, on_return_raises=True)

LINE_HEADER = "x-pulseseal-line"
EVENT_ID_HEADER = "x-pulseseal-event-id"
MESSAGE_ID_HEADER = "x-pulseseal-message-id"


async def publish_dead_letters(
    broker: RabbitBroker,
    rejected: Sequence[Rejected],
    *,
    sealer: MessageSealer,
    message_id: str | None,
    content_type: str | None,
) -> None:
    """Seal each rejected part and publish it to `pulseseal.dead`; wait for the broker's confirms.

    Raises:
        Exception: whatever the sealer or the broker client raised; the caller must then not acknowledge
            the message.
    """
    await asyncio.gather(*(_publish_one(broker, sealer, item, message_id, content_type) for item in rejected))


async def _publish_one(
    broker: RabbitBroker,
    sealer: MessageSealer,
    item: Rejected,
    message_id: str | None,
    content_type: str | None,
) -> None:
    headers: dict[str, Any] = {ERROR_HEADER: item.code, REASON_HEADER: item.reason}
    if item.line is not None:
        headers[LINE_HEADER] = item.line
    event_id = item.event_id if item.event_id is not None else _event_id_of(item)
    if event_id is not None:
        headers[EVENT_ID_HEADER] = event_id
    if message_id:
        headers[MESSAGE_ID_HEADER] = message_id
    single = item.line is not None or event_id is not None
    # The content type is bound into the transport envelope, which takes ASCII only.
    whole = content_type if content_type and content_type.isascii() else JSON
    sealed = await sealer.seal(item.body, JSON if single else whole)
    await broker.publish(
        sealed.body,
        exchange=DEAD_EXCHANGE,
        routing_key="",
        headers={**headers, **sealed.headers},
        content_type=sealed.content_type,
        persist=True,
        mandatory=True,
        timeout=CONFIRM_TIMEOUT_S,
    )
    metrics.DEAD_LETTERS.labels(code=item.code).inc()
    log.info("dead-lettered", extra={"code": item.code, "line": item.line, "event_id": event_id})


def _event_id_of(item: Rejected) -> str | None:
    # A whole undecodable message (sealed bytes that did not open, an oversized body) has no readable id.
    if item.code == TRANSPORT_UNOPENABLE:
        return None
    return readable_event_id(item.body)
