#!/usr/bin/env bash
# perf/filters.sh : broker memory per distinct subscription (issue 14: "subscriptions must
# not cost memory per shard"), and how fast one client can subscribe.
#
# For each broker configuration: start a fresh broker, connect one MQTT 3.1.1 client
# (perf/filters.py), take the broker's RSS, subscribe to COUNT distinct filters (one per
# SUBSCRIBE, WINDOW in flight, every SUBACK checked), take the RSS again once it settles;
# prints (RSS after - RSS before) / COUNT and the subscribe rate. With `threads 2` the
# client lands on one shard and the other shard learns the filters from it, which is the
# cost this measures.
#
# Environment: COUNT [50000]  PATTERN [bench/filter/{i}] ({i} -> 0..COUNT-1)  WINDOW [100]
#   PORT [18995]  THREADS ["1 2"]  SHARDMQ_BINS [target/release/shardmq] (several: compare
#   builds in one run)  MOSQUITTO [mosquitto on PATH; "" to skip]  ROUNDS [1]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
COUNT=${COUNT:-50000}
PATTERN=${PATTERN:-bench/filter/{i\}}
WINDOW=${WINDOW:-100}
PORT=${PORT:-18995}
THREADS=${THREADS:-1 2}
SHARDMQ_BINS=${SHARDMQ_BINS:-$ROOT/target/release/shardmq}
MOSQUITTO=${MOSQUITTO-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
ROUNDS=${ROUNDS:-1}

die() { echo "filters.sh: $*" >&2; exit 1; }
WORK=$(mktemp -d /tmp/shardmq-filters.XXXXXX)
BROKER_PID=""
cleanup() {
    if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 1 400); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

# measure LABEL COMMAND... : runs the broker, the client, stops the broker.
measure() {
    local label=$1
    shift
    "$@" >"$WORK/broker.log" 2>&1 &
    BROKER_PID=$!
    wait_port || { cat "$WORK/broker.log" >&2; die "$label did not open port $PORT"; }
    local out
    out=$(python3 "$ROOT/perf/filters.py" "$PORT" "$BROKER_PID" "$COUNT" "$PATTERN" "$WINDOW") ||
        die "$label: client failed"
    kill -TERM "$BROKER_PID"
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
    echo "$label | $out"
}

echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "# COUNT=$COUNT PATTERN=$PATTERN WINDOW=$WINDOW"
for round in $(seq 1 "$ROUNDS"); do
    for bin in $SHARDMQ_BINS; do
        [ -x "$bin" ] || die "$bin not found"
        for t in $THREADS; do
            printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nthreads %s\n' \
                "$PORT" "$t" >"$WORK/shardmq.conf"
            measure "round $round $bin threads $t" "$bin" -c "$WORK/shardmq.conf"
        done
    done
    if [ -n "$MOSQUITTO" ]; then
        printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$PORT" >"$WORK/mosquitto.conf"
        measure "round $round mosquitto" "$MOSQUITTO" -c "$WORK/mosquitto.conf"
    fi
done
