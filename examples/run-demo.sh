#!/bin/sh
# The demo, from a fresh checkout: installs what is missing, builds, starts a
# private herdd on a socket in a temporary directory, runs sum-demo against it
# (a sum split over several workers, checked against the closed form), then
# wordfreq (a pool counts the words of herd's headers, one of its workers
# aborts and the pool counts that worker's files again, and the answer is the
# sequential count's), and stops herdd. Extra arguments go to sum-demo, e.g.
# --workers 8 --max 100000000.
set -eu
cd "$(dirname "$0")/.."

./tests/setup-debian.sh

build=${HERD_BUILD_DEMO:-build-demo}
[ -d "$build" ] || meson setup "$build" -Dbuildtype=debugoptimized >/dev/null
meson compile -C "$build" >/dev/null

. ./examples/private-herdd.sh
echo "==> herdd pid $herdd_pid on $sock"
HERD_SOCKET="$sock" "$build/examples/sum-demo" "$@"
headers=libclient/include/herd
echo "==> wordfreq --workers 2 --crash-on pool.h $headers (a pool; one worker aborts):"
HERD_SOCKET="$sock" "$build/examples/wordfreq" --workers 2 --crash-on pool.h "$headers" >"$dir/pool"
head -6 "$dir/pool"
"$build/examples/wordfreq" --sequential "$headers" >"$dir/sequential"
cmp -s "$dir/pool" "$dir/sequential" && echo "(the same as the sequential count)" ||
	{ echo "run-demo: wordfreq's pool and sequential answers differ" >&2; exit 1; }
echo "==> herdctl list --all (the demo's workers, all exited; pool.h's crash recorded):"
"$build/tools/herdctl/herdctl" --socket "$sock" list --all
