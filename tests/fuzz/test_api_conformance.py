"""Schemathesis against both HTTP services' own OpenAPI documents: no 5xx, every answer as documented.

Each case is sent as schemathesis generated it (valid and deliberately invalid bodies, paths and
queries), through the real application on the real servers (key-store Redis, RabbitMQ). Authentication
is done properly, per request, so the cases reach the code behind it instead of all ending in 401: the
key service gets a token signed by the caller whose scope the endpoint needs, bound to the exact method,
path and body bytes sent; the gateway gets a user token whose subject is the first event's user.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from keyservice.app import create_app
from keyservice.bootstrap import ServiceOptions, open_service
from keyservice.client.tokens import mint_token
from keyservice.openapi import openapi_document
from keyservice.service import KeyService
from keyservice.wrapping import MasterKey
from producers.gateway.app import create_app as create_gateway
from producers.gateway.auth import TokenVerifier
from producers.gateway.service import EventIntake
from producers.publisher import Publisher
from tests.isolation import delete_keys
from tests.keyservice.helpers import Credentials, make_credentials
from tests.producers.helpers import AUDIENCE, SECRET, token
from tests.transit import LocalSealer

pytestmark = pytest.mark.integration

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
ROLE_FOR = {"/v1/keys/encrypt": "encryptor", "/v1/keys/decrypt": "auditor", "/v1/audit/replays": "auditor"}
SCOPE_OF = {"encryptor": "keys:encrypt", "auditor": "keys:decrypt", "admin": "keys:admin"}


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    text = value if isinstance(value, str) else json.dumps(value)
    return text.encode()


# 413 is how both services refuse an over-long list (docs/contract.md §6, §7): a rejection like 422.
_REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": _REJECTIONS}}}
)
keyservice_schema = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)
_dummy_intake = EventIntake(
    TokenVerifier(secret=SECRET, jwks=None, audience=AUDIENCE),
    Publisher("amqp://guest:guest@127.0.0.1:1/", sealer=LocalSealer(), delivery_limit=5),
    body_timeout_s=5.0,
    confirm_timeout_s=5.0,
)
gateway_schema = schemathesis.openapi.from_dict(create_gateway(_dummy_intake).openapi(), config=CONFIG)


class Portal:
    """An event loop in a thread of its own, so synchronous Hypothesis tests can drive async apps whose
    connections (Redis, RabbitMQ) must stay on one loop; and an HTTP client of one app on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.client: httpx.AsyncClient | None = None

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def serve(self, app: Any) -> None:
        async def make() -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
            return httpx.AsyncClient(transport=transport, base_url="http://testserver")

        self.client = self.run(make())

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        assert self.client is not None
        response: httpx.Response = self.run(self.client.request(method, url, **kwargs))
        return response

    def close(self) -> None:
        if self.client is not None:
            self.run(self.client.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def fuzz_creds(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return make_credentials(tmp_path_factory.mktemp("fuzz-credentials"))


@pytest.fixture(scope="module")
def keyservice_client(
    fuzz_creds: Credentials, keystore_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Portal]:
    options = ServiceOptions(
        redis_url=keystore_redis_url,
        prefix=f"pulseseal-test:fuzz:{secrets.token_hex(4)}:",
        master=MasterKey.from_base64(fuzz_creds.master_b64),
        callers_file=fuzz_creds.callers_file,
        signing_key_file=fuzz_creds.signing_key_file,
        ledger_file=tmp_path_factory.mktemp("fuzz-ledger") / "shred-ledger.ndjson",
        key_ttl_s=60,
        allow_volatile=False,
    )
    portal = Portal()
    service: KeyService = portal.run(open_service(options))
    portal.serve(create_app(service))
    try:
        yield portal
    finally:
        portal.run(service.close())
        portal.close()
    delete_keys(keystore_redis_url, options.prefix)


@pytest.fixture(scope="module")
def gateway_client(isolated_amqp_url: str) -> Iterator[Portal]:
    portal = Portal()
    publisher = Publisher(isolated_amqp_url, sealer=LocalSealer(), delivery_limit=5, confirm_timeout_s=5.0)
    intake = EventIntake(
        TokenVerifier(secret=SECRET, jwks=None, audience=AUDIENCE),
        publisher,
        body_timeout_s=5.0,
        confirm_timeout_s=5.0,
    )
    portal.run(publisher.connect())
    portal.serve(create_gateway(intake))
    try:
        yield portal
    finally:
        portal.run(publisher.close())
        portal.close()


def _send(
    client: Portal, case: schemathesis.Case[Any], auth: Callable[[str, str, bytes], dict[str, str]]
) -> httpx.Response:
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    if "json" in kwargs:
        body = json.dumps(kwargs.pop("json")).encode()
    else:
        data = kwargs.pop("data", b"")
        if isinstance(data, str):
            body = data.encode()
        elif isinstance(data, bytes | bytearray):
            body = bytes(data)
        else:
            body = json.dumps(data).encode()
    headers = {str(k): str(v) for k, v in (kwargs.get("headers") or {}).items()}
    path = unquote(urlsplit(kwargs["url"]).path)
    if not _negates_authorization(case):
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        headers.update(auth(case.method.upper(), path, body))
    response = client.request(
        case.method.upper(), kwargs["url"], content=body, headers=headers, params=kwargs.get("params")
    )
    case.validate_response(response, checks=CHECKS, headers=headers)
    return response


@keyservice_schema.parametrize()
@FUZZ
def test_the_key_service_answers_every_request_as_documented_and_never_5xx(
    case: schemathesis.Case[Any], keyservice_client: Portal, fuzz_creds: Credentials
) -> None:
    def sign(method: str, path: str, body: bytes) -> dict[str, str]:
        role = ROLE_FOR.get(path, "admin")
        minted = mint_token(
            fuzz_creds.keys[role], role, method=method, path=path, body=body, scope=SCOPE_OF[role]
        )
        return {"Authorization": f"Bearer {minted}"}

    _send(keyservice_client, case, sign)


@gateway_schema.parametrize()
@FUZZ
def test_the_gateway_answers_every_request_as_documented_and_never_5xx(
    case: schemathesis.Case[Any], gateway_client: Portal
) -> None:
    def user(method: str, path: str, body: bytes) -> dict[str, str]:
        return {"Authorization": f"Bearer {token(_first_user(body))}"}

    _send(gateway_client, case, user)


def _negates_authorization(case: schemathesis.Case[Any]) -> bool:
    """True for a negative case about the Authorization header itself (left out or spoiled): it is sent
    as generated, and must be refused."""
    data = getattr(getattr(case.meta, "phase", None), "data", None)
    return str(getattr(data, "parameter", "") or "").lower() == "authorization"


def _first_user(body: bytes) -> str:
    """The first event's user_id (so valid bodies can be accepted), else any user."""
    try:
        first = body.splitlines()[0] if body.lstrip()[:1] not in (b"[", b"{") else body
        value = json.loads(first)
    except (ValueError, IndexError):
        return "fuzz-user"
    if isinstance(value, list) and value:
        value = value[0]
    user = value.get("user_id") if isinstance(value, dict) else None
    return user if isinstance(user, str) and user else "fuzz-user"


def test_the_key_service_serves_the_document_it_is_held_to(keyservice_client: Portal) -> None:
    document = openapi_document()
    assert keyservice_client.request("GET", "/openapi.json").json() == document
    assert set(document["paths"]) == {
        "/v1/keys/encrypt",
        "/v1/keys/decrypt",
        "/v1/keys/usage",
        "/v1/audit/replays",
        "/v1/users/{user_id}/rotate",
        "/v1/users/{user_id}",
        "/v1/users/{user_id}/reinstate",
        "/v1/audit",
        "/v1/transport/key",
        "/v1/transport/keys/open",
        "/v1/transport/rotate",
        "/v1/transport/keys/{key_id}",
        "/healthz",
    }
