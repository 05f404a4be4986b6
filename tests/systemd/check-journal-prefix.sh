#!/bin/sh
# SPDX-License-Identifier: MIT
# herdd's log lines carry sd-daemon's "<N>" priority prefix exactly when
# JOURNAL_STREAM names its stderr (device:inode), as the journal does: a
# herdd that cannot create its socket's directory logs one error and exits.
#
# usage: check-journal-prefix.sh HERDD
set -eu

herdd=$1
err=$(mktemp "${TMPDIR:-/tmp}/herd-journal.XXXXXX")
trap 'rm -f "$err"' EXIT
sock=/proc/nonexistent/herdd.sock

fail() {
	echo "FAIL: $*: $(cat "$err")" >&2
	exit 1
}

run() {
	if "$@" --socket "$sock" 2>"$err"; then
		fail "herdd started on $sock"
	fi
}

run env -u JOURNAL_STREAM "$herdd"
grep -q '^herdd\[[0-9]*\]: error: socket directory /proc/nonexistent' "$err" ||
	fail "without JOURNAL_STREAM"
run env JOURNAL_STREAM="$(stat -c '%d:%i' "$err")" "$herdd"
grep -q '^<3>error: socket directory /proc/nonexistent' "$err" ||
	fail "with JOURNAL_STREAM naming stderr"
# Another stream (stderr redirected since the manager set it up): no prefix.
run env JOURNAL_STREAM="$(stat -c '%d:%i' /dev/null)" "$herdd"
grep -q '^herdd\[[0-9]*\]: error:' "$err" || fail "with JOURNAL_STREAM naming another file"
echo "priority prefix only on the journal's stream"
