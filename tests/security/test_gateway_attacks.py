"""Playing the attacker against a running gateway: forged and non-finite user tokens, a slow request head,
an oversized body; each refused, and a legitimate user still gets in (docs/threat-model.md)."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from shell.processes import Child, StartFailed, free_port, spawn
from tests.factories import valid_event
from tests.keyservice.helpers import unsigned_jwt, write_private
from tests.processes import ROOT
from tests.producers.helpers import SECRET, token

pytestmark = pytest.mark.integration
BODY_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def gateway(
    isolated_amqp_url: str, keyservice: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Child]]:
    """A gateway process with a short body deadline; its URL and process."""
    tmp = tmp_path_factory.mktemp("gateway")
    secret = tmp / "gateway-jwt.secret"
    write_private(secret, SECRET)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSESEAL_")}
    env |= {
        "PULSESEAL_HOME": str(tmp / "home"),
        "PULSESEAL_AMQP_URL": isolated_amqp_url,
        # Where the gateway gets the transport public key it seals every accepted batch to.
        "PULSESEAL_KEYSERVICE_URL": keyservice,
        "PULSESEAL_GATEWAY_PORT": str(port),
        "PULSESEAL_GATEWAY_JWT_SECRET_FILE": str(secret),
        "PULSESEAL_GATEWAY_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    }
    child = spawn("gateway", ["gateway"], env=env, log=tmp / "gateway.log", cwd=ROOT, new_session=False)
    url = f"http://127.0.0.1:{port}"
    try:
        child.wait_ready(url + "/healthz", 30)
    except StartFailed as exc:
        child.stop()
        pytest.fail(str(exc))
    yield url, child
    child.stop()


def _send(url: str, bearer_token: str, body: bytes | None = None) -> httpx.Response:
    payload = body if body is not None else json.dumps(_event()).encode()
    headers = {"Authorization": f"Bearer {bearer_token}", "Content-Type": "application/json"}
    return httpx.post(url + "/v1/events", content=payload, headers=headers, timeout=10, trust_env=False)


def _event() -> dict[str, Any]:
    return valid_event(event_id=str(uuid.uuid4()))


def test_the_gateway_refuses_forged_and_non_finite_user_tokens(gateway: tuple[str, Child]) -> None:
    url, _ = gateway
    assert _send(url, token(secret=b"another-secret-that-is-long-enough-0123")).status_code == 401
    claims = {"sub": "user-0001", "aud": "authenticated", "exp": time.time() + 600}
    assert _send(url, unsigned_jwt({"alg": "none", "typ": "JWT"}, claims)).status_code == 401
    for exp in (float("nan"), float("inf"), 10**400):
        never_expires = jwt.encode(
            {"sub": "user-0001", "aud": "authenticated", "exp": exp}, SECRET, algorithm="HS256"
        )
        answer = _send(url, never_expires)
        assert answer.status_code == 401, (exp, answer.text)
    assert _send(url, token()).status_code == 202  # a legitimate user still gets in


def test_the_gateway_cuts_off_slow_and_oversized_requests(gateway: tuple[str, Child]) -> None:
    url, _ = gateway
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as slow_head:
        slow_head.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")
        time.sleep(BODY_TIMEOUT_S + 0.5)
        assert slow_head.recv(4096) == b""
    huge = b"[" + b",".join(json.dumps(_event()).encode() for _ in range(1001)) + b"]"
    assert _send(url, token(), huge).status_code == 413
    assert _send(url, token()).status_code == 202
