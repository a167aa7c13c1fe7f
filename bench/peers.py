#!/usr/bin/env python3
"""Times attention on the CPU with the tools users compare libattn_cl against.

Runs the same sweep as attn_bench through

  torch-sdpa           torch.nn.functional.scaled_dot_product_attention, float32
                       (--dtype for 16-bit; --cuda: on the GPU, through CUDA)
  torch-sdpa-backward  its backward through autograd (dQ, dK, dV for a given
                       dO), the forward run once before the timing
  numpy                float32 matmul + softmax + matmul, one head at a time

(each when installed) and prints the same table or CSV columns as attn_bench:

  algo,device,batch,heads_q,heads_kv,seq_q,seq_k,head_dim,causal,dtype,ms,gflops,max_abs_err

ms is the median of --repeats runs after --warmup untimed ones (wall clock,
time.perf_counter). gflops counts 2 * batch * heads_q * visible query-key
pairs * (head_dim + head_dim_v), exactly as attn_bench does; a backward
counts 2.5 times that, as attn_bench --backward does. The inputs are
attn_bench's: the same generator and seed give the same Q, K and V, so rows
of the two tools compare like for like. max_abs_err is against a float64
NumPy reference (the CPU reference of libattn_cl also accumulates in double)
where its work is at most --ref-max-gflop; empty otherwise.

device is the CPU model from /proc/cpuinfo (with --cuda, the GPU's name),
commas replaced by ';'. Versions,
thread counts and the BLAS NumPy uses go to stderr, never to stdout.

Install into a virtual environment (PyPI's Linux torch wheel pulls in its CUDA
libraries even for CPU use: about 3 GB to download, 5 GB installed; torch is
optional, numpy alone is 17 MB; threadpoolctl lets --threads reach the BLAS):
  python3 -m venv .venv-peers
  .venv-peers/bin/pip install numpy torch threadpoolctl
  .venv-peers/bin/python bench/peers.py --csv
"""

import argparse
import math
import os
import platform
import statistics
import sys
import time

try:
    import numpy as np
except ImportError:  # torch alone still works, with its own inputs
    np = None

try:
    import torch
except ImportError:
    torch = None

CSV_HEADER = ("algo,device,batch,heads_q,heads_kv,seq_q,seq_k,head_dim,causal,dtype,"
              "ms,gflops,max_abs_err")
MASKS = ("none", "top-left", "bottom-right")


def note(message):
    print(message, file=sys.stderr, flush=True)


# ---- work counting: the same rule as bench/bench_work.c ---------------------

def visible_keys(i, seq_q, seq_k, mask):
    if mask == "none":
        return seq_k
    last = i if mask == "top-left" else i + seq_k - seq_q
    if last < 0:
        return 0
    return min(last + 1, seq_k)


def visible_pairs(seq_q, seq_k, mask):
    return sum(visible_keys(i, seq_q, seq_k, mask) for i in range(seq_q))


def flops(shape):
    return (2.0 * shape["batch"] * shape["heads_q"]
            * visible_pairs(shape["seq_q"], shape["seq_k"], shape["mask"])
            * (shape["head_dim"] + shape["head_dim_v"]))


# ---- inputs: attn_bench's splitmix64 stream, uniform in [-1, 1) -------------

class SplitMix64:
    """bench/bench_data.c's generator, vectorized: one state for Q, K, V in turn."""

    GOLDEN = 0x9E3779B97F4A7C15

    def __init__(self, seed):
        self.state = seed % (1 << 64)

    def uniform(self, count):
        u64 = np.uint64
        steps = np.arange(1, count + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            z = u64(self.state) + steps * u64(self.GOLDEN)
            z = (z ^ (z >> u64(30))) * u64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> u64(27))) * u64(0x94D049BB133111EB)
            z = z ^ (z >> u64(31))
        self.state = (self.state + count * self.GOLDEN) % (1 << 64)
        bits = (z >> u64(40)).astype(np.float32)
        return bits * np.float32(2.0 / 16777216.0) - np.float32(1.0)


def make_inputs(shape, seed):
    b, hq, hkv = shape["batch"], shape["heads_q"], shape["heads_kv"]
    sq, sk, d, dv = shape["seq_q"], shape["seq_k"], shape["head_dim"], shape["head_dim_v"]
    dims = ((b, hq, sq, d), (b, hkv, sk, d), (b, hkv, sk, dv))
    if np is not None:
        gen = SplitMix64(seed)
        return [gen.uniform(math.prod(s)).reshape(s) for s in dims]
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(s, generator=g) * 2 - 1 for s in dims]


# ---- the peers ---------------------------------------------------------------

def numpy_mask(seq_q, seq_k, mask):
    """Boolean [seq_q, seq_k], True where the key is visible; None for no mask."""
    if mask == "none":
        return None
    offset = 0 if mask == "top-left" else seq_k - seq_q
    i = np.arange(seq_q)[:, None]
    j = np.arange(seq_k)[None, :]
    return j <= i + offset


def numpy_attention(q, k, v, mask, scale, dtype):
    """softmax(scale Q Kᵀ, masked) V, head by head so that only one score matrix
    is alive at a time; fully masked rows give 0 as libattn_cl defines."""
    b, hq, sq, _ = q.shape
    hkv, sk, dv = k.shape[1], k.shape[2], v.shape[3]
    group = hq // hkv
    visible = numpy_mask(sq, sk, mask)
    out = np.empty((b, hq, sq, dv), dtype=dtype)
    for bi in range(b):
        for h in range(hq):
            g = h // group
            s = q[bi, h].astype(dtype, copy=False) @ k[bi, g].astype(dtype, copy=False).T
            s *= dtype(scale)
            if visible is not None:
                s[~visible] = -np.inf
            m = s.max(axis=1, keepdims=True)
            m[~np.isfinite(m)] = 0  # all masked: exp(-inf) = 0, no NaN
            s -= m
            np.exp(s, out=s)
            total = s.sum(axis=1, keepdims=True)
            total[total == 0] = 1  # such a row of s is all 0, and so is its output
            out[bi, h] = (s @ v[bi, g].astype(dtype, copy=False)) / total
    return out


class TorchSdpa:
    """torch.nn.functional.scaled_dot_product_attention on the CPU, float32."""

    name = "torch-sdpa"

    def __init__(self, q, k, v, shape):
        import torch.nn.functional as F
        self.F = F
        self.device = shape["torch_device"]
        as_tensor = torch.from_numpy if np is not None else (lambda t: t)
        dtype = TORCH_DTYPES[shape["dtype"]]
        self.q, self.k, self.v = (as_tensor(t).to(self.device, dtype).contiguous()
                                  for t in (q, k, v))
        self.scale = shape["scale"]
        self.kwargs = {}
        sq, sk, mask = shape["seq_q"], shape["seq_k"], shape["mask"]
        # is_causal is top-left; it is also bottom-right when the lengths agree.
        if mask == "top-left" or (mask == "bottom-right" and sq == sk):
            self.kwargs["is_causal"] = True
        elif mask == "bottom-right":
            self.kwargs["attn_mask"] = torch.ones(sq, sk, dtype=torch.bool,
                                                  device=self.device).tril(sk - sq)
        if shape["heads_kv"] != shape["heads_q"]:
            if torch_supports_gqa():
                self.kwargs["enable_gqa"] = True
            else:  # older torch: expand K/V once, outside the timed call
                group = shape["heads_q"] // shape["heads_kv"]
                self.k = self.k.repeat_interleave(group, dim=1)
                self.v = self.v.repeat_interleave(group, dim=1)

    def __call__(self):
        with torch.inference_mode():
            out = self.F.scaled_dot_product_attention(self.q, self.k, self.v, scale=self.scale,
                                                      **self.kwargs)
        self.synchronize()
        return out

    def synchronize(self):
        """A GPU call returns before the kernels end: the timing waits for them."""
        if self.device != "cpu":
            torch.cuda.synchronize(self.device)

    @staticmethod
    def to_numpy(out):
        return out.float().cpu().numpy() if np is not None else None


class TorchSdpaBackward(TorchSdpa):
    """The backward of torch-sdpa: autograd over a graph built once, replayed."""

    name = "torch-sdpa-backward"
    work_factor = 2.5

    def __init__(self, q, k, v, shape):
        super().__init__(q, k, v, shape)
        self.q, self.k, self.v = (t.detach().clone().requires_grad_() for t in
                                  (self.q, self.k, self.v))
        out = self.F.scaled_dot_product_attention(self.q, self.k, self.v, scale=self.scale,
                                                  **self.kwargs)
        self.out = out
        self.dout = torch.ones_like(out)

    def __call__(self):
        for t in (self.q, self.k, self.v):
            t.grad = None
        self.out.backward(self.dout, retain_graph=True)
        self.synchronize()
        return None

    @staticmethod
    def to_numpy(out):
        return None


class NumpyF32:
    name = "numpy"

    def __init__(self, q, k, v, shape):
        self.q, self.k, self.v = q, k, v
        self.mask, self.scale = shape["mask"], shape["scale"]

    def __call__(self):
        return numpy_attention(self.q, self.k, self.v, self.mask, self.scale, np.float32)

    @staticmethod
    def to_numpy(out):
        return out


TORCH_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}

PEERS = {"torch-sdpa": TorchSdpa, "torch-sdpa-backward": TorchSdpaBackward, "numpy": NumpyF32}


def torch_dtypes():
    """TORCH_DTYPES' names as torch's types, once torch is known to be there."""
    for key, name in TORCH_DTYPES.items():
        TORCH_DTYPES[key] = getattr(torch, name)


def torch_supports_gqa():
    import inspect
    try:
        return "enable_gqa" in inspect.signature(
            torch.nn.functional.scaled_dot_product_attention).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)


# ---- environment notes -------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def csv_field(text):
    return "".join(";" if c == "," else "'" if c == '"' else " " if ord(c) < 32 else c
                   for c in text)


def numpy_blas():
    """The BLAS NumPy was built with, and its threads when threadpoolctl says."""
    desc = "unknown BLAS"
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        desc = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except TypeError:  # NumPy before 1.25 only prints its configuration
        pass
    try:
        from threadpoolctl import threadpool_info
        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if pools:
            desc += ", threads " + ",".join(str(p.get("num_threads")) for p in pools)
    except ImportError:
        desc += ", threads: install threadpoolctl to see them"
    return desc


def machine_notes():
    note(f"peers: CPU {cpu_model()}, {os.cpu_count()} logical CPUs, Python "
         f"{platform.python_version()}")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if var in os.environ:
            note(f"peers: {var}={os.environ[var]}")


def set_threads(count, peers):
    if "torch-sdpa" in peers:
        torch.set_num_threads(count)
    if "numpy" in peers:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            note("peers: --threads does not reach NumPy's BLAS without threadpoolctl; "
                 "set OPENBLAS_NUM_THREADS (or MKL_NUM_THREADS) instead")
            return
        # Kept for the whole run: the limit holds while the object lives.
        set_threads.limits = threadpool_limits(limits=count, user_api="blas")


def peer_notes(name):
    if name == "numpy":
        note(f"peers: numpy {np.__version__}, BLAS {numpy_blas()}")
    else:
        info = torch.__config__.parallel_info().splitlines()
        backend = next((line.split(":", 1)[1].strip() for line in info
                        if line.startswith("ATen parallel backend")), "?")
        note(f"peers: torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
             f"{torch.get_num_interop_threads()} inter-op threads, parallel backend {backend}")


# ---- the sweep -----------------------------------------------------------------

def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants an integer, not '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"wants an integer >= 1, not '{text}'")
    return value


def seq_list(text):
    return [positive_int(item) for item in text.split(",")]


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="peers.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq", type=seq_list, help="comma-separated lengths, or one length")
    p.add_argument("--seq-min", type=positive_int, help="first length of a doubling sweep (128)")
    p.add_argument("--seq-max", type=positive_int, help="last length of a doubling sweep (8192)")
    p.add_argument("--seq-k", type=positive_int, help="fix seq_k; the sweep varies seq_q")
    p.add_argument("--seq-q", type=positive_int, help="fix seq_q; the sweep varies seq_k")
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--heads", type=positive_int, default=8)
    p.add_argument("--heads-kv", type=positive_int, help="must divide --heads (default: --heads)")
    p.add_argument("--head-dim", type=positive_int, default=64)
    p.add_argument("--head-dim-v", type=positive_int, help="default: --head-dim")
    p.add_argument("--causal", nargs="?", const="bottom-right", default="none", choices=MASKS,
                   help="top-left (PyTorch is_causal) or bottom-right (j <= i + seq_k - seq_q); "
                        "bare --causal is bottom-right, as in attn_bench")
    p.add_argument("--peers", default="torch-sdpa,numpy",
                   help="comma list of torch-sdpa, torch-sdpa-backward, numpy (default: "
                        "torch-sdpa and numpy, where installed)")
    p.add_argument("--dtype", choices=tuple(TORCH_DTYPES), default="f32",
                   help="torch's tensors in this type (numpy stays float32)")
    p.add_argument("--cuda", action="store_true",
                   help="torch on the first CUDA GPU, each call waited for; numpy is left out")
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--max-point-seconds", type=float, default=60.0,
                   help="stop a point's timed runs early past this, after at least one")
    p.add_argument("--threads", type=positive_int,
                   help="threads for torch (set_num_threads) and NumPy's BLAS "
                        "(needs threadpoolctl; else set OPENBLAS_NUM_THREADS before starting)")
    p.add_argument("--no-ref", action="store_true", help="never compute max_abs_err")
    p.add_argument("--ref-max-gflop", type=float, default=10.0,
                   help="float64 reference only up to this much work (default 10)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--csv", action="store_true", help="the CSV columns of attn_bench")
    args = p.parse_args(argv)

    if args.seq and (args.seq_min or args.seq_max):
        p.error("give either --seq or --seq-min/--seq-max, not both")
    if args.seq_q and args.seq_k:
        p.error("--seq-q and --seq-k together leave nothing to sweep")
    if args.warmup < 0:
        p.error("--warmup wants an integer >= 0")
    if not args.seq:
        lo, hi = args.seq_min or 128, args.seq_max or 8192
        if lo > hi:
            p.error(f"--seq-min {lo} is above --seq-max {hi}")
        args.seq = []
        while lo <= hi:
            args.seq.append(lo)
            lo *= 2
    args.heads_kv = args.heads_kv or args.heads
    args.head_dim_v = args.head_dim_v or args.head_dim
    if args.heads % args.heads_kv:
        p.error(f"--heads-kv {args.heads_kv} does not divide --heads {args.heads}")

    wanted = [name.strip() for name in args.peers.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in PEERS]
    if unknown:
        p.error(f"--peers: unknown {', '.join(unknown)} ({', '.join(PEERS)})")
    args.peers = []
    for name in dict.fromkeys(wanted):  # in order, once each
        if name.startswith("torch-sdpa") and torch is None:
            note("peers: torch is not installed: no torch-sdpa rows")
        elif name.startswith("torch-sdpa") and args.cuda and not torch.cuda.is_available():
            note("peers: torch sees no CUDA GPU: no torch-sdpa rows")
        elif name == "numpy" and np is None:
            note("peers: numpy is not installed: no numpy rows")
        elif name == "numpy" and (args.cuda or args.dtype != "f32"):
            note("peers: numpy runs float32 on the CPU only: no numpy rows with --cuda or --dtype")
        else:
            args.peers.append(name)
    return args


def time_runs(fn, args, label):
    """Runs fn --warmup times, then times up to --repeats runs; returns the
    last output and the times in ms."""
    out = None
    for _ in range(args.warmup):
        out = fn()
    times, spent, cap = [], 0.0, args.max_point_seconds * 1e3
    while len(times) < args.repeats:
        if times and spent + times[-1] > cap:
            note(f"{label}: stopped after {len(times)} of {args.repeats} timed runs (one takes "
                 f"{times[-1] / 1e3:.1f} s; --max-point-seconds {args.max_point_seconds:g})")
            break
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1e3)
        spent += times[-1]
    return out, times


def print_header(args, device):
    if args.csv:
        print(CSV_HEADER, flush=True)
        return
    print(f"device   {device}")
    print(f"shape    batch {args.batch}, heads {args.heads} (kv {args.heads_kv}), head_dim "
          f"{args.head_dim} (v {args.head_dim_v}), {args.dtype}, causal {args.causal}")
    print(f"timing   median of {args.repeats} runs after {args.warmup} warm-up\n")
    print(f"{'algo':<20} {'seq_q':>7} {'seq_k':>7} {'runs':>4} {'ms':>10} {'GFLOP/s':>8} "
          f"{'max_abs_err':>11}", flush=True)


def run_sweep(args, name, device):
    """Every point of the sweep through one peer; returns how many were measured."""
    peer_class = PEERS[name]
    measured = 0
    for index, n in enumerate(args.seq, 1):
        shape = {"batch": args.batch, "heads_q": args.heads, "heads_kv": args.heads_kv,
                 "seq_q": args.seq_q or n, "seq_k": args.seq_k or n, "head_dim": args.head_dim,
                 "head_dim_v": args.head_dim_v, "mask": args.causal,
                 "scale": 1.0 / math.sqrt(args.head_dim), "dtype": args.dtype,
                 "torch_device": "cuda" if args.cuda else "cpu"}
        label = f"[{index}/{len(args.seq)}] {shape['seq_q']}x{shape['seq_k']} {name}"
        work = flops(shape) * getattr(peer_class, "work_factor", 1.0)
        try:
            q, k, v = make_inputs(shape, args.seed)
            fn = peer_class(q, k, v, shape)
            note(f"{label}: {args.warmup} warm-up + {args.repeats} timed runs")
            out, times = time_runs(fn, args, label)
            # After the timing: NumPy's BLAS threads must not be busy while
            # another peer is timed.
            ref = None
            if (np is not None and not args.no_ref and work <= args.ref_max_gflop * 1e9 and
                    fn.to_numpy(out) is not None):
                ref = numpy_attention(q, k, v, shape["mask"], shape["scale"], np.float64)
        except (RuntimeError, MemoryError, ValueError) as err:
            note(f"{label}: failed: {type(err).__name__}: {err}")
            continue
        ms = statistics.median(times)
        gflops = work / (ms * 1e6) if ms > 0 else 0.0
        err = ""
        if ref is not None:
            diff = np.abs(fn.to_numpy(out).astype(np.float64) - ref)
            err = f"{float('nan') if np.isnan(diff).any() else diff.max():.3e}"
        if args.csv:
            print(f"{name},{csv_field(device)},{args.batch},{args.heads},{args.heads_kv},"
                  f"{shape['seq_q']},{shape['seq_k']},{args.head_dim},{args.causal},{args.dtype},"
                  f"{ms:.4f},{gflops:.3f},{err}", flush=True)
        else:
            print(f"{name:<20} {shape['seq_q']:>7} {shape['seq_k']:>7} {len(times):>4} "
                  f"{ms:>10.3f} {gflops:>8.2f} {err or '-':>11}", flush=True)
        measured += 1
    return measured


def main(argv):
    args = parse_args(argv)
    if not args.peers:
        note("peers: nothing to run: install numpy and/or torch")
        return 1
    if torch is not None:
        torch_dtypes()
    device = torch.cuda.get_device_name() if args.cuda else cpu_model()
    machine_notes()
    if args.threads:
        set_threads(args.threads, args.peers)
    print_header(args, device)
    # Peer by peer rather than point by point: each library's thread pool
    # runs its whole sweep without the other's waking up in between.
    measured = 0
    for name in args.peers:
        peer_notes(name)
        measured += run_sweep(args, name, device)
    return 0 if measured else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
