"""Per-session isolation on the shared local servers.

Tests use the contract's queue and collection names, so two test sessions (or a test session and a
running demo) on one machine would steal each other's messages. Each session therefore gets its own
RabbitMQ virtual host and its own MongoDB database; both are removed at the end.
"""

from __future__ import annotations

import secrets
from urllib.parse import quote, urlsplit, urlunsplit

import redis

from shell.devservices import rabbitmqctl

__all__ = ["create_vhost", "delete_keys", "delete_vhost", "rabbitmqctl", "session_tag", "vhost_url"]


def session_tag() -> str:
    """A short random tag that names this session's vhost and database."""
    return f"t{secrets.token_hex(4)}"


def create_vhost(name: str) -> None:
    """Create a vhost that `guest` may use fully."""
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")


def delete_vhost(name: str) -> None:
    """Delete a vhost and everything in it."""
    rabbitmqctl("delete_vhost", name)


def vhost_url(base_url: str, vhost: str) -> str:
    """`base_url` pointing at `vhost` instead of the one it names (a fixture may hand over a URL that
    already names a vhost of its own: the shell tests see the producer tests' `amqp_url`)."""
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), parts.query, parts.fragment))


def delete_keys(redis_url: str, prefix: str) -> None:
    """Delete every key under `prefix` in the key-store Redis at `redis_url` (a session's or a test's)."""
    store = redis.Redis.from_url(redis_url)
    try:
        names = list(store.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(names), 500):
            store.delete(*names[start : start + 500])
    finally:
        store.close()
