#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test libattn_cl
# (PoCL as the OpenCL device, the ICD loader and headers, meson, ninja and the
# test tools: valgrind, oclgrind, and clang with its sanitizer and libFuzzer
# runtimes for scripts/test.sh's sanitizer and fuzz builds; Open MPI for
# ring/, which the build includes when it finds MPI), then configures and
# builds into ${BUILD_DIR:-build}.
# Safe to run again: installed packages and an existing build are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(gcc libc6-dev pkg-config python3 meson ninja-build
          ocl-icd-libopencl1 ocl-icd-opencl-dev opencl-headers pocl-opencl-icd clinfo
          valgrind oclgrind clang libclang-rt-14-dev llvm
          libopenmpi-dev openmpi-bin)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2
fi

build_dir=${BUILD_DIR:-build}
if [ ! -f "$build_dir/build.ninja" ]; then
    meson setup "$build_dir" --buildtype=release -Dwerror=true >&2
fi
ninja -C "$build_dir" >&2
