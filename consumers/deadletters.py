"""Sending PulseSeal's own dead letters: the original bytes, a code and a value-free reason (§4).

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
from consumers.messages import Rejected
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
    message_id: str | None,
    content_type: str | None,
) -> None:
    """Publish each rejected part to `pulseseal.dead` and wait for the broker's confirms.

    Raises:
        Exception: whatever the broker client raised; the caller must then not acknowledge the message.
    """
    await asyncio.gather(*(_publish_one(broker, item, message_id, content_type) for item in rejected))


async def _publish_one(
    broker: RabbitBroker, item: Rejected, message_id: str | None, content_type: str | None
) -> None:
    headers: dict[str, Any] = {ERROR_HEADER: item.code, REASON_HEADER: item.reason}
    if item.line is not None:
        headers[LINE_HEADER] = item.line
    if item.event_id is not None:
        headers[EVENT_ID_HEADER] = item.event_id
    if message_id:
        headers[MESSAGE_ID_HEADER] = message_id
    await broker.publish(
        item.body,
        exchange=DEAD_EXCHANGE,
        routing_key="",
        headers=headers,
        content_type=JSON if item.line is not None or item.event_id else (content_type or JSON),
        persist=True,
        mandatory=True,
        timeout=CONFIRM_TIMEOUT_S,
    )
    metrics.DEAD_LETTERS.labels(code=item.code).inc()
    log.info("dead-lettered", extra={"code": item.code, "line": item.line, "event_id": item.event_id})
