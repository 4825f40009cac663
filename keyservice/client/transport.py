"""Which addresses may use plain HTTP: loopback only, for the server and its clients alike (docs/contract.md §6)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from keyservice.wire.errors import InsecureTransport


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and loopback IP literals (`127.0.0.0/8`, `::1`)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_server_transport(host: str, *, tls: bool) -> None:
    """Refuse to serve plain HTTP on a non-loopback address.

    Raises:
        InsecureTransport: `tls` is false and `host` is not loopback (`0.0.0.0` included).
    """
    if not tls and not is_loopback_host(host):
        raise InsecureTransport(
            f"refusing to serve plain HTTP on {host}: give PULSESEAL_KEYSERVICE_TLS_CERT and "
            "PULSESEAL_KEYSERVICE_TLS_KEY, or listen on 127.0.0.1"
        )


def check_client_url(url: str) -> None:
    """Refuse a key-service URL that would send tokens and keys in clear over a network.

    Raises:
        InsecureTransport: the URL is `http://` to a non-loopback host, or neither http nor https.
    """
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    if parts.scheme != "http":
        raise InsecureTransport(f"key service URL must be https:// (or http:// to loopback), got {url!r}")
    if not is_loopback_host(parts.hostname or ""):
        raise InsecureTransport(
            f"refusing plain HTTP to {parts.hostname}: use an https:// PULSESEAL_KEYSERVICE_URL"
        )
