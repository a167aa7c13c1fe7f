#!/usr/bin/env bash
# The checks only a GPU can give, in one go, for a machine lent for minutes
# (docs/gpu.md): the device tests, the bench beside PyTorch on the same GPU,
# decoding, the backward, the host overhead and the tuner. Every step has a
# time limit and the whole run a deadline, so what ran comes back even when
# something hangs. Each step writes its stdout and stderr (NAME, NAME.err)
# into a work folder, packed after every step into OUTDIR/gpu-check.tgz: one
# file to bring back, whole as of the last step that ended.
#
# usage: scripts/gpu_check.sh OUTDIR [STEP...]
#   STEP: info bench peers decode decode_ab decode_peers backward
#   backward_peers overhead tests tune (tune_fused, then tune_decode)
#   tune_backward (default: all but decode_ab and the tuning, in that
#   order: the timings before the tests load the machine)
#   GPU_CHECK_SECONDS  the deadline, from the start (default 480)
#   GPU_CHECK_TESTS    the device tests to run, comma-separated (default all)
#   GPU_CHECK_TUNE_SECONDS  each tuner search's limit (default 200, 120)
#   GPU_CHECK_TUNE_ARGS     more options for the fused search (--head-dim 128)
#   GPU_CHECK_DECODE_TUNES  decode_ab's specs (default "decode_wg=64 decode_wg=256")
#   BUILD_DIR          a build made elsewhere to run (default build); without
#                      one that runs here, the tree is built into build-gpu
# What the machine lacks for OpenCL comes from the Debian packages in
# .gpu/debs (ocl-icd-libopencl1, ocl-icd-opencl-dev, opencl-c-headers;
# `apt-get download` them where there is a registry). The NVIDIA driver's
# libnvidia-opencl.so.1 is found and registered with the loader.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_check.sh OUTDIR [STEP...]}
shift
steps=("$@")
[ ${#steps[@]} -gt 0 ] ||
    steps=(info bench peers decode decode_peers backward backward_peers overhead tests)
work=${TMPDIR:-/tmp}/gpu-check
rm -rf "$work"
mkdir -p "$out" "$work"
out=$(cd "$out" && pwd)
start=$SECONDS
deadline=${GPU_CHECK_SECONDS:-480}

say() { echo "[gpu_check +$((SECONDS - start))s] $*" | tee -a "$work/steps.log"; }
pack() { tar czf "$out/gpu-check.tgz.part" -C "$work" . && mv "$out/gpu-check.tgz.part" "$out/gpu-check.tgz"; }
left() { echo $((deadline - (SECONDS - start))); }

# Runs one command with at most $1 seconds (and never past the deadline),
# its output into $out/$2.
step() {
    local limit=$1 name=$2
    shift 2
    local budget
    budget=$(left)
    [ "$limit" -lt "$budget" ] || limit=$budget
    if [ "$limit" -le 5 ]; then
        say "$name: skipped, the deadline is near"
        return 1
    fi
    say "$name: $* (at most ${limit}s)"
    timeout -k 5 "$limit" "$@" >"$work/$name" 2>"$work/$name.err"
    local rc=$?
    say "$name: exit $rc"
    pack
    return $rc
}

opencl_from_debs() {
    local root=/tmp/gpu-check-opencl
    mkdir -p "$root/vendors"
    for deb in .gpu/debs/*.deb; do
        [ -e "$deb" ] || continue
        if command -v dpkg-deb >/dev/null; then
            dpkg-deb -x "$deb" "$root"
        else  # a .deb is an ar archive holding data.tar.*
            (cd "$root" && ar x "$OLDPWD/$deb" && tar xf data.tar.* && rm -f data.tar.* control.tar.* debian-binary)
        fi
    done
    local lib=$root/usr/lib/x86_64-linux-gnu
    if [ -e "$lib/libOpenCL.so.1" ] && ! ldconfig -p 2>/dev/null | grep -q 'libOpenCL.so.1 '; then
        export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        export LIBRARY_PATH=$lib CPATH=$root/usr/include
        sed -i "s|^prefix=.*|prefix=$root/usr|" "$lib/pkgconfig/OpenCL.pc"
        export PKG_CONFIG_PATH=$lib/pkgconfig:$root/usr/share/pkgconfig
        say "opencl: the ICD loader from .gpu/debs"
    fi
    if ! ls /etc/OpenCL/vendors/*.icd >/dev/null 2>&1; then
        local driver
        driver=$(find /usr/local/nvidia /usr/lib /usr/lib64 /usr/lib/x86_64-linux-gnu \
                 -name 'libnvidia-opencl.so.1' 2>/dev/null | head -1)
        if [ -n "$driver" ]; then
            echo "$driver" >"$root/vendors/nvidia.icd"
            export OCL_ICD_VENDORS=$root/vendors
            say "opencl: registered $driver"
        else
            say "opencl: no libnvidia-opencl.so.1 found"
        fi
    fi
}

pick_build() {
    build=${BUILD_DIR:-build}
    if [ -x "$build/bench/attn_bench" ] && "$build/bench/attn_bench" --help >/dev/null 2>&1; then
        say "build: using $build"
        return 0
    fi
    build=build-gpu
    step 240 build.log bash -c "meson setup $build --buildtype=release && ninja -C $build"
}

run_info() {
    step 20 info.txt bash -c "nvidia-smi; uname -a; ldd --version | head -1; \
        $build/bench/attn_bench --list-devices; \
        LD_LIBRARY_PATH=\$LD_LIBRARY_PATH:/tmp/gpu-check-opencl/usr/lib/x86_64-linux-gnu \
        /tmp/gpu-check-opencl/usr/bin/clinfo 2>/dev/null | head -80"
}

run_bench() {
    local b=$build/bench/attn_bench
    step 90 bench_f32.csv bash -c "for c in none bottom-right; do $b --csv --algo all --causal \$c \
        --seq-min 128 --seq-max 16384 --repeats 11 --warmup 2 --ref-max-gflop 1; done"
    step 60 bench_16bit.csv bash -c "for t in f16 bf16; do $b --csv --dtype \$t --causal none \
        --seq-min 512 --seq-max 16384 --repeats 11 --warmup 2 --no-ref; done"
}

run_peers() {
    # Each python3 start imports torch and opens CUDA (seconds): few of them.
    step 120 peers.csv bash -c "for c in none bottom-right; do python3 bench/peers.py --cuda --csv \
        --causal \$c --seq-min 128 --seq-max 16384 --repeats 11 --warmup 2 --ref-max-gflop 1 \
        --peers torch-sdpa; done; python3 bench/peers.py --cuda --csv --dtype f16 --seq-min 512 \
        --seq-max 16384 --repeats 11 --warmup 2 --no-ref --peers torch-sdpa"
}

run_decode() {
    local b=$build/bench/attn_bench
    step 120 decode.txt bash -c "for n in 1 8; do for t in f16 int8; do $b --kvcache --batch \$n \
        --heads 32 --heads-kv 8 --head-dim 128 --kv-dtype \$t --seq 4096,16384,32768 \
        --repeats 11 --warmup 2; done; done"
}

# The decode bench's f16 rows once per ATTN_CL_TUNE spec of GPU_CHECK_DECODE_TUNES
# (space-separated, e.g. "decode_wg=64 decode_wg=256,vec=4"), one after
# another in one step: an A/B of decode shapes in one run.
run_decode_ab() {
    local b=$build/bench/attn_bench specs=${GPU_CHECK_DECODE_TUNES:-decode_wg=64 decode_wg=256}
    step 120 decode_ab.txt bash -c "for spec in $specs; do for n in 1 8; do \
        echo \"== ATTN_CL_TUNE=\$spec batch \$n\"; ATTN_CL_TUNE=\$spec $b --kvcache \
        --batch \$n --heads 32 --heads-kv 8 --head-dim 128 --kv-dtype f16 \
        --seq 4096,16384,32768 --repeats 11 --warmup 2 | grep -e contig -e batch; done; done"
}

run_decode_peers() {
    step 60 decode_peers.csv bash -c "for n in 1 8; do python3 bench/peers.py --cuda --csv \
        --dtype f16 --batch \$n --heads 32 --heads-kv 8 --head-dim 128 --seq-q 1 \
        --seq 4096,16384,32768 --repeats 11 --warmup 2 --no-ref --peers torch-sdpa; done"
}

run_backward() {
    local b=$build/bench/attn_bench
    step 90 backward.txt bash -c "for c in none bottom-right; do $b --backward --causal \$c \
        --seq 1024,2048,4096,8192 --repeats 7 --warmup 1; done"
}

run_backward_peers() {
    step 60 backward_peers.csv bash -c "for c in none bottom-right; do python3 bench/peers.py \
        --cuda --csv --causal \$c --seq 1024,2048,4096,8192 --repeats 7 --warmup 1 --no-ref \
        --peers torch-sdpa-backward; done"
}

run_overhead() {
    step 30 overhead.txt "$build/bench/attn_bench" --overhead
}

run_tests() {
    # No test starts in the last minute; those running are stopped 15 s
    # before the deadline, so that the summary is written.
    step $(($(left) - 5)) tests.txt python3 scripts/run_tests.py "$build" --suite device \
        --jobs 12 --deadline $(($(left) - 60)) --stop $(($(left) - 15)) --logs "$work/test-logs" \
        ${GPU_CHECK_TESTS:+--only "$GPU_CHECK_TESTS"}
    cat "$work/tests.txt"
}

run_tune() {
    run_tune_fused
    run_tune_decode
}

run_tune_fused() {
    # shellcheck disable=SC2086  # GPU_CHECK_TUNE_ARGS is a list of options
    step "${GPU_CHECK_TUNE_SECONDS:-200}" tune_fused.txt "$build/bench/attn_tune" --seq 4096 \
        ${GPU_CHECK_TUNE_ARGS:-}
}

run_tune_decode() {
    step "${GPU_CHECK_TUNE_SECONDS:-120}" tune_decode.txt "$build/bench/attn_tune" --algo decode \
        --seq 16384 --heads 32 --heads-kv 8 --head-dim 128 --batch 8
}

run_tune_backward() {
    step "${GPU_CHECK_TUNE_SECONDS:-120}" tune_backward.txt "$build/bench/attn_tune" \
        --algo backward --seq 4096
}

opencl_from_debs
pick_build || { say "no build: see build.log"; exit 1; }
for s in "${steps[@]}"; do
    "run_$s"
done
say "done"
pack
