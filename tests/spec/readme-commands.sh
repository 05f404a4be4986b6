#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs the README's commands that the test suite does not, as the README
# writes them and in the build flavours they make, so none can fail on a
# fresh clone unseen. tests/run-all.sh (CI) runs this after the suite.
# Where each other README command is run:
#   ./tests/run-all.sh, ./tests/setup-debian.sh   .ci/run, and run-all.sh itself
#   herdd --socket ..., the socat session          tests/spec (spec-samples)
#   herdctl list/inspect/logs/call/watch/spawn/... test-sup-herdctl (list's filters:
#                                                  test-herdd-load)
#   meson install, cc ... $(pkg-config ...)        tests/install (install-pkgconfig,
#                                                  with DESTDIR: no system change)
#   herdctl --socket ssh://..., sbatch map.sbatch  tests/remote (run-remote.sh, on
#   herdctl map --hosts ..., map-hosts.sbatch      the ssh and Slurm test beds)
set -eu
cd "$(dirname "$0")/../.."

run() {
	echo "==> $*"
	"$@"
}

# "Two commands": the demo, in its own build (build-demo/, debugoptimized).
run ./examples/run-demo.sh

# "Benchmarks": the release flavour the README's command builds (build-bench/,
# -O3 -Werror), in quick mode; figures are not judged here.
run ./bench/run.sh --quick

# "Building by hand": `meson setup build` with meson's defaults (a debug build
# without -Werror), compiled and tested, in build-readme/ so a developer's own
# build/ is left alone. The install suite is the README's `meson install` and
# `cc -o app app.c $(pkg-config --cflags --libs herd)` into a DESTDIR.
[ -d build-readme ] || run meson setup build-readme
run meson compile -C build-readme
run meson test -C build-readme --print-errorlogs --num-processes 2
