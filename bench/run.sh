#!/bin/sh
# Runs herd's benchmarks beside their baselines and prints a table of ratios;
# the raw figures go to bench-results.json (one JSON object a line, each with
# "cpus": the CPUs its processes ran on).
#   ./bench/run.sh           full run: every figure on both CPUs, then the
#                            latency and throughput figures again pinned to CPU 0
#   ./bench/run.sh --quick   the same in seconds, not minutes (CI keeps it from rotting)
# Then herdd under load (bench/run-load.sh; HERD_LOAD_SECONDS sets its length).
set -eu
cd "$(dirname "$0")/.."

./tests/setup-debian.sh

build=${HERD_BUILD_BENCH:-build-bench}
# -Dwerror: CI builds this optimised flavour only here, so -O3 warnings must fail it too.
[ -d "$build" ] || meson setup "$build" -Dbuildtype=release -Dwerror=true >/dev/null
meson compile -C "$build" >/dev/null
# Absolute from here on, whether HERD_BUILD_BENCH was relative or not: the worker's path goes to herdd.
build=$(cd "$build" && pwd)

mode=full
[ "${1:-}" = "--quick" ] && mode=quick
out=${BENCH_OUT:-bench-results.json}
all=$(taskset -pc $$ | sed 's/.*: //')
one=$(echo "$all" | sed 's/[-,].*//')

# Runs one set on CPUS and tags every JSON line with them. A set that fails
# (a figure did: run-set.sh lists it) fails the run once the table is out.
failed=0
set_on() {
	cpus=$1
	shift
	"$@" >"$out.set" || failed=1
	sed "s/^{/{\"cpus\":\"$cpus\",/" "$out.set"
	rm -f "$out.set"
}

{
	set_on "$all" env build="$build" ./bench/run-set.sh "$mode" all
	set_on "$one" env build="$build" taskset -c "$one" ./bench/run-set.sh "$mode" pinned
	set_on "$all" env build="$build" ./bench/run-load.sh "$mode"
} >"$out"

python3 ./bench/table.py "$out" "$all" "$one"
echo "raw figures: $out ($(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'))"
if [ "$failed" -ne 0 ]; then
	echo "run.sh: some figures FAILED (listed in the table)" >&2
	exit 1
fi
