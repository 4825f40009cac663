# shellcheck shell=bash
# Helpers shared by the PulseSeal service scripts. Sourced, never run.
#
# Conventions: progress goes to stdout as "<service>: <what happened>"; a failure is ONE line on
# stderr ("<what is wrong> — <what to do>") and exit status 2, which `pulseseal services` shows as is.
# Tools' own chatter (apt-get, go build, servers) goes to log files under $PULSESEAL_HOME/logs.

PS_INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PS_HOST=127.0.0.1
PS_TIMEOUT="${PULSESEAL_SERVICES_TIMEOUT:-90}"
PS_STOP_TIMEOUT="${PULSESEAL_SERVICES_STOP_TIMEOUT:-30}"
PS_PYTHON="${PULSESEAL_PYTHON:-python3}"

# PULSESEAL_HOME as an absolute path; relative means relative to the working directory (docs/contract.md §8).
ps_home() {
    local home="${PULSESEAL_HOME:-.pulseseal}"
    case "$home" in
        /*) ;;
        "~"*) home="${HOME}${home#\~}" ;;
        *) home="$PWD/$home" ;;
    esac
    mkdir -p "$home"
    (cd "$home" && pwd)
}

PS_HOME_DIR="$(ps_home)"
PS_LOG_DIR="$PS_HOME_DIR/logs"
mkdir -p "$PS_LOG_DIR"

say() { printf '%s\n' "$*"; }

die() {
    printf '%s\n' "$*" >&2
    exit 2
}

# Anything that fails without calling die still ends in one line naming the script and the line.
ps_on_error() {
    printf '%s\n' "infra/$(basename "$0"): unexpected failure at line $1 (exit $2); logs are in $PS_LOG_DIR" >&2
    exit 2
}
trap 'ps_on_error "$LINENO" "$?"' ERR

ps_is_root() { [ "$(id -u)" -eq 0 ]; }

# ps_port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
ps_port_open() {
    timeout 2 bash -c ": </dev/tcp/$PS_HOST/$1" 2>/dev/null
}

# ps_port_owner PORT: " by NAME (pid N)" for the process listening there, when `ss` can tell.
ps_port_owner() {
    command -v ss >/dev/null || return 0
    ss -Hltnp "sport = :$1" 2>/dev/null |
        sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/ by \1 (pid \2)/p' | head -n 1
}

# ps_probe KIND PORT: exit 0 when the port answers as KIND (amqp|mongo), 1 when nothing listens,
# 3 when something else answers. Prints what answered.
ps_probe() {
    "$PS_PYTHON" "$PS_INFRA_DIR/probe.py" "$1" "$PS_HOST" "$2"
}

# ps_pid_alive PIDFILE: prints the pid and succeeds when the pidfile names a live process whose command
# line contains $PS_PROCESS (set by each script), so a pid reused after a reboot is never taken for ours.
ps_pid_alive() {
    local pid
    [ -s "$1" ] || return 1
    pid="$(tr -dc '0-9' <"$1")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" == *"${PS_PROCESS:?}"* ]] || return 1
    printf '%s\n' "$pid"
}

# ps_wait_ready NAME PIDFILE LOG CHECK...: run CHECK until it succeeds; fail fast if the process dies.
ps_wait_ready() {
    local name="$1" pidfile="$2" log="$3" deadline=$((SECONDS + PS_TIMEOUT)) seen_pid=""
    shift 3
    while [ "$SECONDS" -lt "$deadline" ]; do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        if ps_pid_alive "$pidfile" >/dev/null; then
            seen_pid=1
        elif [ -n "$seen_pid" ] || [ "$SECONDS" -gt $((deadline - PS_TIMEOUT + 30)) ]; then
            # The process existed and died, or never wrote its pidfile in 30 s.
            die "$name did not start — see $log"
        fi
        sleep 0.3
    done
    die "$name did not answer within ${PS_TIMEOUT}s — see $log"
}

# ps_stop NAME PIDFILE: SIGTERM (all three servers shut down cleanly on it), SIGKILL after the timeout.
ps_stop() {
    local name="$1" pidfile="$2" pid deadline=$((SECONDS + PS_STOP_TIMEOUT))
    if ! pid="$(ps_pid_alive "$pidfile")"; then
        rm -f "$pidfile"
        say "$name: not running (nothing of ours to stop)"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            kill -KILL "$pid" 2>/dev/null || true
            say "$name: did not stop within ${PS_STOP_TIMEOUT}s, killed pid $pid"
            break
        fi
        sleep 0.2
    done
    rm -f "$pidfile"
    say "$name: stopped (pid $pid)"
}

# ps_status_line NAME READY PORT PID DATA: one aligned line of `status`.
ps_status_line() {
    printf '%-9s %-26s port %-6s pid %-8s data %s\n' "$1" "$2" "$3" "${4:--}" "$5"
}

# ps_require_packages PACKAGE...: install missing Debian packages when root, else say how.
ps_require_packages() {
    local missing=() pkg log="$PS_LOG_DIR/install.log" created_policy=""
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if ! ps_is_root; then
        die "missing Debian packages ${missing[*]} — run: sudo apt-get update && sudo apt-get install -y ${missing[*]}"
    fi
    say "installing ${missing[*]} (apt-get; log: $log)"
    # Debian's maintainer scripts start a freshly installed server; we run our own instances instead.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" ||
            { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; }
    } >>"$log" 2>&1 || rc=$?
    [ -n "$created_policy" ] && rm -f /usr/sbin/policy-rc.d
    [ "$rc" -eq 0 ] || die "apt-get could not install ${missing[*]} — see $log"
}
