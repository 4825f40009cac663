"""Time claims of tokens as numbers: one rule for the key service and the gateway.

JSON as Python reads it (and PyJWT with it) accepts `NaN`, `Infinity` and `-Infinity`. Every comparison
with NaN is false, so `exp - iat > 60` lets an `iat: NaN` token live for as long as its `exp` says, and an
`exp: NaN` token never expires; `Infinity` overflows `int()` later. A time claim is therefore a number
only when it is finite.
"""

from __future__ import annotations

import math


def finite_time(value: object) -> float | None:
    """`value` as seconds since the epoch, or None when it is not a finite JSON number (bools excluded)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value) if isinstance(value, float) or abs(value) < 2**63 else math.inf
    return number if math.isfinite(number) else None
