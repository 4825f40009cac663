"""Plain HTTP only on loopback, for the server and its clients."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keyservice.client import KeyServiceClient
from keyservice.client.transport import check_client_url, check_server_transport, is_loopback_host
from keyservice.wire.errors import InsecureTransport


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),  # noqa: S104  # nosec B104  # never bound, only classified
        ("::", False),
        ("10.0.0.1", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_server_refuses_plain_http_off_loopback() -> None:
    check_server_transport("127.0.0.1", tls=False)
    check_server_transport("0.0.0.0", tls=True)  # noqa: S104  # nosec B104  # never bound
    with pytest.raises(InsecureTransport, match="PULSESEAL_KEYSERVICE_TLS_CERT"):
        check_server_transport("0.0.0.0", tls=False)  # noqa: S104  # nosec B104  # never bound


@pytest.mark.parametrize(
    "url", ["http://10.0.0.5:8700", "http://keys.example.com", "ftp://127.0.0.1", "127.0.0.1:8700"]
)
def test_client_refuses_plain_http_off_loopback(url: str) -> None:
    with pytest.raises(InsecureTransport):
        check_client_url(url)
    with pytest.raises(InsecureTransport):
        KeyServiceClient(url, "encryptor", Ed25519PrivateKey.generate())


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8700", "http://[::1]:8700", "http://localhost:8700", "https://keys.example.com"]
)
def test_client_accepts(url: str) -> None:
    check_client_url(url)
