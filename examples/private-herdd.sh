# Sourced by examples/run-demo.sh and bench/run.sh: starts a private herdd on a
# socket in a temporary directory and stops it on exit. Needs $build (a meson
# build directory); $HERDD_ARGS, if set, are more herdd options (split on
# spaces). Sets $dir, $sock, $herdd_pid.

# Without it the keeper below dies before opening its FIFO, and the read hangs.
[ -n "${build:-}" ] || { echo "private-herdd.sh: set build to a meson build directory" >&2; exit 2; }

# On tmpfs when there is one, as $XDG_RUNTIME_DIR (/run/user/UID) is where herdd
# normally lives: a worker binds its socket there, and on a disk file system a
# thousand binds at once queue on the directory's lock.
tmp=/tmp
[ -d /dev/shm ] && [ -w /dev/shm ] && tmp=/dev/shm
dir=$(mktemp -d "$tmp/herd-demo-XXXXXX")
sock="$dir/herdd.sock"
herdd_pid=""
keeper_pid=""
cleanup() {
	if [ -n "$herdd_pid" ]; then
		kill -TERM "$herdd_pid" 2>/dev/null || true
	fi
	# The keeper is herdd's parent: it reaps herdd, then exits.
	if [ -n "$keeper_pid" ]; then
		wait "$keeper_pid" 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

# A small keeper starts herdd with a NOTIFY_SOCKET, reports herdd's pid on a
# FIFO once herdd says READY=1 (10 s at most), then waits to reap it. herdd
# logs to its own file so the demo's output stays readable.
mkfifo "$dir/ready"
# shellcheck disable=SC2086 # HERDD_ARGS is a list of options.
python3 - "$build/daemon/herdd" "$sock" "$dir" ${HERDD_ARGS:-} >"$dir/ready" <<'PY' &
import os, socket, subprocess, sys
herdd, sock, d = sys.argv[1:4]
extra = sys.argv[4:]
notify = os.path.join(d, "notify")
ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
ns.bind(notify)
ns.settimeout(10)
env = dict(os.environ, XDG_RUNTIME_DIR=d, NOTIFY_SOCKET=notify)
p = subprocess.Popen([herdd, "--socket", sock, "--log-file", os.path.join(d, "herdd.log")] + extra,
                     env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
try:
    while b"READY=1" not in ns.recv(4096).split(b"\n"):
        pass
    # Nobody reads later STATUS= datagrams: herdd's sends then fail at once.
    os.unlink(notify)
    print(p.pid, flush=True)
except socket.timeout:
    p.kill()
sys.stdout.close()
sys.exit(p.wait() != 0)
PY
keeper_pid=$!
read -r herdd_pid <"$dir/ready" || true
if [ -z "$herdd_pid" ]; then
	echo "run-demo: herdd did not become ready; its log:" >&2
	cat "$dir/herdd.log" >&2 || true
	exit 1
fi
