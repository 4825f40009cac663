#!/usr/bin/env bash
# RabbitMQ (Debian's rabbitmq-server) as our own node: up | down | status | ctl ARGS...
#
# Debian's /usr/sbin wrappers `su` to the rabbitmq user and use /var/lib/rabbitmq; we call the real
# scripts in /usr/lib/rabbitmq/bin directly, as the current user, with every path under
# $PULSESEAL_HOME/rabbitmq (and HOME there too, so the Erlang cookie lives beside the node's data).
set -euo pipefail
# shellcheck source=infra/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PS_PROCESS=beam.smp # what our server's command line contains
NAME=rabbitmq
PORT="${PULSESEAL_RABBITMQ_PORT:-5672}"
RMQ_BIN=/usr/lib/rabbitmq/bin
DIR="$PS_HOME_DIR/rabbitmq"
PIDFILE="$DIR/rabbit.pid"
NODE="pulseseal-$PORT@localhost"
STARTUP_LOG="$PS_LOG_DIR/rabbitmq-startup.log"
NODE_LOG="$DIR/log/$NODE.log"

rmq_env() {
    export HOME="$DIR" \
        RABBITMQ_NODENAME="$NODE" \
        RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf" \
        RABBITMQ_CONFIG_FILE="$DIR/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$DIR/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$DIR/mnesia" \
        RABBITMQ_LOG_BASE="$DIR/log" \
        RABBITMQ_PID_FILE="$PIDFILE" \
        RABBITMQ_DIST_PORT=$((PORT + 20000)) \
        ERL_EPMD_ADDRESS="$PS_HOST" \
        ERL_CRASH_DUMP="$DIR/log/erl_crash.dump"
    # Erlang distribution listens on loopback only, like the AMQP listener.
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

write_config() {
    mkdir -p "$DIR/log" "$DIR/mnesia"
    : >"$DIR/rabbitmq-env.conf" # keeps /etc/rabbitmq/rabbitmq-env.conf out of our node
    cat >"$DIR/rabbitmq.conf" <<EOF
# Written by infra/rabbitmq.sh on every start; edit the script, not this file.
listeners.tcp.1 = $PS_HOST:$PORT
# guest/guest works from loopback only (RabbitMQ's default, stated here on purpose).
loopback_users.guest = true
log.file.level = info
EOF
    # No plugins: the management UI costs ~100 MB and seconds of boot; quorum queues are built in.
    printf '[].\n' >"$DIR/enabled_plugins"
}

cmd_up() {
    local pid what rc
    if pid="$(ps_pid_alive "$PIDFILE")"; then
        if ! ps_probe amqp "$PORT" >/dev/null 2>&1; then
            say "$NAME: our node (pid $pid) is not answering yet — waiting for it"
            ps_wait_ready "$NAME" "$PIDFILE" "$NODE_LOG" ps_probe amqp "$PORT"
        fi
        say "$NAME: already running (pid $pid, port $PORT)"
        return 0
    fi
    rc=0
    what="$(ps_probe amqp "$PORT" 2>&1)" || rc=$?
    if [ "$rc" -eq 0 ]; then
        say "$NAME: using $what on port $PORT (not started by us)"
        return 0
    elif [ "$rc" -ne 1 ]; then
        die "port $PS_HOST:$PORT is taken$(ps_port_owner "$PORT"), which is not RabbitMQ — free it or set PULSESEAL_RABBITMQ_PORT"
    fi
    [ -x "$RMQ_BIN/rabbitmq-server" ] || ps_require_packages rabbitmq-server
    [ -x "$RMQ_BIN/rabbitmq-server" ] || die "rabbitmq-server is installed but $RMQ_BIN/rabbitmq-server is missing — reinstall the package"
    write_config
    rmq_env
    rm -f "$PIDFILE"
    say "$NAME: starting node $NODE on $PS_HOST:$PORT (log: $NODE_LOG)"
    # setsid: the node must outlive this script and the terminal or job that ran `up`.
    # Only the server goes to the background: a backgrounded `cd && ...` list would leave a shell
    # waiting on the node with our stdout open, and whoever reads that output would wait forever.
    (
        cd "$DIR"
        setsid nohup "$RMQ_BIN/rabbitmq-server" >>"$STARTUP_LOG" 2>&1 </dev/null &
    )
    ps_wait_ready "$NAME" "$PIDFILE" "$NODE_LOG (and $STARTUP_LOG)" ps_probe amqp "$PORT"
    timeout 30 "$RMQ_BIN/rabbitmqctl" -q -n "$NODE" await_startup >/dev/null 2>&1 ||
        die "$NAME: node $NODE answers on $PORT but did not finish booting — see $NODE_LOG"
    say "$NAME: ready (pid $(ps_pid_alive "$PIDFILE"), port $PORT)"
}

cmd_down() {
    ps_stop "$NAME" "$PIDFILE"
    # epmd was started by our node; stop it too when no Erlang node is left registered with it.
    if command -v epmd >/dev/null && ! epmd -names 2>/dev/null | grep -q '^name '; then
        epmd -kill >/dev/null 2>&1 || true
    fi
}

# other_node: "NODE HOME" of a RabbitMQ node that listens on our port but was started from another home
# (another checkout, a CI clone: `up` then says "using ... (not started by us)"), read from the
# listener's environment: its node name, and its HOME, where its Erlang cookie is. Prints nothing when
# that cannot be read (not our user, not a node started with RABBITMQ_NODENAME, no cookie).
other_node() {
    local pid node home
    command -v ss >/dev/null || return 0
    pid="$(ss -Hltnp "sport = :$PORT" 2>/dev/null |
        sed -n 's/.*users:(("beam.smp",pid=\([0-9]*\).*/\1/p' | head -n 1)"
    [ -n "$pid" ] && [ -r "/proc/$pid/environ" ] || return 0
    node="$(tr '\0' '\n' <"/proc/$pid/environ" | sed -n 's/^RABBITMQ_NODENAME=//p' | head -n 1)"
    home="$(tr '\0' '\n' <"/proc/$pid/environ" | sed -n 's/^HOME=//p' | head -n 1)"
    if [ -n "$node" ] && [ -n "$home" ] && [ -r "$home/.erlang.cookie" ]; then
        echo "$node $home"
    fi
}

# ctl ARGS...: rabbitmqctl against our node (it needs our node name and the Erlang cookie in $DIR), or
# against the node of another home that serves our port, when its name and cookie can be read.
cmd_ctl() {
    local other
    if ps_pid_alive "$PIDFILE" >/dev/null; then
        rmq_env
        exec "$RMQ_BIN/rabbitmqctl" -q -n "$NODE" "$@"
    fi
    other="$(other_node)"
    [ -n "$other" ] ||
        die "no RabbitMQ node of ours runs for port $PORT — rabbitmqctl needs the node that \`pulseseal services up\` started"
    export HOME="${other#* }"
    exec "$RMQ_BIN/rabbitmqctl" -q -n "${other%% *}" "$@"
}

cmd_status() {
    local pid="" what rc=0
    pid="$(ps_pid_alive "$PIDFILE")" || pid=""
    what="$(ps_probe amqp "$PORT" 2>&1)" || rc=$?
    if [ "$rc" -eq 0 ] && [ -n "$pid" ]; then
        ps_status_line "$NAME" "ready" "$PORT" "$pid" "$DIR"
    elif [ "$rc" -eq 0 ]; then
        ps_status_line "$NAME" "ready (not ours)" "$PORT" "" "$what"
    else
        ps_status_line "$NAME" "${pid:+running, }not ready" "$PORT" "$pid" "$DIR"
        return 1
    fi
}

case "${1:-}" in
    up | down) "cmd_$1" ;;
    status) cmd_status || exit 1 ;;
    ctl)
        shift
        cmd_ctl "$@"
        ;;
    *) die "usage: $(basename "$0") up|down|status|ctl RABBITMQCTL-ARGS..." ;;
esac
