#!/usr/bin/env bash
# perf/ingest.sh: ingestion throughput into an in-process handler that does nothing, side
# by side with the same load delivered to a network subscriber, in the same run.
#
# For `threads 1` and `threads 2`, QoS 0 and QoS 1, ROUNDS times, alternating:
#   (a) embedded: target/release/examples/ingest_bench (the broker embedded, an ingest
#       handler on `#` that accepts and counts) + `shardmq-loadgen fan-in --subscribers 0`
#       (publishers only: throughput is what was acknowledged at QoS 1, sent at QoS 0);
#       lost = acknowledged (QoS 1) or sent (QoS 0), all phases, minus the handler's count,
#       read after the broker closed every connection and stopped on SIGTERM.
#   (b) network: target/release/shardmq with the same config + `fan-in --subscribers 1`;
#       throughput is what the subscriber received, lost is the load generator's.
# Broker CPU per message comes from /proc/PID/stat over the measured window (the load
# generator's --broker-pid, as compare.sh). Writes perf/results/<date>-ingest.md.
#
# Pinning (taskset): threads 1: broker core BROKER_CORE [0], load generator LOADGEN_CORE
# [1]; threads 2: broker on both cores 0,1, load generator on LOADGEN_CORE (it shares a core
# with a shard: the box has two). NO_PIN=1 disables pinning.
# Environment: DURATION [5] WARMUP [1] DRAIN [5] ROUNDS [2] PORT [19883] PUBLISHERS [8]
#   INFLIGHT [100] PAYLOAD [16] THREADS_LIST ["1 2"] QOS_LIST ["0 1"] SKIP_BUILD [0]
#   OUT [perf/results]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
DRAIN=${DRAIN:-5}
ROUNDS=${ROUNDS:-2}
PORT=${PORT:-19883}
PUBLISHERS=${PUBLISHERS:-8}
INFLIGHT=${INFLIGHT:-100}
PAYLOAD=${PAYLOAD:-16}
THREADS_LIST=${THREADS_LIST:-"1 2"}
QOS_LIST=${QOS_LIST:-"0 1"}
BROKER_CORE=${BROKER_CORE:-0}
LOADGEN_CORE=${LOADGEN_CORE:-1}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT=${OUT:-$ROOT/perf/results}
SHARDMQ_BIN=$ROOT/target/release/shardmq
INGEST_BIN=$ROOT/target/release/examples/ingest_bench
LOADGEN=$ROOT/target/release/shardmq-loadgen

die() { echo "ingest.sh: $*" >&2; exit 1; }

cd "$ROOT"
if [ "$SKIP_BUILD" != 1 ]; then
    cargo build --release --bin shardmq --example ingest_bench >&2 || die "build failed"
    cargo build --release -p shardmq-loadgen >&2 || die "cannot build shardmq-loadgen"
fi
for b in "$SHARDMQ_BIN" "$INGEST_BIN" "$LOADGEN"; do [ -x "$b" ] || die "$b not found"; done

PIN=0
if [ "${NO_PIN:-0}" != 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then PIN=1; fi
pin_broker() { # threads
    if [ "$PIN" = 1 ]; then
        if [ "$1" = 1 ]; then echo "taskset -c $BROKER_CORE"; else echo "taskset -c 0,1"; fi
    fi
}
pin_loadgen() { if [ "$PIN" = 1 ]; then echo "taskset -c $LOADGEN_CORE"; fi; }

WORK=$(mktemp -d /tmp/shardmq-ingest.XXXXXX)
BROKER_PID=""
cleanup() {
    if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

config_text() { # threads
    echo "listener $PORT 127.0.0.1"
    echo "allow_anonymous true"
    echo "max_queued_messages 1000"
    echo "max_inflight_messages 20"
    echo "persistence false"
    echo "threads $1"
}

BASE_PORT=$PORT
RUN_INDEX=0
next_port() { # a fresh port per run: a killed broker leaves TIME_WAIT behind
    while :; do
        PORT=$((BASE_PORT + RUN_INDEX))
        RUN_INDEX=$((RUN_INDEX + 1))
        if ! command -v ss >/dev/null || [ -z "$(ss -Htan "( sport = :$PORT )")" ]; then return 0; fi
    done
}
wait_port() {
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}
# The broker has read every client to its DISCONNECT once it closed every connection:
# none left established, nor half-closed by the load generator (close-wait) with bytes
# the broker has still to read.
wait_conns_closed() {
    command -v ss >/dev/null || { sleep 2; return 0; }
    for _ in $(seq 1 400); do
        [ -z "$(ss -Htn state established state close-wait "( sport = :$PORT )")" ] && return 0
        sleep 0.05
    done
    return 1
}
jget() { sed -n "s/^  \"$2\": \\(.*\\),\$/\\1/p" "$1" | tr -d '"' | head -1; }

# run_one MODE THREADS QOS ROUND: appends one line to $WORK/rows
#   mode threads qos round msgs_per_sec cpu_us_per_msg broker_cpu_s lost ingested counted
run_one() {
    local mode=$1 threads=$2 qos=$3 round=$4 tag="$1-t$2-q$3-r$4" subs pid rc
    next_port
    config_text "$threads" >"$WORK/$tag.conf"
    local bcmd
    if [ "$mode" = embedded ]; then
        bcmd=($(pin_broker "$threads") "$INGEST_BIN" "$WORK/$tag.conf")
        subs=0
    else
        bcmd=($(pin_broker "$threads") "$SHARDMQ_BIN" -c "$WORK/$tag.conf")
        subs=1
    fi
    "${bcmd[@]}" >"$WORK/$tag.broker.out" 2>"$WORK/$tag.broker.err" &
    BROKER_PID=$!
    pid=$BROKER_PID
    wait_port || { cat "$WORK/$tag.broker.err" >&2; die "$mode broker did not open port $PORT"; }
    local lcmd=($(pin_loadgen) "$LOADGEN" fan-in --publishers "$PUBLISHERS" --subscribers "$subs"
        --qos "$qos" --inflight "$INFLIGHT" --payload "$PAYLOAD" --duration "$DURATION"
        --warmup "$WARMUP" --drain "$DRAIN" --host 127.0.0.1 --port "$PORT"
        --broker-pid "$pid" --json "$WORK/$tag.json" --quiet)
    echo "== $tag" >&2
    set +e
    timeout "$(awk -v a="$DURATION" -v b="$WARMUP" -v c="$DRAIN" 'BEGIN { printf "%d", a + b + c + 120 }')" "${lcmd[@]}" >"$WORK/$tag.txt" 2>&1
    rc=$?
    set -e
    cat "$WORK/$tag.txt" >&2
    [ "$rc" = 0 ] || die "load generator failed (exit $rc) on $tag"
    wait_conns_closed || echo "ingest.sh: $tag: connections still open after 20 s" >&2
    kill -TERM "$pid"
    wait "$pid" || true
    BROKER_PID=""
    echo "${bcmd[*]}" | sed -e "s#$WORK/##g" -e "s#$ROOT/##g" >"$WORK/$tag.cmd"
    echo "${lcmd[*]}" | sed -e "s#$WORK/##g" -e "s#$ROOT/##g" -e "s#--broker-pid [0-9]*#--broker-pid PID#" >>"$WORK/$tag.cmd"
    local j="$WORK/$tag.json" rate cpu bcpu lost ingested counted
    cpu=$(jget "$j" broker_cpu_us_per_msg)
    bcpu=$(jget "$j" broker_cpu_seconds)
    if [ "$mode" = embedded ]; then
        ingested=$(sed -n "s/^ingested .*qos$qos \\([0-9]*\\).*/\\1/p" "$WORK/$tag.broker.out")
        [ -n "$ingested" ] || die "$tag: the handler printed no count"
        if [ "$qos" = 0 ]; then
            rate=$(jget "$j" sent_per_sec)
            counted=$(jget "$j" sent_all_phases)
        else
            rate=$(jget "$j" acked_per_sec)
            counted=$(jget "$j" acked_all_phases)
        fi
        lost=$((counted - ingested))
        [ "$lost" -ge 0 ] || lost="0 (handler +$((-lost)))"
    else
        rate=$(jget "$j" msgs_per_sec)
        lost=$(jget "$j" lost)
        ingested="-"
        counted=$(jget "$j" received)
    fi
    printf '%s|%s|%s|%s|%.0f|%s|%s|%s|%s|%s\n' "$mode" "$threads" "$qos" "$round" "$rate" \
        "$cpu" "$bcpu" "$lost" "$ingested" "$counted" >>"$WORK/rows"
    sleep 1
}

: >"$WORK/rows"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for threads in $THREADS_LIST; do
    for qos in $QOS_LIST; do
        for round in $(seq 1 "$ROUNDS"); do
            run_one embedded "$threads" "$qos" "$round" || die "embedded run failed"
            run_one network "$threads" "$qos" "$round" || die "network run failed"
        done
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p "$OUT"
file="$OUT/$(date +%Y-%m-%d)-ingest.md"
{
    echo "# Ingestion: in-process handler (embedded) vs network subscriber, threads 1 and 2"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- machine: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores, kernel $(uname -r)"
    echo "- load average (1/5/15 min): $LOAD_BEFORE before, $LOAD_AFTER after. The box is shared"
    echo "  with other work (other helpers' builds and tests): absolute numbers are skewed;"
    echo "  compare embedded and network of the same round (alternated, same minute)."
    echo "- pinning: $([ "$PIN" = 1 ] && echo "threads 1: broker core $BROKER_CORE, load generator core $LOADGEN_CORE; threads 2: broker cores 0,1, load generator core $LOADGEN_CORE (shares a core with a shard)" || echo none)"
    echo "- load: fan-in, $PUBLISHERS publishers, one topic, $PAYLOAD B payload, closed loop inflight $INFLIGHT, ${DURATION} s measured after ${WARMUP} s warmup, $ROUNDS rounds"
    echo "- command: \`$(basename "$0") ${*:-}\` with DURATION=$DURATION WARMUP=$WARMUP ROUNDS=$ROUNDS THREADS_LIST=\"$THREADS_LIST\" QOS_LIST=\"$QOS_LIST\""
    echo
    echo "msgs/s: embedded = acknowledged (QoS 1) or sent (QoS 0) per second, network = received"
    echo "by the subscriber per second. Broker CPU per message: /proc/PID/stat utime+stime over"
    echo "the measured window, divided by those messages. Lost: embedded = acknowledged / sent"
    echo "(all phases) minus the handler's count; network = the load generator's count. No"
    echo "latency for embedded (no subscriber: not measured)."
    echo
    echo "## Summary (mean over rounds)"
    echo
    echo "| threads | QoS | embedded msgs/s | network msgs/s | embedded/network | embedded CPU us/msg | network CPU us/msg | CPU network/embedded | lost embedded | lost network |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for threads in $THREADS_LIST; do
        for qos in $QOS_LIST; do
            awk -F'|' -v t="$threads" -v q="$qos" '
                $2 == t && $3 == q { n[$1]++; r[$1] += $5; c[$1] += $6; l[$1] = l[$1] (l[$1] == "" ? "" : ", ") $8 }
                END {
                    re = r["embedded"] / n["embedded"]; rn = r["network"] / n["network"]
                    ce = c["embedded"] / n["embedded"]; cn = c["network"] / n["network"]
                    printf "| %s | %s | %.0f | %.0f | %.2f | %.3f | %.3f | %.2f | %s | %s |\n",
                        t, q, re, rn, (rn > 0 ? re / rn : 0), ce, cn, (ce > 0 ? cn / ce : 0), l["embedded"], l["network"]
                }' "$WORK/rows"
        done
    done
    echo
    echo "## Every run (in the order run)"
    echo
    echo "| mode | threads | QoS | round | msgs/s | broker CPU us/msg | broker CPU s | lost | handler count | acked/sent (embedded, all phases) or received (network) |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    awk -F'|' '{ line = "|"; for (i = 1; i <= NF; i++) line = line " " $i " |"; print line }' "$WORK/rows"
    echo
    echo "## Commands (threads 1, QoS 0, round 1; the others differ in threads, --qos, port)"
    echo
    echo '```'
    cat "$WORK/embedded-t${THREADS_LIST%% *}-q${QOS_LIST%% *}-r1.cmd" "$WORK/network-t${THREADS_LIST%% *}-q${QOS_LIST%% *}-r1.cmd"
    echo "# config (both; the port changes per run):"
    config_text "${THREADS_LIST%% *}"
    echo '```'
} >"$file"
echo "wrote $file" >&2
