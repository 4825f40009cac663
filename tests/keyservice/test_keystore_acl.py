"""The key service on its own restricted Redis user (infra/redis.sh, docs/keyservice.md "The key store's
users"), against the real key-store Redis that `pulseseal services up` started: everything the key service
does works as that user, and what it never needs is refused to it by the server itself."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from keyservice.auditchain import verify as verify_chain
from keyservice.bootstrap import ServiceOptions, connect_redis, keyservice_redis_login, open_service
from keyservice.client import KeyServiceClient
from keyservice.client.tokens import load_private_key
from keyservice.service import KeyService
from keyservice.wire.errors import StartupRefused
from keyservice.wrapping import MasterKey
from pulseseal.settings import Settings
from tests.isolation import delete_keys
from tests.keyservice.helpers import Credentials

pytestmark = pytest.mark.integration

MakeClient = Callable[..., KeyServiceClient]
# Under the user's key pattern (`pulseseal:*`), as the pipeline tests' prefixes are.
ACL_SESSION_PREFIX = f"pulseseal:test:acl:{secrets.token_hex(4)}:"


@pytest.fixture(scope="module")
def login(settings: Settings, keystore_redis_url: str) -> Iterator[tuple[str, str]]:
    """The key service's own user and password, as it resolves them from the settings; every key this
    module wrote is deleted at the end (by the `default` user)."""
    username, password = keyservice_redis_login(settings)
    if username is None or password is None:
        pytest.fail(
            f"no key-service user password at {settings.keystore_redis_keyservice_password_path} — run "
            "`pulseseal services up` (make test does)",
            pytrace=False,
        )
    yield username, password
    delete_keys(keystore_redis_url, ACL_SESSION_PREFIX)


@pytest.fixture
def options(creds: Credentials, settings: Settings, login: tuple[str, str], tmp_path: Path) -> ServiceOptions:
    """A key service logging in as its restricted user (overrides the `default`-user options of conftest)."""
    username, password = login
    return ServiceOptions(
        redis_url=settings.keystore_redis_url,  # the plain URL: no password in it, so the user's file counts
        redis_username=username,
        redis_password=password,
        prefix=f"{ACL_SESSION_PREFIX}{secrets.token_hex(4)}:",
        master=MasterKey.from_base64(creds.master_b64),
        callers_file=creds.callers_file,
        signing_key_file=creds.signing_key_file,
        ledger_file=tmp_path / "keyservice" / "shred-ledger.ndjson",
        key_ttl_s=60,
        allow_volatile=False,
    )


@pytest.fixture
async def restricted(settings: Settings, login: tuple[str, str]) -> AsyncIterator[Redis]:
    """A raw client logged in as the key service's user."""
    client = connect_redis(settings.keystore_redis_url, login[1], username=login[0])
    yield client
    await client.aclose()


async def test_the_key_service_runs_end_to_end_as_its_restricted_user(
    service: KeyService, make_client: MakeClient, options: ServiceOptions, creds: Credentials
) -> None:
    assert await service.redis.acl_whoami() == options.redis_username
    encryptor, admin = make_client("encryptor"), make_client("admin")
    users = [f"acl-{n}" for n in range(1000)]
    grant = await encryptor.encrypt_keys(users)
    assert set(grant.keys) == set(users)
    receipt = await admin.shred("acl-7")  # destroys the keys, then rewrites the AOF (INFO, BGREWRITEAOF)
    assert receipt.versions_destroyed == [1]
    assert (await encryptor.encrypt_keys(["acl-7"], use_cache=False)).refused == {"acl-7": "shredded"}
    assert await admin.rotate("acl-8") == 2
    records = await admin.audit(user_id="acl-7")
    assert [r.action for r in records] == ["encrypt", "shred", "encrypt"]  # the last one refused
    result = verify_chain(
        await service.audit.entries(), load_private_key(creds.signing_key_file).public_key()
    )
    assert result.ok, result.problems


@pytest.mark.parametrize(
    "command",
    [
        ("CONFIG", "SET", "appendfsync", "always"),
        ("ACL", "SETUSER", "pulseseal-acl-test-intruder", "on", "nopass", "~*", "+@all"),
        ("ACL", "LIST"),
        ("ACL", "DELUSER", "default"),
        ("MONITOR",),
        ("KEYS", "*"),
        ("CLIENT", "LIST"),
        ("GET", "elsewhere:secret"),
        ("SET", "elsewhere:forged", "1"),
        ("XADD", "elsewhere:audit", "*", "r", "{}"),
        ("PUBLISH", "pulseseal:channel", "x"),
    ],
    ids=lambda c: " ".join(c[:2]),
)
async def test_the_restricted_user_is_refused_what_the_key_service_never_needs(
    restricted: Redis, command: tuple[str, ...]
) -> None:
    with pytest.raises(NoPermissionError):
        await restricted.execute_command(*command)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    "command",
    [
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("SHUTDOWN", "NOSAVE"),
        ("DEBUG", "SLEEP", "0"),
        ("SWAPDB", "0", "1"),
        ("CONFIG", "RESETSTAT"),
        ("REPLICAOF", "127.0.0.1", "1"),
        ("SAVE",),
        ("BGSAVE",),
        ("MODULE", "LIST"),
    ],
    ids=lambda c: c[0],
)
async def test_destructive_commands_are_refused_to_the_restricted_user(
    keystore_redis_url: str, login: tuple[str, str], command: tuple[str, ...]
) -> None:
    # Asked of the server's ACL with ACL DRYRUN (by the `default` user) rather than run: were the rule
    # wrong, running them would wipe or stop the key store every test session shares.
    admin = Redis.from_url(keystore_redis_url)
    try:
        verdict = await admin.execute_command("ACL", "DRYRUN", login[0], *command)  # type: ignore[no-untyped-call]
        assert await admin.execute_command("ACL", "DRYRUN", "default", *command) == b"OK"  # type: ignore[no-untyped-call]
    finally:
        await admin.aclose()
    assert b"no permissions" in verdict


async def test_the_restricted_user_cannot_read_the_default_users_password(restricted: Redis) -> None:
    # It may run CONFIG GET (the durability and snapshot checks), so requirepass must be empty: the
    # `default` user's password lives in its ACL instead (infra/redis.sh).
    assert await restricted.config_get("requirepass") in ({"requirepass": ""}, {b"requirepass": b""})


async def test_a_prefix_outside_the_users_key_pattern_is_refused_at_start(options: ServiceOptions) -> None:
    with pytest.raises(StartupRefused, match="may not use keys under the prefix"):
        await open_service(replace(options, prefix=f"elsewhere:{secrets.token_hex(4)}:"))


async def test_a_wrong_password_for_the_user_names_the_fix(options: ServiceOptions) -> None:
    with pytest.raises(StartupRefused, match=r"refused user .*pulseseal services up"):
        await open_service(replace(options, redis_password="not-its-password"))  # nosec B106  # wrong on purpose


def test_the_login_falls_back_to_the_default_user_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    settings = Settings(home=tmp_path)
    assert keyservice_redis_login(settings) == (None, None)  # no password at all: nothing to fall back from
    assert caplog.text == ""
    default_file = credentials / "keystore-redis.password"
    default_file.write_text("default-secret\n")
    default_file.chmod(0o600)
    assert keyservice_redis_login(settings) == (None, "default-secret")
    assert "pulseseal services up" in caplog.text
    own = credentials / "keystore-redis-keyservice.password"
    own.write_text("own-secret\n")
    own.chmod(0o600)
    assert keyservice_redis_login(settings) == ("pulseseal-keyservice", "own-secret")
    named = settings.model_copy(update={"keystore_redis_username": "ks-2"})
    assert keyservice_redis_login(named) == ("ks-2", "own-secret")
    with_url = settings.model_copy(update={"keystore_redis_url": "redis://someone:inurl@127.0.0.1:6380/0"})
    assert keyservice_redis_login(with_url) == (None, None)  # the URL's user and password win
    own.chmod(0o640)
    with pytest.raises(StartupRefused, match="chmod 600"):
        keyservice_redis_login(settings)
