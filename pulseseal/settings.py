"""Every PulseSeal setting, read from `PULSESEAL_*` environment variables.

One class for all components keeps the README's configuration table in one place; each component reads
only the fields it needs. Paths that are not given explicitly are derived from `PULSESEAL_HOME`, which is
relative to the working directory when it is relative (docs/contract.md §8).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AnyUrl, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pulseseal import amqp_urls as amqp_list
from pulseseal.urllists import redact_url as redact_one
from pulseseal.urllists import split_urls

KEYSERVICE_SCHEMES = frozenset({"http", "https"})


class Settings(BaseSettings):
    """PulseSeal configuration; every field is also the variable `PULSESEAL_<FIELD NAME IN CAPITALS>`."""

    # hide_input_in_errors: a refused value (a URL with its password) is never repeated in the error.
    model_config = SettingsConfigDict(
        env_prefix="PULSESEAL_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    # --- servers (docs/contract.md §2) ---
    amqp_url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672/",
        description="RabbitMQ URL, or one URL per node of a cluster separated by commas (clients fail over).",
    )
    mongo_url: str = Field("mongodb://127.0.0.1:27017/", description="MongoDB (or FerretDB) URL.")
    mongo_db: str = Field("pulseseal", description="Database holding `sealed_events`.")
    ferretdb_backend: Literal["postgresql", "sqlite"] = Field(
        "postgresql",
        description="Where the local FerretDB stores: `postgresql` (indexed replay) or `sqlite` (one writer, no index used).",
    )
    ferretdb_postgresql_url: str = Field(
        "postgresql://pulseseal@127.0.0.1:5433/ferretdb",
        description="The PostgreSQL behind FerretDB, where PulseSeal adds the indexes FerretDB cannot make.",
    )
    ferretdb_postgresql_password_file: Path | None = Field(
        None,
        description="Its password, unless the URL has one (default `HOME/credentials/postgres.password`).",
    )
    keystore_redis_url: str = Field(
        "redis://127.0.0.1:6380/0", description="The key service's own Redis (AOF on). Key service only."
    )
    keystore_redis_password_file: Path | None = Field(
        None,
        description="Password of the key-store Redis's `default` user, unless the URL carries one "
        "(default `HOME/credentials/keystore-redis.password`). Admin tools; the key service only when "
        "its own user's file is missing.",
    )
    keystore_redis_username: str = Field(
        "pulseseal-keyservice",
        min_length=1,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="The key-store Redis's restricted ACL user the key service connects as (infra/redis.sh "
        "adds it), unless the URL carries a password.",
    )
    keystore_redis_keyservice_password_file: Path | None = Field(
        None,
        description="That user's password (default `HOME/credentials/keystore-redis-keyservice.password`); "
        "when missing, the key service connects as the `default` user and says so.",
    )
    keyservice_url: str = Field(
        "http://127.0.0.1:8700",
        description="Where callers reach the key service: one URL, or a comma-separated list of replicas "
        "(requests are spread over them and fail over to the next).",
    )
    gateway_url: str = Field("http://127.0.0.1:8080", description="Where clients reach the gateway.")
    home: Path = Field(Path(".pulseseal"), description="Dev credentials and local service data.")

    # --- key service ---
    keyservice_host: str = Field("127.0.0.1", description="Address the key service listens on.")
    keyservice_port: int = Field(8700, description="Port the key service listens on.")
    keyservice_tls_cert: Path | None = Field(None, description="PEM certificate: serve HTTPS.")
    keyservice_tls_key: Path | None = Field(None, description="PEM private key for the certificate.")
    keyservice_ca: Path | None = Field(None, description="CA bundle clients verify the key service with.")
    master_key_file: Path | None = Field(
        None, description="Base64 master key file (default `HOME/credentials/master.key`)."
    )
    master_key: SecretStr | None = Field(
        None,
        description="Base64 master key given directly (takes precedence over the file; never printed).",
    )
    callers_file: Path | None = Field(
        None, description="Key service callers file (default `HOME/credentials/callers.json`)."
    )
    keyservice_signing_key: Path | None = Field(
        None,
        description="Ed25519 key that signs erasure receipts (default `HOME/credentials/keyservice.pem`).",
    )
    keyservice_body_timeout_s: float = Field(
        10.0, gt=0, description="A request's head, then its body, must arrive within this long, else 408."
    )
    keyservice_refusal_rate: float = Field(
        50.0, ge=50, description="Refused requests a second one peer may make before 429 (contract §6)."
    )
    keyservice_refusal_burst: int = Field(
        200, ge=200, description="Refused requests one peer may make in a burst before 429 (contract §6)."
    )
    audit_stream_max: int = Field(
        100_000,
        ge=100,
        description="Audit records kept in the key-store Redis; older ones move to the archive.",
    )
    audit_archive_file: Path | None = Field(
        None,
        description="Where audit records beyond `AUDIT_STREAM_MAX` go (default `HOME/keyservice/audit-archive.ndjson`).",
    )
    key_ttl_s: int = Field(60, ge=1, le=3600, description="`expires_in` granted with each data key.")
    keystore_prefix: str = Field(
        "pulseseal:ks:", description="Prefix of every key-store Redis key (tests use a unique one)."
    )
    key_seal_budget: int = Field(
        2**24,
        ge=1,
        description="Seals per key version after which the key service rotates the user's key by itself.",
    )
    shred_ledger_file: Path | None = Field(
        None,
        description=(
            "Old per-process shred ledger file, imported once into the ledger in the key store at start "
            "(default `HOME/keyservice/shred-ledger.ndjson`)."
        ),
    )
    backup_retention_days: int = Field(
        30,
        ge=1,
        le=3650,
        description="A `pulseseal keys backup` file is restorable this long; then its backup key is destroyed.",
    )

    # --- callers of the key service ---
    caller_key_file: Path | None = Field(
        None, description="This process's caller private key (default `HOME/credentials/<role>.pem`)."
    )
    key_cache_size: int = Field(100_000, ge=1, description="Data keys a caller holds at most (LRU).")

    # --- encryptor ---
    metrics_host: str = Field("127.0.0.1", description="Address the encryptor's `/metrics` listens on.")
    encryptor_metrics_port: int = Field(9464, description="Prometheus port of the encryptor.")
    batch_max_events: int = Field(2000, ge=1, description="Flush a micro-batch at this many events.")
    batch_max_ms: int = Field(50, ge=1, description="Flush a micro-batch this long after its first event.")
    prefetch: int = Field(64, ge=1, description="Unacknowledged messages the encryptor holds at most.")
    flushes_in_flight: int = Field(
        2, ge=1, description="Micro-batches the encryptor prepares and writes at once (one waits on MongoDB)."
    )
    delivery_limit: int = Field(5, ge=1, description="`x-delivery-limit` of the `pulseseal.seal` queue.")
    encryptor_signing_key: Path | None = Field(
        None,
        description="Ed25519 key that signs batch manifests (default `HOME/credentials/encryptor-signing.pem`).",
    )
    manifest_signer: str = Field(
        "encryptor", min_length=1, max_length=64, description="Name of that key in the manifest keys file."
    )
    key_usage_report_s: float = Field(
        5.0, gt=0, description="How often the encryptor reports seals per key version to the key service."
    )
    mongo_write_concern: Literal["journaled", "majority", "acknowledged"] = Field(
        "journaled", description="Write concern for sealed documents."
    )

    # --- replay and verify ---
    manifest_keys_file: Path | None = Field(
        None,
        description="Public keys of manifest signers (default `HOME/credentials/manifest-keys.json`).",
    )

    # --- gateway ---
    gateway_host: str = Field("127.0.0.1", description="Address the gateway listens on.")
    gateway_port: int = Field(8080, description="Port the gateway listens on.")
    gateway_jwt_secret_file: Path | None = Field(
        None, description="HS256 user-token secret (default `HOME/credentials/gateway-jwt.secret`)."
    )
    gateway_jwks_file: Path | None = Field(None, description="JWKS file with asymmetric user-token keys.")
    gateway_jwt_audience: str = Field("authenticated", description="Required `aud` of user tokens.")
    gateway_confirm_timeout_s: float = Field(5.0, gt=0, description="Broker confirm wait before a 503.")
    gateway_body_timeout_s: float = Field(
        10.0, gt=0, description="A request body must arrive within this long, else 408 (slow clients)."
    )
    gateway_jwt_leeway_s: float = Field(
        30.0, ge=0, le=300, description="Clock skew tolerated on user tokens' `exp` and `nbf`."
    )

    # --- importer ---
    import_batch_events: int = Field(
        1000, ge=1, le=1000, description="Events per NDJSON message the importer publishes."
    )
    import_in_flight: int = Field(
        16, ge=1, le=1000, description="Messages the importer keeps unconfirmed at most (pipelining)."
    )
    import_retry_s: float = Field(
        60.0, ge=0, description="How long the importer retries a lost broker before stopping (resumable)."
    )

    @field_validator("keyservice_url")
    @classmethod
    def _keyservice_urls_valid(cls, value: str) -> str:
        split_urls(value, setting="PULSESEAL_KEYSERVICE_URL", schemes=KEYSERVICE_SCHEMES)
        return value

    @property
    def keyservice_urls(self) -> tuple[str, ...]:
        """The key-service replicas of `keyservice_url`, in the order given (validated at load)."""
        return split_urls(self.keyservice_url, setting="PULSESEAL_KEYSERVICE_URL", schemes=KEYSERVICE_SCHEMES)

    @field_validator("amqp_url")
    @classmethod
    def _amqp_urls(cls, value: str) -> str:
        amqp_list.split_urls(value)  # raises AmqpUrlInvalid (a ValueError) naming which URL is wrong
        return value

    @property
    def amqp_urls(self) -> list[str]:
        """The RabbitMQ URLs of `amqp_url`, one per node."""
        return amqp_list.split_urls(self.amqp_url)

    @cached_property
    def home_dir(self) -> Path:
        """`PULSESEAL_HOME` as an absolute path."""
        return self.home.expanduser().resolve()

    @cached_property
    def credentials_dir(self) -> Path:
        """Where dev credentials live."""
        return self.home_dir / "credentials"

    @property
    def keystore_redis_password_path(self) -> Path:
        """Where the key-store Redis password is read from (and `services up` creates it)."""
        return self.credential(self.keystore_redis_password_file, "keystore-redis.password")

    @property
    def keystore_redis_keyservice_password_path(self) -> Path:
        """Where the key service's own key-store Redis user's password is read from (`services up` makes it)."""
        return self.credential(
            self.keystore_redis_keyservice_password_file, "keystore-redis-keyservice.password"
        )

    def credential(self, explicit: Path | None, name: str) -> Path:
        """An explicitly configured credential path, or the dev default `HOME/credentials/<name>`."""
        return explicit if explicit is not None else self.credentials_dir / name


def load_settings() -> Settings:
    """Read the settings from the environment."""
    return Settings()


def redact_url(url: str | AnyUrl) -> str:
    """A URL (or a list of them) with every password replaced, safe to log or print."""
    return redact_one(str(url))
