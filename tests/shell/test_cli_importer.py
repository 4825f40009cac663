"""`pulseseal import` as users run it: the summary line, exit codes, one clear line per problem, resume."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from producers.importer.checkpoint import checkpoint_path
from producers.importer.rejects import rejects_path
from shell.processes import free_port
from tests.factories import valid_event
from tests.producers.helpers import (
    PULSESEAL,
    cli_env,
    dead_url,
    drain,
    event_ids,
    one_line,
    run_cli,
)
from tests.transit import keyservice_keys

pytestmark = pytest.mark.integration

SUMMARY = re.compile(r"^imported (\d+) events, rejected (\d+), in \d+\.\d s \(\d+ events/s\)$")
CSV_HEADER = "event_id,user_id,type,occurred_at,source_kind,source_device,data.bpm\n"


def lines(n: int) -> str:
    return "".join(json.dumps(valid_event(event_id=str(uuid.uuid4()))) + "\n" for _ in range(n))


def summary(stdout: str) -> tuple[int, int]:
    match = SUMMARY.match(stdout.strip().splitlines()[-1])
    assert match, stdout
    return int(match.group(1)), int(match.group(2))


def test_a_clean_file_exits_0_with_the_summary_as_last_line(
    broker: str, keyservice: str, tmp_path: Path
) -> None:
    path = tmp_path / "ok.ndjson"
    path.write_text(lines(25))
    result = run_cli("import", str(path), env=cli_env(broker, keyservice_url=keyservice))
    assert result.returncode == 0, result.stderr
    assert summary(result.stdout) == (25, 0)
    assert not rejects_path(path).exists()


async def test_a_mixed_file_exits_1_and_imports_every_valid_line(
    broker: str, keyservice: str, tmp_path: Path
) -> None:
    path = tmp_path / "mixed.ndjson"
    path.write_text(lines(10) + '{"not": "an event"}\n' + lines(10) + "{truncated")
    result = run_cli("import", str(path), env=cli_env(broker, keyservice_url=keyservice))
    assert result.returncode == 1
    assert summary(result.stdout) == (20, 2)
    assert len(event_ids(await drain(broker, keys=await keyservice_keys(keyservice)))) == 20
    assert [json.loads(line)["line"] for line in rejects_path(path).read_text().splitlines()] == [11, 22]
    assert f"listed in {rejects_path(path)}" in result.stderr


def test_an_empty_file_says_so_and_exits_0(broker: str, keyservice: str, tmp_path: Path) -> None:
    path = tmp_path / "empty.ndjson"
    path.touch()
    result = run_cli("import", str(path), env=cli_env(broker, keyservice_url=keyservice))
    assert result.returncode == 0
    assert summary(result.stdout) == (0, 0)
    assert "empty file, nothing to import" in result.stderr


def test_a_binary_file_is_one_line_and_exit_2(broker: str, keyservice: str, tmp_path: Path) -> None:
    path = tmp_path / "photo.ndjson"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(100))
    result = run_cli("import", str(path), env=cli_env(broker, keyservice_url=keyservice))
    assert result.returncode == 2
    assert "looks like a binary file" in one_line(result.stderr)
    assert result.stdout == ""


async def test_invalid_utf8_is_rejected_and_exits_1(broker: str, keyservice: str, tmp_path: Path) -> None:
    path = tmp_path / "latin1.ndjson"
    bad = (
        json.dumps(valid_event("medication", data={"name": "Caf\u00e9"}), ensure_ascii=False)
        .encode("utf-8")
        .replace(b"\xc3\xa9", b"\xe9")
    )
    path.write_bytes(lines(3).encode() + bad + b"\n")
    result = run_cli("import", str(path), env=cli_env(broker, keyservice_url=keyservice))
    assert result.returncode == 1
    assert summary(result.stdout) == (3, 1)
    assert json.loads(rejects_path(path).read_text()) == {
        "line": 4,
        "field": None,
        "reason": "is not valid UTF-8",
    }


def test_a_10_mb_single_line_is_rejected_not_loaded(broker: str, keyservice: str, tmp_path: Path) -> None:
    path = tmp_path / "huge.ndjson"
    path.write_text('{"event_id": "' + "x" * (10 * 1024 * 1024) + '"}\n')
    result = run_cli("import", str(path), env=cli_env(broker, keyservice_url=keyservice))
    assert result.returncode == 1
    assert summary(result.stdout) == (0, 1)
    assert "longer than 1 MiB" in rejects_path(path).read_text()


def test_a_csv_file_without_a_required_column_is_one_line_and_exit_2(
    broker: str, keyservice: str, tmp_path: Path
) -> None:
    path = tmp_path / "events.csv"
    path.write_text("event_id,type,occurred_at,data.bpm\n1,heart_rate,2026-11-28T07:30:00Z,70\n")
    result = run_cli("import", str(path), env=cli_env(broker, keyservice_url=keyservice))
    assert result.returncode == 2
    assert "lacks the column(s) user_id" in one_line(result.stderr)


async def test_csv_rows_with_extra_or_missing_cells_are_rejected_and_the_rest_imported(
    broker: str, keyservice: str, tmp_path: Path
) -> None:
    row = f"{uuid.uuid4()},user-1,heart_rate,2026-11-28T07:30:00Z,wearable,Band,70"
    path = tmp_path / "events.csv"
    path.write_text(CSV_HEADER + row + "\n" + row + ",9\n" + row.rsplit(",", 2)[0] + "\n")
    result = run_cli("import", str(path), env=cli_env(broker, keyservice_url=keyservice))
    assert result.returncode == 1
    assert summary(result.stdout) == (1, 2)
    assert len(event_ids(await drain(broker, keys=await keyservice_keys(keyservice)))) == 1


async def test_a_missing_file_among_several_is_one_line_exit_2_and_nothing_imported(
    broker: str, keyservice: str, tmp_path: Path
) -> None:
    good = tmp_path / "good.ndjson"
    good.write_text(lines(5))
    result = run_cli(
        "import", str(good), str(tmp_path / "typo.ndjson"), env=cli_env(broker, keyservice_url=keyservice)
    )
    assert result.returncode == 2
    assert "typo.ndjson: no such file — check the path (nothing was imported)" in one_line(result.stderr)
    assert await drain(broker, keys=await keyservice_keys(keyservice)) == []


def test_no_broker_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "ok.ndjson"
    path.write_text(lines(2))
    result = run_cli("import", str(path), env=cli_env(dead_url()))
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "cannot reach RabbitMQ" in line
    assert "secret-password" not in line


def test_an_unknown_format_is_a_usage_error(broker: str, keyservice: str, tmp_path: Path) -> None:
    path = tmp_path / "ok.ndjson"
    path.write_text(lines(1))
    result = run_cli("import", str(path), "--format", "xml", env=cli_env(broker, keyservice_url=keyservice))
    assert result.returncode == 2
    assert "--format must be ndjson or csv" in one_line(result.stderr)


def make_big_file(path: Path, total: int) -> tuple[set[str], list[int]]:
    template = json.dumps(valid_event(event_id="EVENT-ID"))
    bad_template = json.dumps(valid_event("heart_rate", data={"bpm": 5}))
    valid: set[str] = set()
    bad: list[int] = []
    with path.open("w") as out:
        for number in range(1, total + 1):
            if number % 997 == 0:
                out.write(bad_template + "\n")
                bad.append(number)
            else:
                event_id = str(uuid.UUID(int=number, version=4))
                valid.add(event_id)
                out.write(template.replace("EVENT-ID", event_id) + "\n")
    return valid, bad


def kill_past(path: Path, env: dict[str, str], line: int) -> int:
    """Start an import, `kill -9` it once its checkpoint is past `line`, and return the checkpoint's line."""
    process = subprocess.Popen(
        [PULSESEAL, "import", str(path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    reached = 0
    while reached < line:
        assert process.poll() is None, "the import finished before it could be killed"
        assert time.monotonic() < deadline, f"no checkpoint past line {line}"
        with contextlib.suppress(FileNotFoundError, ValueError):
            reached = json.loads(checkpoint_path(path).read_text())["line"]
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    return int(json.loads(checkpoint_path(path).read_text())["line"])


@pytest.mark.slow
async def test_kill_9_halfway_then_resume_publishes_every_valid_event(
    broker: str, keyservice: str, tmp_path: Path
) -> None:
    path = tmp_path / "big.ndjson"
    total = 200_000
    valid, bad = make_big_file(path, total)
    env = cli_env(broker, keyservice_url=keyservice)
    killed_at = await asyncio.to_thread(kill_past, path, env, total // 3)
    assert killed_at < total

    result = await asyncio.to_thread(run_cli, "import", str(path), "--resume", env=env, timeout_s=300)
    assert result.returncode == 1, result.stderr
    assert summary(result.stdout) == (len(valid), len(bad))
    assert f"resuming after line {killed_at}" in result.stderr
    published = event_ids(await drain(broker, keys=await keyservice_keys(keyservice)))
    assert set(published) == valid  # none missing (and nothing invalid); duplicates are allowed
    assert len(published) >= len(valid)
    assert [json.loads(entry)["line"] for entry in rejects_path(path).read_text().splitlines()] == bad
    assert not checkpoint_path(path).exists()


async def test_no_key_service_is_one_line_exit_2_and_nothing_published_in_the_clear(
    broker: str, tmp_path: Path
) -> None:
    path = tmp_path / "ok.ndjson"
    path.write_text(lines(3))
    result = run_cli(
        "import", str(path), env=cli_env(broker, keyservice_url=f"http://127.0.0.1:{free_port()}")
    )
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "cannot fetch the transport key" in line
    assert "PULSESEAL_KEYSERVICE_URL" in line
    assert await drain(broker) == []
