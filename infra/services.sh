#!/usr/bin/env bash
# The local servers behind `pulseseal services`: up | down | status [rabbitmq] [redis] [mongo].
#
# With no service names, acts on all three. `up` is idempotent and returns once every server answers;
# `status` exits 1 when any named server is not ready.
set -euo pipefail
# shellcheck source=infra/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL=(rabbitmq redis mongo)

usage() { die "usage: $(basename "$0") up|down|status [rabbitmq] [redis] [mongo]"; }

action="${1:-}"
case "$action" in up | down | status) ;; *) usage ;; esac
shift

services=()
for name in "$@"; do
    case "$name" in
        rabbitmq | redis | mongo) services+=("$name") ;;
        *) die "unknown service '$name' — choose from: ${ALL[*]}" ;;
    esac
done
[ "${#services[@]}" -gt 0 ] || services=("${ALL[@]}")

if [ "$action" = down ]; then
    # Reverse order: consumers of the broker and stores go first in a full stack.
    for ((i = ${#services[@]} - 1; i >= 0; i--)); do
        bash "$PS_INFRA_DIR/${services[i]}.sh" down
    done
elif [ "$action" = status ]; then
    not_ready=()
    for name in "${services[@]}"; do
        bash "$PS_INFRA_DIR/$name.sh" status || not_ready+=("$name")
    done
    if [ "${#not_ready[@]}" -gt 0 ]; then
        printf '%s\n' "not ready: ${not_ready[*]} — run: pulseseal services up" >&2
        exit 1
    fi
else
    for name in "${services[@]}"; do
        # Each script has already printed its one-line reason on stderr; just stop here.
        bash "$PS_INFRA_DIR/$name.sh" up || exit 2
    done
fi
