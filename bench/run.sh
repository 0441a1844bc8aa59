#!/usr/bin/env bash
# The benchmark in one command, from a fresh machine: installs the peers
# (nats-server, redis-server, ngircd) if missing, builds sigil, starts the
# peers on their own loopback ports, runs every `sigil bench` scenario
# against sigil and them (server on CPU 0, generator on CPU 1), stops the
# peers, and leaves the table in target/bench/results.md (JSON beside it).
# Extra arguments go to `sigil bench`, e.g. bench/run.sh --secs 10.
set -euo pipefail
cd "$(dirname "$0")/.."
bench/peers.sh install
command -v cargo >/dev/null || { echo "cargo is needed (https://rustup.rs)" >&2; exit 1; }
cargo build --release --quiet
trap 'bench/peers.sh stop' EXIT
bench/peers.sh start
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
./target/release/sigil bench --pin \
    --peer nats=127.0.0.1:14222 --peer redis=127.0.0.1:16379 --peer ngircd=127.0.0.1:16667 \
    --pid-dir target/bench/peers --idle 5000,10000 "$@"
