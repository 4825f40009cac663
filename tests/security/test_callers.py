"""Who may get keys: the scope checks against a real key service with the real dev credentials.

Reused, not repeated, from elsewhere: a user token cannot submit another user's events
(tests/producers/test_gateway_app.py, 403), and every token defect — including a replayed `jti` — is
refused by the app (tests/keyservice/test_app.py). Added here: the gateway's own credentials are useless
at the key service, the gateway's code cannot call the key service at all, an encrypt-only caller cannot
decrypt, and a replayed token stays refused across a key-service restart (the `jti` lives in the store).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import httpx
import pytest

from keyservice.client.tokens import load_private_key, mint_token
from pulseseal.settings import Settings
from tests.processes import ROOT, Component, free_port, start, wait_healthy

ENDPOINTS = [
    ("POST", "/v1/keys/encrypt", {"user_ids": ["sec-user"]}, "keys:encrypt"),
    (
        "POST",
        "/v1/keys/decrypt",
        {"keys": [{"user_id": "sec-user", "version": 1}], "purpose": "probe"},
        "keys:decrypt",
    ),
    ("POST", "/v1/users/sec-user/rotate", None, "keys:admin"),
    ("DELETE", "/v1/users/sec-user", None, "keys:admin"),
    ("GET", "/v1/audit", None, "keys:admin"),
]


def _call(
    url: str, settings: Settings, caller: str, method: str, path: str, body: object, scope: str
) -> httpx.Response:
    content = b"" if body is None else json.dumps(body).encode()
    key = load_private_key(settings.credentials_dir / f"{caller}.pem")
    token = mint_token(key, caller, method=method, path=path, body=content, scope=scope)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return httpx.request(method, url + path, content=content, headers=headers, timeout=10)


def test_the_gateway_credentials_exist_and_carry_no_key_scope(settings: Settings) -> None:
    callers = json.loads((settings.credentials_dir / "callers.json").read_text())["callers"]
    assert (settings.credentials_dir / "gateway.pem").is_file()
    assert callers["gateway"]["scopes"] == []
    assert callers["encryptor"]["scopes"] == ["keys:encrypt", "transport:open"]
    assert callers["auditor"]["scopes"] == ["keys:decrypt"]


# What producers may link from `keyservice`: the wire contract (errors), and the transport public key —
# fetched with no token (contract §6), so that they can seal for the encryptors (§4).
_PRODUCER_MAY_IMPORT = ("keyservice.wire.", "keyservice.client.transport_public")


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_no_producer_module_can_reach_a_key_or_a_token() -> None:
    # The gateway and the importer are exposed to users; they must not even have the code path to a data
    # key, a private transport key or a caller token: only to the public transport key.
    offenders = []
    for path in sorted((ROOT / "producers").rglob("*.py")):
        offenders += [
            f"{path.relative_to(ROOT)}: {n}"
            for n in _imports(path)
            if n.split(".")[0] == "keyservice" and not n.startswith(_PRODUCER_MAY_IMPORT)
        ]
    # replay is an auditor's tool (producers/replay.py), not a producer of events: it may decrypt.
    assert [o for o in offenders if not o.startswith("producers/replay")] == []
    # ... and what they may import has no path to the client, its tokens or the private keys either.
    # (The replica list, keyservice/client/replicas.py, is shared with the key client: it knows URLs and
    # HTTP connections only.)
    for module in ("transport_public.py", "replicas.py"):
        public = _imports(ROOT / "keyservice" / "client" / module)
        assert [
            n
            for n in public
            if n.startswith("keyservice")
            and not n.startswith(
                ("keyservice.wire.", "keyservice.client.transport", "keyservice.client.replicas")
            )
        ] == []
        assert "keyservice.client.transport_keys" not in public


@pytest.mark.integration
@pytest.mark.parametrize(("method", "path", "body", "scope"), ENDPOINTS)
def test_the_gateway_key_is_refused_at_every_key_endpoint(
    keyservice_process: Component,
    pipeline_env: dict[str, str],
    settings: Settings,
    method: str,
    path: str,
    body: object,
    scope: str,
) -> None:
    url = pipeline_env["PULSESEAL_KEYSERVICE_URL"]
    for asked in (scope, ""):
        response = _call(url, settings, "gateway", method, path, body, asked)
        assert response.status_code == 403, response.text
        assert response.json()["reason"] in {"scope_not_allowed", "scope_missing"}
        assert "key" not in response.json()
        assert "keys" not in response.json()


@pytest.mark.integration
def test_an_encrypt_only_caller_cannot_decrypt(
    keyservice_process: Component, pipeline_env: dict[str, str], settings: Settings
) -> None:
    url = pipeline_env["PULSESEAL_KEYSERVICE_URL"]
    granted = _call(url, settings, "encryptor", *ENDPOINTS[0])
    assert granted.status_code == 200
    method, path, body, _ = ENDPOINTS[1]
    for scope in ("keys:decrypt", "keys:encrypt", "keys:encrypt keys:decrypt"):
        refused = _call(url, settings, "encryptor", method, path, body, scope)
        assert refused.status_code == 403
        assert refused.json()["reason"] in {"scope_missing", "scope_not_allowed"}
        assert granted.json()["keys"][0]["key"] not in refused.text


@pytest.mark.integration
@pytest.mark.slow
def test_a_replayed_token_is_refused_even_after_a_key_service_restart(
    pipeline_env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **pipeline_env,
        "PULSESEAL_KEYSERVICE_PORT": str(port),
        "PULSESEAL_KEYSERVICE_URL": f"http://127.0.0.1:{port}",
    }
    url = env["PULSESEAL_KEYSERVICE_URL"]
    content = json.dumps({"user_ids": ["sec-replay"]}).encode()
    key = load_private_key(settings.credentials_dir / "encryptor.pem")
    token = mint_token(
        key,
        "encryptor",
        method="POST",
        path="/v1/keys/encrypt",
        body=content,
        scope="keys:encrypt",
        lifetime_s=60,
    )
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def send() -> httpx.Response:
        return httpx.post(url + "/v1/keys/encrypt", content=content, headers=headers, timeout=10)

    first = start("keyservice", ["keyservice"], env, tmp_path)
    try:
        wait_healthy(first, url + "/healthz")
        assert send().status_code == 200
        again = send()
        assert (again.status_code, again.json()["reason"]) == (401, "replayed")
    finally:
        first.stop()
    second = start("keyservice", ["keyservice"], env, tmp_path)
    try:
        wait_healthy(second, url + "/healthz")
        after_restart = send()
        assert (after_restart.status_code, after_restart.json()["reason"]) == (401, "replayed")
    finally:
        second.stop()
