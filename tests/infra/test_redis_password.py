"""The key-store Redis behind a password (contract §2), on servers of this test's own (spare ports and a
home of its own; the shared servers are never touched): `redis.sh up` starts it with the password, restarts
our own server found open to everyone, and uses a server that is not ours only when the password works."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import AuthenticationError, ResponseError

from tests.processes import ROOT, free_port

pytestmark = pytest.mark.integration
REDIS_SH = ROOT / "infra" / "redis.sh"


class Home:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.password = secrets.token_urlsafe(32)
        credentials = root / "credentials"
        credentials.mkdir(parents=True)
        self.password_file = credentials / "keystore-redis.password"
        self.password_file.write_text(self.password + "\n")
        self.password_file.chmod(0o600)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PULSESEAL_")},
            "PULSESEAL_HOME": str(root),
            "PULSESEAL_KEYSTORE_REDIS_PORT": str(self.port),
        }

    def sh(self, action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(REDIS_SH), action],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def client(self, password: str | None = None) -> redis.Redis:
        return redis.Redis(port=self.port, password=password, socket_timeout=3)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    made = Home(tmp_path / "home")
    yield made
    made.sh("down")


def start_plain_redis(directory: Path, port: int, *extra: str) -> None:
    """A Redis without a password, as `redis.sh up` started them before this change."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--daemonize",
            "yes",
            "--pidfile",
            str(directory / "redis.pid"),
            "--dir",
            str(directory),
            "--appendonly",
            "yes",
            "--logfile",
            str(directory / "redis.log"),
            *extra,
        ],
        check=True,
        timeout=10,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if redis.Redis(port=port, socket_timeout=1).ping():
                return
        except redis.RedisError:
            time.sleep(0.1)
    raise AssertionError("plain redis did not start")


def stop_pidfile(pidfile: Path) -> None:
    if pidfile.exists():
        subprocess.run(["kill", pidfile.read_text().strip()], check=False)


def test_up_starts_redis_that_refuses_every_connection_without_the_password(home: Home) -> None:
    result = home.sh("up")
    assert result.returncode == 0, result.stderr
    with pytest.raises(AuthenticationError):
        home.client().ping()
    with pytest.raises((AuthenticationError, ResponseError)):
        home.client("wrong").ping()
    assert home.client(home.password).ping()
    assert home.client(home.password).config_get("appendonly") == {"appendonly": "yes"}
    # The password is never on a command line that `ps` shows.
    pid = (home.root / "keystore-redis" / "redis.pid").read_text().strip()
    assert home.password not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    assert home.sh("up").returncode == 0  # idempotent
    assert home.sh("status").returncode == 0


def test_our_own_passwordless_server_is_restarted_with_the_password_keeping_its_data(home: Home) -> None:
    start_plain_redis(home.root / "keystore-redis", home.port)
    home.client().set("kept", b"1")
    result = home.sh("up")
    assert result.returncode == 0, result.stderr
    assert "restarting it" in result.stdout
    with pytest.raises(AuthenticationError):
        home.client().ping()
    assert home.client(home.password).get("kept") == b"1"


def test_a_foreign_server_is_used_only_when_the_password_works(home: Home, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    start_plain_redis(foreign, home.port)
    try:
        refused = home.sh("up")
        assert refused.returncode == 2
        assert "does not take the password" in refused.stderr
        assert home.client().ping()  # left alone, not restarted: it is not ours
        home.client().config_set("requirepass", home.password)
        used = home.sh("up")
        assert used.returncode == 0, used.stderr
        assert "not started by us" in used.stdout
        home.client(home.password).config_set("requirepass", "someone-elses")
        assert home.sh("up").returncode == 2
    finally:
        stop_pidfile(foreign / "redis.pid")


def test_up_without_a_password_file_says_how_to_get_one(home: Home) -> None:
    home.password_file.unlink()
    result = home.sh("up")
    assert result.returncode == 2
    assert "pulseseal services up" in result.stderr
