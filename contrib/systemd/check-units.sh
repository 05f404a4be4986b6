#!/bin/sh
# Checks systemd unit files the way systemd will read them once installed.
#
#   check-units.sh verify  SYSTEMD_ANALYZE system|user FILE=NAME...
#   check-units.sh security SYSTEMD_ANALYZE THRESHOLD FILE=NAME
#
# Each FILE is copied to a private directory under its installed NAME
# (herdd-user.service becomes herdd.service), because systemd resolves the
# units a unit refers to (Requires=herdd.socket) by name in that directory.
# Exits 77 (skipped, for meson) when systemd-analyze cannot run here.
set -eu

mode=$1
analyze=$2
shift 2

if ! "$analyze" --version >/dev/null 2>&1; then
	echo "systemd-analyze does not run here; skipping" >&2
	exit 77
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/herd-units.XXXXXX")
trap 'rm -rf "$dir"' EXIT INT TERM

copy() {
	src=${1%%=*}
	name=${1#*=}
	cp "$src" "$dir/$name"
	echo "$dir/$name"
}

case $mode in
verify)
	scope=$1
	shift
	units=
	for spec in "$@"; do
		units="$units $(copy "$spec")"
	done
	if [ "$scope" = user ]; then
		# A user manager resolves %t from XDG_RUNTIME_DIR; give it a private one
		# so the check does not depend on a login session.
		mkdir -m 0700 "$dir/runtime"
		XDG_RUNTIME_DIR=$dir/runtime
		export XDG_RUNTIME_DIR
		set -- --user
	else
		set --
	fi
	# --man=no: the man pages named in Documentation= are not installed yet.
	# shellcheck disable=SC2086
	"$analyze" "$@" verify --man=no $units
	;;
security)
	threshold=$1
	unit=$(copy "$2")
	# Prints the per-option table and the overall exposure (0.0 best, 10.0
	# worst); fails when the exposure is above THRESHOLD tenths, so a change
	# that weakens the sandbox is noticed.
	"$analyze" security --offline=true --threshold="$threshold" "$unit"
	;;
*)
	echo "usage: $0 verify|security ..." >&2
	exit 2
	;;
esac
