"""No event value ever leaves the producers: canaries planted in valid and invalid events must not appear
in logs (as our JSON formatter writes them), in answers to refused requests, in metrics, in
rejected-lines files or in the importer's output."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from producers.gateway.app import create_app
from producers.gateway.auth import TokenVerifier
from producers.gateway.service import EventIntake
from producers.importer.plan import plan_file
from producers.importer.progress import PlainProgress
from producers.importer.rejects import rejects_path
from producers.importer.run import Importer
from producers.publisher import Publisher
from pulseseal.logs import JsonFormatter, configure_logging
from tests.factories import valid_event
from tests.producers.helpers import DELIVERY_LIMIT, bearer, cli_env, dead_url, run_cli, token
from tests.transit import LocalSealer

pytestmark = pytest.mark.integration

CANARY = "CANARYzq81"
CANARY_USER = f"{CANARY}-user"


def canary_events() -> list[dict[str, object]]:
    """Valid events that carry the canary in every kind of free-text value."""
    return [
        valid_event(
            "migraine_attack",
            user_id=CANARY_USER,
            source={"device": f"{CANARY} band"},
            data={"notes": f"{CANARY} notes", "triggers": [CANARY]},
        ),
        valid_event("medication", user_id=CANARY_USER, data={"name": f"{CANARY} pill"}),
    ]


def invalid_canary_events() -> list[dict[str, object]]:
    """Invalid events whose invalid values are the canary."""
    return [
        valid_event("heart_rate", user_id=CANARY_USER, data={"bpm": CANARY}),
        valid_event("sleep", user_id=CANARY_USER, data={"stage": CANARY}),
        valid_event("migraine_attack", user_id=CANARY_USER, data={"notes": CANARY * 300}),
        valid_event("heart_rate", user_id=CANARY_USER, occurred_at=CANARY),
        valid_event("heart_rate", user_id=CANARY_USER, event_id=CANARY),
        valid_event("heart_rate", user_id=f"{CANARY} with spaces"),
        {"type": CANARY, "event_id": CANARY, "user_id": CANARY_USER},
        valid_event("heart_rate", user_id=CANARY_USER, data={"bpm": 70, f"{CANARY}!": CANARY}),
    ]


class Collect(logging.Handler):
    """Keeps every record it is handed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logs() -> Iterator[list[logging.LogRecord]]:
    """Every record our production logging configuration lets through, at any level of ours."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    noisy = {
        name: logging.getLogger(name).level for name in ("aiormq", "aio_pika", "uvicorn", "uvicorn.access")
    }
    configure_logging("test")
    collect = Collect()
    root.handlers[:] = [collect]
    root.setLevel(logging.DEBUG)
    try:
        yield collect.records
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name, level in noisy.items():
            logging.getLogger(name).setLevel(level)


def formatted(records: list[logging.LogRecord]) -> str:
    formatter = JsonFormatter("test")
    return "\n".join(formatter.format(record) for record in records)


async def test_the_gateway_never_echoes_or_logs_a_value(broker: str, logs: list[logging.LogRecord]) -> None:
    verifier = TokenVerifier(secret=b"x" * 40, jwks=None, audience="authenticated")
    publisher = Publisher(broker, sealer=LocalSealer(), delivery_limit=DELIVERY_LIMIT)
    await publisher.connect()
    down = Publisher(dead_url(), sealer=LocalSealer(), delivery_limit=DELIVERY_LIMIT)
    headers = bearer(token(CANARY_USER, secret=b"x" * 40))
    answers: list[str] = []
    try:
        for candidate in (publisher, down):
            app = create_app(EventIntake(verifier, candidate, body_timeout_s=5, confirm_timeout_s=2))
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gw"
            ) as client:
                accepted = await client.post("/v1/events", json=canary_events(), headers=headers)
                assert accepted.status_code == (202 if candidate is publisher else 503)
                answers.append(accepted.text)
                for event in invalid_canary_events():
                    refused = await client.post("/v1/events", json=[*canary_events(), event], headers=headers)
                    assert refused.status_code in (403, 422), refused.text
                    answers.append(refused.text)
                other_user = await client.post(
                    "/v1/events", json=canary_events(), headers=bearer(token("someone", secret=b"x" * 40))
                )
                assert other_user.status_code == 403
                answers.append(other_user.text)
                for body in (f"{CANARY} not json".encode(), b"[" + CANARY.encode() * 100_000 + b"]"):
                    refused = await client.post(
                        "/v1/events", content=body, headers=headers | {"Content-Type": "application/json"}
                    )
                    assert refused.status_code in (413, 422)
                    answers.append(refused.text)
                bad_token = await client.post(
                    "/v1/events", json=canary_events(), headers=bearer(f"{CANARY}.{CANARY}.{CANARY}")
                )
                assert bad_token.status_code == 401
                answers.append(bad_token.text)
                answers.append((await client.get("/metrics")).text)
    finally:
        await publisher.close()
        await down.close()
    text = formatted(logs)
    assert logs, "nothing was logged: the check would prove nothing"
    assert CANARY not in text
    assert CANARY not in "\n".join(answers)


async def test_the_importer_never_writes_a_value(
    broker: str, keyservice: str, tmp_path: Path, logs: list[logging.LogRecord]
) -> None:
    ndjson_path = tmp_path / "canary.ndjson"
    lines = [json.dumps(e) for e in canary_events() + invalid_canary_events()]
    lines.append(f'{{"{CANARY}": broken')
    lines.append(CANARY)
    ndjson_path.write_text("\n".join(lines) + "\n")
    csv_path = tmp_path / "canary.csv"
    csv_path.write_text(
        "event_id,user_id,type,occurred_at,source_kind,source_device,data.bpm,data.name,data.dose_mg\n"
        f"0b6f8d3e-1c2a-4b5e-9f00-0123456789ab,{CANARY_USER},heart_rate,2026-11-28T07:30:00Z,wearable,{CANARY},{CANARY},,\n"
        f"0b6f8d3e-1c2a-4b5e-9f00-0123456789ac,{CANARY_USER},medication,2026-11-28T07:30:00Z,,,,{CANARY},\n"
        f"{CANARY},{CANARY},{CANARY},{CANARY}\n"
    )
    out = io.StringIO()
    publisher = Publisher(broker, sealer=LocalSealer(), delivery_limit=DELIVERY_LIMIT)
    await publisher.connect()
    try:
        plans = [plan_file(p, None, resume=False) for p in (ndjson_path, csv_path)]
        totals = await Importer(publisher, PlainProgress(out, interval_s=0)).run(plans)
    finally:
        await publisher.close()
    assert (totals.imported, totals.rejected) == (3, len(invalid_canary_events()) + 2 + 2)
    cli = run_cli("import", str(ndjson_path), str(csv_path), env=cli_env(broker, keyservice_url=keyservice))
    assert cli.returncode == 1
    written = rejects_path(ndjson_path).read_text() + rejects_path(csv_path).read_text()
    assert len(written.splitlines()) == totals.rejected
    for name, text in {
        "rejected-lines files": written,
        "progress and notes": out.getvalue(),
        "logs": formatted(logs),
        "command output": cli.stdout + cli.stderr,
    }.items():
        assert CANARY not in text, name
