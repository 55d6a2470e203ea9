#!/usr/bin/env bash
# perf/cross.sh MODE [SHORT LONG] : broker cost per delivered message with `threads 2`
# when the publisher and the subscriber sit on one shard ("local") or on two ("cross").
#
# The kernel's SO_REUSEPORT hash places each connection on a shard, so the script does
# not choose the placement: it observes it. While the load runs it reads which shard's
# epoll set holds each client socket (/proc/PID/fdinfo of the broker's eventpoll fds,
# socket inodes matched with `ss -tne`), and keeps a run only if its placement is the one
# asked for (else it runs again, up to TRIES times). The load is one publisher and one
# subscriber (`fan-in --publishers 1 --subscribers 1`, QoS 0, closed loop).
#
# MODE callgrind: two runs (SHORT, LONG seconds) per placement under
#   `valgrind --tool=callgrind`; per message (Ir(LONG) - Ir(SHORT)) / (n(LONG) - n(SHORT)),
#   exact and independent of other load on the host (but valgrind serialises the threads,
#   so batching differs from a native run).
# MODE cpu: native runs of LONG seconds per placement, ROUNDS rounds alternating local
#   and cross; the broker's CPU time (utime+stime from /proc) per delivered message.
# Environment: PORT [18994]  INFLIGHT [100]  PAYLOAD [16]  TRIES [12]  ROUNDS [3]
#   SHARDMQ_BIN / LOADGEN (default target/release/...)  TASKSET [""] e.g. "taskset -c 0"
#   KEEP [""] directory to keep the callgrind outputs in (callgrind.PLACEMENT.SECONDS)
#   CONF_EXTRA [""] lines appended to the broker config, e.g. "set_tcp_nodelay true"
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODE=${1:-}
SHORT=${2:-2}
LONG=${3:-6}
PORT=${PORT:-18994}
PAYLOAD=${PAYLOAD:-16}
INFLIGHT=${INFLIGHT:-100}
TRIES=${TRIES:-12}
ROUNDS=${ROUNDS:-3}
SHARDMQ_BIN=${SHARDMQ_BIN:-$ROOT/target/release/shardmq}
LOADGEN=${LOADGEN:-$ROOT/target/release/shardmq-loadgen}
TASKSET=${TASKSET:-}

die() { echo "cross.sh: $*" >&2; exit 1; }
case "$MODE" in callgrind | cpu) ;; *) die "usage: perf/cross.sh callgrind|cpu [SHORT LONG]" ;; esac
[ -x "$SHARDMQ_BIN" ] || die "$SHARDMQ_BIN not found"

WORK=$(mktemp -d /tmp/shardmq-cross.XXXXXX)
BROKER_PID=""
cleanup() {
    if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000\nmax_inflight_messages 20\npersistence false\nthreads 2\n' \
    "$PORT" >"$WORK/shardmq.conf"
[ -z "${CONF_EXTRA:-}" ] || printf '%s\n' "$CONF_EXTRA" >>"$WORK/shardmq.conf"

wait_port() {
    for _ in $(seq 1 400); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

# placement PID -> "local", "cross" or "unknown": which epoll set holds each socket of a
# connection to PORT (the listening sockets and the waker are in every set or in none).
placement() {
    local pid=$1 inodes fd ep shards
    # inodes of the broker's accepted sockets on PORT
    inodes=$(ss -tne state established "( sport = :$PORT )" 2>/dev/null |
        sed -n 's/.* ino:\([0-9]*\).*/\1/p' | sort -u)
    [ "$(echo "$inodes" | grep -c .)" = 2 ] || { echo unknown; return; }
    shards=""
    for ino in $inodes; do
        # the broker's fd of that socket
        fd=$(find "/proc/$pid/fd" -lname "socket:\[$ino\]" -printf '%f\n' 2>/dev/null | head -1)
        [ -n "$fd" ] || { echo unknown; return; }
        # the eventpoll fd whose interest list holds it
        for ep in $(find "/proc/$pid/fd" -lname 'anon_inode:\[eventpoll\]' -printf '%f\n' 2>/dev/null); do
            if grep -q "^tfd: *$fd " "/proc/$pid/fdinfo/$ep" 2>/dev/null; then shards="$shards $ep"; fi
        done
    done
    set -- $shards
    [ $# = 2 ] || { echo unknown; return; }
    if [ "$1" = "$2" ]; then echo local; else echo cross; fi
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# shard_sched PID -> per shard thread "name cpu-ns runqueue-wait-ns timeslices" (schedstat)
shard_sched() {
    local t
    for t in /proc/"$1"/task/*; do
        case "$(cat "$t/comm" 2>/dev/null)" in
        shardmq-shard-*) echo "$(cat "$t/comm") $(cat "$t/schedstat")" ;;
        esac
    done 2>/dev/null
}

# sched_report BEFORE AFTER -> how long each shard thread waited on a run queue per time
# slice (a woken shard that waits for a CPU: the cross-shard hop pays it on both shards)
sched_report() {
    awk 'NR == FNR { cpu[$1] = $2; wait[$1] = $3; n[$1] = $4; next }
         ($1 in n) && $4 > n[$1] {
             printf " %s %.0f ms CPU, run-queue wait %.0f us per slice (%d slices);", $1,
                 ($2 - cpu[$1]) / 1e6, ($3 - wait[$1]) / 1e3 / ($4 - n[$1]), $4 - n[$1]
         }' "$1" "$2"
}

# run SECONDS WANT -> "instructions-or-cpu-seconds delivered" on stdout, or nothing when
# the placement was not WANT.
run_once() {
    local secs=$1 want=$2 got lost ir place t0 t1
    if [ "$MODE" = callgrind ]; then
        valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
            "$SHARDMQ_BIN" -c "$WORK/shardmq.conf" >"$WORK/broker.log" 2>&1 &
    else
        $TASKSET "$SHARDMQ_BIN" -c "$WORK/shardmq.conf" >"$WORK/broker.log" 2>&1 &
    fi
    BROKER_PID=$!
    wait_port || { cat "$WORK/broker.log" >&2; die "broker did not open port $PORT"; }
    t0=$(cpu_ticks "$BROKER_PID")
    shard_sched "$BROKER_PID" >"$WORK/sched.0"
    $TASKSET "$LOADGEN" fan-in --publishers 1 --subscribers 1 --qos 0 --inflight "$INFLIGHT" \
        --payload "$PAYLOAD" --duration "$secs" --warmup 0 --drain 3 --host 127.0.0.1 \
        --port "$PORT" --json "$WORK/load.json" --quiet >"$WORK/load.txt" 2>&1 &
    local lg=$!
    place=unknown
    for _ in $(seq 1 100); do
        sleep 0.1
        place=$(placement "$BROKER_PID")
        [ "$place" = unknown ] || break
    done
    wait "$lg" || { cat "$WORK/load.txt" >&2; die "load generator failed"; }
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        # (seen once under valgrind when the port was still held: try again)
        echo "  broker exited early: $(tail -2 "$WORK/broker.log")" >&2
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=""
        return 0
    fi
    t1=$(cpu_ticks "$BROKER_PID")
    shard_sched "$BROKER_PID" >"$WORK/sched.1"
    kill -TERM "$BROKER_PID"
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
    echo "  ${secs}s run: placement $place;$(sched_report "$WORK/sched.0" "$WORK/sched.1")" >&2
    [ "$place" = "$want" ] || return 0
    got=$(sed -n 's/^ *"received": *\([0-9]*\).*/\1/p' "$WORK/load.json" | head -1)
    lost=$(sed -n 's/^ *"lost": *\([0-9]*\).*/\1/p' "$WORK/load.json" | head -1)
    [ "${lost:-0}" = 0 ] || die "the ${secs}s run lost $lost messages"
    if [ "$MODE" = callgrind ]; then
        ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$WORK/callgrind.out")
        if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$WORK/callgrind.out" "$KEEP/callgrind.$want.$secs"; fi
        echo "$ir $got"
    else
        # ticks (USER_HZ) from before the load to its end (start-up excluded)
        echo "$(awk -v a="$t0" -v b="$t1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", (b - a) / hz }') $got"
    fi
}

run() {
    local out
    for _ in $(seq 1 "$TRIES"); do
        out=$(run_once "$1" "$2")
        if [ -n "$out" ]; then echo "$out"; return; fi
    done
    die "no $2 placement in $TRIES tries"
}

if [ "$MODE" = callgrind ]; then
    for want in local cross; do
        read -r IR1 N1 <<<"$(run "$SHORT" "$want")"
        read -r IR2 N2 <<<"$(run "$LONG" "$want")"
        echo "$want: ${SHORT}s $IR1 instructions $N1 delivered; ${LONG}s $IR2 instructions $N2 delivered"
        [ "$N2" -gt "$N1" ] || die "the long run delivered no more than the short one"
        awk -v a="$IR1" -v b="$IR2" -v n="$N1" -v m="$N2" -v s="$want" \
            'BEGIN { printf "%s: %.0f instructions per delivered message\n", s, (b - a) / (m - n) }'
    done
else
    for r in $(seq 1 "$ROUNDS"); do
        for want in local cross; do
            read -r CPU N <<<"$(run "$LONG" "$want")"
            awk -v c="$CPU" -v n="$N" -v s="$want" -v r="$r" \
                'BEGIN { printf "round %s %s: %s s broker CPU, %d delivered, %.3f us per message\n", r, s, c, n, c * 1e6 / n }'
        done
    done
fi
