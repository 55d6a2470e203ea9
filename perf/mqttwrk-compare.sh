#!/usr/bin/env bash
# perf/mqttwrk-compare.sh : an independent load generator (mqttwrk, `cargo install mqttwrk`)
# against shardmq and Mosquitto in the same run, as a cross-check of shardmq-loadgen's
# numbers. Broker pinned to core 0, mqttwrk to core 1; broker CPU from /proc/PID/stat.
# Environment: PORT [18891] PUBLISHERS [8] COUNT [100000 per publisher] QOS [0] PAYLOAD [16]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${PORT:-18891}
PUBLISHERS=${PUBLISHERS:-8}
COUNT=${COUNT:-100000}
QOS=${QOS:-0}
PAYLOAD=${PAYLOAD:-16}
SHARDMQ_BIN=${SHARDMQ_BIN:-$ROOT/target/release/shardmq}
MOSQUITTO_BIN=${MOSQUITTO_BIN:-/usr/sbin/mosquitto}
command -v mqttwrk >/dev/null || { echo "mqttwrk not installed (cargo install mqttwrk)" >&2; exit 1; }
[ -x "$SHARDMQ_BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
WORK=$(mktemp -d /tmp/shardmq-mqttwrk.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
TICK=$(getconf CLK_TCK)
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, kernel $(uname -r)"
echo "mqttwrk bench -p $PUBLISHERS -s 1 -n $COUNT -m $PAYLOAD --publish-qos $QOS --subscribe-qos $QOS"
for broker in shardmq mosquitto; do
    printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$PORT" >"$WORK/b.conf"
    if [ "$broker" = shardmq ]; then bin=$SHARDMQ_BIN; else bin=$MOSQUITTO_BIN; echo "set_tcp_nodelay true" >>"$WORK/b.conf"; fi
    taskset -c 0 "$bin" -c "$WORK/b.conf" >"$WORK/$broker.log" 2>&1 &
    pid=$!
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
    t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
    out=$(timeout 300 taskset -c 1 mqttwrk bench -S 127.0.0.1 -P "$PORT" -p "$PUBLISHERS" -s 1 -n "$COUNT" \
        -m "$PAYLOAD" --publish-qos "$QOS" --subscribe-qos "$QOS" --show-sub-stat 2>&1 || true)
    t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    line=$(grep -m1 "Incoming publishes" <<<"$out" | xargs)
    n=$(sed -n 's/.*Incoming publishes : \([0-9]*\).*/\1/p' <<<"$line")
    cpu=$(awk -v a="$t0" -v b="$t1" -v t="$TICK" 'BEGIN {printf "%.2f", (b - a) / t}')
    per=$(awk -v c="$cpu" -v n="${n:-0}" 'BEGIN {if (n > 0) printf "%.3f", c * 1e6 / n; else print "-"}')
    echo "$broker: $line | broker CPU ${cpu} s = ${per} us per delivered msg | peak RSS ${rss} kB"
done
