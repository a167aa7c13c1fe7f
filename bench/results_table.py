#!/usr/bin/env python3
"""Turns CSV rows of attn_bench and bench/peers.py into one Markdown table.

usage: results_table.py FILE.csv...   (or rows on standard input)

Every file holds attn_bench's columns (a header line, then rows; repeated
header lines are skipped). The table has one line per shape (causal, seq_q,
seq_k, head_dim) and, for each algorithm seen, its milliseconds and GFLOP/s,
plus how many times faster the first algorithm (fused when it ran) is than
each other one. Only what the files hold is shown; a missing point is "-".
"""
import csv
import sys

HEADER = ("algo,device,batch,heads_q,heads_kv,seq_q,seq_k,head_dim,causal,dtype,"
          "ms,gflops,max_abs_err")
PREFERRED = ["fused", "three-kernel", "torch-sdpa", "numpy"]


def read_rows(streams):
    rows = []
    for stream in streams:
        for line in stream:
            line = line.strip()
            if not line or line == HEADER:
                continue
            rows.append(dict(zip(HEADER.split(","), next(csv.reader([line])))))
    return rows


def main(argv):
    streams = [open(path, encoding="utf-8") for path in argv[1:]] or [sys.stdin]
    rows = read_rows(streams)
    if not rows:
        print("results_table.py: no rows", file=sys.stderr)
        return 1
    algos = sorted({r["algo"] for r in rows},
                   key=lambda a: (PREFERRED.index(a) if a in PREFERRED else len(PREFERRED), a))
    shapes = []
    cells = {}
    for r in rows:
        shape = (r["causal"], int(r["seq_q"]), int(r["seq_k"]), int(r["head_dim"]))
        if shape not in cells:
            shapes.append(shape)
            cells[shape] = {}
        cells[shape][r["algo"]] = (float(r["ms"]), float(r["gflops"]))
    shapes.sort()

    first = algos[0]
    head = ["causal", "seq", "d"] + [f"{a} ms (GFLOP/s)" for a in algos]
    head += [f"{first} speed-up vs {a}" for a in algos[1:]]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(" --- " for _ in head) + "|")
    for shape in shapes:
        causal, seq_q, seq_k, dim = shape
        seq = str(seq_q) if seq_q == seq_k else f"{seq_q}x{seq_k}"
        line = [causal, seq, str(dim)]
        for a in algos:
            cell = cells[shape].get(a)
            line.append("-" if cell is None else f"{cell[0]:.1f} ({cell[1]:.0f})")
        base = cells[shape].get(first)
        for a in algos[1:]:
            other = cells[shape].get(a)
            line.append(f"{other[0] / base[0]:.2f}x" if base and other else "-")
        print("| " + " | ".join(line) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
