#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs this build into a temporary DESTDIR and checks what a distribution
# package would ship: the programs run, a program built with nothing but
# `pkg-config --cflags --libs herd-ev` against the installed headers and library
# serves and calls a function, README's own worker builds with README's own cc
# line and answers, and the man pages and systemd units are in place.
#
# usage: check-install.sh MESON BUILD_ROOT SOURCE_DIR CC PREFIX BINDIR LIBDIR MANDIR SANITIZE SYSTEMD
#        LIBEXECDIR
set -eu

meson=$1 build_root=$2 src=$3 cc=$4 prefix=$5 bindir=$6 libdir=$7 mandir=$8
sanitize=$9 systemd=${10} libexecdir=${11}

# meson test points LD_LIBRARY_PATH at the build tree; only the installed
# library may be found here.
unset LD_LIBRARY_PATH

tmp=$(mktemp -d "${TMPDIR:-/tmp}/herd-install.XXXXXX")
app=
# The README worker, if a failure left it running, is the one process to stop.
trap '[ -z "$app" ] || kill "$app" 2>/dev/null; rm -rf "$tmp"' EXIT
dest=$tmp/dest

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# Meson's install paths may be relative to the prefix or absolute.
under_prefix() {
	case $1 in
	/*) echo "$dest$1" ;;
	*) echo "$dest$prefix/$1" ;;
	esac
}

"$meson" install -C "$build_root" --destdir "$dest" --no-rebuild --quiet ||
	fail "meson install --destdir failed"

bin=$(under_prefix "$bindir")
lib=$(under_prefix "$libdir")
man=$(under_prefix "$mandir")
libexec=$(under_prefix "$libexecdir")

for f in "$bin/herdd" "$bin/herdctl" "$libexec/herd/herd-testworker"; do
	[ -x "$f" ] || fail "$f is not installed"
done
[ -L "$lib/libherd.so" ] || fail "the development link libherd.so is missing"
[ -e "$lib/libherd.so.0" ] || fail "libherd.so.0 (the soname) is missing"
soname=$(objdump -p "$lib/libherd.so" | awk '$1 == "SONAME" { print $2 }')
[ "$soname" = libherd.so.0 ] || fail "soname is '$soname', not libherd.so.0"
for h in herd.h common.h client.h master.h worker.h herd-ev.h protocol.h; do
	[ -f "$dest$prefix/include/herd/$h" ] || fail "header herd/$h is not installed"
done
for m in man8/herdd.8 man1/herdctl.1 man3/libherd.3; do
	[ -f "$man/$m" ] || fail "man page $m is not installed"
done
if [ "$systemd" = true ]; then
	for u in system/herdd.service system/herdd.socket user/herdd.service user/herdd.socket; do
		# Inside the prefix, unless it is /usr (then where systemd.pc says).
		case $prefix in
		/usr) found=$(find "$dest" -path "*/systemd/$u" | head -n 1) ;;
		*) found=$(find "$dest$prefix" -path "*/systemd/$u" | head -n 1) ;;
		esac
		[ -n "$found" ] || fail "systemd unit $u is not installed"
		grep -q "^ExecStart=$prefix/" "$found" ||
			[ "${u#*.}" = socket ] || fail "$u does not run herdd from $prefix"
	done
	[ -n "$(find "$dest" -path '*/sysusers.d/herd.conf')" ] || fail "sysusers.d/herd.conf is missing"
fi

# Only a /usr install may put anything (the units) outside its prefix.
if [ "$prefix" != /usr ]; then
	outside=$(find "$dest" -path "$dest$prefix" -prune -o ! -type d -print)
	[ -z "$outside" ] || fail "installed outside $prefix: $outside"
fi

# herdd links libherd's codec statically; herdctl needs the installed library.
"$bin/herdd" --version | grep -q '^herdd ' || fail "installed herdd --version"
LD_LIBRARY_PATH=$lib "$bin/herdctl" --help >/dev/null || fail "installed herdctl --help"

# Outside /usr, what links libherd finds it through an rpath (see meson.build).
for f in "$bin/herdctl" "$libexec/herd/herd-testworker"; do
	runpath=$(readelf -d "$f" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p')
	case $prefix in
	/usr | /) [ -z "$runpath" ] || fail "$f has an rpath ($runpath) under $prefix" ;;
	*) [ "$runpath" = "$prefix/$libdir" ] || [ "$runpath" = "$libdir" ] ||
		fail "$f has rpath '$runpath', not $prefix/$libdir" ;;
	esac
done

# The Python package (python/meson.build) is in site-packages under the prefix,
# imports from there, autostarts herdd from the prefix's bindir, and drives the
# installed herd-testworker (the DESTDIR copies stand in for the real paths).
pyinit=$(find "$dest" -path '*/herd/__init__.py' | head -n 1)
[ -n "$pyinit" ] || fail "the herd Python package is not installed"
case $pyinit in
"$dest$prefix"/*) ;;
*) fail "the herd Python package is outside $prefix: $pyinit" ;;
esac
realbin=$(under_prefix "$bindir")
realbin=${realbin#"$dest"}
env -u PYTHONPATH -u HERDD PYTHONDONTWRITEBYTECODE=1 python3 - "$pyinit" "$realbin" <<'PY' || fail "the installed herd Python package does not import"
import os, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(sys.argv[1])))
import herd, herd._autostart
assert herd.__file__ == sys.argv[1], herd.__file__
assert herd._autostart._herdd() == os.path.join(sys.argv[2], "herdd"), herd._autostart._herdd()
PY
env -u PYTHONPATH PYTHONDONTWRITEBYTECODE=1 HERDD="$bin/herdd" HERD_SOCKET="$tmp/py-herdd.sock" \
	HERD_AUTOSTART_IDLE_MS=100 python3 - "$pyinit" "$libexec/herd/herd-testworker" "$lib" <<'PY' ||
import os, select, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(sys.argv[1])))
import herd
with herd.connect() as m:
    herdd = os.pidfd_open(m.herdd_pid)
    w = m.spawn(sys.argv[2], env={"LD_LIBRARY_PATH": sys.argv[3]})
    with w.connect() as c:
        assert c.call("sum", {"n": 42}) == 861
# The private herdd leaves once idle; the temporary directory goes after it.
assert select.select([herdd], [], [], 10)[0], "the autostarted herdd did not exit"
PY
	fail "the installed Python package cannot autostart herdd and call a worker"

# The .pc files speak of the real prefix; the sysroot maps it into DESTDIR.
# hello-herd.c includes <herd/herd-ev.h>, so it needs herd-ev (libev too).
flags=$(PKG_CONFIG_PATH="$lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$dest" \
	pkg-config --cflags --libs herd-ev) || fail "pkg-config does not find herd-ev"
san=
if [ "$sanitize" != none ]; then
	san="-fsanitize=$sanitize"
fi
# shellcheck disable=SC2086 # flags are words
"$cc" $san -Wall -Werror -o "$tmp/hello-herd" "$src/hello-herd.c" $flags ||
	fail "cannot build against the installed herd with: $flags"
LD_LIBRARY_PATH=$lib "$tmp/hello-herd" "$tmp/adder.sock" || fail "the installed libherd does not serve"
LD_LIBRARY_PATH=$lib ldd "$tmp/hello-herd" | grep -q "$lib/libherd.so.0" ||
	fail "hello-herd did not load the installed libherd"

# README's worker (its first C block), built with README's own line,
# `cc -o app app.c $(pkg-config --cflags --libs herd)`, then run standalone as
# its comment says and called: sum {"n":42} is 861.
awk '/^```c$/ { n++; on = n == 1; next } /^```$/ { on = 0 } on' "$src/../../README.md" >"$tmp/app.c"
[ -s "$tmp/app.c" ] || fail "README.md has no C block"
# shellcheck disable=SC2046,SC2086 # the README's words, as a shell splits them
(cd "$tmp" && export PKG_CONFIG_PATH="$lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$dest" &&
	"$cc" $san -o app app.c $(pkg-config --cflags --libs herd)) ||
	fail "README's cc line does not build README's worker"
LD_LIBRARY_PATH=$lib "$tmp/app" --socket "$tmp/app.sock" &
app=$!
# The worker's readiness is its socket: poll for it, for at most 10 s.
tries=0
while [ ! -S "$tmp/app.sock" ]; do
	kill -0 "$app" 2>/dev/null || fail "README's worker exited before listening"
	tries=$((tries + 1))
	[ "$tries" -le 1000 ] || fail "README's worker did not listen within 10 s"
	sleep 0.01
done
reply=$(printf '%s\n' \
	'{"jsonrpc":"2.0","id":0,"method":"hello","params":{"version":1,"role":"client"}}' \
	'{"jsonrpc":"2.0","id":1,"method":"sum","params":{"n":42}}' \
	'{"jsonrpc":"2.0","id":2,"method":"herd.shutdown"}' |
	socat -t 10 - UNIX-CONNECT:"$tmp/app.sock")
status=0
wait "$app" || status=$?
app= # reaped: its pid is no longer ours to signal
[ "$status" -eq 0 ] || fail "README's worker exited $status after herd.shutdown"
echo "$reply" | grep -q '^{"jsonrpc":"2.0","id":1,"result":861}$' ||
	fail "README's worker did not answer sum 42 with 861: $reply"
echo "the installed tree is complete"
