#!/usr/bin/env bash
# perf/syscalls.sh LABEL [LOADGEN ARGS...] : broker CPU, context switches and syscalls per
# delivered message over one whole load run (`perf stat` attached to the broker from
# before the clients connect until the load generator exits), for round-trip-bound runs
# where the count of syscalls and sleeps per message says more than wall clock.
# Default load: fan-in 8 -> 1, QoS 1, inflight 100 per publisher, 16 B.
# Messages = acknowledged publishes over all phases (fan-in, one subscriber) or sent x
# subscribers (fan-out presets); every run must report lost 0 for the ratios to hold.
# Environment: SHARDMQ_BIN LOADGEN [target/release/...]  PORT [18930]
#   MAX_INFLIGHT [20]  MAX_QUEUED [1000]  DURATION [6]  BROKER_CPUS [0]  LOADGEN_CPUS [1]
#   OUT [/tmp] where the broker config, perf stat output and loadgen JSON go
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LABEL=${1:?usage: perf/syscalls.sh LABEL [loadgen args...]}
shift
SHARDMQ_BIN=${SHARDMQ_BIN:-$ROOT/target/release/shardmq}
LOADGEN=${LOADGEN:-$ROOT/target/release/shardmq-loadgen}
PORT=${PORT:-18930}
OUT=${OUT:-/tmp}
CONF=$OUT/syscalls-$LABEL.conf
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages %s\nmax_inflight_messages %s\npersistence false\n' \
    "$PORT" "${MAX_QUEUED:-1000}" "${MAX_INFLIGHT:-20}" >"$CONF"
taskset -c "${BROKER_CPUS:-0}" "$SHARDMQ_BIN" -c "$CONF" >"$OUT/syscalls-$LABEL.log" 2>&1 &
BPID=$!
trap 'kill $BPID 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done
perf stat -x, -e task-clock,context-switches,syscalls:sys_enter_read,syscalls:sys_enter_writev,syscalls:sys_enter_epoll_wait \
    -p "$BPID" -o "$OUT/syscalls-$LABEL.stat" &
SPID=$!
ARGS=("$@")
[ ${#ARGS[@]} -eq 0 ] && ARGS=(fan-in --publishers 8 --subscribers 1 --qos 1 --inflight 100)
taskset -c "${LOADGEN_CPUS:-1}" "$LOADGEN" "${ARGS[@]}" --payload 16 --duration "${DURATION:-6}" --warmup 1 --drain 2 \
    --host 127.0.0.1 --port "$PORT" --broker-pid "$BPID" --json "$OUT/syscalls-$LABEL.json" --quiet >"$OUT/syscalls-$LABEL.out" 2>&1 ||
    echo "syscalls.sh: load generator exited $?" >&2
kill -INT "$SPID"; wait "$SPID" || true
python3 - "$OUT/syscalls-$LABEL" "$LABEL" <<'P'
import json, sys
base, label = sys.argv[1], sys.argv[2]
j = json.load(open(base + ".json"))
n = j["acked_all_phases"] if j["scenario"] == "fan-in" else j["sent_all_phases"] * j["subscribers"]
st = {}
for line in open(base + ".stat"):
    f = line.strip().split(",")
    if len(f) > 3:
        st[f[2].replace("syscalls:sys_enter_", "")] = float(f[0])
row = [label, n, j["lost"], round(st["task-clock"] * 1000 / n, 3)]
row += [round(st[k] / n, 4) for k in ("context-switches", "read", "writev", "epoll_wait")]
row.append(round(n / st["epoll_wait"], 1))
print("| " + " | ".join(str(x) for x in row) + " |")
P
