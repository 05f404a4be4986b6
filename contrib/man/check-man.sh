#!/bin/sh
# Renders each manual page with groff and fails on any warning: groff itself
# exits 0 after warnings, so its standard error is what tells.
#   check-man.sh GROFF PAGE...
set -eu

groff=$1
shift
status=0
for page in "$@"; do
	out=$("$groff" -man -ww -z -rCHECKSTYLE=3 "$page" 2>&1) || status=1
	if [ -n "$out" ]; then
		printf '%s\n' "$out" >&2
		status=1
	fi
done
exit $status
