# perf/results.sh: sourced by the perf scripts that write perf/results files.
# results_file NAME: creates $OUT and prints the path $OUT/<UTC date>-NAME.md.
# machine_description DIR: prints what the results depend on: kernel, CPUs, memory, and
# the disk and file system that hold DIR.
results_file() {
    mkdir -p "$OUT"
    echo "$OUT/$(date -u +%Y-%m-%d)-$1.md"
}

machine_description() {
    uname -srm
    lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Hypervisor)' || true
    echo "memory: $(free -h | awk '/Mem:/ {print $2}')"
    echo "disk for the persistence dir: $(df -h "$1" | awk 'NR==2 {print $1, $2}') ($(findmnt -no FSTYPE -T "$1" 2>/dev/null || echo '?'))"
}
