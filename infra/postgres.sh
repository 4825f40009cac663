#!/usr/bin/env bash
# The PostgreSQL cluster behind FerretDB (its `postgresql` backend): up | down | status.
#
# Our own cluster, not Debian's: `initdb` into $PULSESEAL_HOME/postgres/data, listening on loopback only
# (port PULSESEAL_POSTGRES_PORT, default 5433, so a system PostgreSQL on 5432 is never touched), one
# role `pulseseal` with a generated password (credentials/postgres.password, 0600) and one database
# `ferretdb`. PostgreSQL refuses to run as root, so as root the cluster runs as Debian's `postgres` user.
# `mongo.sh` runs this before FerretDB; `pulseseal services` never calls it directly.
set -euo pipefail
# shellcheck source=infra/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PS_PROCESS=postgres # what our server's command line contains
NAME=postgres
PORT="${PULSESEAL_POSTGRES_PORT:-5433}"
PGBIN="${PULSESEAL_POSTGRES_BIN_DIR:-/usr/lib/postgresql/15/bin}"
DIR="$PS_HOME_DIR/postgres"
DATA="$DIR/data"
PIDFILE="$DIR/postgres.pid" # the first line of PostgreSQL's own postmaster.pid, which holds more
LOG="$DIR/postgres.log"
PASSWORD_FILE="$PS_HOME_DIR/credentials/postgres.password"
ROLE=pulseseal
DATABASE=ferretdb

# as_owner CMD...: run CMD as the cluster's owner (Debian's `postgres` when we are root, else ourselves).
as_owner() {
    if ps_is_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# sync_pidfile: copy the postmaster's pid (first line of postmaster.pid) for ps_pid_alive.
sync_pidfile() {
    if [ -s "$DATA/postmaster.pid" ]; then
        head -n 1 "$DATA/postmaster.pid" >"$PIDFILE" 2>/dev/null || true
    else
        rm -f "$PIDFILE"
    fi
}

ready() { "$PGBIN/pg_isready" -q -h "$PS_HOST" -p "$PORT" -d "$DATABASE" -U "$ROLE" -t 2; }

# The password of the `pulseseal` role: 32 hex characters (URL-safe, so FerretDB's URL needs no escaping).
ensure_password() {
    [ -s "$PASSWORD_FILE" ] && return 0
    mkdir -p "$(dirname "$PASSWORD_FILE")"
    chmod 700 "$(dirname "$PASSWORD_FILE")"
    (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$PASSWORD_FILE")
}

# ensure_reachable: as root, the cluster runs as `postgres`, which must be able to walk down to $DIR. A
# home under a private directory (a `mktemp -d`, /root) blocks it; then each blocking directory above
# $DIR gets one ACL entry letting that one user through (search only: it cannot list or read them).
ensure_reachable() {
    local path="" part
    ps_is_root || return 0
    runuser -u postgres -- test -x "$DIR" 2>/dev/null && return 0
    command -v setfacl >/dev/null || ps_require_packages acl
    IFS=/ read -ra parts <<<"${DIR#/}"
    for part in "${parts[@]}"; do
        path="$path/$part"
        if ! runuser -u postgres -- test -x "$path" 2>/dev/null; then
            setfacl -m u:postgres:x "$path" || die "$NAME: cannot let user postgres traverse $path — set PULSESEAL_HOME under a directory others may traverse"
            say "$NAME: let user postgres traverse $path (ACL u:postgres:x), to reach $DIR"
        fi
    done
    runuser -u postgres -- test -x "$DIR" ||
        die "$NAME: user postgres cannot reach $DIR — set PULSESEAL_HOME under a directory others may traverse"
}

cluster_init() {
    local initlog="$PS_LOG_DIR/postgres-initdb.log"
    mkdir -p "$DIR"
    ps_is_root && chown postgres:postgres "$DIR"
    ensure_reachable
    say "$NAME: creating the cluster in $DATA (log: $initlog)"
    # The password goes in through a file only the cluster's owner can read (never an argument, which
    # `ps` shows), removed as soon as initdb has hashed it.
    local pwfile="$DIR/.initdb-password"
    (umask 077 && tr -d '\n' <"$PASSWORD_FILE" >"$pwfile")
    ps_is_root && chown postgres:postgres "$pwfile"
    local rc=0
    as_owner "$PGBIN/initdb" -D "$DATA" -U "$ROLE" --pwfile="$pwfile" \
        --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
        >>"$initlog" 2>&1 || rc=$?
    rm -f "$pwfile"
    [ "$rc" -eq 0 ] || die "$NAME: initdb failed — see $initlog"
    # Why these settings:
    # - listen on loopback only; the socket lives in the data directory (not /var/run/postgresql);
    # - plan_cache_mode=force_custom_plan: FerretDB sends `_jsonb -> $1 @> $2` with the FIELD NAME as a
    #   parameter, so only a plan made with the values can match the GIN expression indexes
    #   `(_jsonb->'user_id')`; a generic plan (which PostgreSQL settles on after 5 runs of a prepared
    #   statement) is always a sequential scan. pulseseal/ferretdb_sql.py sets the same per database.
    cat >>"$DATA/postgresql.conf" <<EOF

# --- PulseSeal (infra/postgres.sh) ---
listen_addresses = '$PS_HOST'
port = $PORT
unix_socket_directories = '$DATA'
plan_cache_mode = force_custom_plan
logging_collector = off
EOF
}

start() {
    ensure_reachable
    rm -f "$DATA/postmaster.pid"
    : >>"$LOG"
    ps_is_root && chown postgres:postgres "$LOG"
    say "$NAME: starting PostgreSQL on $PS_HOST:$PORT (data: $DATA, log: $LOG)"
    as_owner "$PGBIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t "$PS_TIMEOUT" start \
        >>"$PS_LOG_DIR/postgres-startup.log" 2>&1 || die "$NAME: PostgreSQL did not start — see $LOG"
    sync_pidfile
}

ensure_database() {
    local exists
    exists="$(PGPASSWORD="$(cat "$PASSWORD_FILE")" "$PGBIN/psql" -h "$PS_HOST" -p "$PORT" -U "$ROLE" \
        -d postgres -tAqc "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'")" ||
        die "$NAME: cannot log in as $ROLE on port $PORT — see $LOG"
    if [ "$exists" != 1 ]; then
        PGPASSWORD="$(cat "$PASSWORD_FILE")" "$PGBIN/createdb" -h "$PS_HOST" -p "$PORT" -U "$ROLE" \
            "$DATABASE" >>"$PS_LOG_DIR/postgres-startup.log" 2>&1 || die "$NAME: createdb $DATABASE failed"
    fi
}

cmd_up() {
    local pid
    [ -x "$PGBIN/postgres" ] || ps_require_packages postgresql-15
    [ -x "$PGBIN/postgres" ] || die "$NAME: $PGBIN/postgres is missing — install postgresql-15 or set PULSESEAL_POSTGRES_BIN_DIR"
    ensure_password
    sync_pidfile
    if pid="$(ps_pid_alive "$PIDFILE")"; then
        ps_wait_ready "$NAME" "$PIDFILE" "$LOG" ready
        ensure_database
        say "$NAME: already running (pid $pid, port $PORT)"
        return 0
    fi
    ps_port_open "$PORT" &&
        die "port $PS_HOST:$PORT is taken$(ps_port_owner "$PORT") — free it or set PULSESEAL_POSTGRES_PORT"
    [ -s "$DATA/PG_VERSION" ] || cluster_init
    start
    ps_wait_ready "$NAME" "$PIDFILE" "$LOG" ready
    ensure_database
    say "$NAME: ready (pid $(ps_pid_alive "$PIDFILE"), port $PORT)"
}

cmd_down() {
    local pid
    sync_pidfile
    if ! pid="$(ps_pid_alive "$PIDFILE")"; then
        say "$NAME: not running (nothing of ours to stop)"
        return 0
    fi
    # Fast shutdown: roll back open transactions, checkpoint, stop — nothing committed is lost.
    as_owner "$PGBIN/pg_ctl" -D "$DATA" -m fast -w -t "$PS_STOP_TIMEOUT" stop \
        >>"$PS_LOG_DIR/postgres-startup.log" 2>&1 || ps_stop "$NAME" "$PIDFILE"
    rm -f "$PIDFILE"
    say "$NAME: stopped (pid $pid)"
}

cmd_status() {
    local pid=""
    sync_pidfile
    pid="$(ps_pid_alive "$PIDFILE")" || pid=""
    if [ -n "$pid" ] && ready; then
        ps_status_line "$NAME" "ready" "$PORT" "$pid" "$DATA"
    else
        ps_status_line "$NAME" "${pid:+running, }not ready" "$PORT" "$pid" "$DATA"
        return 1
    fi
}

case "${1:-}" in
    up | down) "cmd_$1" ;;
    status) cmd_status || exit 1 ;;
    *) die "usage: $(basename "$0") up|down|status" ;;
esac
