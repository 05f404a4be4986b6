#!/bin/sh
# Instructions per pipelined call on each side, from callgrind (a figure that
# holds on a busy machine, unlike wall time): herd-bench's pipeline mode, 64 in
# flight to one worker, for N calls minus the same for 0 calls, divided by N,
# once for the master process and once for the worker process.
#   build=DIR bench/call-cost.sh [N]     (default N 20000; DIR default build)
# Callgrind's files stay in $HERD_COST_OUT when it is set (for callgrind_annotate).
set -eu
cd "$(dirname "$0")/.."
n=${1:-20000}
build=$(cd "${build:-build}" && pwd)
worker="$build/tests/worker/herd-testworker"
HERDD_ARGS="--grace-ms 60000"
. ./examples/private-herdd.sh
export HERD_SOCKET="$sock"
out=${HERD_COST_OUT:-$dir}
mkdir -p "$out"

# The worker is herdd's child, not the bench's: a wrapper runs it under
# callgrind, holding a FIFO open for writing so that the reader here sees EOF
# once the worker (and its callgrind file) is done.
for calls in 0 "$n"; do
	mkfifo "$dir/done.$calls"
	printf '#!/bin/sh\nexec valgrind -q --tool=callgrind --callgrind-out-file="%s" "%s" "$@" 9>"%s"\n' \
		"$out/worker.$calls" "$worker" "$dir/done.$calls" >"$dir/worker.$calls"
	chmod +x "$dir/worker.$calls"
	cat "$dir/done.$calls" >/dev/null &
	reader=$!
	valgrind -q --tool=callgrind --callgrind-out-file="$out/master.$calls" \
		"$build/bench/herd-bench" pipeline "$dir/worker.$calls" "$calls" 64 1 >/dev/null || { cat "$dir/herdd.log" >&2; exit 1; }
	wait "$reader"
done

# Total instructions (Ir) of one callgrind file.
ir() {
	sed -n 's/^totals: *//p; s/^summary: *//p' "$1" | head -n 1
}
for side in master worker; do
	per=$((($(ir "$out/$side.$n") - $(ir "$out/$side.0")) / n))
	echo "{\"figure\":\"instructions_per_call\",\"variant\":\"$side\",\"value\":$per,\"unit\":\"Ir\"}"
done
