#!/usr/bin/env python3
"""What the Python binding adds over the C call it makes.

Times, on the same arrays and the same cached plan:

  c-call    attn_plan_execute_host through ctypes with prebuilt arguments
            (the C call itself; ctypes' own cost is ~1 µs of it)
  plan      attn_cl.Plan.__call__
  attention attn_cl.attention (builds attn_params, finds the cached plan)
  sdpa      attn_cl.torch.scaled_dot_product_attention (with --torch)

and prints each median over --repeats calls and its excess over c-call.
The default shape is the tiny one the per-call overhead is judged on
(B=1, H=1, S=1, D=64); --seq 4096 --heads 8 gives the large one on which the
drop-in should be within 5% of the C call.

With --python-only the attention and sdpa rows skip the C call (a no-op in
its place), so they are Python's own cost; c-call and plan still call C.

  python bench/python_overhead.py [--seq N] [--heads H] [--dim D] [--torch] [--python-only]
"""

import argparse
import ctypes
import statistics
import time

import numpy as np

import attn_cl
from attn_cl import _native, core


def median_us(fns, repeats, rounds=21):
    """Per-call median of each function, measured in alternating rounds.

    The machine is shared: alternating the functions round by round lets a
    burst of other work fall on all of them alike.
    """
    per_round = max(1, repeats // rounds)
    for fn in fns:  # warm-up: plans built, caches filled
        for _ in range(3):
            fn()
    samples = [[] for _ in fns]
    for _ in range(rounds):
        for index, fn in enumerate(fns):
            start = time.perf_counter()
            for _ in range(per_round):
                fn()
            samples[index].append((time.perf_counter() - start) / per_round)
    return [statistics.median(s) * 1e6 for s in samples]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq", type=int, default=1)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--repeats", type=int, default=0, help="calls per function; default: 4200 tiny, 21 large")
    parser.add_argument("--torch", action="store_true", help="also time the torch drop-in")
    parser.add_argument("--python-only", action="store_true",
                        help="replace the C execute of attention/sdpa by a no-op: Python's own "
                             "cost, free of the device's noise")
    args = parser.parse_args()
    repeats = args.repeats or (4200 if args.seq * args.heads <= 64 else 21)

    rng = np.random.default_rng(0)
    shape = (1, args.heads, args.seq, args.dim)
    q, k, v = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
    causal = "top-left" if args.causal else None
    context = attn_cl.default_context()

    request = core._request(q, k, v, causal=causal)
    plan = core._PlanHandle(context, request.params, request.outputs)
    tensors = ctypes.byref(request.tensors)
    execute = _native.lib.attn_plan_execute_host
    handle = plan.handle

    def c_call():
        execute(handle, tensors)

    if args.python_only:
        core._execute_host = lambda plan, tensors: 0
    public_plan = attn_cl.Plan(q, k, v, causal=causal)
    names = ["c-call", "plan", "attention"]
    fns = [c_call, lambda: public_plan(q, k, v), lambda: attn_cl.attention(q, k, v, causal=causal)]
    if args.torch:
        import torch

        import attn_cl.torch as attn_torch

        tq, tk, tv = (torch.from_numpy(t) for t in (q, k, v))
        names.append("sdpa")
        fns.append(lambda: attn_torch.scaled_dot_product_attention(tq, tk, tv,
                                                                   is_causal=args.causal))
    rows = list(zip(names, median_us(fns, repeats)))
    base = rows[0][1]
    print(f"device: {context.device}")
    print(f"shape: B=1 H={args.heads} S={args.seq} D={args.dim} fp32"
          f"{' causal' if args.causal else ''}, median over 21 alternating rounds of {max(1, repeats // 21)} calls")
    for name, us in rows:
        excess = us - base
        print(f"{name:10s} {us:12.1f} us   +{excess:9.1f} us   x{us / base:.3f}")


if __name__ == "__main__":
    main()
