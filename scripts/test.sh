#!/usr/bin/env bash
# Every test, on a fresh machine: installs what the tests need and is missing,
# then runs them all, skipping none.
#
# - Debian packages: promtool (package prometheus, to lint /metrics) and
#   chromium (the browser tests drive Debian's Chromium; no browser download),
#   tmux (tests/terminal_client.rs runs the terminal client in it).
# - npm packages, from the lockfiles: the browser client's (web/, for its
#   node tests) and the browser tests' driver (tests/browser/, playwright-core).
# - then `cargo test` with SIGIL_REQUIRE_TOOLS=1 and SIGIL_REQUIRE_WEB=1, so
#   no test skips for a missing tool and the server is built with its page
#   (the browser client's own tests, `npm test` in web/, run from
#   tests/browser.rs against the binary just built).
#
# Plain `cargo test` runs the same Rust tests but skips, with a printed
# reason, those whose tool is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium fonts-dejavu-core)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]} (Debian packages)" >&2
    # prometheus would start a service: forbid service starts while
    # installing (policy-rc.d), restoring whatever policy was there.
    policy=/usr/sbin/policy-rc.d
    saved=""
    if [ -e "$policy" ]; then saved="$(mktemp)"; $sudo cp -p "$policy" "$saved"; fi
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    status=0
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } || status=$?
    if [ -n "$saved" ]; then $sudo mv "$saved" "$policy"; else $sudo rm -f "$policy"; fi
    [ "$status" -eq 0 ] || { echo "could not install ${missing[*]}" >&2; exit "$status"; }
fi

command -v npm >/dev/null 2>&1 || { echo "npm is needed (Node.js 20 or later)" >&2; exit 1; }
for dir in web tests/browser; do
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
done

export SIGIL_REQUIRE_TOOLS=1 SIGIL_REQUIRE_WEB=1
exec cargo test "$@"
