"""Key material never appears in logs, metrics, audit records or errors: a full run against a real
`pulseseal keyservice` subprocess at debug level, then every key handed out is searched for in everything
it printed (as base64, base64url and hex), along with the master key, the signing key and every token."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keyservice.client import KeyServiceClient
from keyservice.client.tokens import mint_token
from shell.processes import free_port
from tests.keyservice.helpers import Credentials, server_env, start_keyservice, stop

pytestmark = pytest.mark.integration


def forms(secret: bytes) -> list[str]:
    """Ways a secret could leak into text."""
    return [
        base64.b64encode(secret).decode(),
        base64.b64encode(secret).decode().rstrip("="),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
        secret.hex(),
        secret.hex().upper(),
        repr(secret)[2:-1],
    ]


@pytest.fixture
def run(
    tmp_path: Path, creds: Credentials, redis_url: str, prefix: str
) -> Iterator[tuple[dict[str, str], Path]]:
    env = server_env(tmp_path / "home", creds, redis_url, prefix, free_port())
    log = tmp_path / "keyservice.log"
    process = start_keyservice(env, "--log-level", "debug", log_file=log)
    yield env, log
    stop(process)


async def test_no_key_material_in_any_output(
    run: tuple[dict[str, str], Path], creds: Credentials, tmp_path: Path
) -> None:
    env, log = run
    url = env["PULSESEAL_KEYSERVICE_URL"]
    handed_out: set[bytes] = set()
    tokens: list[str] = []
    printed: list[str] = []  # every response body the callers saw, except the grants themselves

    async with httpx.AsyncClient(base_url=url) as http:

        async def call(
            role: str, method: str, path: str, payload: object | None = None, scope: str = ""
        ) -> httpx.Response:
            body = b"" if payload is None else json.dumps(payload).encode()
            token = mint_token(creds.keys[role], role, method=method, path=path, body=body, scope=scope)
            tokens.append(token)
            response = await http.request(
                method, path, content=body, headers={"Authorization": f"Bearer {token}"}
            )
            if response.status_code == 200 and "keys" in response.json():
                # A grant is where keys are meant to be; everything else the caller sees is searched.
                handed_out.update(base64.b64decode(item["key"]) for item in response.json()["keys"])
            else:
                printed.append(response.text)
            return response

        users = [f"leak-{n}" for n in range(200)]
        assert (
            await call("encryptor", "POST", "/v1/keys/encrypt", {"user_ids": users}, "keys:encrypt")
        ).status_code == 200
        await call("admin", "POST", "/v1/users/leak-0/rotate", scope="keys:admin")
        await call("encryptor", "POST", "/v1/keys/encrypt", {"user_ids": users[:10]}, "keys:encrypt")
        refs = [{"user_id": u, "version": v} for u in users[:5] for v in (1, 2)]
        await call(
            "auditor", "POST", "/v1/keys/decrypt", {"keys": refs, "purpose": "leak test"}, "keys:decrypt"
        )
        await call("admin", "DELETE", "/v1/users/leak-1", scope="keys:admin")
        await call("admin", "POST", "/v1/users/leak-1/reinstate", scope="keys:admin")
        await call("encryptor", "POST", "/v1/keys/encrypt", {"user_ids": ["leak-1"]}, "keys:encrypt")
        # Refusals of every kind.
        await call("encryptor", "POST", "/v1/keys/decrypt", {"keys": refs, "purpose": "x"}, "keys:decrypt")
        await call("encryptor", "POST", "/v1/keys/encrypt", {"user_ids": ["bad id"]}, "keys:encrypt")
        await call("encryptor", "POST", "/v1/keys/encrypt", {"user_ids": users}, "wrong-scope")
        replayed = tokens[0]
        printed.append(
            (
                await http.post(
                    "/v1/keys/encrypt", content=b"{}", headers={"Authorization": f"Bearer {replayed}"}
                )
            ).text
        )
        printed.append(
            (
                await http.post("/v1/keys/encrypt", content=b"{}", headers={"Authorization": "Bearer x.y.z"})
            ).text
        )
        await call("admin", "GET", "/v1/audit", scope="keys:admin")
        printed.append((await http.get("/metrics")).text)
        printed.append((await http.get("/healthz")).text)

    # The client library, too: it signs, caches and hands out keys in handles.
    async with KeyServiceClient(url, "encryptor", creds.keys["encryptor"]) as client:
        grant = await client.encrypt_keys(users)
        printed.extend(repr(k) for k in grant.keys.values())
    assert len(handed_out) == 202  # 200 first keys, leak-0's v2, leak-1's reinstated v3

    text = log.read_text() + "\n".join(printed)
    secrets: dict[str, bytes] = {f"data key {n}": k for n, k in enumerate(handed_out)}
    secrets["master key"] = base64.b64decode(creds.master_b64)
    for label, secret in secrets.items():
        for form in forms(secret):
            assert form not in text, f"{label} leaked"
    signing_pem = creds.signing_key_file.read_text().splitlines()[1]
    assert signing_pem not in text
    for token in tokens:
        for part in token.split("."):
            assert part not in log.read_text()
    # The run really was logged at debug level.
    assert '"level": "debug"' in log.read_text()
    assert "refused" in log.read_text()
