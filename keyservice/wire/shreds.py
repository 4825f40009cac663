"""The shred-notice stream (`GET /v1/shreds/stream`, scope `keys:encrypt`): what travels on it.

A server-sent-events stream (`text/event-stream`). Events:
- `ready`, first, `id:` the position the stream starts after; data `{}`.
- `shred`, `id:` its position; data `{"user_id": ..., "destroyed_at": RFC 3339}`: drop every cached key of
  that user now.
- a comment line (`: alive`) every `HEARTBEAT_S` when nothing else happened, so that a client can tell a
  silent stream from a dead one.
A client resumes with the `Last-Event-ID` header set to the last `id:` it saw; a position older than the
notices the service keeps (`KEPT_NOTICES`) makes the service answer `reset` (then `ready`): the client must
drop every cached key, since it may have missed notices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

PATH = "/v1/shreds/stream"
SCOPE = "keys:encrypt"
HEARTBEAT_S = 0.25
# A client that heard nothing for this long treats the stream as down (several heartbeats missed).
SILENCE_S = 0.75
KEPT_NOTICES = 100_000


@dataclass(frozen=True, slots=True)
class ShredNotice:
    """One shred, as the stream announces it."""

    user_id: str
    destroyed_at: str


def sse_event(event: str, event_id: str, data: dict[str, str]) -> bytes:
    """One server-sent event, encoded."""
    body = json.dumps(data, separators=(",", ":"))
    return f"event: {event}\nid: {event_id}\ndata: {body}\n\n".encode()


HEARTBEAT = b": alive\n\n"
