#!/usr/bin/env bash
# The MongoDB-compatible server: FerretDB on PostgreSQL (default) or SQLite: up | down | status.
#
# FerretDB speaks the MongoDB wire protocol; PULSESEAL_FERRETDB_BACKEND picks where it stores:
# `postgresql` (default) — our own PostgreSQL cluster run by postgres.sh, which this script starts first
# and stops last; `sqlite` — files under $PULSESEAL_HOME/ferretdb/data, no second server, but one writer
# and no index FerretDB can use (infra/README.md says what that costs). Development needs no MongoDB
# licence, package or container; `infra/compose.yaml` runs a real MongoDB instead on the same port.
set -euo pipefail
# shellcheck source=infra/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PS_PROCESS=ferretdb # what our server's command line contains
NAME=mongo
PORT="${PULSESEAL_MONGO_PORT:-27017}"
DEBUG_ADDR="${PULSESEAL_FERRETDB_DEBUG_ADDR:-$PS_HOST:8089}"
DIR="$PS_HOME_DIR/ferretdb"
PIDFILE="$DIR/ferretdb.pid"
LOG="$DIR/ferretdb.log"
BACKEND="${PULSESEAL_FERRETDB_BACKEND:-postgresql}"
case "$BACKEND" in
    postgresql | sqlite) ;;
    *) die "PULSESEAL_FERRETDB_BACKEND=$BACKEND is not a FerretDB backend — use postgresql or sqlite" ;;
esac

# postgres_up: the database behind FerretDB (idempotent: "already running" when it is).
postgres_up() {
    if [ "$BACKEND" = postgresql ]; then
        bash "$PS_INFRA_DIR/postgres.sh" up || exit 2
    fi
}

cmd_up() {
    local pid what rc bin
    if pid="$(ps_pid_alive "$PIDFILE")"; then
        postgres_up
        if ! ps_probe mongo "$PORT" >/dev/null 2>&1; then
            say "$NAME: our FerretDB (pid $pid) is not answering yet — waiting for it"
            ps_wait_ready "$NAME" "$PIDFILE" "$LOG" ps_probe mongo "$PORT"
        fi
        say "$NAME: already running (pid $pid, port $PORT)"
        return 0
    fi
    rc=0
    what="$(ps_probe mongo "$PORT" 2>&1)" || rc=$?
    if [ "$rc" -eq 0 ]; then
        say "$NAME: using $what on port $PORT (not started by us)"
        return 0
    elif [ "$rc" -ne 1 ]; then
        die "port $PS_HOST:$PORT is taken$(ps_port_owner "$PORT"), which is not a MongoDB-compatible server — free it or set PULSESEAL_MONGO_PORT"
    fi
    bin="${PULSESEAL_FERRETDB_BIN:-}"
    if [ -z "$bin" ]; then
        bin="$(bash "$PS_INFRA_DIR/build-ferretdb.sh" --path-only 2>/dev/null)" || {
            say "$NAME: building FerretDB ${PULSESEAL_FERRETDB_VERSION:-v1.24.2} from source (once, 1-2 minutes; log: $PS_LOG_DIR/ferretdb-build.log)"
            bin="$(bash "$PS_INFRA_DIR/build-ferretdb.sh")" || exit 2
        }
    fi
    [ -x "$bin" ] || die "FerretDB binary $bin is not executable — unset PULSESEAL_FERRETDB_BIN or fix the path"
    postgres_up
    mkdir -p "$DIR/data" "$DIR/state"
    rm -f "$PIDFILE"
    local backend_args=(--handler=sqlite --sqlite-url="file:$DIR/data/")
    if [ "$BACKEND" = postgresql ]; then
        # The URL carries the password, so it travels in FerretDB's own environment variable (readable
        # only by its owner), never on the command line that `ps` shows everyone.
        FERRETDB_POSTGRESQL_URL="postgres://pulseseal:$(cat "$PS_HOME_DIR/credentials/postgres.password")@$PS_HOST:${PULSESEAL_POSTGRES_PORT:-5433}/ferretdb"
        export FERRETDB_POSTGRESQL_URL
        backend_args=(--handler=postgresql)
    fi
    say "$NAME: starting FerretDB ($BACKEND) on $PS_HOST:$PORT (log: $LOG)"
    # bash -c writes its own pid, then exec keeps that pid for FerretDB (it has no pidfile option).
    # shellcheck disable=SC2016 # $$, $0 and $@ are for the inner shell
    (setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" "$bin" \
        --listen-addr="$PS_HOST:$PORT" "${backend_args[@]}" \
        --state-dir="$DIR/state" --debug-addr="$DEBUG_ADDR" --telemetry=disable \
        --log-level=info --log-format=text >>"$LOG" 2>&1 </dev/null &)
    unset FERRETDB_POSTGRESQL_URL
    ps_wait_ready "$NAME" "$PIDFILE" "$LOG" ps_probe mongo "$PORT"
    say "$NAME: ready (pid $(ps_pid_alive "$PIDFILE"), port $PORT)"
}

cmd_down() {
    ps_stop "$NAME" "$PIDFILE"
    # Stop our PostgreSQL too when it is there, whichever backend this run was asked for.
    if [ "$BACKEND" = postgresql ] || [ -d "$PS_HOME_DIR/postgres/data" ]; then
        bash "$PS_INFRA_DIR/postgres.sh" down
    fi
}

cmd_status() {
    local pid="" what rc=0 behind=0
    pid="$(ps_pid_alive "$PIDFILE")" || pid=""
    # Our FerretDB is only as ready as the PostgreSQL behind it (a foreign server has its own).
    if [ -n "$pid" ] && [ "$BACKEND" = postgresql ]; then
        bash "$PS_INFRA_DIR/postgres.sh" status || behind=1
    fi
    what="$(ps_probe mongo "$PORT" 2>&1)" || rc=$?
    if [ "$rc" -eq 0 ] && [ -n "$pid" ] && [ "$behind" -eq 0 ]; then
        ps_status_line "$NAME" "ready" "$PORT" "$pid" "$DIR ($BACKEND)"
    elif [ "$rc" -eq 0 ] && [ -z "$pid" ]; then
        ps_status_line "$NAME" "ready (not ours)" "$PORT" "" "$what"
    else
        ps_status_line "$NAME" "${pid:+running, }not ready" "$PORT" "$pid" "$DIR"
        return 1
    fi
}

case "${1:-}" in
    up | down) "cmd_$1" ;;
    status) cmd_status || exit 1 ;;
    *) die "usage: $(basename "$0") up|down|status" ;;
esac
