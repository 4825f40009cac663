"""One audit record, as the key service writes it to its log and `GET /v1/audit` answers it."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Outcome(StrEnum):
    """What became of an audited request."""

    GRANTED = "granted"
    REFUSED = "refused"
    REPORTED = "reported"  # a replay's own report of how it went


class AuditRecord(BaseModel):
    """One grant or refusal. `reason` says why a refusal happened.

    A replay's own record (action `replay`, outcome `reported`) also carries `counts`: how many records the
    replay opened, failed to open and could not read (keys destroyed). A transport-key record (actions
    `transport_*`) names the transport keys in `key_ids` instead of users. A refusal names its `source`
    (the TCP peer address); repeated unauthenticated refusals of one kind are one record with
    `counts: {"refused": n}`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    time: str
    caller: str | None
    action: str
    user_ids: list[str]
    versions: list[int]
    outcome: Outcome
    request_id: str
    purpose: str | None = None
    reason: str | None = None
    # `purpose` and `reason` are always present (null when unset); `counts`, `key_ids` and `source` only
    # where there are counts (a replay's report, counted refusals), transport keys (transport-key actions)
    # or a refused request's peer.
    counts: dict[str, int] | None = Field(default=None, exclude_if=lambda value: value is None)
    key_ids: list[str] | None = Field(default=None, exclude_if=lambda value: value is None)
    source: str | None = Field(default=None, exclude_if=lambda value: value is None)

    def to_json(self) -> dict[str, Any]:
        """The record as `GET /v1/audit` returns it."""
        return self.model_dump(mode="json")


class AuditAnswer(BaseModel):
    """`GET /v1/audit`: records, oldest first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    records: list[AuditRecord]
