"""`keys audit --since`, `replay --since` and the key service's `GET /v1/audit?since=` read times with one
parser (`schemas.rfc3339`): what one refuses, all refuse, before any server is asked."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import pytest

from keyservice.wire.errors import RequestInvalid
from keyservice.wire.models import parse_rfc3339 as parse_query_time
from shell.cli import main

# Each of these `datetime.fromisoformat` accepts, and the key service's parser used to.
NOT_RFC3339 = [
    "2026-11-29T07:30+00:00",  # no seconds
    "20261129T073000Z",  # basic format
    "2026-11-29T07:30:00+0100",  # offset without colon
    "2026-W48-7T07:30:00Z",  # week date
    "2026-11-29T07:30:00",  # no offset
    "2026-11-29",
    "2026-11-29T07:30:00Z\n",
]


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["pulseseal", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize("text", NOT_RFC3339)
def test_every_since_refuses_the_same_times(
    text: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    audit_code, audit_err = _cli(monkeypatch, capsys, "keys", "audit", "--since", text)
    replay_code, replay_err = _cli(
        monkeypatch, capsys, "replay", "--user-id", "alice", "--purpose", "test", "--since", text
    )
    assert (audit_code, replay_code) == (2, 2)
    expected = "pulseseal: --since must be an RFC 3339 time with an offset, e.g. 2026-11-29T07:30:00Z\n"
    assert audit_err == replay_err == expected
    with pytest.raises(RequestInvalid, match="RFC 3339"):
        parse_query_time(text, "since")


@pytest.mark.parametrize("text", ["2026-11-29T07:30:00Z", "2026-11-29t08:30:00.5+01:00"])
def test_the_query_parser_reads_what_the_cli_reads(text: str) -> None:
    assert (
        parse_query_time(text, "since").astimezone(UTC)
        == {
            "2026-11-29T07:30:00Z": datetime(2026, 11, 29, 7, 30, tzinfo=UTC),
            "2026-11-29t08:30:00.5+01:00": datetime(2026, 11, 29, 7, 30, 0, 500_000, tzinfo=UTC),
        }[text]
    )
