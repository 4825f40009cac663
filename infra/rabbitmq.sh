#!/usr/bin/env bash
# RabbitMQ (Debian's rabbitmq-server) as our own node, or cluster: up | down | status | ctl ARGS...
#
# PULSESEAL_RABBITMQ_NODES=3 (`pulseseal services up --rabbitmq-nodes 3`) runs a cluster on loopback: node
# I listens on PULSESEAL_RABBITMQ_PORT + I - 1, node 1 keeps the single-node layout below and the others
# live under $PULSESEAL_HOME/rabbitmq/nodes/<port>/, all with one Erlang cookie; `down` and `status` act
# on every node the home has.
#
# Debian's /usr/sbin wrappers `su` to the rabbitmq user and use /var/lib/rabbitmq; we call the real
# scripts in /usr/lib/rabbitmq/bin directly, as the current user, with every path under
# $PULSESEAL_HOME/rabbitmq (and HOME there too, so the Erlang cookie lives beside the node's data).
set -euo pipefail
# shellcheck source=infra/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PS_PROCESS=beam.smp # what our server's command line contains
NAME=rabbitmq
BASE_PORT="${PULSESEAL_RABBITMQ_PORT:-5672}"
RMQ_BIN=/usr/lib/rabbitmq/bin
ROOT="$PS_HOME_DIR/rabbitmq" # node 1's data (the single-node layout); extra nodes under nodes/<port>/
# 1 for one node; 3 for a cluster (`pulseseal services up --rabbitmq-nodes 3`). Unset: as many nodes as
# this home already has, so a plain `up` after `down` brings a whole cluster back.
WANTED_NODES="${PULSESEAL_RABBITMQ_NODES:-}"

# node_count: how many nodes this home has: node 1 plus one per directory under nodes/.
node_count() {
    local n=1 d
    for d in "$ROOT"/nodes/*/; do
        [ -d "$d" ] && n=$((n + 1))
    done
    echo "$n"
}

# select_node I: point PORT, DIR, PIDFILE, NODE and the logs at node I (1-based); node I listens on
# BASE_PORT + I - 1 and its Erlang distribution on that + 20000.
select_node() {
    PORT=$((BASE_PORT + $1 - 1))
    if [ "$1" -eq 1 ]; then
        DIR="$ROOT"
        NAME=rabbitmq
    else
        DIR="$ROOT/nodes/$PORT"
        NAME="rabbitmq-$1"
    fi
    PIDFILE="$DIR/rabbit.pid"
    NODE="pulseseal-$PORT@localhost"
    STARTUP_LOG="$PS_LOG_DIR/$NAME-startup.log"
    [ "$1" -eq 1 ] && STARTUP_LOG="$PS_LOG_DIR/rabbitmq-startup.log"
    NODE_LOG="$DIR/log/$NODE.log"
}
select_node 1

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

# launch_node: start the selected node in the background unless it runs already. Sets LAUNCHED=1 when it
# started one, FOREIGN to what answers when the port is served by a node this home did not start.
launch_node() {
    local pid what rc
    LAUNCHED="" FOREIGN=""
    if pid="$(ps_pid_alive "$PIDFILE")"; then
        return 0
    fi
    rc=0
    what="$(ps_probe amqp "$PORT" 2>&1)" || rc=$?
    if [ "$rc" -eq 0 ]; then
        FOREIGN="$what"
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
    LAUNCHED=1
}

# await_node: wait until the selected node (ours, running) answers AMQP and has finished booting.
await_node() {
    local pid
    if [ -z "$LAUNCHED" ] && pid="$(ps_pid_alive "$PIDFILE")" && ps_probe amqp "$PORT" >/dev/null 2>&1; then
        say "$NAME: already running (pid $pid, port $PORT)"
        return 0
    fi
    [ -n "$LAUNCHED" ] || say "$NAME: our node is not answering yet — waiting for it"
    ps_wait_ready "$NAME" "$PIDFILE" "$NODE_LOG (and $STARTUP_LOG)" ps_probe amqp "$PORT"
    timeout 30 "$RMQ_BIN/rabbitmqctl" -q -n "$NODE" await_startup >/dev/null 2>&1 ||
        die "$NAME: node $NODE answers on $PORT but did not finish booting — see $NODE_LOG"
    say "$NAME: ready (pid $(ps_pid_alive "$PIDFILE"), port $PORT)"
}

# shared_cookie: the cluster's one Erlang cookie, made by us before node 1 first starts (else Erlang
# writes its own there) and copied into every other node's HOME, so the nodes and rabbitmqctl agree.
shared_cookie() {
    local cookie="$ROOT/.erlang.cookie" i
    mkdir -p "$ROOT"
    if [ ! -s "$cookie" ]; then
        (umask 077 && head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 >"$cookie")
        chmod 400 "$cookie"
    fi
    for ((i = 2; i <= $1; i++)); do
        select_node "$i"
        mkdir -p "$DIR"
        if ! cmp -s "$cookie" "$DIR/.erlang.cookie" 2>/dev/null; then
            rm -f "$DIR/.erlang.cookie"
            cp "$cookie" "$DIR/.erlang.cookie"
            chmod 400 "$DIR/.erlang.cookie"
        fi
    done
}

# join_node FIRST: make the selected node a member of FIRST's cluster unless it is one already (a node
# that was killed and restarted rejoins by itself), then give every quorum queue a member on it.
join_node() {
    local first="$1" status
    rmq_env
    status="$("$RMQ_BIN/rabbitmqctl" -q -n "$NODE" cluster_status --formatter json 2>/dev/null)" ||
        die "$NAME: cannot read the cluster status of $NODE — see $NODE_LOG"
    if ! grep -q "\"$first\"" <<<"$status"; then
        say "$NAME: joining $NODE to $first"
        {
            "$RMQ_BIN/rabbitmqctl" -q -n "$NODE" stop_app &&
                "$RMQ_BIN/rabbitmqctl" -q -n "$NODE" reset &&
                "$RMQ_BIN/rabbitmqctl" -q -n "$NODE" join_cluster "$first" &&
                "$RMQ_BIN/rabbitmqctl" -q -n "$NODE" start_app
        } >>"$STARTUP_LOG" 2>&1 || die "$NAME: $NODE could not join $first — see $STARTUP_LOG"
        ps_wait_ready "$NAME" "$PIDFILE" "$NODE_LOG" ps_probe amqp "$PORT"
    fi
    # Queues declared before this node joined have no member here; `grow` adds one (a no-op otherwise).
    "$RMQ_BIN/rabbitmq-queues" -q -n "$NODE" grow "$NODE" all >>"$STARTUP_LOG" 2>&1 ||
        die "$NAME: could not add $NODE to the quorum queues — see $STARTUP_LOG"
}

cmd_up() {
    local n i first have
    have="$(node_count)"
    n="${WANTED_NODES:-$have}"
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "PULSESEAL_RABBITMQ_NODES must be a positive number, not '$n'"
    if [ "$n" -lt "$have" ]; then
        die "this home has a $have-node RabbitMQ cluster ($ROOT) — ask for --rabbitmq-nodes $have, or run \`pulseseal services down rabbitmq\` and remove $ROOT to start over"
    fi
    if [ "$n" -eq 1 ]; then
        launch_node
        if [ -n "$FOREIGN" ]; then
            say "$NAME: using $FOREIGN on port $PORT (not started by us)"
            return 0
        fi
        await_node
        return 0
    fi
    shared_cookie "$n"
    # Every node is started before any is waited for: a clustered node that boots waits for the peers
    # it last saw running, so starting them one after the other could wait on each other.
    for ((i = 1; i <= n; i++)); do
        select_node "$i"
        launch_node
        [ -z "$FOREIGN" ] ||
            die "port $PS_HOST:$PORT already serves $FOREIGN, not started from this home — a cluster needs all its nodes here: stop it or set PULSESEAL_RABBITMQ_PORT"
        eval "LAUNCHED_$i=\$LAUNCHED"
    done
    for ((i = 1; i <= n; i++)); do
        select_node "$i"
        eval "LAUNCHED=\$LAUNCHED_$i"
        await_node
    done
    select_node 1
    first="$NODE"
    for ((i = 2; i <= n; i++)); do
        select_node "$i"
        join_node "$first"
    done
    say "rabbitmq: cluster of $n nodes ready (ports $BASE_PORT-$((BASE_PORT + n - 1)))"
}

cmd_down() {
    local i
    # Extra nodes first: node 1 stops last, so it is the one that holds the latest state.
    for ((i = $(node_count); i >= 1; i--)); do
        select_node "$i"
        ps_stop "$NAME" "$PIDFILE"
    done
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
    local other i
    # In a cluster, any node of ours that runs will do (node 1 may be the one that is down).
    for ((i = 1; i <= $(node_count); i++)); do
        select_node "$i"
        if ps_pid_alive "$PIDFILE" >/dev/null; then
            rmq_env
            exec "$RMQ_BIN/rabbitmqctl" -q -n "$NODE" "$@"
        fi
    done
    select_node 1
    other="$(other_node)"
    [ -n "$other" ] ||
        die "no RabbitMQ node of ours runs for port $PORT — rabbitmqctl needs the node that \`pulseseal services up\` started"
    export HOME="${other#* }"
    exec "$RMQ_BIN/rabbitmqctl" -q -n "${other%% *}" "$@"
}

status_node() {
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

cmd_status() {
    local i failed=0
    for ((i = 1; i <= $(node_count); i++)); do
        select_node "$i"
        status_node || failed=1
    done
    return "$failed"
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
