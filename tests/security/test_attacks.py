"""Playing the attacker against the running key service (real processes, real servers; the gateway's
attacks are in test_gateway_attacks.py).

Each attack must be refused, must be in the audit log (one record per refusal, or counted into one record
with `counts.refused` when it repeats), and must leave the service answering a legitimate caller. The
defences are listed with these tests in docs/threat-model.md ("Attacks on the HTTP services").
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keyservice.client.tokens import mint_token
from tests.isolation import delete_keys
from tests.keyservice.helpers import (
    Credentials,
    claims_for,
    make_credentials,
    server_env,
    start_keyservice,
    stop,
)
from tests.processes import ROOT, free_port

pytestmark = pytest.mark.integration
ENCRYPT = "/v1/keys/encrypt"
BODY = b'{"user_ids":["attacked-user"]}'
BODY_TIMEOUT_S = 1.0


@dataclass
class KeyService:
    url: str
    creds: Credentials
    process: subprocess.Popen[bytes]
    prefix: str

    def post(
        self, token_: str | None, body: bytes = BODY, path: str = ENCRYPT, **headers: str
    ) -> httpx.Response:
        if token_ is not None:
            headers["Authorization"] = f"Bearer {token_}"
        return httpx.post(self.url + path, content=body, headers=headers, timeout=10, trust_env=False)

    def token(self, role: str = "encryptor", body: bytes = BODY, path: str = ENCRYPT, **claims: Any) -> str:
        scope = {"encryptor": "keys:encrypt", "auditor": "keys:decrypt", "admin": "keys:admin"}[role]
        if not claims:
            return mint_token(self.creds.keys[role], role, method="POST", path=path, body=body, scope=scope)
        payload = claims_for(role, "POST", path, body, scope) | claims
        return jwt.encode(payload, self.creds.keys[role], algorithm="EdDSA")

    def legit(self, users: int = 1) -> httpx.Response:
        body = json.dumps({"user_ids": [f"legit-{n}" for n in range(users)]}).encode()
        return self.post(self.token(body=body), body)

    def refusals(self) -> dict[str, int]:
        """reason → refusals in the audit log (a counted record counts for `counts.refused`)."""
        time.sleep(1.3)  # the counting window closes every second
        query = "/v1/audit?limit=10000"
        admin = mint_token(
            self.creds.keys["admin"], "admin", method="GET", path="/v1/audit", body=b"", scope="keys:admin"
        )
        answer = httpx.get(
            self.url + query, headers={"Authorization": f"Bearer {admin}"}, timeout=10, trust_env=False
        )
        assert answer.status_code == 200, answer.text
        totals: dict[str, int] = {}
        for record in answer.json()["records"]:
            if record["outcome"] == "refused":
                totals[record["reason"]] = totals.get(record["reason"], 0) + (record.get("counts") or {}).get(
                    "refused", 1
                )
        return totals


def _start(tmp: Path, creds: Credentials, redis_url: str, **settings: str) -> KeyService:
    prefix = f"pulseseal-test:attack:{secrets.token_hex(4)}:"
    port = free_port()
    env = server_env(tmp / "home", creds, redis_url, prefix, port)
    env["PULSESEAL_KEYSERVICE_BODY_TIMEOUT_S"] = str(BODY_TIMEOUT_S)
    env.update({f"PULSESEAL_{k.upper()}": v for k, v in settings.items()})
    process = start_keyservice(env, log_file=tmp / "keyservice.log")
    return KeyService(f"http://127.0.0.1:{port}", creds, process, prefix)


def _cleanup(redis_url: str, prefix: str) -> None:
    delete_keys(redis_url, prefix)


@pytest.fixture(scope="module")
def keyservice(keystore_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyService]:
    """A key service whose `auditor` may call only from 10.99.0.0/16, a network this test is not in."""
    tmp = tmp_path_factory.mktemp("attacks")
    creds = make_credentials(tmp / "credentials", networks={"auditor": ["10.99.0.0/16"]})
    service = _start(tmp, creds, keystore_redis_url)
    yield service
    stop(service.process)
    _cleanup(keystore_redis_url, service.prefix)


def assert_still_serving(ks: KeyService) -> None:
    answer = ks.legit()
    assert answer.status_code == 200, answer.text
    assert ks.process.poll() is None


def assert_refused(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["reason"] == reason


# --- tokens -----------------------------------------------------------------------------------------


def test_forged_tokens_are_refused_and_audited(keyservice: KeyService) -> None:
    before = keyservice.refusals()
    stranger = Ed25519PrivateKey.generate()
    forged = mint_token(stranger, "encryptor", method="POST", path=ENCRYPT, body=BODY, scope="keys:encrypt")
    assert_refused(keyservice.post(forged), 401, "unknown_key_id")  # its kid is not the encryptor's
    claims = claims_for("encryptor", "POST", ENCRYPT, BODY, "keys:encrypt")
    no_kid = jwt.encode(claims, stranger, algorithm="EdDSA")
    assert_refused(keyservice.post(no_kid), 401, "bad_signature")
    hs256 = jwt.encode(claims, "x" * 32, algorithm="HS256")
    assert_refused(keyservice.post(hs256), 401, "algorithm_not_allowed")
    unknown = mint_token(stranger, "mallory", method="POST", path=ENCRYPT, body=BODY, scope="keys:encrypt")
    assert_refused(keyservice.post(unknown), 401, "unknown_issuer")
    after = keyservice.refusals()
    for reason in ("unknown_key_id", "bad_signature", "algorithm_not_allowed", "unknown_issuer"):
        assert after.get(reason, 0) == before.get(reason, 0) + 1, reason
    assert_still_serving(keyservice)


def test_a_replayed_token_is_refused(keyservice: KeyService) -> None:
    before = keyservice.refusals().get("replayed", 0)
    used = keyservice.token()
    assert keyservice.post(used).status_code == 200
    for _ in range(3):
        assert_refused(keyservice.post(used), 401, "replayed")
    assert keyservice.refusals().get("replayed", 0) == before + 3
    assert_still_serving(keyservice)


def test_retargeted_tokens_are_refused(keyservice: KeyService) -> None:
    before = keyservice.refusals()
    for_decrypt = keyservice.token(path="/v1/keys/decrypt")
    assert_refused(keyservice.post(for_decrypt), 401, "wrong_endpoint")  # htu
    other_method = keyservice.token("encryptor", htm="DELETE")
    assert_refused(keyservice.post(other_method), 401, "wrong_endpoint")  # htm
    other_body = keyservice.token(body=b'{"user_ids":["someone-else"]}')
    assert_refused(keyservice.post(other_body), 401, "body_hash_mismatch")  # bh
    after = keyservice.refusals()
    assert after.get("wrong_endpoint", 0) == before.get("wrong_endpoint", 0) + 2
    assert after.get("body_hash_mismatch", 0) == before.get("body_hash_mismatch", 0) + 1
    assert_still_serving(keyservice)


def test_non_finite_time_claims_are_bad_tokens_never_500(keyservice: KeyService) -> None:
    before = keyservice.refusals().get("malformed_token", 0)
    now = int(time.time())
    for claims in (
        {"iat": float("nan"), "exp": now + 30 * 86_400},
        {"exp": float("inf")},
        {"exp": float("nan")},
        {"iat": float("-inf")},
        {"exp": 10**400},
    ):
        assert_refused(keyservice.post(keyservice.token(**claims)), 401, "malformed_token")
    assert keyservice.refusals().get("malformed_token", 0) == before + 5
    assert_still_serving(keyservice)


# --- networks and forwarded headers ------------------------------------------------------------------


def test_forwarded_headers_never_move_a_caller_into_its_network(keyservice: KeyService) -> None:
    before = keyservice.refusals().get("network_not_allowed", 0)
    body = b'{"keys":[{"user_id":"legit-0","version":1}],"purpose":"attack"}'
    forwarded = {
        "X-Forwarded-For": "10.99.0.1",
        "X-Real-IP": "10.99.0.1",
        "Forwarded": "for=10.99.0.1",
    }
    for name, value in forwarded.items():
        auditor = keyservice.token("auditor", body=body, path="/v1/keys/decrypt")
        answer = keyservice.post(auditor, body, "/v1/keys/decrypt", **{name: value})
        assert_refused(answer, 403, "network_not_allowed")
    assert keyservice.refusals().get("network_not_allowed", 0) == before + 3
    assert_still_serving(keyservice)


def test_a_peer_in_no_callers_network_is_refused_before_it_sends_a_body(
    keystore_redis_url: str, tmp_path: Path
) -> None:
    creds = make_credentials(
        tmp_path / "credentials",
        networks={role: ["10.0.0.0/8"] for role in ("encryptor", "auditor", "admin", "gateway")},
    )
    service = _start(tmp_path, creds, keystore_redis_url)
    try:
        port = int(service.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            # A head announcing 200 KB, and no body at all: the answer must not wait for it.
            sock.sendall(
                b"POST /v1/keys/encrypt HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1\r\n"
                b"Authorization: Bearer junk\r\nContent-Length: 200000\r\n\r\n"
            )
            started = time.monotonic()
            head = _read_answer(sock)
        assert head.startswith(b"HTTP/1.1 403"), head
        assert time.monotonic() - started < BODY_TIMEOUT_S  # not the body deadline: refused at once
        assert b"network_not_allowed" in head
    finally:
        stop(service.process)
        _cleanup(keystore_redis_url, service.prefix)


def _read_answer(sock: socket.socket) -> bytes:
    """Head and body of one answer (until its Content-Length is complete, or the peer closes)."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


# --- sizes and slowness ------------------------------------------------------------------------------


def test_oversized_bodies_are_refused(keyservice: KeyService) -> None:
    before = keyservice.refusals().get("too_large", 0)
    huge = b'{"user_ids":["' + b"a" * 300_000 + b'"]}'
    assert_refused(keyservice.post(keyservice.token(body=huge), huge), 413, "too_large")

    def chunks() -> Iterator[bytes]:
        for _ in range(300):
            yield b"x" * 1024

    chunked = httpx.post(
        keyservice.url + ENCRYPT,
        content=chunks(),
        headers={"Authorization": "Bearer junk"},
        timeout=10,
        trust_env=False,
    )
    assert_refused(chunked, 413, "too_large")
    assert keyservice.refusals().get("too_large", 0) == before + 2
    assert_still_serving(keyservice)


def test_a_slow_body_is_cut_off_at_the_deadline(keyservice: KeyService) -> None:
    before = keyservice.refusals().get("body_timeout", 0)
    port = int(keyservice.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/keys/encrypt HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer junk\r\nContent-Length: 100\r\n\r\n{"
        )
        started = time.monotonic()
        for _ in range(5):  # a byte now and then, never the whole body
            time.sleep(0.3)
            sock.sendall(b" ")
        answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - started < BODY_TIMEOUT_S + 2
    assert keyservice.refusals().get("body_timeout", 0) == before + 1
    assert_still_serving(keyservice)


def test_a_slow_request_head_is_disconnected(keyservice: KeyService) -> None:
    port = int(keyservice.url.rsplit(":", 1)[1])
    sockets = []
    try:
        for _ in range(20):  # slowloris: many connections, each with a head that never ends
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"POST /v1/keys/encrypt HTTP/1.1\r\nHost: x\r\n")
            sockets.append(sock)
        assert_still_serving(keyservice)  # while they hang
        time.sleep(BODY_TIMEOUT_S + 0.5)
        for sock in sockets:
            assert sock.recv(4096) == b""  # closed by the server
    finally:
        for sock in sockets:
            sock.close()
    assert_still_serving(keyservice)


def test_an_oversized_request_head_is_refused(keyservice: KeyService) -> None:
    # httptools, unlike h11, reads a head of any size: shell/slowloris.py keeps h11's 16 KiB limit.
    port = int(keyservice.url.rsplit(":", 1)[1])
    for size in (20_000, 2_000_000):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            head = b"POST /v1/keys/encrypt HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * size + b"\r\n"
            with contextlib.suppress(ConnectionError):  # the server may close before it all arrived
                sock.sendall(head)
            answer = _read_answer(sock)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:80]
    # A large body right behind a small head, in one write, is not a large head.
    body = b'{"user_ids":["' + b"a" * 200_000 + b'"]}'
    assert keyservice.post("junk.junk.junk", body).status_code in (401, 429)
    assert_still_serving(keyservice)


# --- floods ------------------------------------------------------------------------------------------


def test_a_junk_token_flood_is_rate_limited_counted_and_a_legit_caller_still_served(
    keyservice: KeyService,
) -> None:
    before = keyservice.refusals()
    result = _flood(keyservice.url, 2000, 20)
    statuses = {int(k) if k.isdigit() else k: v for k, v in result["statuses"].items()}
    assert set(statuses) <= {401, 429}
    assert statuses.get(401, 0) >= 200  # a burst of at least 200 refusals is answered as such ...
    assert statuses.get(429, 0) > 0  # ... and beyond the rate, 429
    limited = keyservice.post("junk.junk.junk")
    assert limited.status_code in (401, 429)
    assert_still_serving(keyservice)
    after = keyservice.refusals()
    flood_refusals = sum(after.get(r, 0) - before.get(r, 0) for r in ("malformed_token", "rate_limited"))
    assert flood_refusals == 2001  # every refusal is in the audit log, counted
    assert statuses.get(429, 0) == after.get("rate_limited", 0) - before.get("rate_limited", 0) - (
        limited.status_code == 429
    )


def _flood(url: str, requests: int, concurrency: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.security.flood", url, str(requests), str(concurrency)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _timed(ks: KeyService, client: httpx.Client) -> float:
    # On one kept-alive client, as an encryptor calls (KeyServiceClient): a new httpx client per request
    # would add its own construction (an SSL context, ~20 ms) and a TCP handshake to every figure.
    body = json.dumps({"user_ids": [f"legit-{n}" for n in range(1000)]}).encode()
    started = time.perf_counter()
    token = ks.token(body=body)
    answer = client.post(ks.url + ENCRYPT, content=body, headers={"Authorization": f"Bearer {token}"})
    elapsed = time.perf_counter() - started
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["keys"]) == 1000
    return elapsed


def _store_figures(client: redis.Redis) -> dict[str, int]:
    info: dict[str, Any] = client.info("memory") | client.info("persistence")
    return {"used_memory": int(info["used_memory"]), "aof_size": int(info.get("aof_current_size", 0))}


def test_a_20000_request_flood_leaves_the_key_store_bounded_and_keys_still_flow(
    keystore_redis_url: str, keyservice: KeyService
) -> None:
    client = redis.Redis.from_url(keystore_redis_url)
    caller = httpx.Client(timeout=10, trust_env=False)
    stream = keyservice.prefix + "audit"
    try:
        assert keyservice.legit(1000).status_code == 200  # create the keys first: then only reads
        quiet = sorted(_timed(keyservice, caller) for _ in range(20))  # the same request without a flood
        last_before: list[tuple[bytes, Any]] = client.xrevrange(stream, count=1)  # type: ignore[assignment]
        start = "(" + last_before[0][0].decode() if last_before else "-"
        records_before, store_before = client.xlen(stream), _store_figures(client)
        flood = subprocess.Popen(
            [sys.executable, "-m", "tests.security.flood", keyservice.url, "20000", "32"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        latencies: list[float] = []
        while flood.poll() is None:
            latencies.append(_timed(keyservice, caller))
            time.sleep(0.5)  # a legitimate encryptor asks now and then; the flood never stops
        output, _ = flood.communicate()
        result = json.loads(output)
        time.sleep(1.3)  # the last counting window
        records_after, store_after = client.xlen(stream), _store_figures(client)
        added: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(stream, min=start, max="+")  # type: ignore[assignment]
    finally:
        caller.close()
        client.close()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    refused = [f for _, f in added if json.loads(f[b"r"])["outcome"] == "refused"]
    refused_bytes = sum(len(f[b"r"]) + len(f.get(b"c", b"")) for f in refused)
    granted_bytes = sum(len(f[b"r"]) + len(f.get(b"c", b"")) for _, f in added) - refused_bytes
    figures = {
        "flood": result,
        "quiet_p50_ms": round(quiet[len(quiet) // 2] * 1000, 1),
        "quiet_max_ms": round(quiet[-1] * 1000, 1),
        "legit_1000_key_requests": len(latencies),
        "legit_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "legit_p99_ms": round(p99 * 1000, 1),
        "audit_records_added": records_after - records_before,
        "refusal_records_added": len(refused),
        "refusal_record_bytes": refused_bytes,
        "grant_record_bytes": granted_bytes,
        "store_before": store_before,
        "store_after": store_after,
    }
    print("FLOOD FIGURES", json.dumps(figures))
    Path(os.environ.get("PULSESEAL_FLOOD_FIGURES", os.devnull)).write_text(json.dumps(figures, indent=2))
    # Bounded: the flood's refusals are a few counted records a second, not 20,000 records; what the key
    # store grows by beyond the legitimate grants' own records is those few records (and AOF framing).
    seconds = int(result["seconds"]) + 3
    assert len(refused) <= 4 * seconds
    answered = sum(n for status, n in result["statuses"].items() if status in ("401", "429"))
    assert sum((json.loads(f[b"r"]).get("counts") or {}).get("refused", 1) for f in refused) >= answered
    aof_growth = store_after["aof_size"] - store_before["aof_size"]
    assert aof_growth <= 2 * (granted_bytes + refused_bytes) + 200 * len(added) + 1_000_000


# --- the gateway -------------------------------------------------------------------------------------
