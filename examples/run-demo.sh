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

dir=$(mktemp -d /tmp/herd-demo-XXXXXX)
sock="$dir/herdd.sock"
herdd_pid=""
cleanup() {
	if [ -n "$herdd_pid" ]; then
		kill -TERM "$herdd_pid" 2>/dev/null || true
		wait "$herdd_pid" 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

# herdd logs to its own file so the demo's output stays readable.
XDG_RUNTIME_DIR="$dir" "$build/daemon/herdd" --socket "$sock" --log-file "$dir/herdd.log" &
herdd_pid=$!
# Ready when it answers a request; give it up to 5 s.
tries=0
until "$build/libclient/tools/herdctl" --socket "$sock" stats >/dev/null 2>&1; do
	tries=$((tries + 1))
	if [ "$tries" -gt 100 ] || ! kill -0 "$herdd_pid" 2>/dev/null; then
		echo "run-demo: herdd did not start; its log:" >&2
		cat "$dir/herdd.log" >&2 || true
		exit 1
	fi
	sleep 0.05
done

echo "==> herdd pid $herdd_pid on $sock"
HERD_SOCKET="$sock" "$build/examples/sum-demo" "$@"
echo "==> herdctl list --all (the demo's workers, all exited):"
"$build/libclient/tools/herdctl" --socket "$sock" list --all
