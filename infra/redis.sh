#!/usr/bin/env bash
# The key service's own Redis (Debian's redis-server) with AOF persistence: up | down | status.
#
# Data keys rest here (wrapped), so the store must be durable: appendonly yes, appendfsync always — a key
# is used to seal data as soon as Redis answered, so it must be on disk by then (docs/reliability.md).
# And erasure must hold on disk (contract §6): no RDB snapshots (`save ""`), whose dump.rdb would keep a
# shredded user's wrapped keys; the key service rewrites the AOF after every shred instead.
# The key service refuses a store without AOF; so does `up` when it finds someone else's Redis.
#
# Every connection must authenticate (contract §2): the `default` user's password is the file
# $PULSESEAL_KEYSTORE_REDIS_PASSWORD_FILE (default $PULSESEAL_HOME/credentials/keystore-redis.password,
# made by `pulseseal services up`). It reaches redis-server on stdin and redis-cli in REDISCLI_AUTH, never
# on a command line that `ps` shows. Our own server found running without it is restarted with it; a
# server that is not ours is used only when that password works.
#
# The key service itself connects as a restricted ACL user, $PULSESEAL_KEYSTORE_REDIS_USERNAME (default
# `pulseseal-keyservice`), whose password is $PULSESEAL_KEYSTORE_REDIS_KEYSERVICE_PASSWORD_FILE (default
# $PULSESEAL_HOME/credentials/keystore-redis-keyservice.password, also made by `services up`): keys under
# $PULSESEAL_KEYSTORE_REDIS_KEYSERVICE_KEYS (default `pulseseal:*`, which holds the default key prefix
# `pulseseal:ks:` and the tests' `pulseseal:test:…`), no pub/sub channels, every command but Redis's
# @dangerous ones, plus the three of those the key service needs: INFO and CONFIG GET (durability and
# snapshot checks at start) and BGREWRITEAOF (the AOF rewrite after a shred). So a compromised key service
# cannot FLUSHALL, CONFIG SET, SHUTDOWN, MONITOR, change ACLs or touch other keys. The `default` user (admin
# tools, tests, these scripts) keeps every right.
#
# Because the restricted user may run CONFIG GET, the default user's password must not be in the `requirepass`
# setting (CONFIG GET requirepass would hand it over): it is the default user's ACL password instead, given
# as a `user default` line. `up` adds the key-service user (ACL SETUSER, its password on redis-cli's stdin)
# to a running server that lacks it, and moves a running server's requirepass into the default user's ACL
# in one MULTI/EXEC (same password, no moment without one) — both idempotent, no restart. ACL SETUSER adds
# the password to the user's set rather than replacing it, so several checkouts sharing one server each keep
# theirs.
set -euo pipefail
# shellcheck source=infra/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PS_PROCESS=redis-server # what our server's command line contains
NAME=redis
PORT="${PULSESEAL_KEYSTORE_REDIS_PORT:-6380}"
DIR="$PS_HOME_DIR/keystore-redis"
PIDFILE="$DIR/redis.pid"
LOG="$DIR/redis.log"
PASSWORD_FILE="${PULSESEAL_KEYSTORE_REDIS_PASSWORD_FILE:-$PS_HOME_DIR/credentials/keystore-redis.password}"
KS_USER="${PULSESEAL_KEYSTORE_REDIS_USERNAME:-pulseseal-keyservice}"
KS_PASSWORD_FILE="${PULSESEAL_KEYSTORE_REDIS_KEYSERVICE_PASSWORD_FILE:-$PS_HOME_DIR/credentials/keystore-redis-keyservice.password}"
KS_KEYS="${PULSESEAL_KEYSTORE_REDIS_KEYSERVICE_KEYS:-pulseseal:*}"
# The key service's rights; `-@all` first so that a user made by an older version converges to these.
KS_RULES="on resetkeys ~$KS_KEYS resetchannels -@all +@all -@dangerous +info +config|get +bgrewriteaof"

password() { tr -d '[:space:]' <"$PASSWORD_FILE" 2>/dev/null; }

ks_password() { if [ -r "$KS_PASSWORD_FILE" ]; then tr -d '[:space:]' <"$KS_PASSWORD_FILE"; fi; }

cli() { REDISCLI_AUTH="$(password)" timeout 3 redis-cli --no-auth-warning -h "$PS_HOST" -p "$PORT" "$@" 2>/dev/null; }

# anonymous: a redis-cli that does not authenticate.
anonymous() { timeout 3 redis-cli -h "$PS_HOST" -p "$PORT" "$@" 2>/dev/null; }

# open_to_all: Redis on the port answers without a password.
open_to_all() { [ "$(anonymous ping)" = "PONG" ]; }

# is_redis: the port answers as Redis, with or without asking for a password.
is_redis() {
    case "$(anonymous ping)" in
        PONG | NOAUTH* | *uthentication*) return 0 ;;
        *) return 1 ;;
    esac
}

# answers_pong: the port answers as Redis that wants our password and takes it (PING → PONG).
answers_pong() { ! open_to_all && [ "$(cli ping)" = "PONG" ]; }

# aof_on: Redis on the port has the append-only file on.
aof_on() { [ "$(cli config get appendonly | tail -n 1)" = "yes" ]; }

ready() { answers_pong && aof_on; }

# ensure_keyservice_user: the key service's restricted user exists with our password, and the default
# user's password is not readable through CONFIG GET requirepass. Commands go on stdin, never in `ps`.
ensure_keyservice_user() {
    local secret ks reply
    secret="$(password)"
    if [ -n "$(cli config get requirepass | tail -n +2)" ]; then
        reply="$(printf 'MULTI\nCONFIG SET requirepass ""\nACL SETUSER default on resetpass >%s\nEXEC\n' "$secret" |
            REDISCLI_AUTH="$secret" timeout 3 redis-cli --no-auth-warning -h "$PS_HOST" -p "$PORT" 2>&1)" || true
        [ "$(cli ping)" = "PONG" ] && [ -z "$(cli config get requirepass | tail -n +2)" ] ||
            die "$NAME: could not move the default user's password from requirepass into its ACL on port $PORT: $(printf '%s' "${reply//"$secret"/***}" | tail -n 1)"
        say "$NAME: the default user's password moved from requirepass into its ACL (CONFIG GET no longer shows it)"
    fi
    ks="$(ks_password)"
    if [ -z "$ks" ]; then
        say "$NAME: no key-service user password at $KS_PASSWORD_FILE — the key service will connect as the default user; run \`pulseseal services up\` to create it"
        return 0
    fi
    reply="$(printf 'ACL SETUSER %s %s >%s\n' "$KS_USER" "$KS_RULES" "$ks" |
        REDISCLI_AUTH="$secret" timeout 3 redis-cli --no-auth-warning -h "$PS_HOST" -p "$PORT" 2>&1)" || true
    [ "$reply" = "OK" ] || die "$NAME: could not add the key-service user $KS_USER on port $PORT (ACL SETUSER: ${reply:+${reply//"$ks"/***}}${reply:-no answer}) — Redis ≥ 6 is needed"
}

cmd_up() {
    local pid
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        ps_require_packages redis-server
    fi
    [ -s "$PASSWORD_FILE" ] || die "no key-store Redis password at $PASSWORD_FILE — run \`pulseseal services up\` (it creates one) or set PULSESEAL_KEYSTORE_REDIS_PASSWORD_FILE"
    if pid="$(ps_pid_alive "$PIDFILE")" && is_redis && ! answers_pong; then
        # Ours, but open to everyone (started before the password) or under an older password.
        say "$NAME: our Redis (pid $pid) does not require the password in $PASSWORD_FILE — restarting it with it (data kept)"
        ps_stop "$NAME" "$PIDFILE" >/dev/null
    fi
    if pid="$(ps_pid_alive "$PIDFILE")"; then
        if ! answers_pong; then
            say "$NAME: our Redis (pid $pid) is not answering yet — waiting for it"
            ps_wait_ready "$NAME" "$PIDFILE" "$LOG" answers_pong
        fi
        aof_on || die "$NAME: our Redis (pid $pid) has appendonly off — the key store needs AOF; run: redis-cli -p $PORT config set appendonly yes"
        ensure_keyservice_user
        say "$NAME: already running (pid $pid, port $PORT, appendonly yes)"
        return 0
    fi
    if is_redis && ! answers_pong; then
        die "the Redis on $PS_HOST:$PORT (not ours) does not take the password in $PASSWORD_FILE (or needs none) — stop it, give its default user that password, or set PULSESEAL_KEYSTORE_REDIS_PORT"
    fi
    if answers_pong; then
        aof_on || die "the Redis on $PS_HOST:$PORT (not ours) has appendonly off — the key store needs AOF; stop it or run: redis-cli -p $PORT config set appendonly yes"
        ensure_keyservice_user
        say "$NAME: using Redis (appendonly yes) on port $PORT (not started by us)"
        return 0
    fi
    ps_port_open "$PORT" && die "port $PS_HOST:$PORT is taken$(ps_port_owner "$PORT"), which is not Redis — free it or set PULSESEAL_KEYSTORE_REDIS_PORT"
    mkdir -p "$DIR"
    rm -f "$PIDFILE"
    say "$NAME: starting key-store Redis on $PS_HOST:$PORT (AOF on, log: $LOG)"
    # Arguments rather than a config file: the whole configuration is visible in `ps` and here — all but
    # the users and their passwords, which come on stdin (`-`), so that `ps` never shows them. The key
    # service's user is added by ensure_keyservice_user below, the same way as on a running server.
    printf 'user default on >%s ~* &* +@all\n' "$(password)" | redis-server - --bind "$PS_HOST" --port "$PORT" --protected-mode yes \
        --daemonize yes --pidfile "$PIDFILE" --logfile "$LOG" --dir "$DIR" \
        --appendonly yes --appendfsync always --save "" \
        >>"$PS_LOG_DIR/redis-startup.log" 2>&1 ||
        die "redis-server refused to start — see $LOG"
    ps_wait_ready "$NAME" "$PIDFILE" "$LOG" ready
    ensure_keyservice_user
    say "$NAME: ready (pid $(ps_pid_alive "$PIDFILE"), port $PORT, appendonly yes)"
}

cmd_down() { ps_stop "$NAME" "$PIDFILE"; }

cmd_status() {
    local pid=""
    pid="$(ps_pid_alive "$PIDFILE")" || pid=""
    if ready && [ -n "$pid" ]; then
        ps_status_line "$NAME" "ready (AOF on)" "$PORT" "$pid" "$DIR"
    elif ready; then
        ps_status_line "$NAME" "ready (AOF on, not ours)" "$PORT" "" "-"
    elif answers_pong; then
        ps_status_line "$NAME" "AOF OFF, not ready" "$PORT" "$pid" "$DIR"
        return 1
    elif is_redis; then
        ps_status_line "$NAME" "password refused, not ready" "$PORT" "$pid" "$DIR"
        return 1
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
