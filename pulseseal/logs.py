"""Structured logs: one JSON object a line on stderr.

Log calls pass ids and counts only. The formatter does not try to scrub values (it could not know them);
the rule is enforced at the call sites and by tests that search captured output for canaries and keys.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

# `color_message` is uvicorn's ANSI-coloured copy of the message.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """Format a record as JSON with its `extra=` fields; exceptions by type only, no traceback text."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self._component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "component": self._component,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            # Exception messages of third-party code may quote data; the type is enough to act on.
            entry["exc_type"] = record.exc_info[0].__name__
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(component: str, level: int = logging.INFO) -> None:
    """Send every log record to stderr as JSON lines tagged with `component`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(component))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that log message bodies or URLs with credentials at INFO are kept at WARNING.
    for noisy in ("aiormq", "aio_pika", "pymongo", "httpx", "httpcore", "faststream", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
