#!/usr/bin/env bash
# Build FerretDB from its Go module into the user's cache (once); print the binary's path.
# Usage: build-ferretdb.sh [--path-only]
#
# Why not `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2`: the module zip lacks the
# generated build/version/version.txt, and the binary built that way panics at start ("Invalid
# build/version/version.txt"). So we copy the module source, write that file, and build it ourselves.
set -euo pipefail
# shellcheck source=infra/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FERRETDB_VERSION="${PULSESEAL_FERRETDB_VERSION:-v1.24.2}"
CACHE_BIN_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/pulseseal/bin"
BIN="$CACHE_BIN_DIR/ferretdb-$FERRETDB_VERSION"
LOG="$PS_LOG_DIR/ferretdb-build.log"

if [ -x "$BIN" ]; then
    printf '%s\n' "$BIN"
    exit 0
fi
# --path-only: answer whether a cached binary exists (status 1 when not), never build.
[ "${1:-}" = "--path-only" ] && exit 1

GO="$(command -v go || true)"
[ -n "$GO" ] || { [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go; } ||
    die "Go is needed to build FerretDB $FERRETDB_VERSION and was not found on PATH or in /usr/local/go/bin — install Go >= 1.24 (https://go.dev/doc/install), or set PULSESEAL_FERRETDB_BIN to a ferretdb binary"

work="$(mktemp -d "${TMPDIR:-/tmp}/pulseseal-ferretdb.XXXXXX")"
trap 'rm -rf "$work"' EXIT
failed() { die "building FerretDB $FERRETDB_VERSION failed at: $1 — see $LOG"; }
# GOTOOLCHAIN=local: build with the Go we found instead of fetching the go.mod's toolchain.
export GOTOOLCHAIN=local
src="$("$GO" mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" 2>>"$LOG" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')" || failed "go mod download"
[ -d "$src" ] || failed "go mod download (no module directory)"
# The module cache is read-only; the copy must be writable to add version.txt.
cp -R "$src/." "$work/src" || failed "copying the module source"
chmod -R u+w "$work/src"
printf '%s\n' "$FERRETDB_VERSION" >"$work/src/build/version/version.txt"
(cd "$work/src" && "$GO" build -trimpath -buildvcs=false -o "$work/ferretdb" ./cmd/ferretdb) >>"$LOG" 2>&1 ||
    failed "go build"
"$work/ferretdb" --version >>"$LOG" 2>&1 || failed "running the new binary"
# Into place only once it works, and by rename within the cache, so no broken binary is ever cached.
mkdir -p "$CACHE_BIN_DIR"
cp "$work/ferretdb" "$BIN.partial.$$"
mv -f "$BIN.partial.$$" "$BIN"
printf '%s\n' "$BIN"
