#!/usr/bin/env bash
# perf/console.sh : what scraping the HTTP console's /metrics costs under load. One
# shardmq (with an http_listener) runs the fan-in-qos0 scenario of the load generator
# ROUNDS times unscraped and ROUNDS times while `curl` scrapes /metrics every SCRAPE
# seconds, alternating (unscraped, scraped, unscraped, ...) in the same session so that
# host noise hits both alike; broker pinned to one core, load generator to the other.
# Writes perf/results/<date>-console-scrape.md with each run's throughput and broker CPU
# per delivered message, the means, and the difference against the unscraped spread.
#
# Environment (defaults in brackets): ROUNDS [3] DURATION [10] WARMUP [2] DRAIN [2]
#   PORT [18883] HTTP_PORT [18880] PUBLISHERS [8] INFLIGHT [100] PAYLOAD [16]
#   SCRAPE [1] seconds between scrapes  SKIP_BUILD [0]  OUT [perf/results]
#   BROKER_CORE [0] LOADGEN_CORE [1] (NO_PIN=1 disables pinning)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
DRAIN=${DRAIN:-2}
PORT=${PORT:-18883}
HTTP_PORT=${HTTP_PORT:-18880}
PUBLISHERS=${PUBLISHERS:-8}
INFLIGHT=${INFLIGHT:-100}
PAYLOAD=${PAYLOAD:-16}
SCRAPE=${SCRAPE:-1}
OUT=${OUT:-$ROOT/perf/results}
SHARDMQ_BIN=${SHARDMQ_BIN:-$ROOT/target/release/shardmq}
LOADGEN=${LOADGEN:-$ROOT/target/release/shardmq-loadgen}

cd "$ROOT"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release --workspace >&2
fi
PIN_BROKER=()
PIN_LOADGEN=()
if [ "${NO_PIN:-0}" != 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    PIN_BROKER=(taskset -c "${BROKER_CORE:-0}")
    PIN_LOADGEN=(taskset -c "${LOADGEN_CORE:-1}")
fi

WORK=$(mktemp -d /tmp/shardmq-console-perf.XXXXXX)
BROKER_PID=""
SCRAPER_PID=""
cleanup() {
    [ -n "$SCRAPER_PID" ] && kill "$SCRAPER_PID" 2>/dev/null || true
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$SHARDMQ_BIN" passwd -c -b "$WORK/passwd" prom scrape-me >/dev/null
cat >"$WORK/shardmq.conf" <<CONF
listener $PORT 127.0.0.1
allow_anonymous true
password_file $WORK/passwd
max_queued_messages 1000
max_inflight_messages 20
persistence false
http_listener $HTTP_PORT 127.0.0.1
CONF

wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}
jget() { sed -n "s/^  \"$2\": \\(.*\\),\$/\\1/p" "$1" | tr -d '"' | head -1; }

run() { # label round
    local label=$1 round=$2 json="$WORK/$1-$2.json" scrapes=0
    "${PIN_BROKER[@]}" "$SHARDMQ_BIN" -c "$WORK/shardmq.conf" >"$WORK/broker.log" 2>&1 &
    BROKER_PID=$!
    wait_port "$PORT" && wait_port "$HTTP_PORT" || { cat "$WORK/broker.log" >&2; exit 1; }
    if [ "$label" = scraped ]; then
        (
            n=0
            while true; do
                curl -sf -u prom:scrape-me -o /dev/null "http://127.0.0.1:$HTTP_PORT/metrics" && n=$((n + 1))
                echo "$n" >"$WORK/scrapes"
                sleep "$SCRAPE"
            done
        ) &
        SCRAPER_PID=$!
    fi
    "${PIN_LOADGEN[@]}" "$LOADGEN" fan-in --publishers "$PUBLISHERS" --subscribers 1 --qos 0 \
        --inflight "$INFLIGHT" --payload "$PAYLOAD" --duration "$DURATION" --warmup "$WARMUP" \
        --drain "$DRAIN" --host 127.0.0.1 --port "$PORT" --broker-pid "$BROKER_PID" \
        --json "$json" --quiet >"$WORK/$label-$round.txt" 2>&1 || true
    if [ -n "$SCRAPER_PID" ]; then
        kill "$SCRAPER_PID" 2>/dev/null || true
        wait "$SCRAPER_PID" 2>/dev/null || true
        SCRAPER_PID=""
        scrapes=$(cat "$WORK/scrapes" 2>/dev/null || echo 0)
    fi
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
    echo "| $label | $round | $(jget "$json" msgs_per_sec) | $(jget "$json" broker_cpu_us_per_msg) | $(jget "$json" lost) | $scrapes |" >>"$WORK/rows"
    echo "== $label round $round: $(tail -n 1 "$WORK/rows")" >&2
    sleep 1
}

: >"$WORK/rows"
for r in $(seq 1 "$ROUNDS"); do
    run unscraped "$r"
    run scraped "$r"
done

mean() { awk -F'|' -v l="$1" -v c="$2" '{ gsub(/ /, "", $2) } $2 == l { s += $(c); n++ } END { if (n) printf "%.3f", s / n; else print "-" }' "$WORK/rows"; }
spread() { awk -F'|' -v l="$1" -v c="$2" '{ gsub(/ /, "", $2) } $2 == l { v = $(c) + 0; if (n == 0 || v < lo) lo = v; if (n == 0 || v > hi) hi = v; n++ } END { if (n) printf "%.3f", hi - lo; else print "-" }' "$WORK/rows"; }

mkdir -p "$OUT"
file="$OUT/$(date +%Y-%m-%d)-console-scrape.md"
{
    echo "# /metrics scraped every ${SCRAPE} s under fan-in load, against not scraped"
    echo
    echo "Made by \`perf/console.sh\` (ROUNDS=$ROUNDS, alternating in one session). fan-in-qos0:"
    echo "$PUBLISHERS publishers, 1 subscriber, QoS 0, $PAYLOAD-byte payloads, inflight $INFLIGHT,"
    echo "${DURATION} s measured after ${WARMUP} s warm-up. Broker CPU per delivered message is the"
    echo "broker's user+system CPU over the messages its subscriber received."
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- machine: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores, kernel $(uname -r)"
    echo "- pinning: broker ${PIN_BROKER[*]:-none}, load generator ${PIN_LOADGEN[*]:-none}"
    echo "- load when written: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the host skews numbers)"
    echo
    echo "| run | round | received msgs/s | broker CPU/msg (us) | lost | scrapes |"
    echo "|---|---|---|---|---|---|"
    cat "$WORK/rows"
    echo
    echo "| | unscraped | scraped | unscraped spread (max - min) |"
    echo "|---|---|---|---|"
    echo "| mean received msgs/s | $(mean unscraped 4) | $(mean scraped 4) | $(spread unscraped 4) |"
    echo "| mean broker CPU/msg (us) | $(mean unscraped 5) | $(mean scraped 5) | $(spread unscraped 5) |"
} >"$file"
echo "wrote $file" >&2
cat "$file"
