#!/usr/bin/env bash
# Measures libattn_cl (both algorithms) and the CPU peers (bench/peers.py:
# PyTorch's scaled_dot_product_attention and NumPy, where installed) on the
# same sweep, one after the other in one run, non-causal then causal, and
# prints the results table of docs/performance.md (bench/results_table.py).
#
# usage: bench/compare.sh [BUILD_DIR] [PYTHON]
#   BUILD_DIR  where attn_bench was built (default build)
#   PYTHON     an interpreter with numpy/torch (default .venv-peers/bin/python,
#              else python3; see bench/peers.py for installing them)
# Extra attn_bench/peers.py shape flags go in SWEEP (default: n = 512..8192,
# batch 1, 8 heads, head_dim 64). The raw CSV is kept in compare.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
python=${2:-}
if [ -z "$python" ]; then
    if [ -x .venv-peers/bin/python ]; then python=.venv-peers/bin/python; else python=python3; fi
fi
read -r -a sweep <<<"${SWEEP:---seq-min 512 --seq-max 8192}"

csv=compare.csv
: >"$csv"
for causal in none bottom-right; do
    "$build_dir/bench/attn_bench" --csv --algo all --causal "$causal" --no-ref "${sweep[@]}" >>"$csv"
    "$python" bench/peers.py --csv --causal "$causal" --no-ref "${sweep[@]}" >>"$csv"
done
"$python" bench/results_table.py "$csv"
