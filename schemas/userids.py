"""The user-id rule: 1 to 128 characters of `A-Za-z0-9._:@-` (contract §3), in one place.

Events, the key service's requests and paths, and the CLI all check user ids against this; the pattern
serves pydantic and JSON Schema, the compiled form plain code (always with `fullmatch`: with `re`, `$`
also matches before a trailing newline).
"""

from __future__ import annotations

import re

USER_ID_MAX_LENGTH = 128
_CHARACTERS = "A-Za-z0-9._:@-"
USER_ID_PATTERN = rf"^[{_CHARACTERS}]+$"
"""For pydantic `StringConstraints` and JSON Schema, with `min_length=1` and `max_length=USER_ID_MAX_LENGTH`."""
USER_ID_RE = re.compile(rf"[{_CHARACTERS}]{{1,{USER_ID_MAX_LENGTH}}}")
"""The whole rule, length included; use `fullmatch`."""
USER_ID_RULE = f"1 to {USER_ID_MAX_LENGTH} characters of {_CHARACTERS}"
"""The rule in words, for error messages (which never repeat the id that was sent)."""


def is_user_id(text: str) -> bool:
    """Whether `text` is a valid user id."""
    return USER_ID_RE.fullmatch(text) is not None
