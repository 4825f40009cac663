"""Per-session isolation on the shared local servers.

Tests use the contract's queue and collection names, so two test sessions (or a test session and a
running demo) on one machine would steal each other's messages. Each session therefore gets its own
RabbitMQ virtual host and its own MongoDB database; both are removed at the end.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

INFRA = Path(__file__).resolve().parents[1] / "infra"


def session_tag() -> str:
    """A short random tag that names this session's vhost and database."""
    return f"t{secrets.token_hex(4)}"


def rabbitmqctl(*args: str, env: dict[str, str] | None = None) -> str:
    """Run `rabbitmqctl` against the local PulseSeal node (through infra/rabbitmq.sh), in `env` if given.

    Raises:
        RuntimeError: the command failed (its stderr is in the message; it holds no event data).
    """
    result = subprocess.run(
        ["bash", str(INFRA / "rabbitmq.sh"), "ctl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


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
