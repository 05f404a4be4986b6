#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs the README's "Build against an installed herd" steps, taken from
# README.md itself, as an unprivileged user (nobody, when run as root) in a
# copy of the source tree: a build with the documented skip options, an
# install into a private prefix, sum-demo built with `pkg-config herd-ev`
# (the libev attach) and run against the herdd it autostarts from the prefix.
# Then the installed herdctl starts the installed test worker (both run
# without LD_LIBRARY_PATH, the worker in herdd's clean environment) and calls
# it. Every file the install wrote must be under the prefix, and nothing may
# have changed in the system's unit and sysusers.d directories.
#
# usage: check-prefix.sh SOURCE_DIR
# shellcheck disable=SC2086 # $as_user is a command line, split on purpose
set -eu

src=$1

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/herd-prefix.XXXXXX")
herdd_pid=
cleanup() {
	# herdd holds its lock file until the very end of its exit.
	if [ -n "$herdd_pid" ] && kill -TERM "$herdd_pid" 2>/dev/null; then
		flock -w 20 "$tmp/run/herd/herdd.sock.lock" true ||
			echo "herdd $herdd_pid did not exit within 20 s" >&2
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
chmod 0755 "$tmp"

# The steps: the first indented block after the section's heading.
steps=$(awk '
	/^## / { in_section = ($0 == "## Build against an installed herd"); next }
	in_section && /^    / { sub(/^    /, ""); print; seen = 1; next }
	in_section && seen { exit }
' "$src/README.md")
[ -n "$steps" ] || fail "README.md has no steps under '## Build against an installed herd'"
echo "$steps" | grep -q -- '-Dtests=disabled -Dbench=false -Dexamples=false' ||
	fail "the README's steps do not use the documented skip options"

# A fresh checkout's files, without build directories or git's.
mkdir "$tmp/src" "$tmp/home" "$tmp/run"
(cd "$src" && tar --exclude='./build*' --exclude=./.git -cf - .) | tar -C "$tmp/src" -xf -
chmod 0700 "$tmp/run"

# A login's environment, not meson test's (no LD_LIBRARY_PATH, no $HERDD).
user_env="env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=$tmp/home XDG_RUNTIME_DIR=$tmp/run LANG=C.UTF-8"
if [ "$(id -u)" -eq 0 ]; then
	uid=$(id -u nobody) gid=$(id -g nobody)
	chown -R "$uid:$gid" "$tmp/src" "$tmp/home" "$tmp/run"
	as_user="setpriv --reuid=$uid --regid=$gid --clear-groups $user_env"
else
	as_user=$user_env
fi

stamp=$tmp/stamp
touch "$stamp"
system_dirs=
for d in /lib/systemd /usr/lib/systemd /usr/lib/sysusers.d /etc/systemd; do
	[ -d "$d" ] && system_dirs="$system_dirs $d"
done

# The README's lines in one shell, then what they chose for the prefix.
script="set -eu
cd '$tmp/src'
$steps
printf '%s\\n' \"\$prefix\" >'$tmp/home/prefix'"
$as_user sh -c "$script" || fail "the README's steps failed (above)"
prefix=$(cat "$tmp/home/prefix")
case $prefix in
"$tmp"/*) ;;
*) fail "the README's prefix $prefix is not under the test's home" ;;
esac

# The autostarted herdd came from the prefix, logged from its first start.
sock=$tmp/run/herd/herdd.sock
herdctl=$prefix/bin/herdctl
[ -S "$sock" ] || fail "no autostarted herdd on $sock"
[ -s "$tmp/run/herd/herdd.log" ] || fail "the autostarted herdd left no herdd.log"
herdd_pid=$($as_user "$herdctl" --json stats | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')
[ -n "$herdd_pid" ] || fail "herdctl stats gave no pid"
[ "$(readlink "/proc/$herdd_pid/exe")" = "$prefix/bin/herdd" ] ||
	fail "the autostarted herdd is $(readlink "/proc/$herdd_pid/exe"), not $prefix/bin/herdd"

# The installed test worker, started by herdd, finds libherd through its rpath.
worker=$(find "$prefix" -path '*/herd/herd-testworker' -type f)
[ -x "$worker" ] || fail "herd-testworker is not installed under $prefix"
id=$($as_user "$herdctl" --json spawn -- "$worker" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
[ -n "$id" ] || fail "herdctl spawn $worker gave no id"
sum=$($as_user "$herdctl" call "$id" sum '{"n":42}')
[ "$sum" = 861 ] || fail "sum {n:42} on the installed worker gave '$sum'"
$as_user "$herdctl" shutdown "$id" >/dev/null || fail "herdctl shutdown $id"

# Everything meson installed is under the prefix; nothing else changed.
log=$(find "$tmp/src" -path '*/meson-logs/install-log.txt' | head -n 1)
[ -s "$log" ] || fail "the README's build left no meson-logs/install-log.txt"
# (the log lists the directories it made too, the prefix among them)
outside=$(awk -v p="$prefix" '!/^#/ && $0 != p && index($0, p "/") != 1' "$log")
[ -z "$outside" ] || fail "installed outside $prefix: $outside"
if grep -q '/herdd\.service$' "$log"; then
	grep -q "^$prefix/lib/systemd/system/herdd.service\$" "$log" ||
		fail "the system units are not in $prefix/lib/systemd/system"
fi
changed=$(find $system_dirs -newer "$stamp" 2>/dev/null | head -n 5)
[ -z "$changed" ] || fail "changed outside the prefix: $changed"
echo "the README's steps work from $prefix"
