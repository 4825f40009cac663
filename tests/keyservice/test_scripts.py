"""The Lua scripts answer statuses that `Reply` names, and nothing else."""

from __future__ import annotations

import re

import pytest

from keyservice import scripts
from keyservice.scripts import Reply


@pytest.mark.parametrize("name", ["READ_CURRENT", "CREATE", "NEXT_VERSION", "READ_VERSIONS"])
def test_every_status_a_script_returns_is_a_reply(name: str) -> None:
    source = getattr(scripts, name)
    # `{2}`, `{0, floor}`, `out[i] = {1, ...}`: a reply table starts with its status.
    statuses = {int(n) for n in re.findall(r"[=n] \{(\d+)\b", source)}
    assert statuses
    assert statuses <= {int(member) for member in Reply}
