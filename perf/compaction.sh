#!/usr/bin/env bash
# perf/compaction.sh : how long a shard's event loop stalls while the persistence log is
# compacted into a snapshot. For each broker binary given: writes a persistence log of
# LOG_MB MiB (retained messages of PAYLOAD bytes, in the record format of src/persist/,
# which every version reads), starts the broker on it (one shard, persistence_fsync
# interval), measures for BASE seconds, then publishes one retained message: the log is
# far past its 64 MiB limit, so a compaction of the whole state starts. A probe client
# meanwhile
#   - sends a QoS 0 PUBLISH every PING_MS ms to a topic it subscribes to and records the
#     round trip (what a client sees of the shard), and
#   - reads $SYS/broker/shards/0/loop_lag_us (sys_interval 1: the longest loop iteration
#     of the last second, measured by the shard itself).
# The compaction window runs from the trigger to the broker's "Saved persistence
# snapshot" log line.
#
# Usage: perf/compaction.sh [BIN...]   (default: target/release/shardmq, built first)
# Environment: REPEAT [1] runs per binary  LOG_MB [1024]  PAYLOAD [16384]  BASE [3]  PING_MS [2]  PORT [18894]
#   BROKER_CPUS [0]  CLIENT_CPU [1]  (taskset lists; NO_PIN=1 disables)  BROKER_NICE [0]
#   (e.g. -5 on a machine shared with other jobs: they then stop dominating what the
#   broker's loop measures; its snapshot thread lowers itself to nice 10)  LABELS ["" =
#   binary paths]  SKIP_BUILD [0]  OUT [perf/results]  WORK [mktemp dir]
#   SCHED_TRACE [0]: 1 = also record `perf sched` (all CPUs) through each compaction and
#   say, for the shard's wake-to-sleep spans longer than 1 ms, which other tasks ran on
#   its CPU inside them (needs perf and root).
# Writes OUT/<date>-compaction.md (machine, table, raw samples summary).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/perf/results.sh"
LOG_MB=${LOG_MB:-1024}
PAYLOAD=${PAYLOAD:-16384}
BASE=${BASE:-3}
PING_MS=${PING_MS:-2}
PORT=${PORT:-18894}
BROKER_CPUS=${BROKER_CPUS:-0}
BROKER_NICE=${BROKER_NICE:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
OUT=${OUT:-$ROOT/perf/results}
WORK=${WORK:-$(mktemp -d /tmp/shardmq-compaction-perf.XXXXXX)}
export PYTHONPATH="$ROOT/perf${PYTHONPATH:+:$PYTHONPATH}" # mqtt_raw.py
trap 'if [ -n "${BROKER_PID:-}" ]; then kill -9 "$BROKER_PID" 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT

REPEAT=${REPEAT:-1}
BINS=("$@")
if [ ${#BINS[@]} -eq 0 ]; then
    BINS=("$ROOT/target/release/shardmq")
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        (cd "$ROOT" && cargo build --release --bin shardmq)
    fi
fi
read -r -a LABEL_LIST <<< "${LABELS:-}"

pin() { # pin CPUS CMD...: execs CMD under taskset unless NO_PIN=1 (call it with & or
    # in a subshell: the process keeps the subshell's pid, so kill reaches the broker)
    local cpus=$1; shift
    if [ "${NO_PIN:-0}" != 1 ] && command -v taskset >/dev/null; then exec taskset -c "$cpus" "$@"; else exec "$@"; fi
}

# The log: header (magic, generation 0) + Retain records, each framed as
# len u32 LE | crc32(body) u32 LE | body, body = 1 (Retain) | u32 LE len | MQTT 5 PUBLISH.
cat > "$WORK/mklog.py" <<'EOF'
import struct, sys, zlib
from mqtt_raw import varint
path, total, size = sys.argv[1], int(sys.argv[2]) << 20, int(sys.argv[3])
payload = b"x" * size
written, i = 0, 0
with open(path, "wb") as f:
    f.write(b"SMQLOG\x00\x01" + struct.pack("<Q", 0))
    while written < total:
        topic = b"fill/%d/%d" % (i // 1000, i % 1000)
        var = struct.pack(">H", len(topic)) + topic + b"\x00"  # topic, no properties
        publish = b"\x31" + varint(len(var) + len(payload)) + var + payload
        body = b"\x01" + struct.pack("<I", len(publish)) + publish
        f.write(struct.pack("<II", len(body), zlib.crc32(body)) + body)
        written += len(body) + 8; i += 1
print(i)
EOF

# The probe: round trips and $SYS loop lag, with wall-clock times, until STOP exists.
cat > "$WORK/probe.py" <<'EOF'
import os, select, struct, sys, time
from mqtt_raw import Conn, frame, s, take_packet
port, ping_ms, stop, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
c = Conn(port, "compaction-probe", True)
c.send(frame(0x82, struct.pack(">H", 1) + s(b"probe/echo") + b"\x00" + s(b"$SYS/broker/shards/+/loop_lag_us") + b"\x00"))
log = open(out, "w")
next_ping = time.time()
while not os.path.exists(stop):
    now = time.time()
    if now >= next_ping:
        c.send(frame(0x30, s(b"probe/echo") + struct.pack(">d", now)))
        next_ping = now + ping_ms / 1000
    r, _, _ = select.select([c.sock], [], [], max(0, next_ping - time.time()))
    if not r or not c.fill(5):
        continue
    while (p := take_packet(c.buf)) is not None:
        first, body = p
        if first >> 4 != 3: continue
        tl = struct.unpack(">H", body[:2])[0]
        topic, payload = body[2:2 + tl], body[2 + tl:]
        t = time.time()
        if topic == b"probe/echo":
            log.write("rtt %.6f %.1f\n" % (t, (t - struct.unpack(">d", payload)[0]) * 1e6))
        elif topic.endswith(b"loop_lag_us") and not first & 1:  # live, not the retained copy
            log.write("lag %.6f %s\n" % (t, payload.decode()))
log.close()
EOF

# Summary of one run: window = [trigger, saved]; a loop-lag sample is the longest
# iteration of the second before it, so samples up to 1 s after the window count in it.
cat > "$WORK/summary.py" <<'EOF'
import sys
samples, trigger, saved, compact_ms = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
rtt_in, rtt_out, lag_in, lag_out = [], [], [], []
for line in open(samples):
    kind, t, v = line.split(); t = float(t); v = float(v)
    if kind == "rtt":
        (rtt_in if trigger <= t <= saved + 0.05 else rtt_out).append(v)
    else:
        (lag_in if trigger < t <= saved + 1.0 else lag_out).append(v)
def q(v, p): return sorted(v)[min(len(v) - 1, int(p * len(v)))] if v else float("nan")
f = lambda v: "%.0f" % v
over = lambda v: "%d / %d" % (sum(1 for x in v if x > 1000), len(v))
print(" | ".join([compact_ms,
    f(q(lag_out, .5)), f(max(lag_out, default=0)), over(lag_out),
    f(q(lag_in, .5)), f(max(lag_in, default=0)), over(lag_in),
    f(q(rtt_out, .5)), f(q(rtt_out, .99)), f(q(rtt_in, .5)), f(q(rtt_in, .99)), f(max(rtt_in, default=0))]))
print("lag outside: " + " ".join(f(v) for v in lag_out), file=sys.stderr)
print("lag during:  " + " ".join(f(v) for v in lag_in), file=sys.stderr)
EOF

# Attribution of the shard's long spans from `perf sched timehist --state` output.
cat > "$WORK/blame.py" <<'EOF'
import re, sys
timehist, tid = sys.argv[1], sys.argv[2]
rows = []
for l in open(timehist):
    m = re.search(r"^\s*(\S+)\s+\[(\d+)\]\s+(.+?\[\d+(?:/\d+)?\])\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)?\s*$", l)
    if not m: continue
    try: t = float(m.group(1))
    except ValueError: continue
    rows.append((t, m.group(2), m.group(3), float(m.group(6)), m.group(7) or ""))
me = "[%s/" % tid
writer = [r for r in rows if "snapsho" in r[2]]
if not writer: print("no snapshot thread in the trace"); sys.exit()
w0, w1 = writer[0][0] - writer[0][3] / 1000, writer[-1][0]
spans, start, cpu = [], None, None
for t, c, task, run, state in rows:
    if me not in task: continue
    if start is None: start, cpu = t - run / 1000, c
    if state == "S": spans.append((start, t, cpu)); start = None
for label, inside in (("during", True), ("outside", False)):
    sel = [x for x in spans if (w0 <= x[0] <= w1) == inside]
    long = [x for x in sel if x[1] - x[0] > 0.001]
    blame = {}
    for s, e, c in long:
        for t, rc, task, run, _ in rows:
            if rc != c or me in task: continue
            ov = min(t, e) - max(t - run / 1000, s)
            if ov > 0:
                n = re.sub(r"\[.*", "", task); blame[n] = blame.get(n, 0) + ov * 1e3
    top = ", ".join("%s %.2f ms" % kv for kv in sorted(blame.items(), key=lambda kv: -kv[1])[:6])
    print("%s the compaction: %d shard wake-to-sleep spans, %d over 1 ms; other tasks on its CPU inside those: %s" % (label, len(sel), len(long), top or "none"))
EOF

ROWS=""
RAW=""
n=0
RUNS=()
for i in "${!BINS[@]}"; do
    for _ in $(seq "$REPEAT"); do RUNS+=("$i"); done
done
for i in "${RUNS[@]}"; do
    bin=${BINS[$i]}
    label=${LABEL_LIST[$i]:-$bin}
    n=$((n + 1))
    dir="$WORK/run$n"
    mkdir -p "$dir"
    echo "== $label: writing a $LOG_MB MiB log"
    records=$(python3 "$WORK/mklog.py" "$dir/shardmq.db.log" "$LOG_MB" "$PAYLOAD")
    sync
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nthreads 1\nsys_interval 1\nlog_type all\npersistence true\npersistence_location %s/\npersistence_fsync interval\nautosave_interval 3600\n' \
        "$PORT" "$dir" > "$dir/broker.conf"
    pin "$BROKER_CPUS" nice -n "$BROKER_NICE" "$bin" -c "$dir/broker.conf" > "$dir/broker.log" 2>&1 &
    BROKER_PID=$!
    start=$(date +%s.%N)
    for _ in $(seq 600); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT)).close()" 2>/dev/null; then break; fi
        sleep 0.1
    done
    replay=$(python3 -c "import time; print('%.1f' % (time.time() - $start))")
    echo "   replayed $records records in ${replay}s; probing"
    rm -f "$dir/stop"
    pin "$CLIENT_CPU" python3 "$WORK/probe.py" "$PORT" "$PING_MS" "$dir/stop" "$dir/samples" &
    PROBE_PID=$!
    sleep "$BASE"
    SCHED_PID=
    if [ "${SCHED_TRACE:-0}" = 1 ]; then
        SHARD_TID=$(grep -l '^shardmq-shard-0$' /proc/"$BROKER_PID"/task/*/comm | head -1 | cut -d/ -f5)
        perf sched record -a -o "$dir/sched.data" > /dev/null 2>&1 &
        SCHED_PID=$!
        sleep 1
    fi
    trigger=$(date +%s.%N)
    (pin "$CLIENT_CPU" python3 - "$PORT") <<'EOF'
import sys
from mqtt_raw import Conn, publish
c = Conn(int(sys.argv[1]), "trigger", True)
c.send(publish(b"trigger/compaction", b"go", qos=1, retain=True))
assert c.packet(timeout=30)[0] == 0x40
c.send(b"\xe0\x00")
EOF
    for _ in $(seq 1200); do
        if grep -q "Saved persistence snapshot" "$dir/broker.log"; then break; fi
        sleep 0.05
    done
    saved=$(date +%s.%N)
    compact_ms=$(grep -o "Saved persistence snapshot.*" "$dir/broker.log" | head -1 | grep -o "in [0-9]* ms" | grep -o "[0-9]*" || true)
    [ -n "$compact_ms" ] || compact_ms=$(python3 -c "print('~%.0f' % (($saved - $trigger) * 1000))")
    sleep 2
    BLAME=""
    if [ -n "$SCHED_PID" ]; then
        kill -INT "$SCHED_PID"; wait "$SCHED_PID" 2>/dev/null || true
        perf sched timehist -i "$dir/sched.data" --state > "$dir/timehist" 2>/dev/null || true
        BLAME=$(python3 "$WORK/blame.py" "$dir/timehist" "$SHARD_TID")
        echo "$BLAME"
    fi
    touch "$dir/stop"
    wait "$PROBE_PID" || true
    kill -9 "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=
    snap=$(stat -c %s "$dir/shardmq.db" 2>/dev/null || echo 0)
    row=$(python3 "$WORK/summary.py" "$dir/samples" "$trigger" "$saved" "$compact_ms" 2> "$dir/lags")
    line="| $label | $((snap >> 20)) | $row |"
    echo "$line"
    ROWS+="$line"$'\n'
    RAW+="== $label"$'\n'"$(grep -E "Saved|Compacting|Replayed|Restored" "$dir/broker.log" | cut -c1-200)"$'\n'"$(cat "$dir/lags")"$'\n'"$BLAME"$'\n'
    if [ -n "${KEEP_SAMPLES:-}" ]; then cp "$dir/samples" "$KEEP_SAMPLES.$n"; cp "$dir/broker.log" "$KEEP_SAMPLES.$n.log"; echo "$trigger $saved" > "$KEEP_SAMPLES.$n.window"; fi
    rm -rf "$dir"
done

FILE=$(results_file compaction)
{
    echo "# Event-loop stall during persistence compaction ($(date -u +%Y-%m-%d))"
    echo
    echo "Produced by \`perf/compaction.sh\` (command: \`$0 $*\` with LOG_MB=$LOG_MB"
    echo "PAYLOAD=$PAYLOAD PING_MS=$PING_MS BROKER_CPUS=$BROKER_CPUS CLIENT_CPU=$CLIENT_CPU"
    echo "BROKER_NICE=$BROKER_NICE NO_PIN=${NO_PIN:-0}). A $LOG_MB MiB log of retained ${PAYLOAD}-byte messages is"
    echo "compacted into a snapshot by a broker with one shard (\`persistence_fsync"
    echo "interval\`), triggered by one retained publish; the compaction window runs from the"
    echo "trigger to the \"Saved persistence snapshot\" line. Loop lag: the shard's own"
    echo "\`\$SYS/broker/shards/0/loop_lag_us\` (longest iteration per second), outside and"
    echo "during the window. Round trip: a QoS 0 PUBLISH every $PING_MS ms to a topic the"
    echo "probe subscribes to (a Python client: its own scheduling adds ~0.1 ms)."
    echo
    echo "## Machine"
    echo
    echo '```'
    machine_description "$WORK"
    echo "the machine is shared with other jobs (compiles): single samples can be noisy."
    echo '```'
    echo
    echo "Loop lag columns are over the per-second samples, outside the compaction and"
    echo "during it: median, max, and how many seconds had an iteration longer than 1 ms."
    echo
    echo "| broker | snapshot MiB | compaction ms | lag p50 µs, outside | lag max µs, outside | seconds > 1 ms, outside | lag p50 µs, during | lag max µs, during | seconds > 1 ms, during | RTT p50 µs, outside | RTT p99 µs, outside | RTT p50 µs, during | RTT p99 µs, during | RTT max µs, during |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s' "$ROWS"
    echo
    echo "## Broker log lines"
    echo
    echo '```'
    printf '%s' "$RAW"
    echo '```'
} > "$FILE"
echo "wrote $FILE"
