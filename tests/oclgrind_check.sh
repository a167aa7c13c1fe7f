#!/usr/bin/env bash
# Runs every run of a test program under oclgrind's checkers, one process a
# run, and fails on any oclgrind report:
#
#   tests/oclgrind_check.sh [--no-uninitialized] PROGRAM ARGS...
#
# PROGRAM ARGS --count says how many runs there are; each is then started as
# `oclgrind ... PROGRAM ARGS --run N` (why one run a process: see
# tests/test_kernels_checked.c). Checks: out-of-bounds and invalid memory
# accesses (always on), --data-races, --uninitialized, --check-api.
#
# oclgrind 21.10 has no option that makes its reports change the exit
# status, so every message goes to a log file (--log) and a non-empty log
# fails the run, as does a non-zero exit of the program.
#
# The kernels are built with -cl-opt-disable: on LLVM's optimized code
# oclgrind 21.10's uninitialized-value plugin stops with "Unsupported
# instruction: freeze" (and the results then come out wrong), and its
# interpreter cannot create a kernel whose inlined calls carry
# llvm.experimental.noalias.scope.decl ("Undefined external function"; seen
# on flash_cpu with a bias, a window and varlen).
#
# --no-uninitialized leaves that plugin out, for kernels it misjudges:
# oclgrind 21.10 marks element 11 of every shufflevector result as
# uninitialized (it compares the mask index with llvm::Value::UndefValueVal,
# which is 11, instead of -1), so any 16-wide vector code that takes .hi,
# .odd or .sb of a float16 is reported however well-defined its input. This
# kernel, with every input byte written, reproduces it:
#     float16 v = vload16(0, in); vstore2(v.s1b, 0, out);   /* reported */
#     float16 v = vload16(0, in); vstore2(v.s1a, 0, out);   /* clean */
set -u

checks=(--data-races --uninitialized --check-api --build-options -cl-opt-disable)
if [ "${1:-}" = --no-uninitialized ]; then
    checks=(--data-races --check-api --build-options -cl-opt-disable)
    shift
fi
if [ $# -lt 1 ]; then
    echo "usage: $0 [--no-uninitialized] PROGRAM ARGS..." >&2
    exit 2
fi
command -v oclgrind >/dev/null || {
    echo "SKIP: oclgrind is not installed"
    exit 77
}

runs=$("$@" --count) || {
    echo "FAIL: $* --count"
    exit 1
}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The one OpenCL platform oclgrind's wrapper exposes; the program checks it.
export ATTN_TEST_REQUIRE_PLATFORM=Oclgrind
export ATTN_CL_DEVICE=0:0

failed=0
for ((run = 0; run < runs; run++)); do
    : >"$log"
    oclgrind "${checks[@]}" --log "$log" "$@" --run "$run" | grep -v '^device \|^algorithm '
    status=${PIPESTATUS[0]}
    if [ -s "$log" ]; then
        reports=$(grep -c '^[A-Za-z]' "$log")
        echo "run $run: oclgrind reported $reports message(s)  FAIL"
        head -n 40 "$log"
        failed=$((failed + 1))
    elif [ "$status" -ne 0 ]; then
        echo "run $run: exit status $status  FAIL"
        failed=$((failed + 1))
    fi
done
echo "$runs run(s) under oclgrind ${checks[*]}, $failed failed"
[ "$failed" -eq 0 ]
