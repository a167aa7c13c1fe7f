#!/usr/bin/env bash
# Runs a libFuzzer target for a bounded time:
#
#   scripts/fuzz.sh [BUILD_DIR [SECONDS [TARGET]]]   defaults: build-fuzz, 60, fuzz_forward
#
# TARGET is fuzz_forward (the whole API on the device, tests/fuzz_forward.c)
# or fuzz_validate (validation and planning alone, tests/fuzz_validate.c);
# both read the same seed corpus.
# BUILD_DIR is a clang build configured with -Db_sanitize=address,undefined
# -Dfuzz=true (scripts/test.sh makes one). It starts from the seed corpus in
# tests/fuzz_corpus (read, never written) and a scratch corpus in a temporary
# directory; a crash, sanitizer report or violated property is written to
# $FUZZ_ARTIFACTS (default: the temporary directory, printed) and fails the
# run. A violated property aborts, and libFuzzer does not save the input of
# an abort once PoCL's compiler is loaded: the target writes it there itself
# (violation-<hash>, ATTN_FUZZ_ARTIFACTS). To reproduce one:
# BUILD_DIR/tests/fuzz_replay FILE (it prints the request), and to keep it
# as a regression, add it to tests/make_fuzz_seeds.py or reduce it
# (-minimize_crash=1) into tests/fuzz_corpus/.
#
# Leak checking is off here (detect_leaks=0): telling PoCL's known compiler
# leak (tests/lsan.supp) from one of ours needs whole allocation stacks
# (fast_unwind_on_malloc=0), which cuts the rate from ~280 to ~50 inputs a
# second. Leaks are checked where that cost is small: the ASan build runs
# the seed corpus (fuzz_corpus_replay) and every other test with them on.
set -uo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build-fuzz}
seconds=${2:-60}
target=$build_dir/tests/${3:-fuzz_forward}
if [ ! -x "$target" ]; then
    echo "fuzz: $target is missing (configure $build_dir with -Dfuzz=true, CC=clang)" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work/corpus"' EXIT
mkdir -p "$work/corpus"
artifacts=${FUZZ_ARTIFACTS:-$work}
mkdir -p "$artifacts"

ATTN_FUZZ_ARTIFACTS=$artifacts ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=0 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$target" -max_total_time="$seconds" -timeout=60 -rss_limit_mb=8192 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "$work/corpus" tests/fuzz_corpus \
    >"$work/log" 2>&1
status=$?
grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' \
    "$work/log"
if [ "$status" -ne 0 ]; then
    tail -n 60 "$work/log"
    echo "fuzz: FAIL (exit $status); the input and the log are in $artifacts"
    cp "$work/log" "$artifacts/fuzz.log" 2>/dev/null
    exit 1
fi
rm -rf "$work"
echo "fuzz: no finding in $seconds s"
