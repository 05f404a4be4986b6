#!/bin/sh
# Runs herd's benchmarks beside their baselines and prints a table of ratios;
# the raw figures go to bench-results.json (one JSON object a line, each with
# "cpus": the CPUs its processes ran on).
#   ./bench/run.sh           full run: every figure on both CPUs, then the
#                            latency and throughput figures again pinned to CPU 0
#   ./bench/run.sh --quick   the same in seconds, not minutes (CI keeps it from rotting)
set -eu
cd "$(dirname "$0")/.."

./tests/setup-debian.sh

build=${HERD_BUILD_BENCH:-build-bench}
# -Dwerror: CI builds this optimised flavour only here, so -O3 warnings must fail it too.
[ -d "$build" ] || meson setup "$build" -Dbuildtype=release -Dwerror=true >/dev/null
meson compile -C "$build" >/dev/null

mode=full
[ "${1:-}" = "--quick" ] && mode=quick
out=${BENCH_OUT:-bench-results.json}
all=$(taskset -pc $$ | sed 's/.*: //')
one=$(echo "$all" | sed 's/[-,].*//')

# Tags every JSON line with the CPUs it ran on.
tag() { sed "s/^{/{\"cpus\":\"$1\",/"; }

{
	build=$build ./bench/run-set.sh "$mode" all | tag "$all"
	build=$build taskset -c "$one" ./bench/run-set.sh "$mode" pinned | tag "$one"
} >"$out"

python3 ./bench/table.py "$out" "$all" "$one"
echo "raw figures: $out ($(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'))"
