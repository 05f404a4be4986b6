#!/bin/sh
# The demo, from a fresh checkout: installs what is missing, builds, starts a
# private herdd on a socket in a temporary directory, runs sum-demo against it
# (a sum split over several workers, checked against the closed form), and
# stops herdd. Extra arguments go to sum-demo, e.g. --workers 8 --max 100000000.
set -eu
cd "$(dirname "$0")/.."

./tests/setup-debian.sh

build=${HERD_BUILD_DEMO:-build-demo}
[ -d "$build" ] || meson setup "$build" -Dbuildtype=debugoptimized >/dev/null
meson compile -C "$build" >/dev/null

. ./examples/private-herdd.sh
echo "==> herdd pid $herdd_pid on $sock"
HERD_SOCKET="$sock" "$build/examples/sum-demo" "$@"
echo "==> herdctl list --all (the demo's workers, all exited):"
"$build/tools/herdctl/herdctl" --socket "$sock" list --all
