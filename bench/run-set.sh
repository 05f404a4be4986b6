#!/bin/sh
# One set of benchmarks on the CPUs this process may use (bench/run.sh runs
# it twice: on every CPU, and under taskset on one). Prints JSON lines.
#   build=DIR bench/run-set.sh full|quick all|pinned
# "pinned" leaves out the scale and orphan figures (they are about herdd's
# bookkeeping, not about wake-ups across cores) and the pool figures (they
# are about using every CPU).
set -eu
cd "$(dirname "$0")/.."
mode=$1 set=$2

n=20000 pipe=200000 pool=20000 secs=5 items=300000 big=3000 calls_mb=300 spawns=200 rounds=20 wedged=5
small=100 large=1000 tasks=1000000 crashes=5 text_mb=50 wf_rounds=3
dask_tasks=3000 dask_start=8 lines=10000
if [ "$mode" = quick ]; then
	n=500 pipe=2000 pool=500 secs=0.5 items=3000 big=30 calls_mb=10 spawns=10 rounds=3 wedged=1
	small=10 large=100 tasks=20000 crashes=1 text_mb=4 wf_rounds=1
	dask_tasks=200 dask_start=4 lines=200
fi
grace=500
worker="$(cd "$build" && pwd)/tests/worker/herd-testworker"
# Every figure runs through fig: one that fails is a "failed" line naming it,
# the rest still run, and the set exits 1 at the end.
failed=0
fig() {
	"$@" || {
		echo "{\"figure\":\"failed\",\"variant\":\"${1##*/} $2\",\"value\":$?,\"unit\":\"exit\"}"
		failed=1
	}
}
B="fig $build/bench/baseline"
H="fig $build/bench/herd-bench"
# Peers (bench/peers/): gRPC is built where grpc++ is, which setup-debian.sh installs.
G="$build/bench/peers/grpc-bench"
[ -x "$G" ] || { echo "run-set: $G was not built (is grpc++ installed?)" >&2; exit 1; }
G="fig $G"
# dask and supervisor are Debian's packages, for Debian's interpreter.
debpy=/usr/bin/python3

# One private herdd for the figures below; its limits let a master own 1,000 workers.
HERDD_ARGS="--grace-ms $grace --max-workers 4000 --max-workers-per-uid 4000 --max-workers-per-master 2000"
. ./examples/private-herdd.sh
export HERD_SOCKET="$sock"

$B pingpong raw "$n"
$B pingpong json "$n"
$H rtt "$worker" "$n"
for inflight in 1 64; do
	$B pipeline raw "$pipe" "$inflight"
	$B pipeline json "$pipe" "$inflight"
	$H pipeline "$worker" "$pipe" "$inflight" 1
	fig python3 bench/pool.py "$pool" "$inflight" 1 "$secs"
done
for inflight in 1 64; do
	$H pipeline "$worker" "$pipe" "$inflight" 2
	fig python3 bench/pool.py "$pool" "$inflight" 2 "$secs"
done
$B echo-server "$pipe" 16 16
$B items raw "$items" 0
$B items json "$items" 0
$H stream "$worker" "$items" 0
$B bulk $((big * 65536))
$B items json "$big" 65536
$H stream "$worker" "$big" 65536
$H stream "$worker" "$big" 65536 bytes
$H bytes-call "$worker" "$calls_mb" 1048576
$G "$n" "$pipe" 64 "$big" 65536
$B spawn "$spawns" "$worker" --bench-raw-fd3
$H spawn "$worker" "$spawns"
[ "$set" = pinned ] && exit "$failed"

$H failure "$worker" "$rounds"
$H orphan "$worker" 50 "$rounds"
$H orphan "$worker" 50 "$wedged" wedge
echo "{\"figure\":\"grace_ms\",\"variant\":\"herdd\",\"value\":$grace,\"unit\":\"ms\"}"
# Pools on every CPU this set may use: tiny tasks against Python's pools, the
# cost of a worker SIGKILLed halfway through a map, and wordfreq against its
# sequential and Python versions. A window of 32 keeps tiny tasks flowing.
cpus=$(nproc)
$H map "$worker" "$tasks" "$cpus" 32
fig python3 bench/pool-map.py "$tasks" "$cpus"
fig python3 bench/py-pool.py "$tasks" "$cpus" "$worker" "$n"
$H crash "$worker" 10000 "$cpus" 32 "$crashes"
fig python3 bench/wordfreq.py "$build/examples/wordfreq" "$text_mb" "$wf_rounds"
# Peers of the pool and of herdctl map: dask.distributed, GNU parallel.
$H pool-start "$worker" "$cpus" "$rounds"
fig $debpy bench/peers/dask-bench.py "$dask_tasks" "$cpus"
$H pool-start "$worker" "$dask_start" "$rounds"
fig $debpy bench/peers/dask-bench.py 0 "$dask_start"
fig python3 bench/peers/parallel.py "$lines" "$cpus" "$build/tools/herdctl/herdctl" "$worker"
# herdd's memory is read from a fresh daemon: stop this one, start another.
cleanup
trap - EXIT INT TERM
. ./examples/private-herdd.sh
export HERD_SOCKET="$sock"
$H scale "$worker" "$small"
$H scale "$worker" "$large"
# supervisord's programs beside herdd's workers, as many (after herdd's, which stopped them all).
fig $debpy bench/peers/supervisord-bench.py "$small" "$worker"
fig $debpy bench/peers/supervisord-bench.py "$large" "$worker"
exit "$failed"
