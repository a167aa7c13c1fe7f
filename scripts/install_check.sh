#!/usr/bin/env bash
# Installs the built library into a scratch root and builds examples/example.c
# against it the way users do: cc example.c $(pkg-config --cflags --libs attn_cl).
# usage: scripts/install_check.sh BUILD_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=$(realpath "${1:-build}")
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

DESTDIR="$root" meson install -C "$build_dir" --quiet >/dev/null
prefix=$(meson introspect "$build_dir" --buildoptions |
    python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"))')
pcdir=$(dirname "$(find "$root$prefix" -name attn_cl.pc | head -n 1)")
export PKG_CONFIG_SYSROOT_DIR="$root" PKG_CONFIG_PATH="$pcdir"
cc -Wall -Wextra -Werror examples/example.c $(pkg-config --cflags --libs attn_cl) -o "$root/example"
LD_LIBRARY_PATH="$(dirname "$(find "$root$prefix" -name 'libattn_cl.so.0' | head -n 1)")" "$root/example"
