"""`POST /v1/events` in process against the real RabbitMQ: 202 only after confirms, all or nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest

from keyservice.client.transport_public import TransportSealer
from producers.gateway.app import create_app
from producers.gateway.auth import TokenVerifier
from producers.gateway.service import EventIntake
from producers.publisher import BrokerUnavailable, Publisher
from pulseseal.topology import BATCH_ROUTING_KEY, JSON, NDJSON
from shell.processes import free_port
from tests.factories import valid_event
from tests.producers.helpers import (
    DELIVERY_LIMIT,
    USER,
    bearer,
    dead_url,
    drain,
    event_ids,
    ndjson,
    token,
)
from tests.transit import LocalSealer

pytestmark = pytest.mark.integration


def many(n: int, user: str = USER) -> list[dict[str, object]]:
    return [valid_event(event_id=f"00000000-0000-4000-8000-{i:012d}", user_id=user) for i in range(n)]


async def test_one_event_is_answered_202_after_it_is_in_the_queue(
    gateway: httpx.AsyncClient, broker: str
) -> None:
    event = valid_event("sleep")
    response = await gateway.post("/v1/events", json=event, headers=bearer(token()))
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "event_ids": [event["event_id"]]}
    [message] = await drain(broker)
    assert (message.content_type, message.routing_key, message.persistent) == (JSON, "events.sleep", True)
    assert json.loads(message.body) == event


async def test_an_array_is_published_as_one_ndjson_message(gateway: httpx.AsyncClient, broker: str) -> None:
    events = many(100)
    response = await gateway.post("/v1/events", json=events, headers=bearer(token()))
    assert response.status_code == 202
    assert response.json()["event_ids"] == [e["event_id"] for e in events]
    [message] = await drain(broker)
    assert (message.content_type, message.routing_key) == (NDJSON, BATCH_ROUTING_KEY)
    assert [json.loads(line) for line in message.body.splitlines()] == events


async def test_an_ndjson_body_is_accepted(gateway: httpx.AsyncClient, broker: str) -> None:
    events = many(3)
    response = await gateway.post(
        "/v1/events",
        content=ndjson(events),
        headers=bearer(token()) | {"Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 202
    assert event_ids(await drain(broker)) == [e["event_id"] for e in events]


async def test_a_batch_whose_canonical_form_outgrows_1_mib_is_split_not_refused(
    gateway: httpx.AsyncClient, broker: str
) -> None:
    # Integral numbers become 97.0 in canonical JSON: a body just under 1 MiB grows past it.
    event = valid_event("spo2", data={"percent": 97})
    padded = json.dumps(event, separators=(",", ":"))
    count = (1024 * 1024 - 2) // (len(padded) + 1)
    events = [dict(event, event_id=f"00000000-0000-4000-8000-{i:012d}") for i in range(min(count, 1000))]
    body = json.dumps(events, separators=(",", ":")).encode()
    assert len(body) <= 1024 * 1024
    response = await gateway.post(
        "/v1/events", content=body, headers=bearer(token()) | {"Content-Type": JSON}
    )
    assert response.status_code == 202
    messages = await drain(broker)
    assert all(len(m.body) <= 1024 * 1024 for m in messages)
    assert event_ids(messages) == [e["event_id"] for e in events]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing bearer token"),
        (bearer(token(ttl_s=-3600)), "expired"),
        (bearer(token(secret=b"some-other-secret-of-at-least-32-bytes")), "signature"),
        (
            bearer(
                jwt.encode({"sub": USER, "aud": "authenticated", "exp": 4102444800}, "", algorithm="none")
            ),
            "algorithm",
        ),
        (bearer(token(aud="anon")), "audience"),
        (bearer(token(sub=None)), "sub"),
    ],
    ids=["no token", "expired", "wrong secret", "alg none", "wrong audience", "no sub"],
)
async def test_bad_tokens_get_401_and_nothing_is_published(
    gateway: httpx.AsyncClient, broker: str, headers: dict[str, str], message: str
) -> None:
    response = await gateway.post("/v1/events", json=many(2), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"] == "invalid_token"
    assert message in response.json()["message"]
    assert await drain(broker) == []


async def test_another_users_event_in_the_batch_gets_403_and_nothing_is_published(
    gateway: httpx.AsyncClient, broker: str
) -> None:
    events = many(3)
    events[1]["user_id"] = "someone-else"
    response = await gateway.post("/v1/events", json=events, headers=bearer(token()))
    assert response.status_code == 403
    assert response.json()["errors"] == [
        {"index": 1, "field": "user_id", "message": "must equal the token's subject"}
    ]
    assert "someone-else" not in response.text
    assert await drain(broker) == []


async def test_one_invalid_event_among_valid_ones_gets_422_and_nothing_is_published(
    gateway: httpx.AsyncClient, broker: str
) -> None:
    events = many(5)
    events[3] = valid_event("heart_rate", data={"bpm": 999})
    response = await gateway.post("/v1/events", json=events, headers=bearer(token()))
    assert response.status_code == 422
    assert response.json() == {"errors": [{"index": 3, "field": "data.bpm", "message": "must be ≤ 300"}]}
    assert await drain(broker) == []


async def test_a_body_that_is_not_json_gets_422(gateway: httpx.AsyncClient, broker: str) -> None:
    response = await gateway.post(
        "/v1/events", content=b"<xml/>", headers=bearer(token()) | {"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json() == {
        "errors": [{"index": None, "field": None, "message": "the body is not valid JSON"}]
    }
    assert await drain(broker) == []


async def test_1001_events_get_413(gateway: httpx.AsyncClient, broker: str) -> None:
    response = await gateway.post("/v1/events", json=many(1001), headers=bearer(token()))
    assert response.status_code == 413
    assert await drain(broker) == []


async def test_a_2_mib_body_gets_413_declared_or_streamed(gateway: httpx.AsyncClient, broker: str) -> None:
    big = b"[" + b" " * (2 * 1024 * 1024) + b"]"
    declared = await gateway.post("/v1/events", content=big, headers=bearer(token()) | {"Content-Type": JSON})
    assert declared.status_code == 413
    assert declared.headers["connection"] == "close"

    sent = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(32):
            sent += 1
            yield b" " * 65536

    chunked = await gateway.post(
        "/v1/events", content=stream(), headers=bearer(token()) | {"Content-Type": JSON}
    )
    assert chunked.status_code == 413
    assert sent < 32  # refused while reading, not after buffering all of it
    assert await drain(broker) == []


async def test_a_media_type_other_than_json_or_ndjson_gets_415(
    gateway: httpx.AsyncClient, broker: str
) -> None:
    response = await gateway.post(
        "/v1/events", content=b"a=b", headers=bearer(token()) | {"Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    assert await drain(broker) == []


@pytest.fixture
async def gateway_without_broker(verifier: TokenVerifier) -> AsyncIterator[httpx.AsyncClient]:
    intake = EventIntake(
        verifier,
        Publisher(dead_url(), sealer=LocalSealer(), delivery_limit=DELIVERY_LIMIT),
        body_timeout_s=5,
        confirm_timeout_s=1,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(intake)), base_url="http://gw"
    ) as client:
        yield client
    await intake.publisher.close()


async def test_no_broker_gets_503_with_retry_after(gateway_without_broker: httpx.AsyncClient) -> None:
    response = await gateway_without_broker.post("/v1/events", json=many(2), headers=bearer(token()))
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["error"] == "broker_unavailable"
    assert "accepted" not in response.json()
    health = await gateway_without_broker.get("/healthz")
    assert health.status_code == 503


async def test_a_broker_that_does_not_confirm_in_time_gets_503(verifier: TokenVerifier) -> None:
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # takes the connection, never answers

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    url = f"amqp://guest:guest@127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    publisher = Publisher(url, sealer=LocalSealer(), delivery_limit=DELIVERY_LIMIT, connect_timeout_s=1)
    intake = EventIntake(verifier, publisher, body_timeout_s=5, confirm_timeout_s=0.3)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(intake)), base_url="http://gw"
        ) as client:
            started = time.monotonic()
            response = await client.post("/v1/events", json=many(2), headers=bearer(token()))
            assert response.status_code == 503
            assert "retry-after" in response.headers
            assert time.monotonic() - started < 1
            with contextlib.suppress(BrokerUnavailable):
                await publisher.connect()  # let the attempt end before the server goes
    finally:
        await publisher.close()
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_healthz_is_200_while_the_broker_is_reachable(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_openapi_documents_the_endpoint_the_event_schema_and_the_token(
    gateway: httpx.AsyncClient,
) -> None:
    document = (await gateway.get("/openapi.json")).json()
    operation = document["paths"]["/v1/events"]["post"]
    assert set(operation["requestBody"]["content"]) == {"application/json", "application/x-ndjson"}
    assert {"202", "401", "403", "413", "422", "503"} <= set(operation["responses"])
    assert "HeartRateEvent" in document["components"]["schemas"]
    # The bearer user token is declared, so generated clients send it.
    assert operation["security"] == [{"userToken": []}]
    scheme = document["components"]["securitySchemes"]["userToken"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    refs = json.dumps(document)
    assert "#/$defs/" not in refs  # every reference resolves inside the document


async def test_metrics_count_answers_by_status(gateway: httpx.AsyncClient) -> None:
    def accepted_total(text: str) -> float:
        line = next(x for x in text.splitlines() if x.startswith("pulseseal_gateway_events_accepted_total "))
        return float(line.split()[1])

    before = accepted_total((await gateway.get("/metrics")).text)
    await gateway.post("/v1/events", json=many(7), headers=bearer(token()))
    after = (await gateway.get("/metrics")).text
    assert accepted_total(after) == before + 7
    assert 'pulseseal_gateway_requests_total{status="202"}' in after


async def test_no_transport_key_gets_503_and_nothing_is_published(
    verifier: TokenVerifier, broker: str
) -> None:
    # The broker is up, the key service is not: without a transport key nothing may leave in the clear.
    sealer = TransportSealer(f"http://127.0.0.1:{free_port()}", retries=0)
    intake = EventIntake(
        verifier,
        Publisher(broker, sealer=sealer, delivery_limit=DELIVERY_LIMIT),
        body_timeout_s=5,
        confirm_timeout_s=2,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(intake)), base_url="http://gw"
    ) as client:
        response = await client.post("/v1/events", json=many(3), headers=bearer(token()))
    await intake.publisher.close()
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert await drain(broker) == []
