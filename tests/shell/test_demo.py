"""`pulseseal demo` end to end on this session's own vhost, database, key-store prefix and ports."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
from pymongo import MongoClient

from shell.processes import command
from tests.processes import ROOT

pytestmark = pytest.mark.integration


def test_the_demo_runs_every_step_and_verifies_replay_and_shred(
    pipeline_env: dict[str, str], mongo_url: str
) -> None:
    # What an earlier run left in the demo's database: a run starts by emptying it.
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_url)
    main, demo = (
        client[pipeline_env["PULSESEAL_MONGO_DB"]],
        client[pipeline_env["PULSESEAL_MONGO_DB"] + "_demo"],
    )
    demo["sealed_events"].insert_one({"_id": "left-by-an-earlier-run", "user_id": "demo-000000-0000"})
    try:
        result = subprocess.run(
            command(
                [
                    "demo",
                    "--users",
                    "6",
                    "--events-per-user",
                    "25",
                    "--seed",
                    "3",
                ]
            ),
            env={**os.environ, **pipeline_env, "COLUMNS": "80"},
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert demo["sealed_events"].count_documents({}) == 150
        assert main["sealed_events"].count_documents({"user_id": {"$regex": "^demo-"}}) == 0
    finally:
        client.drop_database(demo.name)
        client.close()
    out = result.stdout
    for heading in ("1/7 Local servers", "3/7 Wearable traffic", "4/7 Summary", "7/7 Crypto-shredding"):
        assert heading in out
    figures = dict(_row(line) for line in out.splitlines() if "  " in line.strip())
    assert figures["accepted by the gateway (202)"] == "150"
    assert figures["sealed and stored"] == "150"
    assert figures["refused"] == "0"
    assert "identical to what was sent ✓" in out
    assert "nothing can be opened any more ✓" in out
    assert "1 of the user's 1 wrapped keys found" in out  # the search works ...
    assert "none is left ✓" in out  # ... and after the shred finds nothing in the key store's files
    assert "Demo finished" in out
    assert "Stop them with pulseseal services down" in out  # one line, never split mid-command
    # The demo's own output stays within 80 columns.
    assert max(len(line) for line in out.splitlines()) <= 80


def _row(line: str) -> tuple[str, str]:
    name, _, value = line.strip().rpartition("  ")
    return name.strip(), value.strip()
