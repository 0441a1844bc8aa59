#!/usr/bin/env bash
# Every test, on a fresh machine: installs what the tests need and is missing
# (promtool, from Debian's prometheus package, to lint /metrics), then runs
# `cargo test` with SIGIL_REQUIRE_TOOLS=1, so no test skips for a missing tool.
# Plain `cargo test` runs the same tests but skips, with a printed reason,
# those whose tool is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
    echo "installing promtool (Debian package prometheus)" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    # The package would start a Prometheus service: forbid service starts
    # while it installs (policy-rc.d), restoring whatever policy was there.
    policy=/usr/sbin/policy-rc.d
    saved=""
    if [ -e "$policy" ]; then saved="$(mktemp)"; $sudo cp -p "$policy" "$saved"; fi
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    status=0
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus; } || status=$?
    if [ -n "$saved" ]; then $sudo mv "$saved" "$policy"; else $sudo rm -f "$policy"; fi
    [ "$status" -eq 0 ] || { echo "could not install prometheus (promtool)" >&2; exit "$status"; }
fi

export SIGIL_REQUIRE_TOOLS=1
exec cargo test "$@"
