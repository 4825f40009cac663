"""The indexes FerretDB on PostgreSQL needs but cannot make: GIN on `user_id` and `_id`, made in SQL.

FerretDB 1.24 pushes an equality filter down as JSONB containment with the field name as a parameter,
`_jsonb -> $1 @> $2`. The B-tree indexes it builds for `create_index` (`(_jsonb->'user_id')`, ...) can
never serve `@>`, so every per-user find is a sequential scan, linear in the collection. A GIN index
`USING gin ((_jsonb->'user_id') jsonb_path_ops)` serves it — but only in a plan made with the
parameter values, because only then is `_jsonb -> $1` the indexed expression `_jsonb -> 'user_id'`.
PostgreSQL switches a prepared statement to a generic plan after five runs when that looks no worse,
and FerretDB caches its statements per connection, so we set `plan_cache_mode = force_custom_plan` on
the database and, the first time we do, end FerretDB's open sessions (its pool reconnects) so that no
statement keeps a generic plan: the plan reset.

The indexes live on FerretDB's table, not in its metadata: `listIndexes` does not show them, and
dropping the collection drops them — `pulseseal.mongo.ensure_indexes` makes them again every time it
makes the collection's own index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from pulseseal.settings import Settings

# Mongo field -> suffix of our index's name (PostgreSQL index names are per schema, so the table's
# name, unique in its schema, comes first).
GIN_FIELDS = {"user_id": "ps_user_id_gin", "_id": "ps_id_gin"}
FERRETDB_APPLICATION_NAME = "FerretDB"  # what FerretDB's pool sets on every session
METADATA_TABLE = "_ferretdb_database_metadata"
CONNECT_TIMEOUT_S = 5
# A GIN index gathers new entries in a "pending list" that every search scans in full until it is merged
# (at this size, or by vacuum). At PostgreSQL's default of 4 MB that scan cost 17-18 ms per find on
# 300k rows, and more as the collection grew (a find by `_id` took 37 ms among 1M documents); at 128 kB
# it costs 0.3-0.7 ms, while inserts stay close to the default's speed (7.9 s vs 6.5 s for 300k rows;
# `fastupdate = off` took 13.8 s). Measured on the 2-core dev machine, docs/scaling.md.
PENDING_LIST_KB = 128


class StoreIndexError(Exception):
    """The SQL indexes under FerretDB could not be made or verified (message names what to do)."""


class PostgresUnreachable(StoreIndexError, ConnectionError):
    """FerretDB's PostgreSQL did not let us in (down, starting, or wrong credentials): worth a retry."""


@dataclass(frozen=True)
class PostgresTarget:
    """Where FerretDB's PostgreSQL is and how to log in; the password never shows in `repr`.

    The password is the URL's, or else the file's, read only when we connect: a store that turns out to
    be MongoDB (no FerretDB, no PostgreSQL) never needs the file.
    """

    url: str
    password_file: Path | None = None

    def password(self) -> str | None:
        """The password to log in with (None: the URL's own, or none).

        Raises:
            StoreIndexError: The password file cannot be read.
        """
        if self.password_file is None or urlsplit(self.url).password:
            return None
        try:
            return self.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise StoreIndexError(
                f"cannot read the PostgreSQL password file {self.password_file} ({exc.strerror}) — run "
                "`pulseseal services up` or set PULSESEAL_FERRETDB_POSTGRESQL_PASSWORD_FILE"
            ) from None


@dataclass(frozen=True)
class GinIndex:
    """One of our GIN indexes as PostgreSQL reports it."""

    name: str
    definition: str
    valid: bool
    options: tuple[str, ...] = ()


def postgres_target(settings: Settings) -> PostgresTarget | None:
    """The PostgreSQL to index, or None when the local FerretDB runs on SQLite."""
    if settings.ferretdb_backend != "postgresql":
        return None
    return PostgresTarget(
        settings.ferretdb_postgresql_url,
        settings.credential(settings.ferretdb_postgresql_password_file, "postgres.password"),
    )


def child_env(target: PostgresTarget | None) -> dict[str, str]:
    """The settings that let a child process with another `PULSESEAL_HOME` reach the same PostgreSQL."""
    if target is None:
        return {"PULSESEAL_FERRETDB_BACKEND": "sqlite"}
    env = {"PULSESEAL_FERRETDB_BACKEND": "postgresql", "PULSESEAL_FERRETDB_POSTGRESQL_URL": target.url}
    if target.password_file is not None:
        env["PULSESEAL_FERRETDB_POSTGRESQL_PASSWORD_FILE"] = str(target.password_file)
    return env


async def _connect(target: PostgresTarget) -> psycopg.AsyncConnection[tuple[object, ...]]:
    try:
        return await psycopg.AsyncConnection.connect(
            target.url, password=target.password(), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
        )
    except psycopg.OperationalError:
        # The driver's message can quote the connection string; name the place, not the secret.
        host = urlsplit(target.url).hostname
        port = urlsplit(target.url).port
        raise PostgresUnreachable(
            f"cannot log in to FerretDB's PostgreSQL at {host}:{port} — run `pulseseal services up`, "
            "or set PULSESEAL_FERRETDB_BACKEND=sqlite if FerretDB runs on SQLite"
        ) from None


async def collection_table(
    conn: psycopg.AsyncConnection[tuple[object, ...]], database: str, collection: str
) -> str:
    """The PostgreSQL table FerretDB keeps `database.collection` in (schema = the database's name).

    Raises:
        StoreIndexError: FerretDB has no such collection.
    """
    query = sql.SQL("SELECT _jsonb->>'table' FROM {} WHERE _jsonb->'_id' = to_jsonb(%s::text)").format(
        sql.Identifier(database, METADATA_TABLE)
    )
    try:
        row = await (await conn.execute(query, (collection,))).fetchone()
    except psycopg.errors.UndefinedTable:
        row = None
    if row is None or not isinstance(row[0], str):
        raise StoreIndexError(f"FerretDB has no collection {database}.{collection} in PostgreSQL")
    return row[0]


async def gin_indexes(target: PostgresTarget, database: str, collection: str) -> list[GinIndex]:
    """Our GIN indexes on the collection's table, as PostgreSQL has them (for checks and tests).

    Raises:
        StoreIndexError: PostgreSQL cannot be reached or the collection does not exist.
    """
    async with await _connect(target) as conn:
        table = await collection_table(conn, database, collection)
        return await _gin_indexes(conn, database, table)


async def _gin_indexes(
    conn: psycopg.AsyncConnection[tuple[object, ...]], schema: str, table: str
) -> list[GinIndex]:
    cur = await conn.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid, coalesce(c.reloptions, '{}')"
        " FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid"
        " JOIN pg_namespace n ON n.oid = t.relnamespace"
        " WHERE n.nspname = %s AND t.relname = %s AND c.relname LIKE %s ORDER BY c.relname",
        (schema, table, "%\\_ps\\_%\\_gin"),
    )
    return [
        GinIndex(str(name), str(definition), bool(valid), tuple(cast(list[str], options)))
        for name, definition, valid, options in await cur.fetchall()
    ]


async def ensure_gin_indexes(target: PostgresTarget, database: str, collection: str) -> list[GinIndex]:
    """Make (if missing) and verify the GIN indexes on `user_id` and `_id`; reset FerretDB's plans once.

    Idempotent and cheap when everything is in place. Creating an index on a large collection takes a
    lock that holds writes back while it builds; PulseSeal makes them when it makes the collection.

    Returns:
        The indexes, each valid.

    Raises:
        StoreIndexError: PostgreSQL cannot be reached, the collection does not exist, or an index is
            missing or invalid after creation.
    """
    async with await _connect(target) as conn:
        table = await collection_table(conn, database, collection)
        for mongo_field, suffix in GIN_FIELDS.items():
            await conn.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {} ON {} USING gin ((_jsonb -> {}) jsonb_path_ops)"
                    " WITH (gin_pending_list_limit = {})"
                ).format(
                    sql.Identifier(_index_name(table, suffix)),
                    sql.Identifier(database, table),
                    sql.Literal(mongo_field),
                    sql.Literal(PENDING_LIST_KB),
                )
            )
            # Indexes made before this setting existed get it too (idempotent, a brief lock).
            await conn.execute(
                sql.SQL("ALTER INDEX {} SET (gin_pending_list_limit = {})").format(
                    sql.Identifier(database, _index_name(table, suffix)), sql.Literal(PENDING_LIST_KB)
                )
            )
        await force_custom_plans(conn)
        indexes = await _gin_indexes(conn, database, table)
    expected = {_index_name(table, suffix) for suffix in GIN_FIELDS.values()}
    good = {index.name for index in indexes if index.valid}
    if not expected <= good:
        raise StoreIndexError(
            f"the GIN indexes on {database}.{collection} are missing or invalid after creation: "
            f"{sorted(expected - good)} — drop them in PostgreSQL and restart the encryptor"
        )
    return indexes


def _index_name(table: str, suffix: str) -> str:
    # FerretDB's table names are at most 63 bytes already; keep the suffix whole, which is what we match on.
    return f"{table[: 63 - len(suffix) - 1]}_{suffix}"


async def force_custom_plans(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
    """Make every FerretDB session plan with the values (see the module docstring); reset plans once."""
    row = await (await conn.execute("SELECT current_setting('plan_cache_mode')")).fetchone()
    if row is not None and row[0] == "force_custom_plan":
        return  # our own cluster sets it in postgresql.conf, or we set it on the database earlier
    dbname = await (await conn.execute("SELECT current_database()")).fetchone()
    assert dbname is not None  # current_database() always answers
    try:
        await conn.execute(
            sql.SQL("ALTER DATABASE {} SET plan_cache_mode = force_custom_plan").format(
                sql.Identifier(str(dbname[0]))
            )
        )
    except psycopg.errors.InsufficientPrivilege:
        raise StoreIndexError(
            "cannot set plan_cache_mode = force_custom_plan on FerretDB's PostgreSQL database (not its "
            "owner) — set it in postgresql.conf, or FerretDB will not use the GIN indexes"
        ) from None
    # Sessions read per-database settings when they start: end FerretDB's, its pool makes new ones.
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = %s AND pid <> pg_backend_pid()",
        (FERRETDB_APPLICATION_NAME,),
    )
