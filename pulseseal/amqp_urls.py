"""`PULSESEAL_AMQP_URL` as a list: one URL per RabbitMQ node of a cluster.

The setting is one URL or several separated by commas (`amqp://u:p@h:5672/,amqp://u:p@h:5673/`); a comma
starts a new URL only when a scheme follows it, so a password may still contain one
(`pulseseal/urllists.py`). `split_urls` is the one place that checks it (the settings validate with it,
`pulseseal/amqp_failover.py` connects with it).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pulseseal.urllists import redact_url as redact_urls
from pulseseal.urllists import split_entries

__all__ = ["AmqpUrlInvalid", "redact_urls", "split_urls"]

_SCHEMES = ("amqp", "amqps")


class AmqpUrlInvalid(ValueError):
    """A URL of `PULSESEAL_AMQP_URL` is not an AMQP URL (the message never repeats a password)."""


def split_urls(value: str) -> list[str]:
    """The URLs of `PULSESEAL_AMQP_URL`, in order, each checked.

    Raises:
        AmqpUrlInvalid: The value is empty, or one of its URLs has no `amqp`/`amqps` scheme, no host or a
            malformed port.
    """
    urls = split_entries(value)
    if not urls or not urls[0]:
        raise AmqpUrlInvalid("no RabbitMQ URL given")
    for position, url in enumerate(urls, start=1):
        where = f"RabbitMQ URL {position} of {len(urls)}"
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise AmqpUrlInvalid(f"{where} must start with amqp:// or amqps:// (separate URLs with commas)")
        try:
            host, _ = parts.hostname, parts.port
        except ValueError:
            raise AmqpUrlInvalid(f"{where} has a malformed port") from None
        if not host:
            raise AmqpUrlInvalid(f"{where} has no host")
    return urls
