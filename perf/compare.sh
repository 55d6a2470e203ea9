#!/usr/bin/env bash
# perf/compare.sh SCENARIO... : run each scenario against shardmq, Mosquitto and FlashMQ,
# one broker after the other, same loopback port, same limits, broker pinned to one core
# and the load generator to another, and write perf/results/<date>-<scenario>.md with every
# broker's numbers and shardmq's ratio to each of the others. FlashMQ is built by
# perf/flashmq.sh (skipped, and said so in the result, when it is not built).
#
# Scenarios: fan-in-qos0 pairs-qos0 fan-out-qos0 fan-in-qos1 latency conn-idle (or "all"),
# and the shared subscription ones: shared-qos0 shared-qos1 (8 publishers -> 4 members of
# `$share/g/...`, MQTT 5) and sharesub-50K-500 (the mqttbs preset, scaled by SCALE), and
# fanout-5-1000-5-250K (the mqttbs QoS 1 fan-out preset: 250k deliveries/s to 1000 subscribers),
# and fan-in-qos1-wide (fan-in-qos1 with max_inflight_messages 65535 for shardmq and
# Mosquitto: the window FlashMQ always uses; fan-in-qos1 keeps Mosquitto's default 20).
# Environment overrides (defaults in brackets):
#   DURATION [10] measured seconds      WARMUP [2] unmeasured seconds first
#   DRAIN [2] seconds to wait for in-flight messages after publishers stop
#   PORT [18883] first port (each broker run takes the next free pair)  BROKERS ["shardmq mosquitto flashmq"] (shardmq first)
#   BROKER_CORE [0]  LOADGEN_CORE [1]   (taskset cores; NO_PIN=1 disables pinning)
#   PAYLOAD [16]  INFLIGHT [100]  PUBLISHERS [8] (fan-in)  PAIRS [100]  FANOUT_SUBS [1000]
#   FANOUT_INFLIGHT [10] (messages in flight of the fan-out publisher: x subscribers deliveries)
#   PAIRS_INFLIGHT [10] (per pair: 100 pairs x 10 = 1000 in flight)
#   LAT_PAIRS [10]  RATE [1000] msg/s per publisher (latency)
#   CONNS [10000]  CONNECT_RATE [0 = as fast as possible] (conn-idle)
#   SHARED_PUBLISHERS [8]  SHARED_MEMBERS [4] (shared-qos0/1)  SCALE [0.02] (sharesub-50K-500)
#   THREADS [unset] `threads N` for shardmq (Mosquitto has one); with THREADS=2 also set
#     BROKER_CORE=0,1 (the load generator then shares a core with a shard)
#   MAX_QUEUED [1000] max_queued_messages   MAX_INFLIGHT [20] max_inflight_messages
#   SHARDMQ_BIN [target/release/shardmq]  MOSQUITTO_BIN [/usr/sbin/mosquitto]
#   FLASHMQ_BIN [perf/.flashmq/flashmq] (perf/flashmq.sh builds it; run with thread_count 1)
#   SKIP_BUILD [0]  OUT [perf/results]   LABEL [""] appended to the result file name
#   TRANSPORT [tcp] or ws: MQTT over WebSockets (a websockets listener on PORT, plus a
#     plain one on PORT+1 that Mosquitto 2.0.11 needs to start; the load generator gets --ws)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
DRAIN=${DRAIN:-2}
PORT=${PORT:-18883}
BROKERS=${BROKERS:-"shardmq mosquitto flashmq"}
BROKER_CORE=${BROKER_CORE:-0}
LOADGEN_CORE=${LOADGEN_CORE:-1}
PAYLOAD=${PAYLOAD:-16}
INFLIGHT=${INFLIGHT:-100}
PUBLISHERS=${PUBLISHERS:-8}
PAIRS=${PAIRS:-100}
FANOUT_SUBS=${FANOUT_SUBS:-1000}
FANOUT_INFLIGHT=${FANOUT_INFLIGHT:-10}
PAIRS_INFLIGHT=${PAIRS_INFLIGHT:-10}
LAT_PAIRS=${LAT_PAIRS:-10}
RATE=${RATE:-1000}
CONNS=${CONNS:-10000}
CONNECT_RATE=${CONNECT_RATE:-0}
SHARED_PUBLISHERS=${SHARED_PUBLISHERS:-8}
SHARED_MEMBERS=${SHARED_MEMBERS:-4}
SCALE=${SCALE:-0.02}
THREADS=${THREADS:-}
MAX_QUEUED=${MAX_QUEUED:-1000}
MAX_INFLIGHT=${MAX_INFLIGHT:-20}
SHARDMQ_BIN=${SHARDMQ_BIN:-$ROOT/target/release/shardmq}
MOSQUITTO_BIN=${MOSQUITTO_BIN:-/usr/sbin/mosquitto}
FLASHMQ_BIN=${FLASHMQ_BIN:-$ROOT/perf/.flashmq/flashmq}
LOADGEN=${LOADGEN:-$ROOT/target/release/shardmq-loadgen}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT=${OUT:-$ROOT/perf/results}
LABEL=${LABEL:-}
TRANSPORT=${TRANSPORT:-tcp}
case "$TRANSPORT" in tcp|ws) ;; *) echo "compare.sh: TRANSPORT must be tcp or ws" >&2; exit 1 ;; esac

die() { echo "compare.sh: $*" >&2; exit 1; }

[ $# -ge 1 ] || die "usage: perf/compare.sh SCENARIO... (fan-in-qos0 pairs-qos0 fan-out-qos0 fan-in-qos1 latency conn-idle | all)"
SCENARIOS=("$@")
if [ "${SCENARIOS[0]}" = all ]; then
    SCENARIOS=(fan-in-qos0 pairs-qos0 fan-out-qos0 fan-in-qos1 latency conn-idle)
fi

# Loadgen arguments for a scenario (the broker address and report flags are added later).
scenario_args() {
    local common=(--payload "$PAYLOAD" --duration "$DURATION" --warmup "$WARMUP" --drain "$DRAIN")
    case "$1" in
        fan-in-qos0) echo fan-in --publishers "$PUBLISHERS" --subscribers 1 --qos 0 --inflight "$INFLIGHT" "${common[@]}" ;;
        fan-in-qos1 | fan-in-qos1-wide) echo fan-in --publishers "$PUBLISHERS" --subscribers 1 --qos 1 --inflight "$INFLIGHT" "${common[@]}" ;;
        pairs-qos0) echo pairs --pairs "$PAIRS" --qos 0 --inflight "$PAIRS_INFLIGHT" "${common[@]}" ;;
        fan-out-qos0) echo fan-out --publishers 1 --subscribers "$FANOUT_SUBS" --qos 0 --inflight "$FANOUT_INFLIGHT" "${common[@]}" ;;
        latency) echo pairs --pairs "$LAT_PAIRS" --qos 0 --rate "$RATE" "${common[@]}" ;;
        shared-qos0) echo shared --publishers "$SHARED_PUBLISHERS" --subscribers "$SHARED_MEMBERS" --qos 0 --inflight "$INFLIGHT" "${common[@]}" ;;
        shared-qos1) echo shared --publishers "$SHARED_PUBLISHERS" --subscribers "$SHARED_MEMBERS" --qos 1 --inflight "$INFLIGHT" "${common[@]}" ;;
        sharesub-50K-500) echo sharesub-50K-500 --scale "$SCALE" "${common[@]}" ;;
        # mqttbs enterprise fan-out: 5 publishers at 50 msg/s on 5 topics, 1000 subscribers
        # on all 5 (QoS 1): 250k deliveries/s, open loop (latency from the intended time).
        fanout-5-1000-5-250K) echo fanout-5-1000-5-250K "${common[@]}" ;;
        conn-idle)
            # One local address gives ~28k ephemeral ports: spread big runs over several.
            local bind=()
            [ "$CONNS" -gt 20000 ] && bind=(--bind 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4)
            echo conn --connections "$CONNS" --connect-rate "$CONNECT_RATE" --duration "$DURATION" --keepalive 300 "${bind[@]}" ;;
        *) return 1 ;;
    esac
}
for s in "${SCENARIOS[@]}"; do
    scenario_args "$s" >/dev/null || die "unknown scenario '$s' (fan-in-qos0 pairs-qos0 fan-out-qos0 fan-in-qos1 fan-in-qos1-wide latency conn-idle shared-qos0 shared-qos1 sharesub-50K-500 fanout-5-1000-5-250K)"
done

cd "$ROOT"
if [ "$SKIP_BUILD" != 1 ]; then
    echo "== cargo build --release --workspace" >&2
    if ! cargo build --release --workspace >&2; then
        echo "compare.sh: workspace build failed; building the load generator alone" >&2
        cargo build --release -p shardmq-loadgen >&2 || die "cannot build shardmq-loadgen"
    fi
fi
[ -x "$LOADGEN" ] || die "$LOADGEN not found"

# Many connections need many descriptors (conn-idle); both brokers inherit this limit.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

PIN_BROKER=()
PIN_LOADGEN=()
if [ "${NO_PIN:-0}" != 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    PIN_BROKER=(taskset -c "$BROKER_CORE")
    PIN_LOADGEN=(taskset -c "$LOADGEN_CORE")
fi

WORK=$(mktemp -d /tmp/shardmq-compare.XXXXXX)
BROKER_PID=""
cleanup() {
    if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

config_text() { # broker
    if [ "$1" = flashmq ]; then flashmq_config; return; fi
    {
        if [ "$TRANSPORT" = ws ]; then
            echo "listener $((PORT + 1)) 127.0.0.1"
            echo "listener $PORT 127.0.0.1"
            echo "protocol websockets"
        else
            echo "listener $PORT 127.0.0.1"
        fi
        echo "allow_anonymous true"
        echo "max_queued_messages $MAX_QUEUED"
        # fan-in-qos1-wide: the window FlashMQ always uses (it has no such option and sends
        # up to the client's Receive Maximum, 65535 for a 3.1.1 client).
        if [ "${scenario:-}" = fan-in-qos1-wide ]; then
            echo "max_inflight_messages 65535"
        else
            echo "max_inflight_messages $MAX_INFLIGHT"
        fi
        echo "persistence false"
        # Mosquitto leaves Nagle on unless told; shardmq always sets TCP_NODELAY.
        if [ "$1" = mosquitto ]; then echo "set_tcp_nodelay true"; fi
        if [ "$1" = shardmq ] && [ -n "$THREADS" ]; then echo "threads $THREADS"; fi
    }
}

# FlashMQ's own syntax for the same setup: one worker thread (the broker gets one pinned
# core, as the others), the same queue limit per client (FlashMQ counts pending QoS 1/2
# messages per client; its byte limit, 64 KiB by default, would drop long before
# Mosquitto's and shardmq's unlimited bytes, so it is lifted), no persistence (no
# storage_dir), the same listener(s). FlashMQ has no inflight window option: it sends up
# to the client's Receive Maximum (65535 for v3 clients).
flashmq_config() {
    echo "thread_count 1"
    echo "allow_anonymous true"
    echo "log_level warning"
    echo "max_qos_msg_pending_per_client $MAX_QUEUED"
    echo "max_qos_bytes_pending_per_client 1073741824"
    if [ "$TRANSPORT" = ws ]; then
        printf 'listen {\n  protocol websockets\n  inet_protocol ip4\n  inet4_bind_address 127.0.0.1\n  port %s\n}\n' "$PORT"
    else
        printf 'listen {\n  protocol mqtt\n  inet_protocol ip4\n  inet4_bind_address 127.0.0.1\n  port %s\n}\n' "$PORT"
    fi
}

broker_bin() {
    case "$1" in
        shardmq) echo "$SHARDMQ_BIN" ;;
        flashmq) echo "$FLASHMQ_BIN" ;;
        *) echo "$MOSQUITTO_BIN" ;;
    esac
}
# The command line that starts broker $1 with config file $2.
broker_cmd() {
    if [ "$1" = flashmq ]; then echo "$(broker_bin "$1") --config-file $2"; else echo "$(broker_bin "$1") -c $2"; fi
}

# Moves PORT to the next pair of ports (PORT and PORT+1 for ws) that no socket uses.
BASE_PORT=$PORT
RUN_INDEX=0
next_port() {
    while :; do
        PORT=$((BASE_PORT + 2 * RUN_INDEX))
        RUN_INDEX=$((RUN_INDEX + 1))
        if ! command -v ss >/dev/null || [ -z "$(ss -Htan "( sport = :$PORT or sport = :$((PORT + 1)) )")" ]; then
            return 0
        fi
    done
}

wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

# JSON accessors for the one-key-per-line report the load generator writes.
jget() { sed -n "s/^  \"$2\": \\(.*\\),\$/\\1/p" "$1" | tr -d '"' | head -1; }
jlat() { sed -n "s/^  \"latency_us\": .*\"$2\": \\([0-9.]*\\).*/\\1/p" "$1" | head -1; }

run_one() { # scenario broker -> writes $WORK/<broker>.json, or returns 1 (skipped)
    local scenario=$1 broker=$2 bin conf log rc
    bin=$(broker_bin "$broker")
    if [ ! -x "$bin" ]; then
        echo "compare.sh: skipping $broker: $bin not found (not built yet?)" >&2
        echo "skipped: $bin not found" >"$WORK/$broker.skip"
        return 1
    fi
    # A fresh port per broker run: a broker killed with clients connected leaves the port
    # in TIME_WAIT for a minute, which FlashMQ (no SO_REUSEADDR) cannot bind.
    next_port
    conf="$WORK/$broker.conf"
    log="$WORK/$broker.log"
    config_text "$broker" >"$conf"
    read -r -a bcmd <<<"$(broker_cmd "$broker" "$conf")"
    "${PIN_BROKER[@]}" "${bcmd[@]}" >"$log" 2>&1 &
    BROKER_PID=$!
    if ! wait_port; then
        echo "compare.sh: $broker did not open port $PORT; its log:" >&2
        cat "$log" >&2
        kill "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=""
        echo "skipped: did not start" >"$WORK/$broker.skip"
        return 1
    fi
    read -r -a args <<<"$(scenario_args "$scenario")"
    if [ "$TRANSPORT" = ws ]; then args+=(--ws); fi
    local cmd=("${PIN_LOADGEN[@]}" "$LOADGEN" "${args[@]}" --host 127.0.0.1 --port "$PORT"
        --broker-pid "$BROKER_PID" --json "$WORK/$broker.json" --quiet)
    echo "${PIN_BROKER[*]} $(broker_cmd "$broker" CONF | sed "s#$ROOT/##")" >"$WORK/$broker.cmd"
    echo "${cmd[*]}" | sed -e "s#$WORK/##g" -e "s#$ROOT/##g" -e "s#--broker-pid [0-9]*#--broker-pid PID#" >>"$WORK/$broker.cmd"
    echo "== $scenario on $broker" >&2
    set +e
    timeout $((DURATION + WARMUP + DRAIN + 300)) "${cmd[@]}" >"$WORK/$broker.txt" 2>&1
    rc=$?
    set -e
    echo "exit status $rc" >>"$WORK/$broker.txt"
    cat "$WORK/$broker.txt" >&2
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
    sleep 1 # let TIME_WAIT sockets and the port settle
    [ -s "$WORK/$broker.json" ] || { echo "skipped: load generator failed (exit $rc)" >"$WORK/$broker.skip"; return 1; }
}

ratio() { # a b
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-" || a == "null" || b == "null" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'
}

mkdir -p "$OUT"
DATE=$(date +%Y-%m-%d)
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
CORES=$(nproc)
KERNEL=$(uname -r)
MOSQ_VERSION=$("$MOSQUITTO_BIN" -h 2>/dev/null | head -1 || true)
FLASHMQ_VERSION=$([ -x "$FLASHMQ_BIN" ] && "$FLASHMQ_BIN" --version 2>/dev/null | head -1 || echo "not built (perf/flashmq.sh)")
OTHERS=()
for b in $BROKERS; do [ "$b" = shardmq ] || OTHERS+=("$b"); done

for scenario in "${SCENARIOS[@]}"; do
    rm -f "$WORK"/*.json "$WORK"/*.skip "$WORK"/*.txt "$WORK"/*.cmd
    ran=()
    for b in $BROKERS; do
        if run_one "$scenario" "$b"; then ran+=("$b"); fi
    done
    file="$OUT/$DATE-$scenario${LABEL:+-$LABEL}.md"
    {
        if [ "$TRANSPORT" = ws ]; then
            echo "# $scenario over WebSockets: $BROKERS"
        else
            echo "# $scenario: $BROKERS"
        fi
        echo
        for b in $BROKERS; do
            if [ -f "$WORK/$b.skip" ]; then
                echo "**$b did not run** ($(cat "$WORK/$b.skip")): its column and ratio are empty."
                echo
            fi
        done
        echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "- machine: $CPU_MODEL, $CORES cores, kernel $KERNEL"
        echo "- Mosquitto: $MOSQ_VERSION ($MOSQUITTO_BIN)"
        echo "- FlashMQ: $FLASHMQ_VERSION (${FLASHMQ_BIN#"$ROOT"/}, thread_count 1)"
        echo "- pinning: broker ${PIN_BROKER[*]:-none}, load generator ${PIN_LOADGEN[*]:-none}"
        echo "- load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min load average when written; other work on the host skews numbers)"
        echo
        echo "## Commands"
        echo
        echo '```'
        for b in $BROKERS; do
            if [ -f "$WORK/$b.cmd" ]; then cat "$WORK/$b.cmd"; else echo "# $b: $(cat "$WORK/$b.skip" 2>/dev/null)"; fi
        done
        echo "# config (shardmq's; Mosquitto also gets set_tcp_nodelay true${THREADS:+, and no threads line}):"
        config_text shardmq
        case " $BROKERS " in *" flashmq "*)
            echo "# FlashMQ's config (the same limits in its syntax):"
            config_text flashmq ;;
        esac
        echo '```'
        echo
        echo "## Results"
        echo
        # Columns: every broker, then shardmq's ratio to each other broker (perf/ws.sh
        # reads the shardmq and mosquitto columns, the 2nd and 3rd: keep them there).
        header="| metric |"; rule="|---|"
        for b in $BROKERS; do header+=" $b |"; rule+="---|"; done
        for o in "${OTHERS[@]}"; do header+=" shardmq/$o |"; rule+="---|"; done
        echo "$header"
        echo "$rule"
        row() { # label key-or-fn
            local line="| $1 |" v s="-"
            declare -A val=()
            for b in $BROKERS; do
                v="-"
                [ -f "$WORK/$b.json" ] && v=$($2 "$WORK/$b.json" "$3")
                val[$b]=${v:--}
                line+=" ${v:--} |"
            done
            s=${val[shardmq]:--}
            for o in "${OTHERS[@]}"; do line+=" $(ratio "$s" "${val[$o]}") |"; done
            echo "$line"
        }
        if [ "$scenario" = conn-idle ]; then
            row "connections held" jget connects_ok
            row "connect failures" jget connect_failed
            row "connect latency p50 (us)" jlat p50
            row "connect latency p99 (us)" jlat p99
            row "connect latency max (us)" jlat max
            row "broker RSS with all held (kB)" jget broker_rss_kb
            row "broker peak RSS (kB)" jget broker_peak_rss_kb
            row "broker memory per connection (B)" jget broker_bytes_per_connection
            row "broker CPU (s)" jget broker_cpu_seconds
        else
            row "sent" jget sent
            row "received" jget received
            row "lost" jget lost
            row "duplicated" jget duplicated
            row "reordered" jget reordered
            row "received msgs/s" jget msgs_per_sec
            row "sent msgs/s" jget sent_per_sec
            row "latency p50 (us)" jlat p50
            row "latency p90 (us)" jlat p90
            row "latency p99 (us)" jlat p99
            row "latency p99.9 (us)" jlat p999
            row "latency max (us)" jlat max
            row "broker CPU (s)" jget broker_cpu_seconds
            row "broker CPU per delivered msg (us)" jget broker_cpu_us_per_msg
            row "broker peak RSS (kB)" jget broker_peak_rss_kb
            row "load generator CPU (s)" jget loadgen_cpu_seconds
        fi
        echo
        echo "## Raw load generator output"
        for b in $BROKERS; do
            echo
            echo "### $b"
            echo
            echo '```'
            if [ -f "$WORK/$b.txt" ]; then cat "$WORK/$b.txt"; else cat "$WORK/$b.skip" 2>/dev/null || echo "not run"; fi
            echo '```'
        done
    } >"$file"
    echo "wrote $file" >&2
done
