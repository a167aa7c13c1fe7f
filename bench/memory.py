#!/usr/bin/env python3
"""Peak host memory one attention forward adds, against the sequence length.

For each length and each implementation, a fresh process builds Q, K, V
(float32 [1, heads, n, 64]), runs one small call to build kernels and load
libraries, then one forward at n, and reports how far the forward raised the
process's peak resident memory (VmHWM, reset first through
/proc/self/clear_refs; Linux): the output, the scores the
implementation holds and its device buffers, which on a CPU OpenCL device
(PoCL) live in host memory. Prints CSV:

  algo,seq,heads,peak_mib

  attn_cl-fused         libattn_cl's fused path (online softmax, O(n))
  attn_cl-three-kernel  libattn_cl's three-kernel path (holds the scores)
  torch-sdpa            torch.nn.functional.scaled_dot_product_attention (if installed)
  numpy                 the textbook float32 softmax(Q·Kᵀ)·V, one head at a time

  python bench/memory.py [--seq-min 256] [--seq-max 8192] [--heads 8] > memory.csv
"""

import argparse
import subprocess
import sys

CHILD = r"""
import sys
import numpy as np
algo, n, heads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
make = lambda m: rng.standard_normal((1, heads, m, 64)).astype(np.float32)
if algo.startswith("attn_cl"):
    import attn_cl
    choice = algo.split("-", 1)[1]
    run = lambda q, k, v: attn_cl.attention(q, k, v, algo=choice)
elif algo == "torch-sdpa":
    import torch
    torch.set_num_threads(2)
    def run(q, k, v):
        with torch.no_grad():
            return torch.nn.functional.scaled_dot_product_attention(
                *(torch.from_numpy(t) for t in (q, k, v)))
else:
    def run(q, k, v):
        out = np.empty_like(q)
        for h in range(q.shape[1]):
            s = q[0, h] @ k[0, h].T / 8.0
            p = np.exp(s - s.max(-1, keepdims=True))
            out[0, h] = (p / p.sum(-1, keepdims=True)) @ v[0, h]
        return out
small = make(64)
run(small, small, small)  # kernels built, libraries loaded
q, k, v = make(n), make(n), make(n)
def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
with open("/proc/self/clear_refs", "w") as f:  # resets the peak (VmHWM) to the current RSS
    f.write("5")
before = status("VmRSS")
run(q, k, v)
print((status("VmHWM") - before) / 1024.0)
"""

ALGOS = ("attn_cl-fused", "attn_cl-three-kernel", "torch-sdpa", "numpy")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-min", type=int, default=256)
    parser.add_argument("--seq-max", type=int, default=8192)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--algo", action="append", choices=ALGOS,
                        help="repeatable; default: all")
    args = parser.parse_args()
    print("algo,seq,heads,peak_mib")
    for algo in args.algo or ALGOS:
        n = args.seq_min
        while n <= args.seq_max:
            result = subprocess.run([sys.executable, "-c", CHILD, algo, str(n), str(args.heads)],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                why = (result.stderr.strip().splitlines() or ["failed"])[-1]
                print(f"memory.py: {algo} n={n}: {why}", file=sys.stderr)
                break
            print(f"{algo},{n},{args.heads},{float(result.stdout):.1f}", flush=True)
            n *= 2


if __name__ == "__main__":
    main()
