#!/usr/bin/env bash
# perf/flashmq.sh : builds FlashMQ (https://github.com/halfgaar/FlashMQ), the fastest C++
# peer, for perf/compare.sh. Release build with its own CMakeLists, nothing installed
# system-wide; the binary lands in perf/.flashmq/flashmq (git-ignored), which compare.sh
# uses by default (FLASHMQ_BIN overrides it).
#
# Environment (defaults in brackets):
#   FLASHMQ_REPO [https://github.com/halfgaar/FlashMQ]  a URL or a local clone
#   FLASHMQ_REF [v1.26.2]  the tag or commit built (the version perf/results name)
#   FLASHMQ_DIR [perf/.flashmq]  source checkout, build dir and binary
# Needs: git, cmake, g++, libssl-dev (Debian: apt-get install cmake g++ libssl-dev).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPO=${FLASHMQ_REPO:-https://github.com/halfgaar/FlashMQ}
REF=${FLASHMQ_REF:-v1.26.2}
DIR=${FLASHMQ_DIR:-$ROOT/perf/.flashmq}

die() { echo "flashmq.sh: $*" >&2; exit 1; }
for tool in git cmake g++; do command -v "$tool" >/dev/null || die "$tool not found (apt-get install cmake g++ libssl-dev)"; done

mkdir -p "$DIR"
if [ ! -d "$DIR/src/.git" ]; then
    git clone -q "$REPO" "$DIR/src" || die "cannot clone $REPO"
fi
git -C "$DIR/src" fetch -q --tags origin 2>/dev/null || true
git -C "$DIR/src" checkout -q "$REF" || die "no $REF in $REPO"
mkdir -p "$DIR/build"
cmake -S "$DIR/src" -B "$DIR/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$DIR/build" --target flashmq -j "$(nproc)"
cp "$DIR/build/flashmq" "$DIR/flashmq"
echo "built $("$DIR/flashmq" --version 2>/dev/null | head -1 || echo FlashMQ) ($REF) -> $DIR/flashmq" >&2
