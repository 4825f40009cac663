"""The soak, about a minute of it, inside `make test`: traffic under every kind of fault, zero loss.

`make soak` runs the same engine for ten minutes. The soak starts servers of its own on spare ports, so
its faults never touch the servers the rest of the suite uses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shell.soak.faults import KINDS
from shell.soak.report import MUST_BE_CLEAN
from shell.soak.run import SoakOptions, run_soak

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_a_one_minute_soak_under_every_fault_loses_nothing_and_leaks_nothing(tmp_path: Path) -> None:
    lines: list[str] = []
    options = SoakOptions(duration_s=60, seed=20261129, rate=100, home=tmp_path / "soak")
    report = await run_soak(options, tmp_path, say=lines.append)
    summary = "\n".join(lines + report.lines())
    assert report.passed, summary
    assert {r.fault.kind for r in report.faults} == set(KINDS), summary
    assert all(r.caught_up_s is not None for r in report.faults), summary
    assert report.accepted > 3000
    assert report.accepted_importer > 0
    assert report.accepted_gateway > 0
    assert report.stored_accepted == report.accepted == report.matched
    assert report.rejected_gateway > 0
    assert report.rejected_importer > 0
    for place in MUST_BE_CLEAN:
        assert report.canaries[place].occurrences == 0, (place, summary)
    assert report.canaries["mongodb_data"].files > 0
    assert report.canaries["keystore_redis"].files > 0
    assert report.canaries["rabbitmq_data"].files > 0
    assert report.dead_letters > 0  # the rogue message's, sealed: its canaries are in no place above
    assert report.restore["other_documents_failed"] == 0
    assert report.restore["shredded_user_documents_unopenable"] == report.restore["shredded_user_documents"]
