#!/bin/sh
# Runs herd's benchmarks beside their baselines in one run and prints a table
# of ratios; the raw figures go to bench-results.json (one JSON object a line).
#   ./bench/run.sh           full run
#   ./bench/run.sh --quick   seconds, not minutes (CI: keeps the programs from rotting)
#   PIN=0 ./bench/run.sh     everything pinned to CPU 0 (cross-core wake-ups dominate
#                            small messages on this kind of machine)
set -eu
cd "$(dirname "$0")/.."

./tests/setup-debian.sh

build=${HERD_BUILD_BENCH:-build-bench}
[ -d "$build" ] || meson setup "$build" -Dbuildtype=release >/dev/null
meson compile -C "$build" >/dev/null

n=20000 pipe=200000 spawns=200 rounds=20 mem=200
if [ "${1:-}" = "--quick" ]; then
	n=500 pipe=2000 spawns=10 rounds=3 mem=20
fi
pin=""
[ -n "${PIN:-}" ] && pin="taskset -c $PIN"

. ./examples/private-herdd.sh
export HERD_SOCKET="$sock"
out=${BENCH_OUT:-bench-results.json}
worker="$(pwd)/$build/libclient/tools/herd-testworker"
B="$pin $build/bench/baseline"
H="$pin $build/bench/herd-bench"

{
	$B pingpong raw "$n"
	$B pingpong json "$n"
	$H rtt "$worker" "$n"
	$B pipeline json "$pipe" 1
	$H pipeline "$worker" "$pipe" 1 1
	$B pipeline json "$pipe" 64
	$H pipeline "$worker" "$pipe" 64 1
	$H pipeline "$worker" "$pipe" 64 2
	$B echo-server "$pipe" 16 16
	$B spawn "$spawns" "$worker" --bench-raw-fd3
	$H spawn "$worker" "$spawns"
	$H failure "$worker" "$rounds"
	$H orphan "$worker" 50 "$rounds"
	$H memory "$worker" "$mem"
} >"$out"

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {(r["figure"], r["variant"]): r for r in rows}
def v(fig, var, key="value"):
    r = by.get((fig, var))
    return r[key] if r else None
print(f"{'figure':<34}{'herd':>14}{'baseline':>14}{'ratio':>8}")
def row(label, h, b, unit):
    if h is None or b is None:
        return
    print(f"{label:<34}{h:>12.1f}{unit:<2}{b:>12.1f}{unit:<2}{h / b:>8.2f}")
row("call rtt p50 vs json ping-pong", v("call_rtt", "herd_call", "p50_us"), v("call_rtt", "pingpong_json", "p50_us"), "us")
row("call rtt p99 vs json ping-pong", v("call_rtt", "herd_call", "p99_us"), v("call_rtt", "pingpong_json", "p99_us"), "us")
row("call rtt p50 vs raw ping-pong", v("call_rtt", "herd_call", "p50_us"), v("call_rtt", "pingpong_raw", "p50_us"), "us")
row("calls/s 1 in flight", v("calls_per_s", "herd_inflight1_workers1"), v("calls_per_s", "pipeline_json_inflight1"), "")
row("calls/s 64 in flight", v("calls_per_s", "herd_inflight64_workers1"), v("calls_per_s", "pipeline_json_inflight64"), "")
row("calls/s 64 in flight, 2 workers", v("calls_per_s", "herd_inflight64_workers2"), v("calls_per_s", "echo_server_16x16"), "")
row("spawn-to-ready p50", v("spawn_ready", "herd_spawn", "p50_us"), v("spawn_ready", "fork_exec_handshake", "p50_us"), "us")
def one(label, val, unit):
    if val is not None:
        print(f"{label:<34}{val:>12.1f}{unit:<2}")
one("worker SIGKILL -> on_failure p50", v("failure_detection", "sigkill_to_on_failure", "p50_us"), "us")
one("master SIGKILL -> 50 workers gone p50", v("orphan_kill", "master_sigkill_to_last_worker_exit", "p50_us"), "us")
one("master SIGKILL -> 50 workers gone p99", v("orphan_kill", "master_sigkill_to_last_worker_exit", "p99_us"), "us")
one("herdd RSS, no workers", v("daemon_rss", "baseline_kib"), "KiB")
one("herdd RSS per worker", v("daemon_rss", "per_worker_kib"), "KiB")
row("spawn-to-ready p99", v("spawn_ready", "herd_spawn", "p99_us"), v("spawn_ready", "fork_exec_handshake", "p99_us"), "us")
PY
echo "raw figures: $out"
