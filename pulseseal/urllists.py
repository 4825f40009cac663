"""Settings that name several servers: a comma-separated list of URLs, each checked on its own.

`PULSESEAL_KEYSERVICE_URL=http://127.0.0.1:8700,http://127.0.0.1:8701` names two key-service replicas;
one URL (the default) is a list of one. Each entry must have an allowed scheme and a host, a valid port
when it has one, and no entry may repeat; the error names the setting, the entry's position and the entry
(with any password hidden), so `pulseseal` can say in one line which one to fix. A comma starts a new
entry only when a URL scheme follows it, so a password may contain one.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from urllib.parse import urlsplit

# A comma followed by a URL scheme (the next entry), another comma or the end (an empty entry, refused).
_SEPARATOR = re.compile(r"\s*,\s*(?=[A-Za-z][A-Za-z0-9+.-]*://|,|$)")


class InvalidUrlList(ValueError):
    """A URL list setting has an empty, malformed or repeated entry (the message names it)."""


def split_urls(text: str, *, setting: str, schemes: Collection[str]) -> tuple[str, ...]:
    """The URLs of a comma-separated list, whitespace around each stripped, in their given order.

    Args:
        text: The setting's value.
        setting: The variable's name, for the message (`PULSESEAL_KEYSERVICE_URL`).
        schemes: The schemes an entry may have (`{"http", "https"}`).

    Raises:
        InvalidUrlList: the list is empty, or an entry is empty, has another scheme, no host or a bad
            port, or repeats an earlier one.
    """
    entries = split_entries(text, commas_in_passwords=False)
    if entries == [""]:
        raise InvalidUrlList(f"{setting} is empty: give at least one URL")
    urls: list[str] = []
    for position, entry in enumerate(entries, start=1):
        where = f"{setting} entry {position} of {len(entries)}"
        if not entry:
            raise InvalidUrlList(f"{where} is empty (a stray comma?)")
        shown = redact_url(entry)
        parts = urlsplit(entry)
        if parts.scheme not in schemes:
            wanted = " or ".join(f"{s}://" for s in sorted(schemes))
            raise InvalidUrlList(f"{where}, {shown!r}, must start with {wanted}")
        try:
            port = parts.port  # raises for a port that is not a number in 0-65535
        except ValueError:
            raise InvalidUrlList(f"{where}, {shown!r}, has an invalid port") from None
        if not parts.hostname or port == 0:
            raise InvalidUrlList(f"{where}, {shown!r}, needs a host (and a port other than 0)")
        if entry.rstrip("/") in (u.rstrip("/") for u in urls):
            raise InvalidUrlList(f"{where}, {shown!r}, repeats an earlier entry")
        urls.append(entry)
    return tuple(urls)


def split_entries(text: str, *, commas_in_passwords: bool = True) -> list[str]:
    """The entries of a URL list, unchecked and stripped.

    Args:
        text: The list.
        commas_in_passwords: Split only at commas that a scheme (or another comma, or the end) follows,
            so a password may contain one (RabbitMQ URLs); else at every comma, which names a typo'd
            entry (`http//h`) on its own (key-service URLs, which carry no password).
    """
    if commas_in_passwords:
        return [entry.strip() for entry in _SEPARATOR.split(text.strip())]
    return [entry.strip() for entry in text.split(",")]


def redact_url(url: str) -> str:
    """A URL — or a list of them — with every password replaced, safe to log or print.

    A MongoDB URL's comma-separated hosts stay one URL (no scheme follows those commas).
    """
    return ",".join(_redact_one(entry) for entry in split_entries(url))


def _redact_one(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if not sep or "@" not in authority:
        return url
    # The LAST @ ends the userinfo: a password may itself contain '@' (the first would leak its tail).
    userinfo, _, host = authority.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"
