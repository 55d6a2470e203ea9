#!/usr/bin/env bash
# perf/instructions.sh SCENARIO [SHORT LONG] : broker instructions per delivered message,
# counted by `valgrind --tool=callgrind` (exact, unaffected by other load on the host,
# unlike wall-clock or sampled CPU time; for machines without hardware counters).
#
# Two runs against a fresh broker under callgrind each, SHORT and LONG seconds of load
# (no warmup, closed loop); the per-message cost is
#     (Ir(LONG) - Ir(SHORT)) / (delivered(LONG) - delivered(SHORT))
# so start-up, connects and shutdown cancel out. Prints one line per run and the result.
#
# Scenarios: fan-in-qos1 fan-in-qos0 fan-out-qos0 fan-out-qos1 pairs-qos0 (100 pairs).
# Environment: PORT [18993]  MAX_INFLIGHT [20]  PAYLOAD [16]  INFLIGHT [100 per
#   publisher; pairs: PAIRS_INFLIGHT [10] per pair]  THREADS [1] (the broker's shards)
#   PUBLISHERS [8]  FANOUT_SUBS [100]  SHARDMQ_BIN / LOADGEN (default target/release/...)
#   KEEP [""] directory to keep the callgrind outputs in (for callgrind_annotate)
#   LOADGEN_EXTRA [""] more shardmq-loadgen arguments (e.g. "--topics 32": 32 topics, so
#   every subscriber subscribes to the wildcard filter lg/bench/+)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCENARIO=${1:-}
SHORT=${2:-2}
LONG=${3:-6}
PORT=${PORT:-18993}
PAYLOAD=${PAYLOAD:-16}
INFLIGHT=${INFLIGHT:-100}
PUBLISHERS=${PUBLISHERS:-8}
FANOUT_SUBS=${FANOUT_SUBS:-100}
SHARDMQ_BIN=${SHARDMQ_BIN:-$ROOT/target/release/shardmq}
LOADGEN=${LOADGEN:-$ROOT/target/release/shardmq-loadgen}

die() { echo "instructions.sh: $*" >&2; exit 1; }
case "$SCENARIO" in
    fan-in-qos0 | fan-in-qos1) ARGS=(fan-in --publishers "$PUBLISHERS" --subscribers 1 --qos "${SCENARIO#fan-in-qos}") ;;
    fan-out-qos0 | fan-out-qos1) ARGS=(fan-out --publishers 1 --subscribers "$FANOUT_SUBS" --qos "${SCENARIO#fan-out-qos}") ;;
    pairs-qos0) ARGS=(pairs --pairs 100 --qos 0); INFLIGHT=${PAIRS_INFLIGHT:-10} ;;
    *) die "usage: perf/instructions.sh fan-in-qos1|fan-in-qos0|fan-out-qos0|fan-out-qos1|pairs-qos0 [SHORT LONG]" ;;
esac
# shellcheck disable=SC2206 # split on purpose: several arguments
[ -n "${LOADGEN_EXTRA:-}" ] && ARGS+=($LOADGEN_EXTRA)
command -v valgrind >/dev/null || die "valgrind not found"
[ -x "$SHARDMQ_BIN" ] || die "$SHARDMQ_BIN not found"

WORK=$(mktemp -d /tmp/shardmq-instr.XXXXXX)
BROKER_PID=""
cleanup() {
    if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
    [ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$WORK"/callgrind.* "$KEEP"/ 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000\nmax_inflight_messages %s\npersistence false\nthreads %s\n' \
    "$PORT" "${MAX_INFLIGHT:-20}" "${THREADS:-1}" >"$WORK/shardmq.conf"

wait_port() {
    for _ in $(seq 1 400); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

# run SECONDS -> "instructions delivered"
run() {
    valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.$1" \
        "$SHARDMQ_BIN" -c "$WORK/shardmq.conf" >"$WORK/broker.$1.log" 2>&1 &
    BROKER_PID=$!
    wait_port || { cat "$WORK/broker.$1.log" >&2; die "broker did not open port $PORT"; }
    "$LOADGEN" "${ARGS[@]}" --inflight "$INFLIGHT" --payload "$PAYLOAD" --duration "$1" --warmup 0 \
        --drain 3 --host 127.0.0.1 --port "$PORT" --json "$WORK/load.$1.json" --quiet >"$WORK/load.$1.txt" 2>&1 ||
        { cat "$WORK/load.$1.txt" >&2; die "load generator failed"; }
    kill -TERM "$BROKER_PID"
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
    local ir got lost
    ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$WORK/callgrind.$1")
    got=$(sed -n 's/^ *"received": *\([0-9]*\).*/\1/p' "$WORK/load.$1.json" | head -1)
    lost=$(sed -n 's/^ *"lost": *\([0-9]*\).*/\1/p' "$WORK/load.$1.json" | head -1)
    [ -n "$ir" ] && [ -n "$got" ] || die "no count for the ${1}s run"
    [ "${lost:-0}" = 0 ] || die "the ${1}s run lost $lost messages"
    echo "$ir $got"
}

read -r IR1 N1 <<<"$(run "$SHORT")"
read -r IR2 N2 <<<"$(run "$LONG")"
echo "run ${SHORT}s: $IR1 instructions, $N1 delivered"
echo "run ${LONG}s: $IR2 instructions, $N2 delivered"
[ "$N2" -gt "$N1" ] || die "the long run delivered no more than the short one"
awk -v a="$IR1" -v b="$IR2" -v n="$N1" -v m="$N2" -v s="$SCENARIO" \
    'BEGIN { printf "%s: %.0f instructions per delivered message\n", s, (b - a) / (m - n) }'
