"""`PULSESEAL_AMQP_URL` as a list: one URL per RabbitMQ node of a cluster.

The setting is one URL or several separated by commas (`amqp://u:p@h:5672/,amqp://u:p@h:5673/`); a comma
starts a new URL only when a scheme follows it, so a password may still contain one. `split_urls` is the
one place that parses it (the settings validate with it, `pulseseal/amqp_failover.py` connects with it).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# A comma followed by a URL scheme: the next node's URL.
_SEPARATOR = re.compile(r"\s*,\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")
_SCHEMES = ("amqp", "amqps")


class AmqpUrlInvalid(ValueError):
    """A URL of `PULSESEAL_AMQP_URL` is not an AMQP URL (the message never repeats a password)."""


def split_urls(value: str) -> list[str]:
    """The URLs of `PULSESEAL_AMQP_URL`, in order, each checked.

    Raises:
        AmqpUrlInvalid: The value is empty, or one of its URLs has no `amqp`/`amqps` scheme, no host or a
            malformed port.
    """
    urls = [part.strip() for part in _SEPARATOR.split(value.strip())]
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


def redact_urls(value: str) -> str:
    """The setting with every URL's password replaced, safe to log."""
    return ",".join(_redact(part) for part in _SEPARATOR.split(value.strip()))


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if not sep or "@" not in authority:
        return url
    # The LAST @ ends the userinfo: a password may itself contain '@' (the first would leak its tail).
    userinfo, _, host = authority.rpartition("@")
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}{slash}{path}"
