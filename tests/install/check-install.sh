#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs this build into a temporary DESTDIR and checks what a distribution
# package would ship: the programs run, a program built with nothing but
# `pkg-config --cflags --libs herd-ev` against the installed headers and library
# serves and calls a function, and the man pages and systemd units are in place.
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
trap 'rm -rf "$tmp"' EXIT
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
echo "the installed tree is complete"
