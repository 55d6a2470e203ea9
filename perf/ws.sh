#!/usr/bin/env bash
# perf/ws.sh [SCENARIO...] : MQTT over WebSockets against plain TCP, shardmq and Mosquitto
# side by side (default scenarios: fan-in-qos0 pairs-qos0). For each scenario it runs
# perf/compare.sh alternately TRANSPORT=tcp and TRANSPORT=ws, ROUNDS times (default 2:
# tcp ws tcp ws, so that a neighbour's load hits both transports; broker on one core,
# load generator on the other; every compare.sh variable applies), and writes
# perf/results/<date>-ws-vs-tcp.md: throughput and broker CPU per delivered message for
# each broker, transport and round, and what WebSockets adds per message. The per-run
# results stay next to it (<date>-<scenario>-tcp-rN.md, <date>-<scenario>-ws-rN.md) with
# the commands, the machine and the raw load generator output.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/perf/results}
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(fan-in-qos0 pairs-qos0)
DATE=$(date +%Y-%m-%d)
mkdir -p "$OUT"

ROUNDS=${ROUNDS:-2}
# Mosquitto and shardmq (FlashMQ's websockets listener is left out: this compares
# transports, and compare.sh reads the first two broker columns).
export BROKERS=${BROKERS:-"shardmq mosquitto"}
SKIP=${SKIP_BUILD:-0}
for s in "${SCENARIOS[@]}"; do
    for r in $(seq 1 "$ROUNDS"); do
        for t in tcp ws; do
            SKIP_BUILD=$SKIP TRANSPORT=$t LABEL=$t-r$r OUT=$OUT bash "$ROOT/perf/compare.sh" "$s"
            SKIP=1
        done
    done
done

# "| metric | shardmq | mosquitto | ratio |" rows of a compare.sh result.
cell() { # file metric column(2=shardmq 3=mosquitto)
    awk -F'|' -v m="$2" -v c="$3" '{ gsub(/^ +| +$/, "", $2) } $2 == m { v = $(c + 1); gsub(/ /, "", v); print v; exit }' "$1"
}
delta() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-") print "-"; else printf "%+.2f", a - b }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%+.0f%%", (a - b) * 100 / b }'; }

file="$OUT/$DATE-ws-vs-tcp.md"
{
    echo "# MQTT over WebSockets against plain TCP: shardmq and Mosquitto"
    echo
    echo "Made by \`ROUNDS=$ROUNDS perf/ws.sh ${SCENARIOS[*]}\` (each scenario through \`perf/compare.sh\`,"
    echo "TRANSPORT=tcp and TRANSPORT=ws alternately, $ROUNDS rounds, in the same session). Broker CPU per delivered message"
    echo "is the broker's user+system CPU time over the messages its subscribers received."
    echo
    echo "- machine: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores, kernel $(uname -r)"
    echo "- load when written: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| scenario | round | broker | TCP msg/s | WS msg/s | TCP CPU/msg (us) | WS CPU/msg (us) | WS - TCP (us/msg) | WS vs TCP CPU | lost (TCP/WS) |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for s in "${SCENARIOS[@]}"; do
      for r in $(seq 1 "$ROUNDS"); do
        tcp="$OUT/$DATE-$s-tcp-r$r.md"
        ws="$OUT/$DATE-$s-ws-r$r.md"
        for col in 2 3; do
            b=$([ $col = 2 ] && echo shardmq || echo mosquitto)
            tr=$(cell "$tcp" "received msgs/s" $col); wr=$(cell "$ws" "received msgs/s" $col)
            tc=$(cell "$tcp" "broker CPU per delivered msg (us)" $col); wc=$(cell "$ws" "broker CPU per delivered msg (us)" $col)
            tl=$(cell "$tcp" "lost" $col); wl=$(cell "$ws" "lost" $col)
            echo "| $s | $r | $b | $tr | $wr | $tc | $wc | $(delta "$wc" "$tc") | $(pct "$wc" "$tc") | $tl / $wl |"
        done
      done
    done
    echo
    echo "Per-run details: $(for s in "${SCENARIOS[@]}"; do for r in $(seq 1 "$ROUNDS"); do printf '[%s tcp r%s](%s) [%s ws r%s](%s) ' "$s" "$r" "$DATE-$s-tcp-r$r.md" "$s" "$r" "$DATE-$s-ws-r$r.md"; done; done)"
} >"$file"
echo "wrote $file" >&2
cat "$file"
