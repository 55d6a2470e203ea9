#!/usr/bin/env bash
# perf/ab.sh SCENARIO ROUNDS BIN_A BIN_B [FLASHMQ_BIN] : alternating before/after runs of one
# load generator scenario against two shardmq binaries (and FlashMQ, thread_count 1), the
# broker pinned to core 0 and the load generator to core 1, one broker at a time, A B F A B F
# ...; prints one line per run: broker, round, received msgs/s, broker CPU us per delivered
# message, p50 and p99 latency (us), lost. On a host shared with other work compare within a
# round and look at the ratios.
# SCENARIO: fan-out-qos0 | fan-out-qos1 | fanout-5-1000-5-250K | fan-in-qos0 | pairs-qos0
#   (fan-in: 8 publishers, inflight 100; pairs: 100 pairs, inflight 10, as compare.sh)
# Environment: DURATION [8] WARMUP [2] DRAIN [2] PORT [18950] FANOUT_SUBS [1000]
#   LOADGEN [target/release/shardmq-loadgen] MAX_INFLIGHT [20]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCENARIO=$1 ROUNDS=$2 A=$3 B=$4 F=${5:-}
DURATION=${DURATION:-8} WARMUP=${WARMUP:-2} DRAIN=${DRAIN:-2} PORT=${PORT:-18950}
FANOUT_SUBS=${FANOUT_SUBS:-1000}
LOADGEN=${LOADGEN:-$ROOT/target/release/shardmq-loadgen}
case "$SCENARIO" in
    fan-out-qos0 | fan-out-qos1)
        ARGS=(fan-out --publishers 1 --subscribers "$FANOUT_SUBS" --qos "${SCENARIO#fan-out-qos}" --inflight 10) ;;
    fanout-5-1000-5-250K) ARGS=(fanout-5-1000-5-250K) ;;
    fan-in-qos0) ARGS=(fan-in --publishers 8 --subscribers 1 --qos 0 --inflight 100) ;;
    pairs-qos0) ARGS=(pairs --pairs 100 --qos 0 --inflight 10) ;;
    *) echo "ab.sh: unknown scenario $SCENARIO" >&2; exit 1 ;;
esac
WORK=$(mktemp -d /tmp/shardmq-ab.XXXXXX)
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
wait_port() {
    for _ in $(seq 1 400); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
field() { sed -n "s/^ *\"$1\": *\([0-9.]*\).*/\1/p" "$2" | head -1; }
lat() { sed -n "s/.*\"latency_us\": {.*\"$1\": *\([0-9.]*\).*/\1/p" "$2" | head -1; }
lat() { sed -n "s/.*\"latency_us\": {.*\"$1\": *\([0-9.]*\).*/\1/p" "$2" | head -1; }
run() { # NAME ROUND PORT
    local name=$1 round=$2 port=$3
    if [ "$name" = flashmq ]; then
        printf 'thread_count 1\nallow_anonymous true\nlog_level warning\nmax_qos_msg_pending_per_client 1000\nmax_qos_bytes_pending_per_client 1073741824\nlisten {\n  protocol mqtt\n  inet_protocol ip4\n  inet4_bind_address 127.0.0.1\n  port %s\n}\n' "$port" >"$WORK/f.conf"
        taskset -c 0 "$F" --config-file "$WORK/f.conf" >"$WORK/broker.log" 2>&1 &
    else
        local bin=$A
        [ "$name" = B ] && bin=$B
        printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000\nmax_inflight_messages %s\npersistence false\n' \
            "$port" "${MAX_INFLIGHT:-20}" >"$WORK/s.conf"
        taskset -c 0 "$bin" -c "$WORK/s.conf" >"$WORK/broker.log" 2>&1 &
    fi
    PID=$!
    wait_port "$port" || { cat "$WORK/broker.log" >&2; exit 1; }
    taskset -c 1 "$LOADGEN" "${ARGS[@]}" --payload 16 --duration "$DURATION" --warmup "$WARMUP" \
        --drain "$DRAIN" --host 127.0.0.1 --port "$port" --broker-pid "$PID" --json "$WORK/r.json" --quiet \
        >"$WORK/r.txt" 2>&1 || { cat "$WORK/r.txt" >&2; }
    kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; PID=""
    local j="$WORK/r.json"
    printf '%-8s round %s  %10s msg/s  %6s us/msg  p50 %9s  p99 %9s  lost %s\n' "$name" "$round" \
        "$(field msgs_per_sec "$j")" "$(field broker_cpu_us_per_msg "$j")" \
        "$(lat p50 "$j")" "$(lat p99 "$j")" "$(field lost "$j")"
}
p=$PORT
for r in $(seq 1 "$ROUNDS"); do
    for name in A B ${F:+flashmq}; do
        run "$name" "$r" "$p"
        p=$((p + 1))
    done
done
