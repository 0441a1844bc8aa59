#!/usr/bin/env bash
# The peers `sigil bench` is measured against: nats-server, redis-server and
# ngircd from Debian, each on 127.0.0.1 on its own port with its config from
# this directory. Usage: bench/peers.sh install|start|stop|status
# Pid files go to $PEER_DIR (default target/bench/peers); stop kills by pid.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${PEER_DIR:-$here/../target/bench/peers}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

install() {
    local missing=()
    command -v nats-server >/dev/null || missing+=(nats-server)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v ngircd >/dev/null && [ -x "$(command -v ngircd)" ] || missing+=(ngircd)
    command -v taskset >/dev/null || missing+=(util-linux)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    fi
    # Debian starts the packaged services on their default ports; the bench uses its own.
    for svc in redis-server ngircd nats-server; do
        (systemctl stop "$svc" || service "$svc" stop) >/dev/null 2>&1 || true
    done
}

start_one() { # name command...
    local name="$1"; shift
    if [ -f "$dir/$name.pid" ] && kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then
        echo "$name already running (pid $(cat "$dir/$name.pid"))" >&2
        return
    fi
    "$@" >"$dir/$name.log" 2>&1 &
    echo $! >"$dir/$name.pid"
    echo "started $name (pid $!)" >&2
}

wait_port() { # port
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}

start() {
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    start_one nats nats-server -c "$here/nats.conf"
    start_one redis redis-server "$here/redis.conf"
    start_one ngircd "$(command -v ngircd)" --nodaemon --config "$here/ngircd.conf"
    wait_port 14222 && wait_port 16379 && wait_port 16667
}

stop() {
    for name in nats redis ngircd; do
        if [ -f "$dir/$name.pid" ]; then
            kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
            rm -f "$dir/$name.pid"
        fi
    done
}

status() {
    for name in nats redis ngircd; do
        if [ -f "$dir/$name.pid" ] && kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then
            echo "$name running, pid $(cat "$dir/$name.pid")"
        else
            echo "$name stopped"
        fi
    done
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
