#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz_forward.c into tests/fuzz_corpus/.

Each seed is one request in the byte layout decode() reads; this script
says what each seed asks for. Run it after changing that layout:
    python3 tests/make_fuzz_seeds.py
seed-* are requests on every path and feature, valid and not; known-* the
reproducers of library bugs the fuzzer found that are not fixed yet (see
known_bug() in fuzz_forward.c). Crash reproducers added by hand
(regress-*) are left alone. A feature field left at its default writes
nothing past the seed, so seeds without features keep the short layout.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fuzz_corpus")

WANT_LSE, WANT_PROBS, DEVICE_CALL, DEVICE_SHORT, DEVICE_MISALIGNED, TUNING = 1, 2, 4, 8, 16, 32
MERGE, PLAIN = 64, 128
LSE_DEVICE = WANT_LSE | DEVICE_CALL
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
    if v in ("bad0", "bad-1", "bad513", "badmax"):
        return [70, ["bad0", "bad-1", "bad513", "badmax"].index(v)]
    if v > 256:
        return [120, v - 257]
    return [100, v - 1]


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


DTYPES = {"f32": 0, "f16": 1, "bf16": 2, -1: 240, 255: 241, "min": 242, 3: 243}
SOFTCAP_HUGE = [1e4, 1e6, 1e30, "FLT_MAX"]
SOFTCAP_SPECIAL = ["nan", "inf", "-inf", -1.0, -0.0, "denormal", 1e-30, "-FLT_MAX"]
EXTENT_SPECIAL = {"min": 248, "max": 249, "max-1": 250, "2^30": 251, 65536: 254, -65536: 255}
DROP = {"bias": 0, "keep": 1, "key_lengths": 2, "slopes": 3, "cu_q": 4, "cu_k": 5, "extras": 6,
        "q": 7}
OPERAND_OFFSET, BIAS_SHORT, BIAS_MISALIGNED, KEEP_SHORT, GARBAGE_EXTRAS = 1, 2, 4, 8, 16


def softcap(kind="off", value=0):
    """softcap_field: (class, 4 bytes)."""
    if kind == "off":
        return [0, 0, 0, 0, 0]
    if kind == "modest":  # 0.5 + 49.5 * raw / 65535
        return [4] + list(struct.pack("<I", round((value - 0.5) / 49.5 * 65535)))
    if kind == "huge":
        return [5] + list(struct.pack("<I", SOFTCAP_HUGE.index(value)))
    if kind == "special":
        return [6] + list(struct.pack("<I", SOFTCAP_SPECIAL.index(value)))
    if kind == "bits":
        return [7] + list(struct.pack("<f", value))
    raise ValueError(kind)


def extent(v):
    """extent_field: -8..39 as v + 8 (b % 48 - 8), or an extreme."""
    if v in EXTENT_SPECIAL:
        return EXTENT_SPECIAL[v]
    if v == -1:
        return 252
    if v == 0:
        return 253
    assert -8 <= v <= 39
    return v + 8


def window(w):
    """(left, right[, enabled byte]): the class byte's low bits nonzero enable it."""
    if w is None:
        return [0, 0, 0]
    cls = w[2] if len(w) > 2 else 1
    return [cls, extent(w[0]), extent(w[1])]


def bsize(v):
    """broadcast_field selector: 0, 1, "full", or ("bad", i) for full + 1, -1, 2 or 3,
    INT32_MAX."""
    if v in (0, 1):
        return v
    if v == "full":
        return 2
    return 3 | (v[1] << 2)


OPERAND_STRIDES = {"packed": 0, "padded": 4, "partial": 5, "overlap": 6, "overlap1": 6 | 8,
                   "negative-seq": 7, "negative-head": 7 | 8, "negative-batch": 7 | 16}


def operand(op):
    """(class, batch, heads, strides): op = (batch, heads, strides, values mode)."""
    if op is None:
        return [0, 0, 0, 0]
    batch, heads, strides, values = op
    return [1 | (values << 1), bsize(batch), bsize(heads), OPERAND_STRIDES[strides]]


def request(flags=0, batch=1, heads=2, hkv=0, sq=7, sk=7, d=8, dv=0, mask=NONE, algo=AUTO,
            dtype_bad=False, scl=None, layout="bhsd", raw_strides=None, value_mode=0,
            specials=0, seed=1, tuning=None, dtype="f32", cap=None, win=None, alibi=None,
            bias=None, keep=None, pad=None, varlen=None, drop=None, extra=0, combo=None,
            kernel=None, dropout=None, backward=0, kv=None):
    """combo: an index into fuzz_forward.c's device_combos, whose storage, mask, head
    dims and features force_combo then imposes over the fields given here; kernel
    (with combo): an index into its kernel_shapes (1 gpu odd, 2 cpu narrow).
    dropout: (p, seed, offset) with p a probability in [0, 0.95], ("special", i)
    or ("bits", float) (see dropout_field); backward: the backward byte
    (BACKWARD | BACKWARD_DBIAS | fault << 2); kv: the KV-cache fields (kvcache()), which
    make the request a KV-cache one (tests/fuzz_kvcache.c)."""
    if combo is not None:
        extra |= (combo + 1) << 5
    b = [flags, size(batch, 3), size(heads, 3), heads_kv(hkv), size(sq, 40), size(sk, 40)]
    b += dim(d) + dim(dv, zero_ok=True)
    b += [enum(mask, 3), enum(algo, 3), 255 if dtype_bad else 0]
    b += scl or scale()
    b += [LAYOUT[layout]]
    if layout == "raw":
        b += [x & 0xFF for x in raw_strides]  # 5 tensors x (batch/4, head/2, seq)
    b += [value_mode, specials] + list(struct.pack("<I", seed))
    # The appended fields, only when one is used: earlier seeds stay as they were.
    features = [DTYPES[dtype]] + (softcap(*cap) if cap else softcap()) + window(win)
    features += [0 if alibi is None else 8 | alibi]
    features += operand(bias) + operand(keep)
    features += [0 if pad is None else 8 | pad]
    features += [0, 0] if varlen is None else [4 | varlen[0], varlen[1]]
    features += [0 if drop is None else 0xC0 | DROP[drop], extra]
    if kernel:
        assert combo is not None, "a kernel shape needs a combination"
    if kernel or dropout or backward or kv:
        features += [kernel or 0]
    if dropout or backward or kv:
        p, dseed, offset = dropout or (0.0, 0, 0)
        if isinstance(p, tuple):
            kind, value = p
            cls, raw = (4, value) if kind == "special" else (
                5, struct.unpack("<I", struct.pack("<f", value))[0])
        else:
            cls, raw = (1, round(p / 0.95 * 65535)) if p else (0, 0)
        features += [cls] + list(struct.pack("<IQQ", raw, dseed, offset)) + [backward]
    if kv:
        features += [1] + kv
    assert tuning is None or not any(features), "a tuning string leaves no room for features"
    if any(features):
        b += features
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
    "bad-head-dim": request(0, d="bad513"),
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

# The features. Valid requests that run on the device are each one of
# fuzz_forward.c's device_combos (storage, mask, features, head dims, with
# LSE), so that the corpus builds few kernels; the others go through
# attn_check and attn_reference_host alone. Merged ones, and three-kernel
# ones on the device call, have one of its launch_shapes (rows, heads,
# batch): (9, 2, 1), (9, 2, 2), (17, 2, 2), or with varlen 18 packed rows
# of 2 heads.
ALL = dict(win=(6, 2), cap=("modest", 8.0), alibi=0, bias=("full", 1, "packed", 0),
           keep=(1, "full", "packed", 0), pad=3, varlen=(0, 0))
SEEDS.update({
    # f16 and bf16 storage, merged, on both calls.
    "f16-device-merge": request(LSE_DEVICE | MERGE, batch=2, heads=2, sq=17, sk=9, d=8, dv=8,
                                dtype="f16"),
    "bf16-tl-padded-merge": request(LSE_DEVICE | MERGE, heads=2, sq=9, sk=20, d=3, dv=16,
                                    mask=TOP_LEFT, dtype="bf16", layout="padded"),
    "bf16-tl-three-probs": request(WANT_LSE | WANT_PROBS, heads=2, sq=9, sk=11, d=3, dv=16,
                                   mask=TOP_LEFT, algo=THREE_KERNEL, dtype="bf16"),
    "f16-large-values": request(WANT_LSE, sq=7, sk=7, d=8, dv=8, dtype="f16", value_mode=3),
    # Softcap and a sliding window (f16, bottom-right).
    "softcap-window": request(LSE_DEVICE | MERGE, batch=2, heads=2, sq=17, sk=33, d=8, dv=8,
                              mask=BOTTOM_RIGHT, dtype="f16", cap=("modest", 5.0), win=(4, 0)),
    "softcap-window-three": request(WANT_LSE | WANT_PROBS, heads=2, sq=20, sk=9, d=8, dv=8,
                                    mask=BOTTOM_RIGHT, dtype="f16", cap=("modest", 2.0),
                                    win=(-1, 3), algo=THREE_KERNEL),
    "softcap-huge": request(LSE_DEVICE, sq=9, sk=9, d=8, dv=8, mask=BOTTOM_RIGHT, dtype="f16",
                            cap=("huge", 1e30), win=(-1, -1)),
    "softcap-max": request(WANT_LSE, sq=9, sk=9, d=8, dv=8, mask=BOTTOM_RIGHT, dtype="f16",
                           cap=("huge", "FLT_MAX"), win=(0, 0, 0x81)),
    "softcap-denormal": request(WANT_LSE, sq=9, sk=9, d=8, dv=8, mask=BOTTOM_RIGHT, dtype="f16",
                                cap=("special", "denormal"), win=(2, 2)),
    "softcap-minus-zero": request(WANT_LSE, sq=9, sk=9, d=8, mask=BOTTOM_RIGHT,
                                  cap=("special", -0.0)),
    "window-sq-gt-sk": request(WANT_LSE, sq=40, sk=7, d=16, mask=NONE, cap=("modest", 30.0),
                               win=(3, 1)),
    # ALiBi, a bias and key padding (f32, top-left).
    "alibi-bias-pad": request(LSE_DEVICE | MERGE, batch=2, heads=2, sq=9, sk=17, d=16, dv=3,
                              mask=TOP_LEFT, alibi=0, bias=("full", 1, "packed", 0), pad=3,
                              extra=OPERAND_OFFSET),
    "alibi-random-bias-padded": request(LSE_DEVICE, batch=2, heads=3, sq=12, sk=7, d=16, dv=3,
                                        mask=TOP_LEFT, alibi=2, bias=(1, "full", "padded", 3),
                                        pad=0),
    "bias-rows-masked": request(LSE_DEVICE | MERGE, batch=2, heads=2, sq=9, sk=6, d=16, dv=3,
                                mask=TOP_LEFT, alibi=3, bias=("full", "full", "partial", 1),
                                pad=1, algo=THREE_KERNEL),
    "pad-empty-full": request(LSE_DEVICE, batch=3, heads=1, sq=4, sk=9, d=16, dv=3,
                              mask=TOP_LEFT, alibi=7, bias=(0, 0, "overlap1", 0), pad=2),
    # A keep-mask, varlen and a window (f16, no causal mask).
    "keep-varlen-window": request(LSE_DEVICE | MERGE, batch=3, heads=2, sq=13, sk=21, d=8, dv=8,
                                  dtype="f16", keep=(1, "full", "packed", 0), varlen=(1, 0x40),
                                  win=(-1, 3)),
    "keep-random-varlen-bshd": request(LSE_DEVICE, batch=2, heads=2, hkv=1, sq=9, sk=9, d=8,
                                       dv=8, dtype="f16", keep=("full", 1, "padded", 2),
                                       varlen=(2, 0), win=(5, 5), layout="bshd"),
    "keep-none-kept": request(LSE_DEVICE | MERGE, batch=2, heads=2, sq=9, sk=6, d=8, dv=8,
                              dtype="f16", keep=(0, 0, "packed", 3), varlen=(3, 0),
                              win=(-5, -5)),
    # Everything at once, on both storage widths and both paths.
    "all-bf16-br": request(LSE_DEVICE | MERGE, batch=3, heads=2, sq=9, sk=13, d=8, dv=8,
                           mask=BOTTOM_RIGHT, dtype="bf16", **ALL),
    "all-bf16-br-three": request(WANT_LSE | WANT_PROBS, batch=2, heads=2, sq=9, sk=13, d=8, dv=8,
                                 mask=BOTTOM_RIGHT, dtype="bf16", algo=THREE_KERNEL, **ALL),
    "all-f32-none-strided": request(LSE_DEVICE | MERGE, batch=2, heads=2, hkv=1, sq=11, sk=7,
                                    d=3, dv=16, layout="hbsd", win=(2, -1),
                                    cap=("modest", 20.0), alibi=2,
                                    bias=(1, "full", "padded", 3), keep=("full", 1, "partial", 2),
                                    pad=0, varlen=(0, 0x40), extra=OPERAND_OFFSET),
    # Valid requests that run on no device here: the reference against
    # naive_fp32.
    "reference-d512-all": request(WANT_LSE, batch=2, heads=2, sq=5, sk=6, d=512, dtype="f16",
                                  **ALL),
    "reference-d200-bias": request(WANT_LSE | WANT_PROBS, heads=3, sq=9, sk=9, d=200, dv=40,
                                   bias=(1, "full", "packed", 0), mask=TOP_LEFT),
    # Flags with values other than 1, and extra inputs nobody asked for.
    "garbage-extras": request(LSE_DEVICE, sq=9, sk=9, d=8,
                              extra=GARBAGE_EXTRAS | BIAS_MISALIGNED | KEEP_SHORT),
    "flags-nonzero": request(LSE_DEVICE, batch=2, heads=2, sq=9, sk=13, d=8, dv=8,
                             mask=BOTTOM_RIGHT, dtype="bf16", win=(6, 2, 0x83),
                             cap=("modest", 8.0), alibi=0, bias=("full", 1, "packed", 0),
                             keep=(1, "full", "packed", 0), pad=3, varlen=(0, 0)),
    # force_combo: the fields say little, the combination fills in the rest.
    "combo-softcap-window": request(DEVICE_CALL | MERGE, batch=2, heads=2, hkv=1, sq=17, sk=12,
                                    combo=2),
    "combo-alibi-bias-pad": request(DEVICE_CALL, batch=3, heads=2, sq=5, sk=33,
                                    bias=(1, "full", "overlap", 3), pad=7, combo=3),
    "combo-all-bf16": request(DEVICE_CALL | MERGE, batch=2, heads=2, sq=17, sk=9, value_mode=4,
                              keep=("full", "full", "padded", 2), varlen=(2, 0x40), combo=5),
    "combo-all-f32-bad-slope": request(DEVICE_CALL, batch=2, heads=2, alibi=5, combo=6),
    # The other fused kernel shapes (kernels/flash_gpu.cl, and the narrowest cpu one).
    "gpu-odd-all-bf16": request(DEVICE_CALL | MERGE, batch=2, heads=2, sq=9, sk=21, win=(3, 1),
                                bias=(1, "full", "padded", 1), keep=("full", 1, "packed", 0),
                                pad=3, varlen=(3, 0), combo=5, kernel=1),
    "gpu-softcap-window": request(DEVICE_CALL, batch=2, heads=2, sq=40, sk=37, win=(20, 0),
                                  cap=("modest", 3.0), combo=2, kernel=1),
    "gpu-f16-plain": request(DEVICE_CALL | MERGE, batch=2, heads=2, sq=17, sk=33, combo=0,
                             kernel=1),
    "cpu-narrow-alibi-bias": request(DEVICE_CALL, batch=3, heads=2, sq=7, sk=19, alibi=2,
                                     bias=("full", "full", "packed", 3), pad=0, combo=3,
                                     kernel=2),
    # Invalid values: each must be refused with its status.
    "bad-storage": request(0, dtype=255),
    "bad-storage-min": request(WANT_LSE | MERGE, dtype="min"),
    "bad-softcap-nan": request(0, cap=("special", "nan")),
    "bad-softcap-inf": request(0, cap=("special", "inf")),
    "bad-softcap-negative": request(DEVICE_CALL, cap=("special", -1.0)),
    "bad-bias-batch": request(DEVICE_CALL, batch=2, bias=(("bad", 0), 1, "packed", 0)),
    "bad-bias-heads": request(0, heads=3, bias=(1, ("bad", 2), "packed", 0)),
    "bad-keep-heads": request(DEVICE_CALL | MERGE, heads=2, keep=(1, ("bad", 1), "packed", 0)),
    "bad-keep-batch-max": request(0, batch=2, keep=(("bad", 3), 1, "packed", 0)),
    "bad-bias-stride": request(DEVICE_CALL, bias=(1, 1, "negative-seq", 0)),
    "bad-keep-stride": request(0, heads=2, keep=(1, "full", "negative-head", 0)),
    "bad-key-length-negative": request(LSE_DEVICE, batch=2, pad=4),
    "bad-key-length-long": request(LSE_DEVICE, batch=3, pad=5),
    "bad-key-length-extreme": request(0, batch=2, pad=6, seed=3),
    "bad-slope-nan": request(LSE_DEVICE, heads=3, alibi=5),
    "bad-slope-inf": request(0, heads=2, alibi=6, seed=2),
    "bad-cu-start": request(LSE_DEVICE, batch=2, varlen=(0, 4)),
    "bad-cu-falling": request(0, batch=3, varlen=(1, 5 | 8)),
    "bad-cu-too-long": request(LSE_DEVICE, batch=2, varlen=(0, 6)),
    "bad-cu-past-total": request(0, batch=2, varlen=(1, 7 | 8)),
    "bad-total-q-zero": request(LSE_DEVICE | MERGE, batch=2, varlen=(0, 0x50)),
    "bad-total-k-negative": request(0, batch=2, varlen=(0, 0x60)),
    # Inputs params ask for that are missing (ATTN_ERR_NULL_ARGUMENT).
    "null-bias": request(LSE_DEVICE, bias=(1, 1, "packed", 0), drop="bias"),
    "null-keep": request(DEVICE_CALL, keep=(1, 1, "packed", 0), drop="keep"),
    "null-key-lengths": request(LSE_DEVICE, pad=0, drop="key_lengths"),
    "null-slopes": request(0, alibi=0, drop="slopes"),
    "null-cu-q": request(DEVICE_CALL, batch=2, varlen=(0, 0), drop="cu_q"),
    "null-cu-k": request(0, batch=2, varlen=(0, 0), drop="cu_k"),
    "null-extras": request(LSE_DEVICE, mask=BOTTOM_RIGHT, dtype="bf16", **ALL, drop="extras"),
    "null-q": request(LSE_DEVICE | MERGE, drop="q"),
    "plain-calls-features": request(PLAIN | LSE_DEVICE, mask=BOTTOM_RIGHT, dtype="bf16", **ALL),
    "plain-calls-valid": request(PLAIN | LSE_DEVICE | MERGE, sq=9, sk=5, d=16),
    # A missing bias and an out-of-range key length: the forward says
    # ATTN_ERR_NULL_ARGUMENT, attn_reference_host ATTN_ERR_INVALID_VALUE.
    "null-bias-bad-length": request(LSE_DEVICE, batch=2, bias=(1, 1, "packed", 0), pad=4,
                                    drop="bias"),
    # The device call's bias and keep-mask buffers.
    "device-bias-short": request(LSE_DEVICE, batch=3, heads=2, sq=9, sk=17, d=16, dv=3,
                                 mask=TOP_LEFT, alibi=0, bias=("full", 1, "packed", 0), pad=3,
                                 extra=BIAS_SHORT),
    "device-bias-misaligned": request(LSE_DEVICE, batch=3, heads=2, sq=9, sk=17, d=16, dv=3,
                                      mask=TOP_LEFT, alibi=0, bias=("full", 1, "packed", 0),
                                      pad=3, extra=BIAS_MISALIGNED | OPERAND_OFFSET),
    "device-keep-short": request(LSE_DEVICE, batch=3, heads=2, sq=13, sk=21, d=8, dv=8,
                                 dtype="f16", keep=(1, "full", "packed", 0), varlen=(1, 0x40),
                                 win=(-1, 3), extra=KEEP_SHORT | OPERAND_OFFSET),
    "device-f16-misaligned": request(LSE_DEVICE | DEVICE_MISALIGNED, sq=5, sk=6, d=8, dv=8,
                                     dtype="f16"),
    "device-bf16-short": request(LSE_DEVICE | DEVICE_SHORT, sq=5, sk=6, d=3, dv=16,
                                 mask=TOP_LEFT, dtype="bf16"),
})

# Library bugs found by the fuzzer, reported and not fixed yet: fuzz_forward.c's
# known_bug() names each, and runs its request without holding the values to the
# reference until the entry is removed. None now.
SEEDS_KNOWN = {}

SEEDS.update({
    # The first bug the fuzzer found (fixed by 45d6ab4): window extents near
    # INT32_MAX wrapped in the kernels' 32-bit diagonal +- extent, and rows past
    # the first saw no key (O off by 0.999).
    "window-extent-max": request(LSE_DEVICE, sq=7, sk=7, d=8, dv=8, mask=BOTTOM_RIGHT,
                                 dtype="f16", cap=("modest", 5.0), win=(-1, "max")),
    # The left side: no causal mask and more queries than keys, so the diagonal
    # is negative.
    "window-extent-max-left": request(LSE_DEVICE | MERGE, batch=2, sq=17, sk=5, d=8, dv=8,
                                      dtype="f16", keep=(1, 1, "packed", 1),
                                      varlen=(3, 0), win=("max", "max-1")),
})

SEEDS.update({
    # Issue 8's defects 2 and 3: value_mode bits 4..5 scale Q and K so that q.k
    # reaches ~1e30 (0x20) or ~FLT_MAX (0x30), bits 6..7 give biases of
    # +-2e10 (0x40), -FLT_MAX (0x80) or -1e30 (0xC0); scales subnormal and
    # past FLT_MAX / log2(e). The fused kernels lost s - m in m * c.
    "wide-scores": request(LSE_DEVICE, sq=7, sk=9, d=1, value_mode=0x30),
    "wide-scores-decode": request(LSE_DEVICE, sq=1, sk=40, d=1, value_mode=0x30,
                                  mask=BOTTOM_RIGHT),
    "wide-scores-gpu": request(LSE_DEVICE, batch=2, heads=2, sq=9, sk=21, value_mode=0x20,
                               combo=3, kernel=1),
    "wide-bias-flt-max": request(LSE_DEVICE, batch=2, heads=2, sq=9, sk=21, value_mode=0x80,
                                 combo=3),
    "wide-bias-1e30-narrow": request(LSE_DEVICE, batch=2, heads=2, sq=9, sk=21, value_mode=0xC0,
                                     combo=3, kernel=2),
    "wide-bias-1e10-gpu": request(LSE_DEVICE, batch=2, heads=2, sq=9, sk=21, value_mode=0x40,
                                  combo=3, kernel=1),
    "scale-subnormal-wide": request(LSE_DEVICE, sq=7, sk=9, d=1, value_mode=0x30,
                                    scl=scale("bits", 1e-40)),
    "scale-huge": request(LSE_DEVICE, sq=7, sk=9, d=8, scl=scale("bits", 3e38)),
})

# Dropout, and the backward after the forward (tests/fuzz_forward.c's
# backward_call): on each path and call, with features, and its faults.
BACKWARD, BACKWARD_DBIAS = 1, 2
NO_DOUT, NO_LSE, NO_DQ = 1 << 2, 2 << 2, 3 << 2
SEEDS.update({
    "dropout-fused-device": request(LSE_DEVICE, heads=2, sq=17, sk=9, d=8,
                                    dropout=(0.3, 7, 3)),
    "dropout-three-probs": request(WANT_LSE | WANT_PROBS, heads=2, sq=9, sk=11, d=8,
                                   algo=THREE_KERNEL, dropout=(0.5, 2**64 - 1, 5)),
    "dropout-backward": request(LSE_DEVICE, heads=2, sq=17, sk=9, d=8, mask=TOP_LEFT,
                                dropout=(0.2, 11, 2**64 - 1), backward=BACKWARD),
    "dropout-backward-all-bf16": request(LSE_DEVICE, batch=2, heads=2, sq=9, sk=21,
                                         combo=5, dropout=(0.25, 3, 4),
                                         backward=BACKWARD | BACKWARD_DBIAS, **ALL),
    "dropout-backward-all-f32": request(LSE_DEVICE, batch=2, heads=2, sq=9, sk=21,
                                        combo=6, dropout=(0.6, 1, 2),
                                        backward=BACKWARD | BACKWARD_DBIAS, **ALL),
    "backward-plain": request(WANT_LSE, heads=2, sq=7, sk=7, d=8, backward=BACKWARD),
    "backward-gqa-bias-pad": request(LSE_DEVICE, batch=2, heads=2, sq=9, sk=21, combo=3,
                                     bias=("full", 1, "packed", 0), pad=3,
                                     backward=BACKWARD | BACKWARD_DBIAS),
    "backward-no-dout": request(WANT_LSE, sq=7, sk=7, d=8, backward=BACKWARD | NO_DOUT),
    "backward-no-lse": request(WANT_LSE, sq=7, sk=7, d=8, dropout=(0.1, 1, 1),
                               backward=BACKWARD | NO_LSE),
    "backward-no-dq": request(WANT_LSE, sq=7, sk=7, d=8, backward=BACKWARD | NO_DQ),
    "backward-without-lse": request(0, sq=7, sk=7, d=8, backward=BACKWARD),
    "backward-dbias-without-bias": request(WANT_LSE, sq=7, sk=7, d=8,
                                           backward=BACKWARD | BACKWARD_DBIAS),
    "backward-refused": request(WANT_LSE, heads=3, hkv=2, backward=BACKWARD),
    "backward-wide-scores": request(WANT_LSE, sq=7, sk=9, d=1, value_mode=0x30,
                                    backward=BACKWARD),
    "backward-wide-bias-flt-max": request(LSE_DEVICE, batch=2, heads=2, sq=9, sk=21,
                                          value_mode=0x80, combo=3,
                                          backward=BACKWARD | BACKWARD_DBIAS),
    "backward-scale-subnormal-wide": request(WANT_LSE, sq=7, sk=9, d=1, value_mode=0x30,
                                             scl=scale("bits", 1e-40), backward=BACKWARD),
    # scale * q.k past FLT_MAX: LSE +inf; those rows contribute nothing (attn_cl.h).
    "backward-scale-huge": request(WANT_LSE, sq=7, sk=9, d=8, scl=scale("bits", 3e38),
                                   backward=BACKWARD),
    "dropout-bad-nan": request(WANT_LSE, dropout=(("special", 0), 1, 1), backward=BACKWARD),
    "dropout-bad-one": request(WANT_LSE, dropout=(("special", 2), 1, 1), backward=BACKWARD),
    "dropout-bad-negative": request(WANT_LSE, dropout=(("special", 3), 1, 1)),
    "dropout-tiny": request(LSE_DEVICE, sq=7, sk=7, d=8, dropout=(("special", 4), 5, 6),
                            backward=BACKWARD),
    "dropout-near-one": request(LSE_DEVICE, sq=7, sk=7, d=8, dropout=(("special", 5), 5, 6),
                                backward=BACKWARD),
})


# tests/fuzz_kvcache.c's fields: page sizes by page_sizes[] index, faults by enum kv_fault.
KV_PAGES = {0: 0, 1: 2, 2: 3, 3: 4, 5: 5, 16: 6, 7: 7}
KV_DTYPE = {"same": 0, "f32": 1, "f16": 2, "bf16": 3, "int8": 4, "bad": 5}
KV_FAULT = ["none", "length-negative", "length-over", "table-negative", "table-over",
            "shared-block", "slot-over", "k-scale-nan", "v-scale-negative", "k-new-inf",
            "no-table", "no-scales", "scale-on-o", "scale-on-cache"]


def kvcache(page=0, head_major=False, batch_idx=False, append=True, device=True, lse=True,
            snew=1, room=10, lengths=0, rotary=0, rotary_pick=0, kv="same", fault="none",
            dims=0, shape=0):
    """The KV-cache fields: room is the contiguous capacity - 1 (or max_pages - 1); lengths
    0 random, 1 full, 2 empty, 3 alternating; rotary 0 none, 1 halves, 2 interleaved,
    3 bad; dims an index into kv_dims ((8, 8), (16, 8), (4, 4)); shape an index into
    kv_shapes (0 the table's, 1 the gpu shape in one key range, 2 in three)."""
    layout = KV_PAGES[page] | head_major << 3 | batch_idx << 4 | append << 5 | device << 6
    layout |= lse << 7
    return [layout, snew, room, lengths, rotary | rotary_pick << 2, KV_DTYPE[kv],
            KV_FAULT.index(fault) | shape << 4, dims]


SEEDS.update({
    # KV-cache requests (tests/fuzz_kvcache.c): each layout, append, rotary, storage type,
    # and bad input whose cache must stay as it was.
    "kv-contiguous-device": request(batch=2, heads=2, hkv=1, mask=BOTTOM_RIGHT,
                                    kv=kvcache(room=10, snew=1)),
    "kv-batch-idx-host-f16": request(batch=3, heads=2, dtype="f16", mask=BOTTOM_RIGHT,
                                     kv=kvcache(batch_idx=True, device=False, snew=4,
                                                lengths=1, room=12)),
    "kv-paged1-int8-halves": request(batch=2, heads=2, hkv=2, mask=BOTTOM_RIGHT,
                                     kv=kvcache(page=1, snew=3, room=5, rotary=1,
                                                rotary_pick=0x1B, kv="int8")),
    "kv-paged3-f16-interleaved-host": request(batch=2, heads=3, hkv=1, mask=BOTTOM_RIGHT,
                                              kv=kvcache(page=3, head_major=True, snew=2,
                                                         room=3, lengths=3, rotary=2,
                                                         rotary_pick=1, kv="f16",
                                                         device=False, dims=1)),
    "kv-paged16-bf16-no-append": request(batch=1, heads=2, mask=NONE, dtype="bf16",
                                         kv=kvcache(page=16, append=False, snew=2, room=1,
                                                    lengths=1, kv="bf16", dims=2)),
    "kv-paged5-int8-device-softcap": request(batch=3, heads=2, mask=BOTTOM_RIGHT,
                                             cap=("modest", 30.0), alibi=1,
                                             kv=kvcache(page=5, snew=5, room=2, kv="int8")),
    "kv-snew-zero": request(batch=2, kv=kvcache(page=7, snew=0)),
    "kv-bad-rotary": request(batch=2, kv=kvcache(rotary=3, rotary_pick=1)),
    "kv-bad-dtype": request(batch=2, kv=kvcache(kv="bad")),
    "kv-table-negative": request(batch=2, kv=kvcache(page=2, room=3, fault="table-negative")),
    "kv-table-over": request(batch=3, kv=kvcache(page=3, room=2, fault="table-over",
                                                 device=False)),
    "kv-shared-page": request(batch=2, kv=kvcache(page=2, room=3, fault="shared-block")),
    "kv-length-over": request(batch=2, kv=kvcache(room=7, lengths=1, fault="length-over")),
    "kv-slot-over": request(batch=2, kv=kvcache(batch_idx=True, fault="slot-over",
                                                kv="int8")),
    "kv-no-table": request(batch=2, kv=kvcache(page=1, fault="no-table")),
    "kv-int8-k-scale-nan-host": request(batch=2, kv=kvcache(lengths=1, kv="int8",
                                                            fault="k-scale-nan", device=False)),
    "kv-int8-k-new-inf-device": request(batch=2, kv=kvcache(lengths=1, kv="int8",
                                                            fault="k-new-inf")),
    "kv-int8-no-scales": request(batch=2, kv=kvcache(kv="int8", fault="no-scales")),
    "kv-int8-scale-on-o": request(batch=2, kv=kvcache(kv="int8", fault="scale-on-o",
                                                      append=False)),
    "kv-int8-scale-on-cache": request(batch=2, kv=kvcache(page=3, room=3, kv="int8",
                                                          fault="scale-on-cache")),
    # The decode kernels' gpu shape (kernels/flash_decode_gpu.cl).
    "kv-gpu-paged3-int8-rotary": request(batch=2, heads=2, hkv=1, mask=BOTTOM_RIGHT,
                                         kv=kvcache(page=3, snew=3, room=4, rotary=2,
                                                    rotary_pick=5, kv="int8", shape=1)),
    "kv-gpu-split-f16-host": request(batch=3, heads=3, hkv=1, dtype="f16", mask=BOTTOM_RIGHT,
                                     kv=kvcache(room=20, snew=2, lengths=3, device=False,
                                                dims=1, shape=2)),
    "kv-gpu-split-softcap-no-append": request(batch=2, heads=2, mask=NONE,
                                              cap=("modest", 30.0), alibi=1,
                                              kv=kvcache(page=16, append=False, room=1,
                                                         lengths=1, shape=2)),
    "kv-gpu-table-over": request(batch=2, kv=kvcache(page=2, room=3, fault="table-over",
                                                     shape=1)),
})


def main():
    os.makedirs(OUT, exist_ok=True)
    for prefix, seeds in (("seed-", SEEDS), ("known-", SEEDS_KNOWN)):
        for name, data in seeds.items():
            with open(os.path.join(OUT, prefix + name), "wb") as f:
                f.write(data)
    # A known-* seed whose bug is fixed moves to SEEDS under a new name.
    for name in os.listdir(OUT):
        if name.startswith("known-") and name[len("known-"):] not in SEEDS_KNOWN:
            os.remove(os.path.join(OUT, name))
    print(f"{len(SEEDS)} seeds and {len(SEEDS_KNOWN)} known-bug reproducers in {OUT}")


if __name__ == "__main__":
    main()
