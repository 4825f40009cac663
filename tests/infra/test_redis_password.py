"""The key-store Redis behind a password (contract §2), on servers of this test's own (spare ports and a
home of its own; the shared servers are never touched): `redis.sh up` starts it with the password, restarts
our own server found open to everyone, and uses a server that is not ours only when the password works.
It also gives the key service a restricted ACL user of its own (docs/keyservice.md), on a new server and on
a running one that lacks it, without either password ever on a command line or in the server's log."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from keyservice.redisuser import check_restricted_user
from tests.processes import ROOT, free_port

pytestmark = pytest.mark.integration
REDIS_SH = ROOT / "infra" / "redis.sh"
KS_USER = "pulseseal-keyservice"


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
        self.ks_password = secrets.token_urlsafe(32)
        self.ks_password_file = credentials / "keystore-redis-keyservice.password"
        self.ks_password_file.write_text(self.ks_password + "\n")
        self.ks_password_file.chmod(0o600)
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

    def client(self, password: str | None = None, username: str | None = None) -> redis.Redis:
        return redis.Redis(port=self.port, username=username, password=password, socket_timeout=3)

    def keyservice(self) -> redis.Redis:
        return self.client(self.ks_password, KS_USER)

    def pidfile(self) -> Path:
        return self.root / "keystore-redis" / "redis.pid"


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


class CommandLines:
    """Every process's command line, sampled every few milliseconds while in use (what `ps` would show)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").glob("[0-9]*/cmdline"):
                with contextlib.suppress(OSError):  # the process ended between listing and reading
                    self.seen.add(proc.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            time.sleep(0.002)

    def __enter__(self) -> CommandLines:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def assert_user_restricted(home: Home) -> None:
    ks = home.keyservice()
    assert ks.acl_whoami() == KS_USER
    ks.set("pulseseal:ks:probe", b"1")
    assert ks.get("pulseseal:ks:probe") == b"1"
    assert ks.config_get("appendonly") == {"appendonly": "yes"}
    assert ks.config_get("requirepass") == {"requirepass": ""}  # the default user's password is not there
    refused: list[tuple[str, ...]] = [
        ("GET", "elsewhere"),
        ("CONFIG", "SET", "appendfsync", "always"),
        ("ACL", "LIST"),
    ]
    for command in refused:
        with pytest.raises(NoPermissionError):
            ks.execute_command(*command)  # type: ignore[no-untyped-call]
    admin = home.client(home.password)
    dangerous: list[tuple[str, ...]] = [("FLUSHALL",), ("SHUTDOWN",), ("MONITOR",), ("KEYS", "*")]
    for command in dangerous:
        assert b"no permissions" in admin.execute_command("ACL", "DRYRUN", KS_USER, *command)  # type: ignore[no-untyped-call]


def assert_no_password_shown(home: Home, *texts: str) -> None:
    for secret in (home.password, home.ks_password):
        for text in texts:
            assert secret not in text


def test_up_adds_the_key_services_restricted_user(home: Home) -> None:
    with CommandLines() as ps:
        result = home.sh("up")
    assert result.returncode == 0, result.stderr
    assert_user_restricted(home)
    with pytest.raises(AuthenticationError):
        home.client().ping()
    log = (home.root / "keystore-redis" / "redis.log").read_text(errors="replace")
    assert_no_password_shown(home, *ps.seen, log, result.stdout, result.stderr)
    assert any("redis-server" in line for line in ps.seen)  # the sampler did see the start


def start_with_requirepass(home: Home) -> str:
    """Our server as `redis.sh up` started it before the key service had a user (the password in
    `requirepass`); its pid."""
    directory = home.root / "keystore-redis"
    directory.mkdir(parents=True)
    subprocess.run(
        ["redis-server", "-", "--bind", "127.0.0.1", "--port", str(home.port), "--daemonize", "yes",
         "--pidfile", str(home.pidfile()), "--dir", str(directory), "--appendonly", "yes", "--save", "",
         "--logfile", str(directory / "redis.log")],
        input=f"requirepass {home.password}\n",
        text=True,
        check=True,
        timeout=10,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not home.pidfile().exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return home.pidfile().read_text().strip()


def test_a_running_server_without_the_user_gets_it_without_a_restart(home: Home) -> None:
    pid = start_with_requirepass(home)
    home.client(home.password).set("kept", b"1")
    assert home.client(home.password).config_get("requirepass") == {"requirepass": home.password}
    with CommandLines() as ps:
        result = home.sh("up")
    assert result.returncode == 0, result.stderr
    assert "moved from requirepass" in result.stdout
    assert home.pidfile().read_text().strip() == pid  # not restarted
    assert home.client(home.password).get("kept") == b"1"
    with pytest.raises(AuthenticationError):
        home.client().ping()
    assert_user_restricted(home)
    assert_no_password_shown(home, *ps.seen, result.stdout, result.stderr)
    again = home.sh("up")  # idempotent: nothing left to move, the user is set again to the same rules
    assert again.returncode == 0, again.stderr
    assert "moved" not in again.stdout
    assert_user_restricted(home)


def test_two_homes_sharing_one_server_keep_both_key_service_passwords(home: Home, tmp_path: Path) -> None:
    assert home.sh("up").returncode == 0
    other = Home(tmp_path / "other")
    other.port, other.password = home.port, home.password
    other.password_file.write_text(home.password + "\n")
    other.env["PULSESEAL_KEYSTORE_REDIS_PORT"] = str(home.port)
    used = other.sh("up")
    assert used.returncode == 0, used.stderr
    assert "not started by us" in used.stdout
    assert home.keyservice().ping()
    assert other.keyservice().ping()


def test_up_without_the_key_service_password_says_so_and_keeps_going(home: Home) -> None:
    home.ks_password_file.unlink()
    result = home.sh("up")
    assert result.returncode == 0, result.stderr
    assert "connect as the default user" in result.stdout
    assert home.client(home.password).ping()


def test_the_key_service_warns_while_requirepass_still_holds_the_default_password(
    home: Home, caplog: pytest.LogCaptureFixture
) -> None:
    start_with_requirepass(home)
    home.client(home.password).acl_setuser(
        KS_USER, enabled=True, passwords=[f"+{home.ks_password}"], keys=["pulseseal:*"], commands=["+@all"]
    )

    async def check() -> None:
        client = Redis(port=home.port, username=KS_USER, password=home.ks_password)
        try:
            await check_restricted_user(client, "here", KS_USER, "pulseseal:ks:")
        finally:
            await client.aclose()

    asyncio.run(check())
    assert "requirepass" in caplog.text
    assert "pulseseal services up" in caplog.text
    caplog.clear()
    assert home.sh("up").returncode == 0
    asyncio.run(check())
    assert "requirepass" not in caplog.text
