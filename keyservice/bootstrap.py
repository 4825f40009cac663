"""Starting the key service: load and check everything it needs, or refuse with one clear line.

It refuses to start without a master key, with a master key that does not match the store, during an
unfinished master-key rewrap, on a Redis without AOF (unless volatile was explicitly allowed), on a Redis
whose RDB snapshots it can neither rule out nor switch off, with a callers file or signing key it cannot
load, or with a shred ledger that does not verify. Before serving, it imports an old per-process ledger
file into the ledger in the key store (once), re-applies the shred ledger to the store, and starts the
backup-key sweep.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import AuthenticationError, RedisError

from keyservice.audit import AuditLog
from keyservice.auth import Authenticator
from keyservice.callers import CallerRegistry
from keyservice.client.tokens import load_private_key
from keyservice.compaction import check_no_snapshots
from keyservice.edge import Edge, RefusalLimiter
from keyservice.erasure import DEFAULT_RETENTION_DAYS, Erasure
from keyservice.ledger import ShredLedger, summarize
from keyservice.legacyledger import import_legacy_file
from keyservice.metrics import KeyServiceMetrics
from keyservice.redisuser import check_restricted_user
from keyservice.replay import RedisReplayGuard
from keyservice.service import KeyService
from keyservice.shredguard import ShredGuard
from keyservice.store import KeyStore
from keyservice.wire.errors import KeyServiceError, StartupRefused
from keyservice.wrapping import MasterKey
from pulseseal.secretfiles import SecretFileError, read_secret
from pulseseal.settings import Settings, redact_url

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """Everything the key service needs to start, resolved from settings."""

    redis_url: str
    prefix: str
    master: MasterKey
    callers_file: Path
    signing_key_file: Path
    ledger_file: Path  # an old per-process ledger file, imported into the key store's ledger at start
    key_ttl_s: int
    allow_volatile: bool
    backup_retention_days: int = DEFAULT_RETENTION_DAYS
    redis_password: str | None = field(default=None, repr=False)
    redis_username: str | None = None  # None: the `default` user (or whoever the URL names)
    body_timeout_s: float = 10.0
    refusal_rate: float = 50.0
    refusal_burst: int = 200
    audit_archive_file: Path | None = None
    audit_max_records: int = 100_000


def load_master_key(settings: Settings) -> MasterKey:
    """The master key from `PULSESEAL_MASTER_KEY`, else from the master key file.

    Raises:
        StartupRefused: neither is there, or it is not base64 of 32 bytes.
    """
    if settings.master_key:
        return MasterKey.from_base64(settings.master_key.get_secret_value(), source="PULSESEAL_MASTER_KEY")
    return MasterKey.from_file(settings.credential(settings.master_key_file, "master.key"))


def options_from_settings(settings: Settings, *, allow_volatile: bool = False) -> ServiceOptions:
    """Resolve the key service's options.

    Raises:
        StartupRefused: no usable master key.
    """
    username, password = keyservice_redis_login(settings)
    return ServiceOptions(
        redis_url=settings.keystore_redis_url,
        redis_password=password,
        redis_username=username,
        prefix=settings.keystore_prefix,
        master=load_master_key(settings),
        callers_file=settings.credential(settings.callers_file, "callers.json"),
        signing_key_file=settings.credential(settings.keyservice_signing_key, "keyservice.pem"),
        ledger_file=settings.shred_ledger_file or settings.home_dir / "keyservice" / "shred-ledger.ndjson",
        key_ttl_s=settings.key_ttl_s,
        allow_volatile=allow_volatile,
        backup_retention_days=settings.backup_retention_days,
        body_timeout_s=settings.keyservice_body_timeout_s,
        refusal_rate=settings.keyservice_refusal_rate,
        refusal_burst=settings.keyservice_refusal_burst,
        audit_archive_file=settings.audit_archive_file
        or settings.home_dir / "keyservice" / "audit-archive.ndjson",
        audit_max_records=settings.audit_stream_max,
    )


def keyservice_redis_login(settings: Settings) -> tuple[str | None, str | None]:
    """Who the key service logs into its Redis as: (username, password), None meaning "not given".

    The restricted ACL user (`PULSESEAL_KEYSTORE_REDIS_USERNAME`, infra/redis.sh) with the password in its
    file; a URL that carries a password wins (contract §2) and names its own user. Without that user's file
    the key service falls back to the `default` user and logs a WARNING naming the fix, so that a store
    set up before the restricted user keeps working (no warning when there is no password at all).

    Raises:
        StartupRefused: a password file is accessible by group or others, or unreadable.
    """
    if urlsplit(settings.keystore_redis_url).password is not None:
        return None, None
    path = settings.keystore_redis_keyservice_password_path
    password = _read_password(path)
    if password is not None:
        return settings.keystore_redis_username, password
    fallback = keystore_redis_password(settings)
    if fallback is None:
        return None, None  # no password at all: a store without one (the server says NOAUTH if it wants one)
    log.warning(
        "no password file for the key-store Redis user %s at %s: connecting as the `default` user, which may "
        "run every command; run `pulseseal services up` (it creates the file and adds the user) or set "
        "PULSESEAL_KEYSTORE_REDIS_KEYSERVICE_PASSWORD_FILE",
        settings.keystore_redis_username,
        path,
    )
    return None, fallback


def keystore_redis_password(settings: Settings) -> str | None:
    """The key-store Redis `default` user's password (contract §2): None when the URL carries one or the
    file is missing. Admin tools and tests log in with it; the key service has a user of its own.

    Raises:
        StartupRefused: the password file is accessible by group or others, or unreadable.
    """
    if urlsplit(settings.keystore_redis_url).password is not None:
        return None
    return _read_password(settings.keystore_redis_password_path)


def _read_password(path: Path) -> str | None:
    """A password file's content, stripped; None when the file is missing or empty.

    Raises:
        StartupRefused: the file is accessible by group or others, or unreadable.
    """
    try:
        return read_secret(path).decode("utf-8").strip() or None
    except FileNotFoundError:
        return None
    except SecretFileError as exc:
        raise StartupRefused(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupRefused(
            f"cannot read the key-store Redis password {path}: {type(exc).__name__}"
        ) from None


def authenticated_url(settings: Settings) -> str:
    """The key-store Redis URL with its password in it, for tools that hand the store to another process
    (tests, the benchmark) through one variable. Never log it unredacted (`redact_url`).

    Raises:
        StartupRefused: the password file is too open or unreadable.
    """
    url = settings.keystore_redis_url
    password = keystore_redis_password(settings)
    if password is None:
        return url
    parts = urlsplit(url)
    netloc = (
        f"{quote(parts.username or '', safe='')}:{quote(password, safe='')}@{parts.netloc.rpartition('@')[2]}"
    )
    return urlunsplit(parts._replace(netloc=netloc))


def connect_redis(
    url: str, password: str | None = None, *, username: str | None = None, max_connections: int = 128
) -> Redis:
    """A client of the key-store Redis with the timeouts the service uses (`username` and `password`:
    unless in the URL, whose own win).

    Requests beyond `max_connections` wait for a connection (up to 30 s) instead of failing: a burst of
    1000 shreds or key requests must queue, not answer 503.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        username=username,
        password=password,
        max_connections=max_connections,
        timeout=30,
        decode_responses=False,
        socket_timeout=5,
        socket_connect_timeout=3,
    )
    return Redis.from_pool(pool)


def store_client(options: ServiceOptions, *, max_connections: int = 128) -> Redis:
    """`connect_redis` as the key service logs in: its URL, user and password (the CLI's key-store tools
    use this too, so that they log in as the service does)."""
    return connect_redis(
        options.redis_url,
        options.redis_password,
        username=options.redis_username,
        max_connections=max_connections,
    )


async def open_service(options: ServiceOptions, *, metrics: KeyServiceMetrics | None = None) -> KeyService:
    """Check everything and build a ready `KeyService` (the caller closes it).

    Raises:
        StartupRefused: one clear line naming what is wrong and what to do.
    """
    registry = CallerRegistry.from_file(options.callers_file)
    try:
        signing_key = load_private_key(options.signing_key_file)
    except KeyServiceError as exc:
        raise StartupRefused(f"receipt signing key: {exc.detail}") from None
    redis = store_client(options)
    try:
        return await _open(options, redis, registry, signing_key, metrics)
    except BaseException:
        await redis.aclose()
        raise


async def _open(
    options: ServiceOptions,
    redis: Redis,
    registry: CallerRegistry,
    signing_key: Ed25519PrivateKey,
    metrics: KeyServiceMetrics | None,
) -> KeyService:
    where = redact_url(options.redis_url)
    try:
        await redis.ping()
    except AuthenticationError:
        if options.redis_username is not None:
            raise StartupRefused(
                f"key-store Redis at {where} refused user {options.redis_username} and its password: run "
                "`pulseseal services up` (infra/redis.sh adds the user), or check "
                "PULSESEAL_KEYSTORE_REDIS_KEYSERVICE_PASSWORD_FILE (default "
                "HOME/credentials/keystore-redis-keyservice.password) and PULSESEAL_KEYSTORE_REDIS_USERNAME"
            ) from None
        raise StartupRefused(
            f"key-store Redis at {where} refused our password: check PULSESEAL_KEYSTORE_REDIS_PASSWORD_FILE "
            "(default HOME/credentials/keystore-redis.password) or the password in PULSESEAL_KEYSTORE_REDIS_URL"
        ) from None
    except (RedisError, OSError):
        raise StartupRefused(
            f"key-store Redis at {where} is not answering: start it (`pulseseal services up`) "
            "or set PULSESEAL_KEYSTORE_REDIS_URL"
        ) from None
    if options.redis_username is not None:
        await check_restricted_user(redis, where, options.redis_username, options.prefix)
    store = KeyStore(redis, options.master, prefix=options.prefix)
    ledger = ShredLedger(redis, options.prefix, signing_key)
    try:
        imported = await import_legacy_file(ledger, options.ledger_file, signing_key)
        entries = await ledger.load()
    except KeyServiceError as exc:
        raise StartupRefused(exc.detail) from None
    if imported:
        log.warning(
            "imported %d entries of the old shred ledger file %s into the key store's ledger; the file is no "
            "longer used",
            imported,
            options.ledger_file,
        )
    await check_no_snapshots(redis, where)
    try:
        durable = await store.durability()
        if not durable and not options.allow_volatile:
            raise StartupRefused(
                f"key-store Redis at {where} has no AOF persistence (appendonly no): enable it, or pass "
                "--allow-volatile-keystore for throwaway development data"
            )
        await store.check_master()
        destroyed, reshredded = await store.reapply(summarize(entries))
        fsync = await store.fsync_policy()
    except StartupRefused:
        raise
    except KeyServiceError as exc:
        raise StartupRefused(f"key-store Redis at {where}: {exc.detail}") from None
    if not durable:
        log.warning("key store %s is volatile (no AOF): keys may be lost; development only", where)
    elif fsync not in ("always", None):
        # A key is handed out (and data sealed under it) as soon as Redis answered; with `everysec` a power
        # loss can take the last second or two of new keys with it, and their documents become unreadable.
        log.warning(
            "key store %s has appendfsync %s: keys created within ~2 s of a power loss or OS crash can be "
            "lost; use appendfsync always (docs/reliability.md)",
            where,
            fsync,
        )
    if destroyed or reshredded:
        log.warning(
            "shred ledger re-applied: %d key versions destroyed again, %d users shredded again "
            "(was the key store restored from a backup?)",
            destroyed,
            reshredded,
        )
    log.info(
        "key store %s ready (master key %s, %d callers)", where, options.master.key_id_hex, len(registry)
    )
    # Each shred stream holds a connection blocked in XREAD: they get a pool of their own.
    erasure = Erasure.for_store(
        redis,
        store,
        retention_days=options.backup_retention_days,
        stream_redis=store_client(options, max_connections=10_000),
    )
    erasure.start()
    return KeyService(
        redis=redis,
        store=store,
        authenticator=Authenticator(registry, RedisReplayGuard(redis, options.prefix)),
        audit=AuditLog(
            redis,
            options.prefix,
            signer=signing_key,
            archive=options.audit_archive_file,
            max_records=options.audit_max_records,
        ),
        ledger=ledger,
        signing_key=signing_key,
        metrics=metrics or KeyServiceMetrics(),
        key_ttl_s=options.key_ttl_s,
        require_durable=not options.allow_volatile,
        guard=ShredGuard(ledger, entries),
        erasure=erasure,
        edge=Edge(
            registry,
            body_timeout_s=options.body_timeout_s,
            limiter=RefusalLimiter(options.refusal_rate, options.refusal_burst),
        ),
    )
