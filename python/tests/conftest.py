"""Shared helpers: a NumPy attention in float64 and the comparison bounds."""

import numpy as np
import pytest

import attn_cl

# |device - reference| bounds per storage type, for inputs of order 1: fp32
# accumulation leaves ~1e-6; 16-bit outputs are rounded to their last bit.
TOLERANCE = {"float32": 2e-5, "float16": 2e-3, "bfloat16": 1.6e-2}


@pytest.fixture(scope="session")
def context():
    if not attn_cl.devices():
        pytest.skip("no OpenCL device")
    with attn_cl.Context() as ctx:
        yield ctx


def random(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(np.float32).astype(dtype)


def numpy_attention(q, k, v, *, causal=None, scale=None, window=None, softcap=None,
                    alibi_slopes=None, bias=None, mask=None, key_lengths=None,
                    return_lse=False):
    """The textbook formula in float64, [B, H, S, D] only; masked rows give 0 and lse -inf."""
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    batch, heads, seq_q, dim = q.shape
    seq_k = k.shape[2]
    group = heads // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    scale = 1.0 / np.sqrt(dim) if scale is None else scale
    s = np.einsum("bhid,bhjd->bhij", q, k) * scale
    i = np.arange(seq_q)[:, None]
    j = np.arange(seq_k)[None, :]
    diag = i if causal == "top-left" else i + seq_k - seq_q
    if softcap:
        s = softcap * np.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s - np.asarray(alibi_slopes, np.float64)[None, :, None, None] * np.abs(j - diag)
    if bias is not None:
        s = s + np.asarray(bias, np.float64)
    keep = np.ones((batch, heads, seq_q, seq_k), bool)
    if causal is not None:
        keep &= j <= diag
    if window is not None:
        left, right = window
        if left is not None and left >= 0:
            keep &= j >= diag - left
        if right is not None and right >= 0:
            keep &= j <= diag + right
    if key_lengths is not None:
        keep &= j[None, None] < np.asarray(key_lengths)[:, None, None, None]
    if mask is not None:
        keep &= np.asarray(mask, bool)
    s = np.where(keep, s, -np.inf)
    top = s.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    p = np.where(keep, np.exp(s - top), 0.0)
    total = p.sum(axis=-1, keepdims=True)
    o = np.einsum("bhij,bhjd->bhid", p / np.where(total > 0, total, 1.0), v)
    lse = np.where(total[..., 0] > 0, np.log(np.where(total[..., 0] > 0, total[..., 0], 1.0))
                   + top[..., 0], -np.inf)
    return (o, lse) if return_lse else o


def assert_close(actual, expected, dtype_name="float32"):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    bound = TOLERANCE[dtype_name]
    error = np.abs(actual - expected)
    error = np.where(np.isinf(expected) & (actual == expected), 0.0, error)
    assert np.all(error <= bound * (1 + np.abs(expected))), \
        f"max error {np.nanmax(error):.3g} over bound {bound:.3g}"
