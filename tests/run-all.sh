#!/bin/sh
# The whole test suite, as CI runs it: installs what is missing, then builds
# and tests twice (plain with -Dwerror=true, and under ASan+UBSan), runs the
# libherd and codec suites under valgrind, checks formatting, and runs every
# other command the README shows (tests/spec/readme-commands.sh).
set -eu
cd "$(dirname "$0")/.."

./tests/setup-debian.sh

run() {
	echo "==> $*"
	"$@"
}

plain=${HERD_BUILD_PLAIN:-build-ci}
asan=${HERD_BUILD_ASAN:-build-ci-asan}

[ -d "$plain" ] || run meson setup "$plain" -Dwerror=true -Dbuildtype=debugoptimized
run meson compile -C "$plain"
run meson test -C "$plain" --print-errorlogs --verbose --num-processes 2

[ -d "$asan" ] || run meson setup "$asan" -Dwerror=true -Db_sanitize=address,undefined \
	-Db_lundef=false -Dbuildtype=debug
run env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	meson test -C "$asan" --print-errorlogs --verbose --num-processes 2

run meson test -C "$plain" --setup=valgrind --print-errorlogs --num-processes 2 --suite proto --suite rpc

run ninja -C "$plain" clang-format-check

# The README's other commands as it writes them, each in the build flavour it
# makes: the demo, the benchmarks (release, -Werror) and "Building by hand".
run ./tests/spec/readme-commands.sh

# One closing line for all four runs, counted from meson's own logs.
python3 - "$plain/meson-logs/testlog.json" "$asan/meson-logs/testlog.json" \
	"$plain/meson-logs/testlog-valgrind.json" build-readme/meson-logs/testlog.json <<'PY'
import json, sys
ok = bad = 0
for path in sys.argv[1:]:
    for line in open(path):
        r = json.loads(line)["result"]
        if r == "OK":
            ok += 1
        elif r != "SKIP":
            bad += 1
print(f"all: {ok} passed, {bad} failed")
sys.exit(1 if bad else 0)
PY
