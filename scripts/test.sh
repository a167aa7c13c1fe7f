#!/usr/bin/env bash
# Sets up (scripts/setup.sh), builds, and runs the whole test suite on the
# machine's OpenCL device (PoCL on a CPU-only machine):
#   1. reference + device + bench tests (device results against the
#      double-precision CPU reference over shapes that break tiling, every
#      bad-input and failure path, determinism, concurrency, the fuzz seed
#      corpus; the bench's CSV contract and a tuner run);
#   2. the memcheck suite under valgrind (a quick subset: leaks and invalid
#      accesses in the library's host code), after the same subset natively
#      to fill PoCL's kernel cache;
#   3. the install check: examples/example.c built against the installed
#      library through pkg-config;
#   4. every kernel under oclgrind (out-of-bounds accesses, data races,
#      uninitialized values, API misuse);
#   5. suites 1's reference, device and bench tests again in a build with
#      AddressSanitizer + UndefinedBehaviorSanitizer (${BUILD_DIR}-asan);
#   6. the concurrency test under ThreadSanitizer (${BUILD_DIR}-tsan, clang);
#   7. ring attention over MPI (suite 'ring': tests/test_ring.c under
#      mpirun -np 1 to 4, oversubscribed, and the ring bench's smoke run);
#   8. the two libFuzzer targets for ${FUZZ_SECONDS:-60} s each
#      (${BUILD_DIR}-fuzz, clang, ASan + UBSan): the whole API on the device,
#      and validation and planning alone.
#   9. the Python package: `pip install .` (meson-python builds the library
#      into it) in a virtual environment (${BUILD_DIR}-venv, with
#      python/requirements-test.txt), then its pytest suite (python/tests).
# Ends with one line "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
export BUILD_DIR=${BUILD_DIR:-build}

# How long each step took: the whole run must stay well inside CI's limit.
step_start=$SECONDS
timings=()
took() {
    timings+=("$1 $((SECONDS - step_start)) s")
    step_start=$SECONDS
}

bash scripts/setup.sh || exit 1
took "setup"

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

# Runs `meson test` with the given arguments and counts its results; a run
# that fails without a failing test (a build or setup error) counts as one.
run_meson_test() {
    local before=$failed status
    meson test --print-errorlogs "$@" 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    count "$log"
    [ "$status" -eq 0 ] || [ "$failed" -gt "$before" ] || failed=$((failed + 1))
}

# Counts one named check that is not a meson test.
record() {
    if [ "$1" -eq 0 ]; then
        echo "$2: OK"
        passed=$((passed + 1))
    else
        echo "$2: FAIL"
        failed=$((failed + 1))
    fi
}

# Configures (once) and builds a second build of the project in $1 with
# compiler $2 and the meson options that follow.
extra_build() {
    local dir=$1 cc=$2
    shift 2
    if [ ! -f "$dir/build.ninja" ]; then
        CC=$cc meson setup "$dir" --buildtype=debugoptimized -Dwerror=true -Db_lundef=false \
            "$@" >&2 || return 1
    fi
    ninja -C "$dir" >&2
}

run_meson_test -C "$BUILD_DIR" --suite reference --suite device --suite bench
took "tests"
# Under valgrind PoCL's LLVM compiles a kernel variant in ~40 s; the
# memcheckwarm setup first runs the same quick subsets natively (~2.5 min),
# which fills PoCL's kernel cache with every binary the valgrind runs then
# load instead (tests/meson.build says how the two share cache keys).
warm_log=$(mktemp)
meson test -C "$BUILD_DIR" --no-rebuild --setup memcheckwarm --suite memcheck \
    --print-errorlogs --logbase memcheck-warm > "$warm_log" 2>&1
warm_status=$?
[ "$warm_status" -eq 0 ] || cat "$warm_log"
rm -f "$warm_log"
record "$warm_status" "memcheck warm-up (the quick subsets natively)"
# Valgrind runs a process on one core, and the memcheck tests are
# is_parallel: false (unsanitized, each uses every core), so the suite runs as
# two concurrent halves, one per core, split longest first by each test's
# seconds under valgrind with a warm cache (one run, 2 cores; unlisted: 30).
memcheck_half() {
    meson test -C "$BUILD_DIR" --no-rebuild --setup valgrind --print-errorlogs \
        --logbase "memcheck-$1" "${@:2}" > "$log.$1" 2>&1
}
declare -A memcheck_cost=([test_faults]=238 [test_faults_decode]=197 [test_backward_faults]=79
    [test_backward]=73 [kvcache_splits3]=59 [test_bad_input]=50 [plan_fused]=49
    [test_binary_cache]=42 [kvcache_faults_split]=41 [test_context]=37 [test_dropout]=37
    [forward_three_kernel]=35 [forward_fused_probs]=33 [features_three_kernel]=29
    [test_merge]=24 [features_fused]=23 [test_device_call]=23 [forward_fused]=22
    [forward_fused_gpu_odd]=19 [extremes_fused]=18 [test_tuning_status]=12
    [test_reference_backward]=4 [test_reference]=1)
mapfile -t memcheck_tests < <(meson test -C "$BUILD_DIR" --no-rebuild --setup valgrind \
    --suite memcheck --list 2>/dev/null | grep ' / ' | sed 's/^.* \/ //' |
    while read -r name; do echo "${memcheck_cost[$name]:-30} $name"; done |
    sort -k1,1nr | cut -d' ' -f2)
half_a=() half_b=()
cost_a=0 cost_b=0
for name in "${memcheck_tests[@]}"; do
    if [ "$cost_a" -le "$cost_b" ]; then
        half_a+=("$name")
        cost_a=$((cost_a + ${memcheck_cost[$name]:-30}))
    else
        half_b+=("$name")
        cost_b=$((cost_b + ${memcheck_cost[$name]:-30}))
    fi
done
memcheck_half a "${half_a[@]}" &
pid_a=$!
memcheck_half b "${half_b[@]}"
status_b=$?
wait "$pid_a"
status_a=$?
for half in a b; do
    cat "$log.$half"
    before=$failed
    count "$log.$half"
    status_var=status_$half
    [ "${!status_var}" -eq 0 ] || [ "$failed" -gt "$before" ] || failed=$((failed + 1))
    rm -f "$log.$half"
done
[ "${#memcheck_tests[@]}" -gt 0 ] || record 1 "memcheck test list"
took "memcheck"

# The installed library, found through pkg-config, builds and runs examples/example.c.
bash scripts/install_check.sh "$BUILD_DIR"
record $? "install check"
took "install check"

run_meson_test -C "$BUILD_DIR" --suite oclgrind
took "oclgrind"

if extra_build "$BUILD_DIR-asan" gcc -Db_sanitize=address,undefined; then
    run_meson_test -C "$BUILD_DIR-asan" --setup sanitize --suite reference --suite device \
        --suite bench
else
    record 1 "ASan/UBSan build"
fi
took "ASan+UBSan"

if extra_build "$BUILD_DIR-tsan" clang -Db_sanitize=thread; then
    run_meson_test -C "$BUILD_DIR-tsan" --setup tsan --suite concurrency
else
    record 1 "TSan build"
fi
took "TSan"

# Ring attention over MPI: setup.sh installs Open MPI, so the ring must have
# been built; its tests run 1 to 4 processes on this machine's cores.
if [ -x "$BUILD_DIR/ring/test_ring" ]; then
    run_meson_test -C "$BUILD_DIR" --suite ring
else
    record 1 "ring built (Open MPI found by meson)"
fi
took "ring"

if extra_build "$BUILD_DIR-fuzz" clang -Db_sanitize=address,undefined -Dfuzz=true; then
    bash scripts/fuzz.sh "$BUILD_DIR-fuzz" "${FUZZ_SECONDS:-60}" fuzz_forward
    record $? "fuzz_forward run (${FUZZ_SECONDS:-60} s)"
    bash scripts/fuzz.sh "$BUILD_DIR-fuzz" "${FUZZ_SECONDS:-60}" fuzz_validate
    record $? "fuzz_validate run (${FUZZ_SECONDS:-60} s)"
else
    record 1 "fuzz build"
fi
took "fuzz"

# The venv is kept between runs like the builds: the test packages (torch
# with its runtime wheels, ~5 GiB) download once. The package itself is
# rebuilt from this tree every run.
python_tests() {
    local venv
    venv=$(realpath -m "$BUILD_DIR-venv")
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" || return 1
    fi
    "$venv/bin/pip" install -q --no-cache-dir -r python/requirements-test.txt >&2 || return 1
    "$venv/bin/pip" install -q --no-cache-dir --force-reinstall --no-deps . >&2 || return 1
    (cd python/tests && "$venv/bin/python" -m pytest -q -p no:cacheprovider)
}
python_tests
record $? "python tests (pytest)"
took "python"

echo "time: $(IFS=,; echo "${timings[*]}" | sed 's/,/, /g')"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
