#!/usr/bin/env bash
# perf/headline.sh [SCENARIO...] : perf/README's headline table. Runs perf/compare.sh for
# each scenario ROUNDS times (default 2), round by round (every scenario once, then again,
# so that a burst of load from a neighbour does not hit one scenario's rounds only), with
# shardmq, Mosquitto and FlashMQ one after the other in each run, and writes
# perf/results/<date>-headline.md: per scenario, round and broker the delivered rate,
# broker CPU per delivered message, lost messages and latency p99 (memory per connection
# for conn-idle), with shardmq's CPU-per-message ratio to each peer. The per-run files
# (<date>-<scenario>-rN.md) stay next to it with the commands, machine and raw output.
#
# Default scenarios: fan-in-qos0 pairs-qos0 fan-out-qos0 fan-in-qos1 latency conn-idle.
# Every compare.sh variable applies (DURATION, BROKERS, THREADS ...); ROUNDS [2].
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/perf/results}
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(fan-in-qos0 pairs-qos0 fan-out-qos0 fan-in-qos1 latency conn-idle)
ROUNDS=${ROUNDS:-2}
export BROKERS=${BROKERS:-"shardmq mosquitto flashmq"}
DATE=$(date +%Y-%m-%d)
mkdir -p "$OUT"

SKIP=${SKIP_BUILD:-0}
for r in $(seq 1 "$ROUNDS"); do
    for s in "${SCENARIOS[@]}"; do
        SKIP_BUILD=$SKIP LABEL=r$r OUT=$OUT bash "$ROOT/perf/compare.sh" "$s"
        SKIP=1
    done
done

# The value of `metric` in broker `b`'s column of a compare.sh result ("-" if absent).
cell() { # file metric broker
    awk -F'|' -v m="$2" -v b="$3" '
        NR == 1 { }
        /^\| metric \|/ { for (i = 2; i <= NF; i++) { h = $i; gsub(/ /, "", h); col[h] = i } next }
        { name = $2; gsub(/^ +| +$/, "", name) }
        name == m && (b in col) { v = $(col[b]); gsub(/ /, "", v); print v; found = 1; exit }
        END { if (!found) print "-" }' "$1"
}
num() { awk -v a="$1" -v d="$2" 'BEGIN { if (a == "-" || a == "") print "-"; else printf "%.*f", d, a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }

file="$OUT/$DATE-headline.md"
{
    echo "# Headline: shardmq, Mosquitto and FlashMQ side by side"
    echo
    echo "Made by \`ROUNDS=$ROUNDS perf/headline.sh ${SCENARIOS[*]}\` (each scenario through"
    echo "\`perf/compare.sh\`, the brokers one after the other in each run, rounds interleaved)."
    echo "CPU/msg is the broker's user+system CPU over the messages its subscribers received;"
    echo "ratios below 1 mean shardmq spends less."
    echo
    echo "- machine: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores, kernel $(uname -r)"
    echo "- environment: ${DURATION:+DURATION=$DURATION }${THREADS:+THREADS=$THREADS }${MAX_INFLIGHT:+MAX_INFLIGHT=$MAX_INFLIGHT }${RATE:+RATE=$RATE }${CONNS:+CONNS=$CONNS }BROKERS=\"$BROKERS\""
    echo "- load when written: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| scenario | round | broker | delivered msg/s | CPU/msg (us) | lost | p99 (us) | shardmq CPU/msg ratio |"
    echo "|---|---|---|---|---|---|---|---|"
    for s in "${SCENARIOS[@]}"; do
        for r in $(seq 1 "$ROUNDS"); do
            f="$OUT/$DATE-$s-r$r.md"
            [ -f "$f" ] || { echo "| $s | $r | (no result file) | | | | | |"; continue; }
            ours=$(cell "$f" "broker CPU per delivered msg (us)" shardmq)
            for b in $BROKERS; do
                if [ "$s" = conn-idle ]; then
                    mem=$(cell "$f" "broker memory per connection (B)" "$b")
                    held=$(cell "$f" "connections held" "$b")
                    echo "| $s | $r | $b | $held idle connections | $(num "$mem" 0) B per connection | | | |"
                    continue
                fi
                rate=$(cell "$f" "received msgs/s" "$b")
                cpu=$(cell "$f" "broker CPU per delivered msg (us)" "$b")
                lost=$(cell "$f" "lost" "$b")
                p99=$(cell "$f" "latency p99 (us)" "$b")
                rat="-"
                [ "$b" = shardmq ] || rat=$(ratio "$ours" "$cpu")
                echo "| $s | $r | $b | $(num "$rate" 0) | $(num "$cpu" 3) | $lost | $(num "$p99" 0) | $rat |"
            done
        done
    done
    echo
    echo "Per-run details: $(for s in "${SCENARIOS[@]}"; do for r in $(seq 1 "$ROUNDS"); do printf '[%s r%s](%s) ' "$s" "$r" "$DATE-$s-r$r.md"; done; done)"
} >"$file"
echo "wrote $file" >&2
cat "$file"
