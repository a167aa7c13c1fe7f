#!/usr/bin/env bash
# Sets up (scripts/setup.sh), builds, and runs the whole test suite on the
# machine's OpenCL device (PoCL on a CPU-only machine):
#   1. reference + device + bench tests (device results against the
#      double-precision CPU reference over shapes that break tiling, every
#      bad-input and failure path; the bench's CSV contract and a tuner run);
#   2. the memcheck suite under valgrind (a quick subset: leaks and invalid
#      accesses in the library's host code);
#   3. the install check: examples/example.c built against the installed
#      library through pkg-config.
# Ends with one line "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
export BUILD_DIR=${BUILD_DIR:-build}
bash scripts/setup.sh || exit 1

passed=0
failed=0
# Adds meson test's "Ok:" and "Fail:"/"Timeout:"/"Unexpected Pass:" counts from a log.
count() {
    local ok bad
    ok=$(awk '/^Ok:/ {s += $2} END {print s + 0}' "$1")
    bad=$(awk '/^(Fail|Timeout|Unexpected Pass):/ {s += $NF} END {print s + 0}' "$1")
    passed=$((passed + ok))
    failed=$((failed + bad))
}

log=$(mktemp)
trap 'rm -f "$log"' EXIT

meson test -C "$BUILD_DIR" --print-errorlogs --suite reference --suite device --suite bench 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
count "$log"
[ "$status" -eq 0 ] || [ "$failed" -gt 0 ] || failed=$((failed + 1))

meson test -C "$BUILD_DIR" --print-errorlogs --setup valgrind --suite memcheck 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
count "$log"
[ "$status" -eq 0 ] || [ "$failed" -gt 0 ] || failed=$((failed + 1))

# The installed library, found through pkg-config, builds and runs the README's example.
if bash scripts/install_check.sh "$BUILD_DIR"; then
    echo "install check: OK"
    passed=$((passed + 1))
else
    echo "install check: FAIL"
    failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
