#!/usr/bin/env python3
"""Runs attn_bench --csv on a small sweep and checks what other tools rely on
(DESIGN.md, "Bench output"): exactly the fixed header, then one well-formed
row per point, nothing else on stdout. Exit 77 (skipped) without a device."""

import subprocess
import sys

HEADER = ("algo,device,batch,heads_q,heads_kv,seq_q,seq_k,head_dim,causal,dtype,"
          "ms,gflops,max_abs_err")


def main(bench):
    args = [bench, "--csv", "--seq", "16,33", "--seq-k", "40", "--causal", "top-left",
            "--heads", "4", "--heads-kv", "2", "--head-dim", "24", "--repeats", "2",
            "--algo", "three-kernel"]
    run = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if run.returncode == 1 and "cannot open the device" in run.stderr:
        print("skipped: no OpenCL device")
        return 77
    failures = []
    if run.returncode != 0:
        failures.append(f"exit status {run.returncode}; stderr:\n{run.stderr}")
    lines = run.stdout.splitlines()
    if not lines or lines[0] != HEADER:
        failures.append(f"first line is {lines[:1]!r}, want the fixed header")
    rows = [line.split(",") for line in lines[1:]]
    if len(rows) != 2:
        failures.append(f"{len(rows)} rows, want 2")
    for seq_q, row in zip((16, 33), rows):
        if len(row) != 13:
            failures.append(f"row {row!r} has {len(row)} fields")
            continue
        algo, _, batch, hq, hkv, sq, sk, d, causal, dtype, ms, gflops, err = row
        if (algo, batch, hq, hkv, sq, sk, d, causal, dtype) != (
                "three-kernel", "1", "4", "2", str(seq_q), "40", "24", "top-left", "f32"):
            failures.append(f"row {row!r} does not describe the point asked for")
        # Top-left with 40 keys: query i sees i + 1 of them.
        work = 2 * 1 * 4 * sum(min(i + 1, 40) for i in range(seq_q)) * (24 + 24)
        if float(ms) <= 0 or abs(work / (float(ms) * 1e6) - float(gflops)) > 1e-3 + 0.01 * float(
                gflops):
            failures.append(f"row {row!r}: gflops is not the visible work over ms")
        if not err or not float(err) < 1e-4:
            failures.append(f"row {row!r}: max_abs_err {err!r} is missing or too large")
    failures += check_variant(bench)
    for failure in failures:
        print("FAIL", failure)
    print(f"{0 if failures else 1} passed, {1 if failures else 0} failed")
    return 1 if failures else 0


def check_variant(bench):
    """bf16 storage and a window: the dtype column, and GFLOP/s counting only
    the pairs the window leaves visible (a brute force over every pair)."""
    args = [bench, "--csv", "--seq", "30", "--seq-k", "40", "--dtype", "bf16", "--window", "5,2",
            "--heads", "2", "--head-dim", "16", "--repeats", "2", "--algo", "fused"]
    run = subprocess.run(args, capture_output=True, text=True, timeout=600)
    lines = run.stdout.splitlines()
    if run.returncode != 0 or len(lines) != 2:
        return [f"variant run: exit {run.returncode}, {len(lines)} lines; stderr:\n{run.stderr}"]
    row = lines[1].split(",")
    failures = []
    if row[9] != "bf16":
        failures.append(f"variant row {row!r}: dtype is not bf16")
    # No causal mask: the window is centred on the bottom-right diagonal.
    pairs = sum(1 for i in range(30) for j in range(40) if i + 10 - 5 <= j <= i + 10 + 2)
    work = 2 * 2 * pairs * (16 + 16)
    ms, gflops, err = float(row[10]), float(row[11]), row[12]
    if abs(work / (ms * 1e6) - gflops) > 1e-3 + 0.01 * gflops:
        failures.append(f"variant row {row!r}: gflops is not the windowed work over ms")
    if not err or not float(err) < 1e-2:
        failures.append(f"variant row {row!r}: max_abs_err {err!r} is missing or too large")
    return failures


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
