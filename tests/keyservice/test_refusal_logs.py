"""A junk-token flood costs the key service's log what it costs the audit log: the first refusal of a kind
in each counting window gets a line, the ones counted into it do not (keyservice/app.py, edge.py); against
the real key-store Redis."""

from __future__ import annotations

import logging

import httpx
import pytest

from keyservice.service import KeyService

pytestmark = pytest.mark.integration


async def test_counted_refusals_get_no_log_line_of_their_own(
    http: httpx.AsyncClient, service: KeyService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="keyservice.app")
    junk = {"Authorization": "Bearer junk.junk.junk"}
    answers = [await http.post("/v1/keys/encrypt", content=b"{}", headers=junk) for _ in range(50)]
    assert {a.status_code for a in answers} == {401}
    lines = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1  # the first, written to the audit log on its own; 49 counted into one record
    assert answers[0].headers["X-Request-ID"] in lines[0].getMessage()
    await service.refusals.flush()
    counted = [r for r in await service.audit.query() if r.reason == "malformed_token" and r.counts]
    assert counted[-1].counts == {"refused": 49}  # nothing dropped from the audit trail
