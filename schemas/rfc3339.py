"""RFC 3339 timestamps: the only time format events accept.

Python's `datetime.fromisoformat` accepts far more than RFC 3339 (no offset, week dates, `2026-W48`),
so the shape is checked first and only then parsed.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# ASCII digits only (`\d` would also take other scripts' digits), and matched with `fullmatch`: with `re`,
# `$` also matches before a trailing newline.
_RFC3339 = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}:[0-9]{2})",
)


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 date-time with a mandatory offset.

    Fractions beyond microseconds are truncated (Python's resolution).

    Raises:
        ValueError: `text` is not an RFC 3339 date-time with an offset, or names an impossible time.
            The message never repeats the text.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError("must be an RFC 3339 time with an offset, e.g. 2026-11-29T07:30:00Z")
    date, clock, fraction, offset = match.groups()
    micro = f".{fraction[:6].ljust(6, '0')}" if fraction else ""
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        return datetime.fromisoformat(f"{date}T{clock}{micro}{offset}")
    except ValueError:
        raise ValueError("must be a real calendar time (RFC 3339)") from None


def format_rfc3339(moment: datetime) -> str:
    """`moment` as RFC 3339 in UTC with milliseconds and `Z` (the form every PulseSeal answer uses).

    Raises:
        ValueError: `moment` has no offset (a naive time names no instant).
    """
    if moment.tzinfo is None:
        raise ValueError("a naive datetime names no instant; give it an offset")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
