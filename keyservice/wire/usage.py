"""`POST /v1/keys/usage` (docs/replay.md, usage-budgeted rotation): seals per key version, as encryptors
report them, and the users whose keys the key service rotated because a version reached its budget."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# `_Body` is the request base that `parse_body` accepts (strict, no extra fields, frozen).
from keyservice.wire.models import MAX_COUNT, MAX_KEYS, KeyVersion, UserId, _Body

USAGE_PATH = "/v1/keys/usage"
DEFAULT_SEAL_BUDGET = 2**24  # far below AES-GCM's 2^32 random-nonce limit per key


class KeyUsage(_Body):
    """How many documents one encryptor sealed under one key version since its last report."""

    user_id: UserId
    version: KeyVersion
    seals: int = Field(ge=1, le=MAX_COUNT)


class UsageReport(_Body):
    """The request body: aggregated counts, one entry per key version."""

    usage: list[KeyUsage] = Field(min_length=1, max_length=MAX_KEYS)


class RotatedKey(BaseModel):
    """A user whose key was rotated by this report: `version` is the new current one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: UserId
    version: KeyVersion


class UsageAnswer(BaseModel):
    """The answer: the rotations this report caused (callers drop those users' cached current keys)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rotated: list[RotatedKey]
