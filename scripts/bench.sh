#!/usr/bin/env bash
# Sets up (scripts/setup.sh), builds, and runs bench/attn_bench on the
# machine's default OpenCL device. Arguments go to attn_bench (see --help);
# with none it runs the default sweep: n = 128 .. 8192, batch 1, 8 heads,
# head_dim 64, non-causal, the algorithm the library picks (fused); add
# --algo all or --causal for the others.
set -euo pipefail
cd "$(dirname "$0")/.."
export BUILD_DIR=${BUILD_DIR:-build}
bash scripts/setup.sh
exec "$BUILD_DIR/bench/attn_bench" "$@"
