#!/usr/bin/env python3
"""Time and memory against the sequence length, log-log, libattn_cl beside its peers.

  python bench/plot.py --time compare.csv --memory memory.csv --output bench/scaling.png

--time takes attn_bench / peers.py CSVs (bench/compare.sh keeps them in
compare.csv; results_table.py reads the same rows), non-causal rows only;
--memory takes bench/memory.py's CSV. Dashed guides show n² (time; the
three-kernel path's scores) and n (the fused path's memory), each through
the first point of the fused path.
"""

import argparse
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_table import read_rows  # noqa: E402

NAMES = {"fused": "libattn_cl fused", "three-kernel": "libattn_cl three-kernel",
         "attn_cl-fused": "libattn_cl fused", "attn_cl-three-kernel": "libattn_cl three-kernel",
         "torch-sdpa": "PyTorch SDPA", "numpy": "NumPy"}
STYLE = {"libattn_cl fused": ("o-", "C1"), "libattn_cl three-kernel": ("s-", "C0"),
         "PyTorch SDPA": ("^--", "C2"), "NumPy": ("v:", "C3")}


def series(rows, x, y):
    out = {}
    for row in rows:
        out.setdefault(NAMES.get(row["algo"], row["algo"]), []).append(
            (int(row[x]), float(row[y])))
    return {name: sorted(points) for name, points in out.items()}


def guide(ax, points, power, label):
    n0, y0 = points[0]
    ns = [p[0] for p in points]
    ax.plot(ns, [y0 * (n / n0) ** power for n in ns], "k--", linewidth=0.8, alpha=0.5,
            label=label)


def draw(ax, data, ylabel, title):
    for name, points in data.items():
        style, color = STYLE.get(name, ("x-", None))
        ax.plot([p[0] for p in points], [p[1] for p in points], style, color=color, label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length n (queries = keys)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--time", nargs="+", required=True, help="attn_bench/peers.py CSVs")
    parser.add_argument("--memory", help="bench/memory.py CSV")
    parser.add_argument("--output", default="scaling.png")
    args = parser.parse_args()

    streams = [open(path, encoding="utf-8") for path in args.time]
    rows = [r for r in read_rows(streams) if r["causal"] in ("none", "0", "") and
            r["seq_q"] == r["seq_k"]]
    if not rows:
        sys.exit("plot.py: no non-causal rows with seq_q == seq_k in --time")
    panels = 2 if args.memory else 1
    figure, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.6), dpi=90, squeeze=False)
    times = series(rows, "seq_q", "ms")
    first = rows[0]
    draw(axes[0][0], times, "time per forward (ms)",
         f"time: batch {first['batch']}, {first['heads_q']} heads, d {first['head_dim']}, "
         f"{first['dtype']}")
    if "libattn_cl fused" in times:
        guide(axes[0][0], times["libattn_cl fused"], 2, "n²")
    axes[0][0].legend(fontsize=8)
    if args.memory:
        with open(args.memory, encoding="utf-8") as stream:
            memory = series(list(csv.DictReader(stream)), "seq", "peak_mib")
        draw(axes[0][1], memory, "peak memory a forward adds (MiB)",
             "memory (host RSS; PoCL's device memory is host memory)")
        if "libattn_cl fused" in memory:
            points = [p for p in memory["libattn_cl fused"] if p[1] > 0]
            if points:
                guide(axes[0][1], points, 1, "n")
        axes[0][1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
