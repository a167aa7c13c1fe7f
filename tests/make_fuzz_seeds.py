#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz_forward.c into tests/fuzz_corpus/.

Each seed is one request in the byte layout decode() reads; this script
says what each seed asks for. Run it after changing that layout:
    python3 tests/make_fuzz_seeds.py
Crash reproducers added by hand (regress-*) are left alone.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fuzz_corpus")

WANT_LSE, WANT_PROBS, DEVICE_CALL, DEVICE_SHORT, DEVICE_MISALIGNED, TUNING = 1, 2, 4, 8, 16, 32
NONE, TOP_LEFT, BOTTOM_RIGHT = 0, 1, 2
AUTO, THREE_KERNEL, FUSED = 0, 1, 2
DEVICE_DIMS = [1, 3, 8, 16]
LAYOUT = {"bhsd": 0, "bshd": 3, "hbsd": 4, "padded": 5, "raw": 6}
BAD_SIZE = {0: 0, -1: 1, "min": 2, "max": 3}  # size_field's bad_sizes[] index


def size(v, maximum):
    """size_field: a byte >= 16 gives 1 + b % maximum; < 16 a bad size."""
    if v in BAD_SIZE:
        return BAD_SIZE[v]
    return next(b for b in range(16, 256) if 1 + b % maximum == v)


def heads_kv(v):
    if v == 0:
        return 0  # same as heads_q
    return next(b for b in range(136, 256) if 1 + b % 3 == v)


def dim(v, zero_ok=False):
    """dim_field: (class, value) bytes."""
    if v == 0 and zero_ok:
        return [0, 0]
    if v in DEVICE_DIMS:
        return [200, DEVICE_DIMS.index(v)]
    if v in ("bad0", "bad-1", "bad257", "badmax"):
        return [70, ["bad0", "bad-1", "bad257", "badmax"].index(v)]
    return [100, (v - 1) % 256]


def enum(v, count):
    """enum_field: a byte < 240 gives b % count; 240..243 the bad values
    count, -1, 255, INT32_MIN."""
    if 0 <= v < count:
        return v
    return 240 + [count, -1, 255, "min"].index(v)


def scale(kind="default", value=0.0):
    if kind == "default":
        return [0, 0, 0, 0, 0]
    if kind == "special":  # NaN, inf, -inf, FLT_MAX, 1e-38, denormal, -0, 1e6
        return [4] + list(struct.pack("<I", value))
    if kind == "bits":
        return [5] + list(struct.pack("<f", value))
    raise ValueError(kind)


def request(flags=0, batch=1, heads=2, hkv=0, sq=7, sk=7, d=8, dv=0, mask=NONE, algo=AUTO,
            dtype_bad=False, scl=None, layout="bhsd", raw_strides=None, value_mode=0,
            specials=0, seed=1, tuning=None):
    b = [flags, size(batch, 3), size(heads, 3), heads_kv(hkv), size(sq, 40), size(sk, 40)]
    b += dim(d) + dim(dv, zero_ok=True)
    b += [enum(mask, 3), enum(algo, 3), 255 if dtype_bad else 0]
    b += scl or scale()
    b += [LAYOUT[layout]]
    if layout == "raw":
        b += [x & 0xFF for x in raw_strides]  # 5 tensors x (batch/4, head/2, seq)
    b += [value_mode, specials] + list(struct.pack("<I", seed))
    data = bytes(b)
    if tuning is not None:
        data += tuning.encode()
    return data


SEEDS = {
    # Valid requests on each path and call.
    "fused-host-lse": request(WANT_LSE, heads=2, sq=7, sk=7, d=8),
    "fused-causal-tl-gqa": request(WANT_LSE, batch=2, heads=3, hkv=1, sq=33, sk=40, d=16,
                                   mask=TOP_LEFT, algo=FUSED),
    "fused-device-bshd": request(WANT_LSE | DEVICE_CALL, heads=2, sq=33, sk=17, d=3,
                                 mask=BOTTOM_RIGHT, layout="bshd"),
    "fused-decode": request(WANT_LSE | DEVICE_CALL, batch=3, heads=2, sq=1, sk=40, d=16,
                            mask=BOTTOM_RIGHT),
    "fused-dv-differs": request(0, heads=1, sq=9, sk=12, d=1, dv=16, layout="hbsd"),
    "three-probs": request(WANT_LSE | WANT_PROBS, heads=2, sq=7, sk=9, d=8, mask=TOP_LEFT),
    "three-device-padded": request(WANT_LSE | DEVICE_CALL, batch=2, heads=2, sq=17, sk=33, d=3,
                                   dv=8, algo=THREE_KERNEL, layout="padded"),
    "three-rows-masked": request(WANT_LSE | WANT_PROBS, heads=1, sq=40, sk=3, d=16,
                                 mask=BOTTOM_RIGHT, algo=THREE_KERNEL),
    "device-short": request(DEVICE_CALL | DEVICE_SHORT, sq=5, sk=5, d=8),
    "device-misaligned": request(WANT_LSE | DEVICE_CALL | DEVICE_MISALIGNED, sq=5, sk=6, d=3),
    "scale-explicit": request(WANT_LSE, sq=8, sk=8, d=8, scl=scale("bits", -1.25)),
    "values-special": request(WANT_LSE, sq=7, sk=7, d=8, value_mode=0, specials=0x0B),
    "values-large": request(WANT_LSE, sq=7, sk=7, d=8, value_mode=3),
    "head-dim-200": request(WANT_LSE, sq=4, sk=4, d=200),
    # Invalid requests: each must be refused with its status.
    "bad-batch-zero": request(WANT_LSE, batch=0),
    "bad-seq-min": request(0, sq="min"),
    "bad-heads-kv": request(0, heads=3, hkv=2),
    "bad-head-dim": request(0, d="bad257"),
    "bad-head-dim-v": request(0, dv="bad-1"),
    "bad-mask": request(0, mask=3),
    "bad-algo": request(0, algo=-1),
    "bad-dtype": request(0, dtype_bad=True),
    "bad-scale-nan": request(0, scl=scale("special", 0)),
    "bad-scale-inf": request(0, scl=scale("special", 2)),
    "probs-from-fused": request(WANT_PROBS, algo=FUSED),
    "strides-negative": request(0, layout="raw",
                                raw_strides=[0, 0, -8, 0, 0, 8, 0, 0, 8, 0, 0, 8, 0, 0, 1]),
    "strides-overlap": request(0, heads=2, sq=4, sk=4, d=8, layout="raw",
                               raw_strides=[0, 0, 8, 0, 0, 8, 0, 0, 8, 0, 0, 1, 0, 0, 1]),
    "strides-broadcast-k": request(0, heads=2, sq=4, sk=4, d=8, layout="raw",
                                   raw_strides=[0, 16, 8, 0, 0, 0, 0, 16, 8, 0, 16, 8, 0, 2, 1]),
    "huge-batch": request(WANT_LSE, batch="max", sq=40, sk=40, d=16),
    # attn_context_set_tuning on strings.
    "tuning-valid": request(TUNING, tuning="variant=gpu,rows=4,tile_k=12,wg=12"),
    "tuning-garbage": request(TUNING, tuning="rows=,=,variant=cpux,, tile_k=99999999999"),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, "seed-" + name), "wb") as f:
            f.write(data)
    print(f"{len(SEEDS)} seeds in {OUT}")


if __name__ == "__main__":
    main()
