#!/usr/bin/env bash
# perf/persist.sh : the QoS 1 cost of persistence. For each broker configuration, a
# persistent subscriber (clean session off, QoS 1) subscribes and goes offline, then one
# publisher sends QoS 1 messages that all go into that session's queue (so every message
# is written to the persistence log), first one at a time (ack latency), then pipelined
# (throughput). The subscriber then reconnects and counts what was queued.
#
# Configurations: shardmq with persistence off and persistence_fsync never / interval /
# always, and Mosquitto with `persistence true` (it saves only every autosave_interval
# and at shutdown, so its numbers are those of a broker that writes nothing per message).
#
# Writes perf/results/<date>-persist.md (machine description + table + raw lines).
# Environment overrides (defaults in brackets):
#   N_SYNC [2000] messages sent one at a time   N_PIPE [50000] messages pipelined
#   WINDOW [100] unacknowledged messages when pipelined   PAYLOAD [64] bytes
#   PORT [18893]  BROKER_CORE [0]  CLIENT_CORE [1]  (NO_PIN=1 disables taskset)
#   CONFIGS ["off never interval always mosquitto"]
#   SHARDMQ_BIN [target/release/shardmq]  MOSQUITTO_BIN [/usr/sbin/mosquitto]
#   SKIP_BUILD [0]  OUT [perf/results]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/perf/results.sh"
N_SYNC=${N_SYNC:-2000}
N_PIPE=${N_PIPE:-50000}
WINDOW=${WINDOW:-100}
PAYLOAD=${PAYLOAD:-64}
PORT=${PORT:-18893}
BROKER_CORE=${BROKER_CORE:-0}
CLIENT_CORE=${CLIENT_CORE:-1}
CONFIGS=${CONFIGS:-"off never interval always mosquitto"}
SHARDMQ_BIN=${SHARDMQ_BIN:-$ROOT/target/release/shardmq}
MOSQUITTO_BIN=${MOSQUITTO_BIN:-/usr/sbin/mosquitto}
OUT=${OUT:-$ROOT/perf/results}
WORK=$(mktemp -d /tmp/shardmq-persist-perf.XXXXXX)
trap 'if [ -n "${BROKER_PID:-}" ]; then kill "$BROKER_PID" 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release --bin shardmq)
fi

PIN=()
pin_to() { # sets PIN to the taskset prefix for CORE (empty when pinning is off)
    PIN=()
    if [ "${NO_PIN:-0}" != 1 ] && command -v taskset >/dev/null; then PIN=(taskset -c "$1"); fi
}

# A dependency-free MQTT 3.1.1 client: setup-sub | pub | drain-sub.
cat > "$WORK/client.py" <<'EOF'
import struct, sys, time
from mqtt_raw import Conn, frame, s  # perf/mqtt_raw.py

mode, port = sys.argv[1], int(sys.argv[2])
if mode == "setup-sub":
    c = Conn(port, "persist-bench-sub", False)
    c.sock.sendall(frame(0x82, struct.pack(">H", 1) + s(b"bench/#") + b"\x01"))
    first, body = c.packet(); assert first == 0x90, first
    c.sock.sendall(b"\xe0\x00")
elif mode == "drain-sub":
    c = Conn(port, "persist-bench-sub", False)
    got = 0
    while True:
        first, body = c.packet(timeout=2.0)
        if first is None: break
        if first >> 4 == 3:
            got += 1
            if (first >> 1) & 3:
                tl = struct.unpack(">H", body[:2])[0]
                c.sock.sendall(b"\x40\x02" + body[2 + tl:4 + tl])
    c.sock.sendall(b"\xe0\x00")
    print(got)
elif mode == "pub":
    n, window, payload = int(sys.argv[3]), int(sys.argv[4]), b"x" * int(sys.argv[5])
    c = Conn(port, "persist-bench-pub", True)
    sent = acked = 0
    lat, t_sent = [], {}
    t0 = time.perf_counter()
    while acked < n:
        batch = bytearray()
        while sent < n and sent - acked < window:
            pid = sent % 65535 + 1
            batch += frame(0x32, s(b"bench/t") + struct.pack(">H", pid) + payload)
            t_sent[pid] = time.perf_counter(); sent += 1
        if batch: c.sock.sendall(batch)
        first, body = c.packet()
        if first == 0x40:
            pid = struct.unpack(">H", body[:2])[0]
            lat.append(time.perf_counter() - t_sent.pop(pid)); acked += 1
    dt = time.perf_counter() - t0
    c.sock.sendall(b"\xe0\x00")
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e6
    print(f"{n / dt:.0f} {q(0.5):.0f} {q(0.99):.0f}")
EOF

start_broker() { # start_broker CONFIG_NAME -> BROKER_PID
    local name=$1 dir="$WORK/$1"
    mkdir -p "$dir"
    local common="listener $PORT 127.0.0.1
allow_anonymous true
max_queued_messages 0
max_inflight_messages 100"
    if [ "$name" = mosquitto ]; then
        printf '%s\npersistence true\npersistence_location %s/\n' "$common" "$dir" > "$dir/broker.conf"
        chmod 777 "$dir" # started as root, Mosquitto drops to its own user
        pin_to "$BROKER_CORE"
        "${PIN[@]}" "$MOSQUITTO_BIN" -c "$dir/broker.conf" > "$dir/broker.log" 2>&1 &
    else
        printf '%s\nsys_interval 0\n' "$common" > "$dir/broker.conf"
        if [ "$name" != off ]; then
            printf 'persistence true\npersistence_location %s/\npersistence_fsync %s\n' "$dir" "$name" >> "$dir/broker.conf"
        fi
        pin_to "$BROKER_CORE"
        "${PIN[@]}" "$SHARDMQ_BIN" -c "$dir/broker.conf" > "$dir/broker.log" 2>&1 &
    fi
    BROKER_PID=$!
    for _ in $(seq 100); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT)).close()" 2>/dev/null; then return; fi
        sleep 0.1
    done
    echo "broker $name did not start:"; cat "$dir/broker.log"; exit 1
}

stop_broker() {
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=
}

client() { pin_to "$CLIENT_CORE"; PYTHONPATH="$ROOT/perf" "${PIN[@]}" python3 "$WORK/client.py" "$@"; }

ROWS=""
RAW=""
for cfg in $CONFIGS; do
    if [ "$cfg" = mosquitto ] && [ ! -x "$MOSQUITTO_BIN" ]; then echo "skip mosquitto (no $MOSQUITTO_BIN)"; continue; fi
    echo "== $cfg"
    start_broker "$cfg"
    client setup-sub "$PORT"
    read -r sync_rate sync_p50 sync_p99 < <(client pub "$PORT" "$N_SYNC" 1 "$PAYLOAD")
    read -r pipe_rate pipe_p50 pipe_p99 < <(client pub "$PORT" "$N_PIPE" "$WINDOW" "$PAYLOAD")
    queued=$(client drain-sub "$PORT")
    stop_broker
    disk=$(du -sk "$WORK/$cfg" | cut -f1)
    label=$cfg
    case $cfg in
        off) label="shardmq, persistence off" ;;
        never|interval|always) label="shardmq, persistence_fsync $cfg" ;;
        mosquitto) label="mosquitto $( ("$MOSQUITTO_BIN" -h 2>&1 || true) | awk 'NR==1 {print $3}'), persistence true" ;;
    esac
    line="| $label | $sync_rate | $sync_p50 | $sync_p99 | $pipe_rate | $pipe_p50 | $pipe_p99 | $queued / $((N_SYNC + N_PIPE)) |"
    echo "$line"
    ROWS+="$line"$'\n'
    RAW+="$cfg sync=$sync_rate/$sync_p50/$sync_p99 pipe=$pipe_rate/$pipe_p50/$pipe_p99 queued=$queued dir_kb=$disk"$'\n'
done

FILE=$(results_file persist)
{
    echo "# Persistence cost of QoS 1 ($(date -u +%Y-%m-%d))"
    echo
    echo "Produced by \`perf/persist.sh\` (one publisher, QoS 1, $PAYLOAD-byte payloads, every"
    echo "message queued for one offline persistent QoS 1 subscriber, so each one is a log record)."
    echo "Sync: $N_SYNC messages one at a time (rate, ack latency p50/p99 in µs). Pipelined:"
    echo "$N_PIPE messages with up to $WINDOW unacknowledged. Queued: what the subscriber"
    echo "received when it came back. Client: a Python raw-socket loop (the bottleneck in the"
    echo "pipelined column for the fast configurations)."
    echo
    echo "## Machine"
    echo
    echo '```'
    machine_description "$WORK"
    echo "fdatasync of a 100-byte append in that dir: $(python3 - "$WORK" <<'PY'
import os, sys, time
p = os.path.join(sys.argv[1], "fsync-probe"); fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
t = []
for _ in range(300):
    os.write(fd, b"x" * 100); a = time.perf_counter(); os.fdatasync(fd); t.append(time.perf_counter() - a)
os.close(fd); os.unlink(p); t.sort()
print(f"p50 {t[len(t)//2]*1e6:.0f} us, p99 {t[int(len(t)*0.99)]*1e6:.0f} us")
PY
)"
    echo "broker pinned to core $BROKER_CORE (so shardmq runs one shard), client to core $CLIENT_CORE (NO_PIN=${NO_PIN:-0});"
    echo "the machine is shared with other jobs, so treat differences under ~15% as noise."
    echo '```'
    echo
    echo "| broker | sync msg/s | sync p50 µs | sync p99 µs | pipelined msg/s | pipe p50 µs | pipe p99 µs | queued |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s' "$ROWS"
    echo
    echo "## Raw"
    echo
    echo '```'
    printf '%s' "$RAW"
    echo '```'
} > "$FILE"
echo "wrote $FILE"
