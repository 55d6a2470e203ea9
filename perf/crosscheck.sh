#!/usr/bin/env bash
# perf/crosscheck.sh : checks shardmq-loadgen's counts against independent witnesses, on a
# private broker (loopback, port $PORT): BROKER=mosquitto (default) or BROKER=shardmq
# (target/release/shardmq, which publishes the same $SYS counters):
#   1. the broker's own $SYS counters (publish/messages/received, /sent, /dropped) before and
#      after a run, against the load generator's sent / received / lost;
#   2. a mosquitto_sub counting the messages of the run on the same topic;
#   3. mqttwrk (if installed: `cargo install mqttwrk`) as a second generator, for rates.
# Environment: PORT [18890] DURATION [4] QOS [1] PUBLISHERS [4] RATE [500 msg/s per publisher]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${PORT:-18890}
DURATION=${DURATION:-4}
QOS=${QOS:-1}
PUBLISHERS=${PUBLISHERS:-4}
RATE=${RATE:-500}
LOADGEN=${LOADGEN:-$ROOT/target/release/shardmq-loadgen}
MOSQUITTO_BIN=${MOSQUITTO_BIN:-/usr/sbin/mosquitto}
BROKER=${BROKER:-mosquitto}
case "$BROKER" in
    mosquitto) BROKER_BIN=$MOSQUITTO_BIN ;;
    shardmq) BROKER_BIN=${SHARDMQ_BIN:-$ROOT/target/release/shardmq} ;;
    *) echo "BROKER must be mosquitto or shardmq" >&2; exit 1 ;;
esac
[ -x "$LOADGEN" ] || { echo "build first: cargo build --release -p shardmq-loadgen" >&2; exit 1; }

WORK=$(mktemp -d /tmp/shardmq-crosscheck.XXXXXX)
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
printf 'listener %s 127.0.0.1\nallow_anonymous true\nsys_interval 1\n' "$PORT" >"$WORK/m.conf"
[ "$BROKER" = mosquitto ] && echo "set_tcp_nodelay true" >>"$WORK/m.conf"
"$BROKER_BIN" -c "$WORK/m.conf" >"$WORK/m.log" 2>&1 &
PID=$!
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
echo "broker: $BROKER ($BROKER_BIN)"

sys() { timeout 5 mosquitto_sub -p "$PORT" -C 1 -t "\$SYS/broker/publish/messages/$1"; }
jget() { sed -n "s/^  \"$2\": \\(.*\\),\$/\\1/p" "$1" | head -1; }

echo "== 1. closed loop, QoS $QOS, $PUBLISHERS publishers -> 1 subscriber, vs \$SYS"
r0=$(sys received); s0=$(sys sent); d0=$(sys dropped)
"$LOADGEN" fan-in --port "$PORT" --publishers "$PUBLISHERS" --qos "$QOS" --duration "$DURATION" --quiet --json "$WORK/a.json" >/dev/null
sleep 2.5 # $SYS refreshes every second
r1=$(sys received); s1=$(sys sent); d1=$(sys dropped)
printf '%-28s %12s %12s\n' "" loadgen "$BROKER"
printf '%-28s %12s %12s\n' "published (broker received)" "$(jget "$WORK/a.json" sent)" $((r1 - r0))
printf '%-28s %12s %12s\n' "delivered (broker sent)" "$(jget "$WORK/a.json" received)" $((s1 - s0))
printf '%-28s %12s %12s\n' "lost (broker dropped)" "$(jget "$WORK/a.json" lost)" $((d1 - d0))
echo "(broker sent also counts the \$SYS messages these reads receive: a few more)"

echo
echo "== 2. open loop, $PUBLISHERS x $RATE msg/s for $DURATION s, counted by mosquitto_sub on the same topic"
timeout $((DURATION + 15)) mosquitto_sub -p "$PORT" -q "$QOS" -t 'xc/#' -F '%t' -W $((DURATION + 10)) >"$WORK/sub.txt" 2>/dev/null &
SUB=$!
sleep 0.5
"$LOADGEN" fan-in --port "$PORT" --topic xc --publishers "$PUBLISHERS" --qos "$QOS" --rate "$RATE" \
    --duration "$DURATION" --quiet --json "$WORK/b.json" >/dev/null
sleep 1
kill "$SUB" 2>/dev/null || true
wait "$SUB" 2>/dev/null || true
printf '%-28s %12s\n' "loadgen sent" "$(jget "$WORK/b.json" sent)"
printf '%-28s %12s\n' "loadgen subscriber received" "$(jget "$WORK/b.json" received)"
printf '%-28s %12s\n' "mosquitto_sub counted" "$(wc -l <"$WORK/sub.txt")"

echo
echo "== 3. mqttwrk as a second generator (publishers only: with a subscriber it waits"
echo "   forever for messages a broker dropped; see perf/README.md)"
if command -v mqttwrk >/dev/null; then
    n=$((RATE * DURATION * 5))
    timeout 120 mqttwrk bench -S 127.0.0.1 -P "$PORT" -p "$PUBLISHERS" -s 0 -n "$n" -m 16 \
        --publish-qos "$QOS" --show-pub-stat 2>&1 | grep -E "Outgoing publishes" || echo "mqttwrk failed"
    echo "loadgen (with its subscriber) on the same shape: $(jget "$WORK/a.json" sent_per_sec) msgs/s sent"
else
    echo "mqttwrk not installed (cargo install mqttwrk)"
fi
