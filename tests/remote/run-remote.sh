#!/bin/sh
# Runs test-remote against real remote hosts from the testbed (../shared/testbed):
#   run-remote.sh ssh TEST-REMOTE     three ssh hosts (network namespaces, own sshd)
#   run-remote.sh slurm TEST-REMOTE   three nodes of a one-machine Slurm cluster
# It brings the testbed up and takes it down again at the end (unless it was
# up already: then it is someone else's and stays). HERDD and
# HERD_EXAMPLE_WORKER come from meson; every host shares this file system,
# so the build's herdd runs there as it is. Skips (77) only where the
# machine cannot give namespaces or the testbed scripts are not there.
set -eu

kind=$1
test_remote=$2
src=$(cd "$(dirname "$0")/../.." && pwd)

# The first shared/testbed above the source tree, as tests/systemd finds systemd.sh.
testbed=${HERD_TESTBED:-}
d=$src
while [ -z "$testbed" ]; do
	[ -x "$d/shared/testbed/ssh-hosts.sh" ] && testbed=$d/shared/testbed
	[ "$d" = / ] && break
	d=$(dirname "$d")
done
if [ -z "$testbed" ]; then
	echo "SKIP: no testbed scripts (set HERD_TESTBED to the testbed folder)"
	exit 77
fi
if [ "$(id -u)" != 0 ] || ! unshare -n true 2>/dev/null; then
	echo "SKIP: this machine does not let us make network namespaces (root needed)"
	exit 77
fi

export HERD_TESTBED_DIR=${HERD_TESTBED_DIR:-/tmp/herd-testbed}
export HERD_REMOTE_HERDD="$HERDD"

case $kind in
ssh)
	script=$testbed/ssh-hosts.sh
	export HERD_SSH_MODE=netns HERD_TESTBED_SSH="$script"
	export HERD_SSH_COMMAND="ssh -F $HERD_TESTBED_DIR/ssh/ssh_config"
	export HERD_REMOTE_HOSTS=ssh://herd-h1,ssh://herd-h2,ssh://herd-h3
	;;
slurm)
	script=$testbed/slurm.sh
	export SLURM_CONF=$HERD_TESTBED_DIR/slurm/slurm.conf
	export HERD_REMOTE_HOSTS=slurm://n1,slurm://n2,slurm://n3
	;;
*)
	echo "usage: run-remote.sh ssh|slurm TEST-REMOTE" >&2
	exit 2
	;;
esac

# At the end, whatever failed: host 1's link back up (a cut test that died
# leaves it cut, and ssh clients to it hanging), then the testbed down if
# it was brought up here.
mine=
tmp=
cleanup() {
	[ -z "$tmp" ] || rm -rf "$tmp"
	[ "$kind" != ssh ] || "$script" heal 1 >/dev/null 2>&1 || true
	[ -z "$mine" ] || "$script" down >/dev/null 2>&1 || true
}
trap cleanup EXIT
if ! "$script" status >/dev/null 2>&1; then
	mine=1
	"$script" up 3 >/dev/null
fi
state="already up"
[ -z "$mine" ] || state="brought up here"
echo "hosts: $HERD_REMOTE_HOSTS (test bed $state)"
"$test_remote"

# The README's commands ("Running on other hosts"), with the build's herdctl
# and test worker in place of the installed ones: one pool over the link.
PATH=$(dirname "$HERDCTL"):$PATH
export HERD_TESTWORKER PATH
expected=$(seq 1 100 | awk '{print $1 * ($1 - 1) / 2}')
tmp=$(mktemp -d)
case $kind in
ssh)
	seq 1 100 | sed 's/.*/{"n":&}/' |
		herdctl --socket ssh://herd-h1 map -j 2 -- "$HERD_TESTWORKER" sum >"$tmp/out"
	# One pool over the three hosts, two workers each.
	seq 1 100 | sed 's/.*/{"n":&}/' |
		herdctl map --hosts ssh://herd-h1=2,ssh://herd-h2=2,ssh://herd-h3=2 \
			-- "$HERD_TESTWORKER" sum >"$tmp/out-hosts"
	;;
slurm)
	(cd "$tmp" && sbatch --wait "$src/examples/map.sbatch" >/dev/null)
	mv "$tmp/herd-map.out" "$tmp/out"
	# --hosts slurm: every node of a three-node allocation.
	(cd "$tmp" && sbatch --wait "$src/examples/map-hosts.sbatch" >/dev/null)
	mv "$tmp/herd-map-hosts.out" "$tmp/out-hosts"
	;;
esac
for out in out out-hosts; do
	if [ "$(cat "$tmp/$out")" != "$expected" ]; then
		echo "FAIL: the README's $kind map ($out) gave:" >&2
		head -5 "$tmp/$out" >&2
		exit 1
	fi
done
echo "README's $kind maps (one host, then a pool over every host): 100 exact results each"

# The link's cost beside the bare transport (figures printed, not judged):
# a call's round trip vs a line echoed by cat over the same ssh and vs the
# floor (cat's echo plus a local call on the host), a remote spawn vs ssh
# HOST true. bench/ is built unless -Dbench=false.
bench=$(dirname "$test_remote")/../../bench/remote-bench
if [ "$kind" = ssh ] && [ -x "$bench" ]; then
	"$bench" rtt ssh://herd-h1 "$HERD_TESTWORKER" 1000
	"$bench" spawn ssh://herd-h1 "$HERD_TESTWORKER" 3
	# A pool over the three hosts against one host, two workers each: tasks
	# that wait (the hosts add workers) and tiny ones (the link's cost).
	"$bench" pool "$HERD_REMOTE_HOSTS" "$HERD_TESTWORKER" sleep '{"ms":5}' 600 2
	"$bench" pool "$HERD_REMOTE_HOSTS" "$HERD_TESTWORKER" echo '{"x":1}' 20000 2
fi
