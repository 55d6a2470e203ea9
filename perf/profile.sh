#!/usr/bin/env bash
# perf/profile.sh SCENARIO [SECONDS] : profile shardmq's hot path under one compare.sh
# scenario and write perf/results/<date>-profile-<scenario>[-LABEL].md.
#
# Two runs against a fresh broker each (the broker pinned to BROKER_CPUS, the load
# generator to LOADGEN_CPUS, same flags as compare.sh):
#   1. `perf record -g` (cpu-clock when hardware counters are unsupported) attached to the
#      broker for SECONDS after the warmup -> `perf report --no-children --sort symbol`,
#      the kernel/user split (`--sort dso`), per-thread split, syscall paths (inclusive)
#      and self time by source line (what inlined code inside route/decode costs).
#   2. `perf stat -e 'syscalls:sys_enter_*'` attached to the broker for SECONDS after the
#      warmup -> syscalls per delivered message (strace -c -f when tracepoints are not
#      available).
# When perf cannot record at all: `valgrind --tool=callgrind` on a short run with
# `--threads 1` load.
#
# Scenarios: fan-in-qos0 pairs-qos0 fan-out-qos0 fan-in-qos1.
# Environment (defaults in brackets):
#   PORT [18893]  BROKER_CPUS [0]  LOADGEN_CPUS [1]  (taskset -c lists; "" = unpinned)
#   THREADS [""] broker `threads` line (empty: none, the broker uses the cores it may run on)
#   WARMUP [2]  DRAIN [2]  PAYLOAD [16]  INFLIGHT [100]  PUBLISHERS [8]  PAIRS [100]
#   MAX_INFLIGHT [20] the broker's max_inflight_messages
#   PAIRS_INFLIGHT [10]  FANOUT_SUBS [1000]  FANOUT_INFLIGHT [10]
#   FREQ [2999] sampling frequency  CALLGRAPH [dwarf,4096] (perf record --call-graph)
#   KEEP_DATA [""] copy perf.data to this path
#   TOP [40] symbols listed   LABEL [""] appended to the file name   OUT [perf/results]
#   SKIP_BUILD [0]   SHARDMQ_BIN / LOADGEN   (default target/release/...)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCENARIO=${1:-}
SECONDS_=${2:-10}
PORT=${PORT:-18893}
BROKER_CPUS=${BROKER_CPUS-0}
LOADGEN_CPUS=${LOADGEN_CPUS-1}
THREADS=${THREADS:-}
WARMUP=${WARMUP:-2}
DRAIN=${DRAIN:-2}
PAYLOAD=${PAYLOAD:-16}
INFLIGHT=${INFLIGHT:-100}
PUBLISHERS=${PUBLISHERS:-8}
PAIRS=${PAIRS:-100}
PAIRS_INFLIGHT=${PAIRS_INFLIGHT:-10}
FANOUT_SUBS=${FANOUT_SUBS:-1000}
FANOUT_INFLIGHT=${FANOUT_INFLIGHT:-10}
FREQ=${FREQ:-2999}
CALLGRAPH=${CALLGRAPH:-dwarf,4096}
TOP=${TOP:-40}
LABEL=${LABEL:-}
OUT=${OUT:-$ROOT/perf/results}
SKIP_BUILD=${SKIP_BUILD:-0}
SHARDMQ_BIN=${SHARDMQ_BIN:-$ROOT/target/release/shardmq}
LOADGEN=${LOADGEN:-$ROOT/target/release/shardmq-loadgen}

die() { echo "profile.sh: $*" >&2; exit 1; }
[ -n "$SCENARIO" ] || die "usage: perf/profile.sh SCENARIO [SECONDS] (fan-in-qos0 pairs-qos0 fan-out-qos0 fan-in-qos1)"

# Load generator arguments (as compare.sh, with the measured window = SECONDS).
scenario_args() { # scenario duration
    local common=(--payload "$PAYLOAD" --duration "$2" --warmup "$WARMUP" --drain "$DRAIN")
    case "$1" in
        fan-in-qos0) echo fan-in --publishers "$PUBLISHERS" --subscribers 1 --qos 0 --inflight "$INFLIGHT" "${common[@]}" ;;
        fan-in-qos1) echo fan-in --publishers "$PUBLISHERS" --subscribers 1 --qos 1 --inflight "$INFLIGHT" "${common[@]}" ;;
        pairs-qos0) echo pairs --pairs "$PAIRS" --qos 0 --inflight "$PAIRS_INFLIGHT" "${common[@]}" ;;
        fan-out-qos0) echo fan-out --publishers 1 --subscribers "$FANOUT_SUBS" --qos 0 --inflight "$FANOUT_INFLIGHT" "${common[@]}" ;;
        *) return 1 ;;
    esac
}
scenario_args "$SCENARIO" 1 >/dev/null || die "unknown scenario '$SCENARIO'"

cd "$ROOT"
if [ "$SKIP_BUILD" != 1 ]; then
    cargo build --release --workspace >&2 || die "build failed"
fi
[ -x "$SHARDMQ_BIN" ] || die "$SHARDMQ_BIN not found"
[ -x "$LOADGEN" ] || die "$LOADGEN not found"
command -v perf >/dev/null || echo "profile.sh: perf not found, falling back to callgrind" >&2
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

PIN_BROKER=()
PIN_LOADGEN=()
[ -n "$BROKER_CPUS" ] && PIN_BROKER=(taskset -c "$BROKER_CPUS")
[ -n "$LOADGEN_CPUS" ] && PIN_LOADGEN=(taskset -c "$LOADGEN_CPUS")

WORK=$(mktemp -d /tmp/shardmq-profile.XXXXXX)
BROKER_PID=""
LOAD_PID=""
cleanup() {
    [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null || true
    if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

{
    echo "listener $PORT 127.0.0.1"
    echo "allow_anonymous true"
    echo "max_queued_messages 1000"
    echo "max_inflight_messages ${MAX_INFLIGHT:-20}"
    echo "persistence false"
    [ -n "$THREADS" ] && echo "threads $THREADS"
} >"$WORK/shardmq.conf"

wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

start_broker() { # wrapper-command...
    "$@" "${PIN_BROKER[@]}" "$SHARDMQ_BIN" -c "$WORK/shardmq.conf" >"$WORK/broker.log" 2>&1 &
    BROKER_PID=$!
    wait_port || { cat "$WORK/broker.log" >&2; die "broker did not open port $PORT"; }
}

stop_broker() {
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
    sleep 1
}

# Starts the load generator in the background; $1 = run name, rest = extra loadgen flags.
start_load() {
    local name=$1 pid=$2
    shift 2
    read -r -a args <<<"$(scenario_args "$SCENARIO" "$SECONDS_")"
    LOAD_CMD=("${PIN_LOADGEN[@]}" "$LOADGEN" "${args[@]}" "$@" --host 127.0.0.1 --port "$PORT"
        --broker-pid "$pid" --json "$WORK/$name.json" --quiet)
    echo "${LOAD_CMD[*]}" | clean_cmd >>"$WORK/load.cmd"
    "${LOAD_CMD[@]}" >"$WORK/$name.txt" 2>&1 &
    LOAD_PID=$!
}

wait_load() {
    wait "$LOAD_PID" || echo "profile.sh: load generator exited $?" >&2
    LOAD_PID=""
}

jget() { sed -n "s/^  \"$2\": \\(.*\\),\$/\\1/p" "$1" | tr -d '"' | head -1; }
clean_cmd() { sed -e "s#$WORK/##g" -e "s#$ROOT/##g" -e "s#--broker-pid [0-9]*#--broker-pid PID#g" -e "s#-p [0-9][0-9]*#-p PID#g"; }

# --- which tools work here
PERF_EVENT=""
if command -v perf >/dev/null; then
    if perf stat -e instructions true 2>&1 | grep -q 'not supported'; then
        PERF_EVENT=cpu-clock # no hardware counters (VM)
    else
        PERF_EVENT=cycles
    fi
    perf record -q -e "$PERF_EVENT" -o "$WORK/probe.data" true >/dev/null 2>&1 || PERF_EVENT=""
fi
TRACEPOINTS=0
if [ -n "$PERF_EVENT" ] && perf stat -e 'syscalls:sys_enter_read' true >/dev/null 2>&1; then
    TRACEPOINTS=1
fi

# --- run 1: profile
PROFILE_CMD=""
if [ -n "$PERF_EVENT" ]; then
    start_broker
    start_load profile "$BROKER_PID"
    sleep "$WARMUP"
    perf record -q -e "$PERF_EVENT" -F "$FREQ" --call-graph "$CALLGRAPH" -p "$BROKER_PID" \
        -o "$WORK/perf.data" -- sleep "$SECONDS_" >/dev/null 2>"$WORK/record.err" || cat "$WORK/record.err" >&2
    PROFILE_CMD="perf record -e $PERF_EVENT -F $FREQ --call-graph $CALLGRAPH -p PID -- sleep $SECONDS_  (after the ${WARMUP}s warmup)"
    wait_load
    stop_broker
    PR=(perf report -i "$WORK/perf.data" --no-children --stdio --percent-limit 0.3)
    "${PR[@]}" --sort symbol -g none 2>/dev/null | grep -v '^$' | grep -v '^#' | head -n "$TOP" >"$WORK/symbols.txt" || true
    "${PR[@]}" --sort dso -g none 2>/dev/null | grep -v '^$' | grep -v '^#' | head -n 15 >"$WORK/dso.txt" || true
    "${PR[@]}" --sort comm -g none 2>/dev/null | grep -v '^$' | grep -v '^#' | head -n 10 >"$WORK/comm.txt" || true
    # Kernel symbols that are syscall entries, to see which syscalls the kernel time is in.
    perf report -i "$WORK/perf.data" --children --stdio --percent-limit 1 --sort symbol -g none 2>/dev/null |
        grep -E '__x64_sys_|__do_sys_|do_syscall_64|entry_SYSCALL|do_epoll_wait|sock_|tcp_sendmsg|tcp_recvmsg|futex|eventfd' |
        head -n 30 >"$WORK/syscall_children.txt" || true
    # Self time by (function, source line): shows what inlined code inside a big
    # function (route, decode) costs.
    "${PR[@]}" --sort sym,srcline -g none 2>/dev/null | grep -v '^$' | grep -v '^#' |
        sed -e 's/  */ /g' | head -n "$TOP" >"$WORK/srclines.txt" || true
    [ -n "${KEEP_DATA:-}" ] && cp "$WORK/perf.data" "$KEEP_DATA"
    cp "$WORK/profile.json" "$WORK/profile.keep" 2>/dev/null || true
else
    # Fallback: callgrind on a short run, single-threaded load.
    VG_SECS=$((SECONDS_ < 3 ? SECONDS_ : 3))
    start_broker valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out"
    start_load profile "$BROKER_PID" --threads 1
    PROFILE_CMD="valgrind --tool=callgrind (broker under callgrind), loadgen --threads 1, ${VG_SECS}s"
    wait_load
    stop_broker
    callgrind_annotate "$WORK"/callgrind.out* 2>/dev/null | head -n $((TOP + 20)) >"$WORK/symbols.txt" || true
fi

# --- run 2: syscall counts
SYSCALL_CMD=""
start_broker
start_load syscalls "$BROKER_PID"
sleep "$WARMUP"
if [ "$TRACEPOINTS" = 1 ]; then
    perf stat -x, -e 'syscalls:sys_enter_*' -p "$BROKER_PID" -o "$WORK/sysstat.csv" -- sleep "$SECONDS_" >/dev/null 2>&1 || true
    SYSCALL_CMD="perf stat -x, -e 'syscalls:sys_enter_*' -p PID -- sleep $SECONDS_  (after the ${WARMUP}s warmup)"
    # value,unit,event,... -> "count name" for non-zero counts
    awk -F, '$1 ~ /^[0-9]+$/ && $1 > 0 { sub("syscalls:sys_enter_", "", $3); print $1, $3 }' "$WORK/sysstat.csv" |
        sort -rn >"$WORK/syscalls.txt"
else
    timeout "$SECONDS_" strace -c -f -p "$BROKER_PID" -o "$WORK/strace.txt" >/dev/null 2>&1 || true
    SYSCALL_CMD="strace -c -f -p PID for $SECONDS_ s (after the ${WARMUP}s warmup)"
    awk '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ { print $4, $NF }' "$WORK/strace.txt" | sort -rn >"$WORK/syscalls.txt" || true
fi
wait_load
stop_broker

# --- report
mkdir -p "$OUT"
file="$OUT/$(date +%Y-%m-%d)-profile-$SCENARIO${LABEL:+-$LABEL}.md"
recv_sys=$(jget "$WORK/syscalls.json" received)
recv_prof=$(jget "$WORK/profile.json" received)
{
    echo "# Profile: $SCENARIO${LABEL:+ ($LABEL)}"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- machine: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores, kernel $(uname -r), $(perf --version 2>/dev/null)"
    echo "- load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min load average when written; other jobs on the host add noise)"
    echo "- shardmq: src/ at $(git -C "$ROOT" log -1 --format="%h %s" -- src | cut -c1-100)$(git -C "$ROOT" diff --quiet HEAD -- src || echo " + uncommitted changes")"
    echo "- pinning: broker ${PIN_BROKER[*]:-none}, load generator ${PIN_LOADGEN[*]:-none}; sampling event: ${PERF_EVENT:-callgrind}"
    echo
    echo "## Commands"
    echo
    echo '```'
    echo "${PIN_BROKER[*]} target/release/shardmq -c CONF"
    cat "$WORK/load.cmd"
    echo "$PROFILE_CMD"
    echo "$SYSCALL_CMD"
    echo "perf report --no-children --sort symbol|dso|comm --percent-limit 0.3 -g none"
    echo "# CONF:"
    cat "$WORK/shardmq.conf"
    echo '```'
    echo
    echo "## Load during the runs"
    echo
    echo "| run | received msgs/s | broker CPU (s) | broker CPU per delivered msg (us) | lost |"
    echo "|---|---|---|---|---|"
    for r in profile syscalls; do
        [ -f "$WORK/$r.json" ] || continue
        echo "| $r | $(jget "$WORK/$r.json" msgs_per_sec) | $(jget "$WORK/$r.json" broker_cpu_seconds) | $(jget "$WORK/$r.json" broker_cpu_us_per_msg) | $(jget "$WORK/$r.json" lost) |"
    done
    echo
    echo "(The profile run is slowed by sampling with DWARF stacks; the syscall run by the tracepoints.)"
    echo
    echo "## Kernel vs user (perf report --sort dso)"
    echo
    echo '```'
    cat "$WORK/dso.txt" 2>/dev/null
    echo '```'
    echo
    echo "## Threads (perf report --sort comm)"
    echo
    echo '```'
    cat "$WORK/comm.txt" 2>/dev/null
    echo '```'
    echo
    echo "## Top symbols, self time (perf report --no-children --sort symbol)"
    echo
    echo '```'
    cat "$WORK/symbols.txt"
    echo '```'
    echo
    echo "## Kernel paths, inclusive time (perf report --children, syscall entries)"
    echo
    echo '```'
    cat "$WORK/syscall_children.txt" 2>/dev/null
    echo '```'
    echo
    echo "## Self time by function and source line (perf report --sort sym,srcline)"
    echo
    echo '```'
    cat "$WORK/srclines.txt" 2>/dev/null
    echo '```'
    echo
    echo "## Syscalls during the ${SECONDS_} s window (second run)"
    echo
    echo "Delivered messages in that run's measured window: ${recv_sys:-?}."
    echo
    echo "| syscall | count | per delivered message |"
    echo "|---|---|---|"
    total=0
    while read -r n name; do
        total=$((total + n))
        echo "| $name | $n | $(awk -v a="$n" -v b="${recv_sys:-0}" 'BEGIN { if (b > 0) printf "%.4f", a / b; else print "-" }') |"
    done <"$WORK/syscalls.txt"
    echo "| **all** | $total | $(awk -v a="$total" -v b="${recv_sys:-0}" 'BEGIN { if (b > 0) printf "%.4f", a / b; else print "-" }') |"
    echo
    echo "## Raw load generator output"
    for r in profile syscalls; do
        echo
        echo "### $r run"
        echo
        echo '```'
        cat "$WORK/$r.txt" 2>/dev/null
        echo '```'
    done
} >"$file"
: "$recv_prof"
echo "wrote $file" >&2
