#!/bin/sh
# herdd's control plane under load (bench/load.c), each mode on a private
# herdd of its own whose limits admit a thousand masters and workers. Prints
# JSON lines; exits 1 if a mode failed or lost anything.
#   build=DIR bench/run-load.sh full|quick
# HERD_LOAD_SECONDS sets the full run's duration (default 60, as issue 19's).
set -eu
cd "$(dirname "$0")/.."
mode=$1
worker="$(cd "$build" && pwd)/tests/worker/herd-testworker"
L="$build/bench/herd-load"
# masters, rate, seconds, live workers, spawns/s; the lister's workers; ping's masters x window.
masters=1024 rate=12000 secs=${HERD_LOAD_SECONDS:-60} live=250 churn=26 listed=1000 window=8
if [ "$mode" = quick ]; then
	masters=32 rate=2000 secs=2 live=20 churn=10 listed=100 window=8
fi
HERDD_ARGS="--grace-ms 500 --max-connections 4096 --max-connections-per-uid 4096
--max-unauthenticated 64 --max-unauthenticated-per-uid 64 --max-workers 4000
--max-workers-per-uid 4000 --max-workers-per-master 2000"
failed=0

# One mode on a fresh herdd, so each starts from the same state.
on_herdd() {
	(
		. ./examples/private-herdd.sh
		export HERD_SOCKET="$sock"
		"$@"
	) || {
		echo "{\"figure\":\"failed\",\"variant\":\"herd-load $2\",\"value\":1,\"unit\":\"exit\"}"
		failed=1
	}
}

on_herdd "$L" load "$worker" "$masters" "$rate" "$secs" "$live" "$churn"
on_herdd "$L" lister "$worker" "$masters" "$rate" "$((secs / 4 + 1))" "$listed"
on_herdd "$L" ping 64 "$window" "$((secs / 4 + 1))"
exit "$failed"
