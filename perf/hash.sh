#!/usr/bin/env bash
# Instructions per topic match (100k-subscription index) and per QoS 0 publish fanned out
# to 1,000 subscribers, counted by callgrind: deterministic, so it holds on a loaded
# machine where criterion's wall-clock numbers do not. Compare two commits by running it
# in each (benches/instructions.rs and benches/common/ are all it needs).
#
#   bash perf/hash.sh            # prints a markdown table
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)"; exit 1; }
exe=$(cargo bench --bench instructions --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
[ -x "$exe" ] || { echo "could not build benches/instructions.rs"; exit 1; }
count() { # mode n -> instructions
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$exe" "$1" "$2" 2>&1 \
    | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
echo "| path | instructions per operation |"
echo "| --- | --- |"
for mode in topic-exact topic-plus topic-hash; do
  a=$(count "$mode" 0); b=$(count "$mode" 100000)
  echo "| match, $mode, 100k subscriptions | $(( (b - a) / 100000 )) |"
done
a=$(count fanout 0); b=$(count fanout 200)
echo "| QoS 0 publish to 1,000 subscribers | $(( (b - a) / 200 )) |"
