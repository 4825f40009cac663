"""Opening delivered messages before they are decoded (contract §4): the encryptor's side of transport
sealing.

A message on `pulseseal.seal` must carry the transport headers and open under one of the transport keys
the key service hands the encryptor. One without the headers is dead-lettered with `unsealed_transport`,
one event a dead letter (each with its event id when it can be read), so that a misbehaving producer's
events can be found and redriven; one that does not open (altered, or sealed under a retired key) is
dead-lettered whole with `transport_unopenable`. Neither is ever decoded or stored. Every dead letter is
itself transport-sealed when it is published (consumers/deadletters.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from consumers.messages import Rejected, readable_event_id
from keyservice.wire.errors import KeyServiceError
from pulseseal.topology import NDJSON
from pulseseal.transit import (
    TRANSPORT_HEADER,
    SealedMessage,
    TransportUnopenable,
    TransportUnsealed,
    sealed_from,
)
from schemas import MAX_BATCH_BYTES, MAX_BATCH_EVENTS, iter_ndjson_lines

UNSEALED_TRANSPORT = "unsealed_transport"
TRANSPORT_UNOPENABLE = "transport_unopenable"
_UNSEALED_REASON = f"message is not transport-sealed (no {TRANSPORT_HEADER} header)"
_UNOPENABLE_REASON = "message did not open under any live transport key (altered, or its key was retired)"


class KeyRing(Protocol):
    """Opens sealed messages with the private transport keys (`TransportKeyRing`)."""

    async def open(self, sealed: SealedMessage) -> bytes:
        """The plaintext (raises `TransportUnopenable`, or a `KeyServiceError` when keys are unavailable)."""
        ...


class MessageSealer(Protocol):
    """Seals dead letters under the current transport key (`TransportSealer`)."""

    async def seal(self, plaintext: bytes, content_type: str) -> SealedMessage:
        """The sealed message (raises a `KeyServiceError` when no transport key can be had)."""
        ...


@dataclass(slots=True)
class Opened:
    """A delivered message after opening: its plaintext body, or what to dead-letter instead."""

    body: bytes | None
    rejected: list[Rejected] = field(default_factory=list)


class TransportGate:
    """The encryptor's transport keys: private ones to open deliveries, the public one to seal its dead
    letters.

    Args:
        ring: Opens sealed messages.
        sealer: Seals dead letters.
        unavailable_pause_s: How long to wait before reporting that the keys cannot be fetched, so that
            messages handed back to the broker during a key-service outage do not spin.
    """

    def __init__(self, ring: KeyRing, sealer: MessageSealer, *, unavailable_pause_s: float = 1.0) -> None:
        self.ring = ring
        self.sealer = sealer
        self._pause_s = unavailable_pause_s

    async def open(self, body: bytes, headers: Mapping[str, Any] | None, content_type: str | None) -> Opened:
        """Open one delivered message.

        Raises:
            KeyServiceError: the transport keys could not be fetched (not the message's fault: hand it
                back to the broker).
        """
        try:
            sealed = sealed_from(body, headers, content_type)
            return Opened(await self.ring.open(sealed))
        except TransportUnsealed:
            return Opened(None, unsealed_parts(body, content_type))
        except TransportUnopenable:
            return Opened(None, [Rejected(body, TRANSPORT_UNOPENABLE, _UNOPENABLE_REASON)])
        except KeyServiceError:
            await asyncio.sleep(self._pause_s)
            raise


def unsealed_parts(body: bytes, content_type: str | None) -> list[Rejected]:
    """An unsealed message as dead letters: one per NDJSON line (with its event id when readable), or the
    message whole when it is one event or cannot be split."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type == NDJSON and len(body) <= MAX_BATCH_BYTES:
        lines = list(iter_ndjson_lines(body))
        if 0 < len(lines) <= MAX_BATCH_EVENTS:
            return [
                Rejected(line, UNSEALED_TRANSPORT, _UNSEALED_REASON, line=n, event_id=readable_event_id(line))
                for n, line in lines
            ]
    event_id = readable_event_id(body) if len(body) <= MAX_BATCH_BYTES else None
    return [Rejected(body, UNSEALED_TRANSPORT, _UNSEALED_REASON, event_id=event_id)]
