"""The NumPy API against the library's double-precision reference and a NumPy formula."""

import threading

import numpy as np
import pytest

import attn_cl
from attn_cl import core

from conftest import assert_close, numpy_attention, random

DTYPES = [np.float32, np.float16, attn_cl.bfloat16]


def dtype_name(dtype):
    return np.dtype(dtype).name


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("layout", ["bhsd", "bshd"])
def test_matches_reference_and_numpy(context, dtype, layout):
    rng = np.random.default_rng(1)
    # Shapes that fill no tile: odd lengths, Sq != Sk, GQA, Dv != D.
    q = random(rng, (2, 4, 37, 40), dtype)
    k = random(rng, (2, 2, 53, 40), dtype)
    v = random(rng, (2, 2, 53, 24), dtype)
    if layout == "bshd":
        q, k, v = (np.ascontiguousarray(t.transpose(0, 2, 1, 3)) for t in (q, k, v))
    o, lse = attn_cl.attention(q, k, v, causal="bottom-right", layout=layout, return_lse=True,
                               context=context)
    ref_o, ref_lse = attn_cl.reference(q, k, v, causal="bottom-right", layout=layout,
                                       return_lse=True)
    assert o.dtype == q.dtype and o.shape == q.shape[:3] + (24,)
    assert_close(o, ref_o, dtype_name(dtype))
    assert_close(lse, ref_lse)
    if layout == "bshd":
        q, k, v, o = (t.transpose(0, 2, 1, 3) for t in (q, k, v, o))
    np_o, np_lse = numpy_attention(q, k, v, causal="bottom-right", return_lse=True)
    assert_close(o, np_o, dtype_name(dtype))
    assert_close(lse, np_lse, "float16" if dtype != np.float32 else "float32")


FEATURES = {
    "none": {},
    "top-left": {"causal": "top-left"},
    "scale": {"scale": 0.3},
    "window": {"window": (5, 2)},
    "window-causal": {"window": (7, None), "causal": "bottom-right"},
    "softcap": {"softcap": 2.5},
    "alibi": {"alibi_slopes": np.array([0.5, 0.25, 0.125, 0.0625], np.float32)},
    "bias": {"bias": "full"},
    "bias-broadcast": {"bias": "row"},
    "mask": {"mask": "full"},
    "mask-broadcast": {"mask": "head"},
    "key-lengths": {"key_lengths": np.array([10, 23])},
}


@pytest.mark.parametrize("algo", ["fused", "three-kernel"])
@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_features(context, feature, algo):
    rng = np.random.default_rng(2)
    batch, heads, seq_q, seq_k, dim = 2, 4, 19, 23, 16
    q = random(rng, (batch, heads, seq_q, dim))
    k = random(rng, (batch, 2, seq_k, dim))
    v = random(rng, (batch, 2, seq_k, dim))
    options = dict(FEATURES[feature])
    if options.get("bias") == "full":
        options["bias"] = random(rng, (batch, heads, seq_q, seq_k))
    elif options.get("bias") == "row":
        options["bias"] = random(rng, (seq_k,))  # one row for every query, head and batch
    if options.get("mask") == "full":
        options["mask"] = rng.random((batch, heads, seq_q, seq_k)) < 0.7
    elif options.get("mask") == "head":
        options["mask"] = rng.random((batch, 1, seq_q, seq_k)) < 0.7
    o, lse = attn_cl.attention(q, k, v, algo=algo, return_lse=True, context=context, **options)
    ref_o, ref_lse = attn_cl.reference(q, k, v, return_lse=True, **options)
    assert_close(o, ref_o)
    assert_close(lse, ref_lse)
    np_o, np_lse = numpy_attention(q, k, v, return_lse=True, **options)
    assert_close(o, np_o)
    assert_close(lse, np_lse)


def test_probabilities(context):
    rng = np.random.default_rng(3)
    q, k, v = (random(rng, (1, 2, 9, 8)) for _ in range(3))
    o, probs = attn_cl.attention(q, k, v, causal="top-left", return_probs=True, context=context)
    assert probs.shape == (1, 2, 9, 9)
    assert_close(probs.sum(-1), np.ones((1, 2, 9)))
    assert np.all(np.triu(probs[0, 0], 1) == 0)
    assert_close(o, np.einsum("bhij,bhjd->bhid", probs.astype(np.float64), v))
    # All the probabilities come from the three-kernel path; a quarter of them
    # from the fused path on CPUs, the three-kernel path on GPUs (docs/api.md).
    assert attn_cl.check(q, k, v, return_probs=True, context=context) == "three-kernel"
    expected = "three-kernel" if context.device.is_gpu else "fused"
    assert attn_cl.check(q, k, v, return_probs=True, probs_heads=(1, 2), probs_rows=(5, None),
                         context=context) == expected
    for algo in ("fused", "three-kernel"):
        if algo == "fused" and context.device.is_gpu:
            continue
        o2, probs2 = attn_cl.attention(q, k, v, causal="top-left", return_probs=True, algo=algo,
                                       context=context)
        assert_close(probs2, probs)
        assert_close(o2, o)


def test_varlen(context):
    rng = np.random.default_rng(4)
    lengths_q, lengths_k = [5, 1, 12], [7, 3, 12]
    cu_q = np.concatenate([[0], np.cumsum(lengths_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lengths_k)]).astype(np.int32)
    q = random(rng, (cu_q[-1], 4, 16))  # [total, heads, dim]
    k = random(rng, (cu_k[-1], 2, 16))
    v = random(rng, (cu_k[-1], 2, 16))
    o, lse = attn_cl.attention(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, layout="bshd",
                               causal="bottom-right", return_lse=True, context=context)
    assert o.shape == q.shape and lse.shape == (4, cu_q[-1])
    for b in range(3):
        rows, keys = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        one = [t[None].transpose(0, 2, 1, 3) for t in (q[rows], k[keys], v[keys])]
        expect, expect_lse = numpy_attention(*one, causal="bottom-right", return_lse=True)
        assert_close(o[rows], expect[0].transpose(1, 0, 2))
        assert_close(lse[:, rows], expect_lse[0])


def test_strided_views_are_not_copied(context):
    rng = np.random.default_rng(5)
    # Every other head, rows with gaps, a BSHD view of a BHSD buffer: last dim contiguous.
    base = random(rng, (2, 8, 30, 48))
    q = base[:, ::2, 3:20, :32]
    k = base.transpose(0, 2, 1, 3)[:, :25, 1:5, 8:40]
    v = base[:, 4:8, 5:30, 16:48]
    k_bhsd = k.transpose(0, 2, 1, 3)
    assert not any(t.flags.c_contiguous for t in (q, k_bhsd, v))
    request = core._request(q, k_bhsd, v)
    assert request.keep[0] is q and request.keep[1] is k_bhsd and request.keep[2] is v
    assert (request.tensors.q, request.tensors.k, request.tensors.v) == \
        (q.ctypes.data, k_bhsd.ctypes.data, v.ctypes.data)
    # The same view read as BSHD: also in place.
    request = core._request(q.transpose(0, 2, 1, 3), k, v.transpose(0, 2, 1, 3), layout="bshd")
    assert request.keep[1] is k
    o = attn_cl.attention(q, k_bhsd, v, context=context)
    assert_close(o, numpy_attention(q, k_bhsd, v))
    # A caller's strided output is written in place, its gaps untouched.
    out_base = np.full((2, 4, 17, 64), 7.0, np.float32)
    out = out_base[..., 10:42]
    result = attn_cl.attention(q, k_bhsd, v, out=out, context=context)
    assert result is out
    assert_close(out, numpy_attention(q, k_bhsd, v))
    assert np.all(out_base[..., :10] == 7.0) and np.all(out_base[..., 42:] == 7.0)


def test_plan_reuse(context):
    rng = np.random.default_rng(6)
    q, k, v = (random(rng, (1, 2, 33, 16)) for _ in range(3))
    plan = context.plan(q, k, v, causal="top-left", return_lse=True)
    assert plan.algo in ("fused", "three-kernel")
    for step in range(3):
        q2, k2, v2 = (random(rng, (1, 2, 33, 16)) for _ in range(3))
        o, lse = plan(q2, k2, v2)
        ref_o, ref_lse = numpy_attention(q2, k2, v2, causal="top-left", return_lse=True)
        assert_close(o, ref_o)
        assert_close(lse, ref_lse)
    with pytest.raises(ValueError, match="do not match the plan"):
        plan(q[:, :, :32], k, v)
    with pytest.raises(TypeError, match="fixed when the plan is made"):
        plan(q, k, v, causal=None)
    plan.close()


def test_calls_reuse_cached_plans(context):
    rng = np.random.default_rng(7)
    q, k, v = (random(rng, (1, 1, 8, 16)) for _ in range(3))
    context.clear_plans()
    attn_cl.attention(q, k, v, context=context)
    attn_cl.attention(q * 2, k, v, context=context)
    assert len(context._plans) == 1
    attn_cl.attention(q, k, v, causal="top-left", context=context)
    assert len(context._plans) == 2


def test_merge_of_two_halves(context):
    rng = np.random.default_rng(8)
    q = random(rng, (1, 2, 6, 8))
    k, v = random(rng, (1, 2, 20, 8)), random(rng, (1, 2, 20, 8))
    o_a, lse_a = attn_cl.attention(q, k[:, :, :9], v[:, :, :9], return_lse=True, context=context)
    o_b, lse_b = attn_cl.attention(q, k[:, :, 9:], v[:, :, 9:], return_lse=True, context=context)
    o, lse = attn_cl.merge(o_a, lse_a, o_b, lse_b)
    expect, expect_lse = numpy_attention(q, k, v, return_lse=True)
    assert_close(o, expect)
    assert_close(lse, expect_lse)


def test_threads_share_a_context(context):
    rng = np.random.default_rng(9)
    inputs = [[random(rng, (1, 4, 64, 32)) for _ in range(3)] for _ in range(2)]
    expected = [numpy_attention(*qkv) for qkv in inputs]
    failures = []

    def work(index):
        try:
            for _ in range(5):
                assert_close(attn_cl.attention(*inputs[index], context=context), expected[index])
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures


def test_devices_and_context():
    listed = attn_cl.devices()
    assert listed, "no OpenCL device"
    with attn_cl.Context(device=listed[0].spec) as ctx:
        assert ctx.device.device_name == listed[0].device_name
    with attn_cl.Context(device=0) as ctx:
        assert ctx.device.spec == listed[0].spec
    with pytest.raises(attn_cl.AttnError) as error:
        attn_cl.Context(device="99:0")
    assert error.value.status_name in ("ATTN_ERR_INVALID_DEVICE_SPEC", "ATTN_ERR_NO_DEVICE")
    with pytest.raises(ValueError, match="platform:device"):
        attn_cl.Context(device="first")
    closed = attn_cl.Context()
    ones = [np.ones((1, 1, 2, 4), np.float32) for _ in range(3)]
    attn_cl.attention(*ones, context=closed)  # a signature the context remembers
    plan = closed.plan(*ones)
    closed.close()
    with pytest.raises(ValueError, match="closed"):
        attn_cl.attention(*ones, context=closed)
    with pytest.raises(ValueError, match="closed"):
        plan(*ones)


# ---- Bad input: clear exceptions, outputs untouched ----------------------------


def qkv(shape=(1, 2, 8, 16), dtype=np.float32):
    rng = np.random.default_rng(10)
    return [random(rng, shape, dtype) for _ in range(3)]


def test_bad_shapes():
    q, k, v = qkv()
    with pytest.raises(ValueError, match=r"must be 4-D \[batch, heads, seq, dim\]"):
        attn_cl.attention(q[0], k, v)
    with pytest.raises(ValueError, match="same head dimension"):
        attn_cl.attention(q, k[..., :8], v)
    with pytest.raises(ValueError, match="same sequence length"):
        attn_cl.attention(q, k, v[:, :, :5])
    with pytest.raises(ValueError, match="must divide"):
        attn_cl.attention(np.concatenate([q, q[:, :1]], 1), k, v)
    with pytest.raises(ValueError, match="does not broadcast"):
        attn_cl.attention(q, k, v, bias=np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="key_lengths must have 1 entries"):
        attn_cl.attention(q, k, v, key_lengths=[1, 2])
    with pytest.raises(ValueError, match="layout"):
        attn_cl.attention(q, k, v, layout="sbhd")
    with pytest.raises(ValueError, match="causal must be"):
        attn_cl.attention(q, k, v, causal=True)
    with pytest.raises(ValueError, match="scale=0"):
        attn_cl.attention(q, k, v, scale=0)
    with pytest.raises(attn_cl.AttnError, match="dropout_p"):
        attn_cl.attention(q, k, v, dropout_p=1.0)
    with pytest.raises(ValueError, match="dropout_seed"):
        attn_cl.attention(q, k, v, dropout_p=0.1, dropout_seed=-1)
    with pytest.raises(ValueError, match="dropout_offset"):
        attn_cl.attention(q, k, v, dropout_p=0.1, dropout_offset=1 << 64)


@pytest.mark.parametrize("algo", ["fused", "three-kernel"])
def test_dropout(context, algo):
    rng = np.random.default_rng(4)
    q = random(rng, (2, 4, 37, 40), np.float32)
    k = random(rng, (2, 2, 53, 40), np.float32)
    v = random(rng, (2, 2, 53, 24), np.float32)
    options = dict(causal="bottom-right", dropout_p=0.3, dropout_seed=2**63 + 5,
                   dropout_offset=17, return_lse=True)
    o, lse = attn_cl.attention(q, k, v, algo=algo, context=context, **options)
    ref_o, ref_lse = attn_cl.reference(q, k, v, **options)
    assert_close(o, ref_o)
    assert_close(lse, ref_lse)
    # The same seed and offset: the same bits (through the remembered call too).
    again, _ = attn_cl.attention(q, k, v, algo=algo, context=context, **options)
    assert np.array_equal(o, again)
    # LSE is the un-dropped softmax's; another offset draws another mask.
    plain_o, plain_lse = attn_cl.attention(q, k, v, causal="bottom-right", return_lse=True,
                                           algo=algo, context=context)
    np.testing.assert_array_equal(lse, plain_lse)
    other, _ = attn_cl.attention(q, k, v, algo=algo, context=context,
                                 **dict(options, dropout_offset=18))
    assert not np.allclose(o, other)
    if algo == "three-kernel":
        # The probabilities are the dropped weights scaled by 1/(1-p), and
        # the mask is the reference's.
        _, probs = attn_cl.attention(q, k, v, algo=algo, context=context, return_probs=True,
                                     **dict(options, return_lse=False))
        _, ref_probs = attn_cl.reference(q, k, v, return_probs=True,
                                         **dict(options, return_lse=False))
        np.testing.assert_array_equal(probs == 0, ref_probs == 0)
        assert_close(probs, ref_probs)
        _, plain_probs = attn_cl.reference(q, k, v, causal="bottom-right", return_probs=True)
        kept = probs != 0
        assert 0.6 < kept.sum() / (plain_probs != 0).sum() < 0.8  # 1 - p = 0.7
        np.testing.assert_allclose(probs[kept], plain_probs[kept] / 0.7, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("algo", ["fused", "three-kernel"])
def test_probability_subsets(context, algo):
    """probs_heads / probs_rows: exactly the wanted slice of every probability."""
    rng = np.random.default_rng(7)
    q = random(rng, (2, 4, 23, 16), np.float32)
    k = random(rng, (2, 2, 31, 16), np.float32)
    v = random(rng, (2, 2, 31, 16), np.float32)
    o, full = attn_cl.attention(q, k, v, causal="bottom-right", return_probs=True, algo=algo,
                                context=context)
    _, ref = attn_cl.reference(q, k, v, causal="bottom-right", return_probs=True)
    assert_close(full, ref)
    for heads, rows in (((1, 3), (-5, None)), ((-1, None), (0, 1)), (None, (4, 9)),
                        ((2, 3), None)):
        o_sub, sub = attn_cl.attention(q, k, v, causal="bottom-right", return_probs=True,
                                       probs_heads=heads, probs_rows=rows, algo=algo,
                                       context=context)
        h = slice(*heads) if heads else slice(None)
        r = slice(*rows) if rows else slice(None)
        assert sub.shape == full[:, h, r].shape
        np.testing.assert_array_equal(sub, full[:, h, r])
        np.testing.assert_array_equal(o_sub, o)
        # The remembered call keeps the subset.
        _, again = attn_cl.attention(q, k, v, causal="bottom-right", return_probs=True,
                                     probs_heads=heads, probs_rows=rows, algo=algo,
                                     context=context)
        np.testing.assert_array_equal(again, sub)
    _, ref_sub = attn_cl.reference(q, k, v, causal="bottom-right", return_probs=True,
                                   probs_heads=(1, 2), probs_rows=(-3, None))
    np.testing.assert_array_equal(ref_sub, ref[:, 1:2, -3:])
    for bad in (dict(probs_heads=(3, 3)), dict(probs_heads=(0, 9, 1)),
                dict(probs_rows=(30, 40)), dict(probs_rows=("a", None)),
                dict(probs_heads=(0, 1), return_probs=False)):
        options = dict(dict(return_probs=True), **bad)
        with pytest.raises(ValueError):
            attn_cl.attention(q, k, v, context=context, algo=algo, **options)


def test_bad_dtypes():
    q, k, v = qkv()
    with pytest.raises(TypeError, match="dtype float64"):
        attn_cl.attention(q.astype(np.float64), k, v)
    with pytest.raises(TypeError, match="share a dtype"):
        attn_cl.attention(q, k.astype(np.float16), v)
    with pytest.raises(TypeError, match="boolean"):
        attn_cl.attention(q, k, v, mask=np.ones((8, 8), np.float32))


def test_non_contiguous_last_dimension():
    q, k, v = qkv((1, 2, 8, 32))
    with pytest.raises(ValueError, match="last dimension is not contiguous"):
        attn_cl.attention(q[..., ::2], k[..., :16], v)
    with pytest.raises(ValueError, match="last dimension is not contiguous"):
        attn_cl.attention(q, k, v.transpose(0, 1, 3, 2))


def test_library_errors_carry_status_and_message(context):
    q, k, v = qkv((1, 1, 4, 600))
    with pytest.raises(attn_cl.AttnError) as error:
        attn_cl.attention(q, k, v, context=context)
    assert error.value.status_name == "ATTN_ERR_UNSUPPORTED_HEAD_DIM"
    assert error.value.status == -2003
    assert "600" in str(error.value) and "ATTN_ERR_UNSUPPORTED_HEAD_DIM" in str(error.value)
    # Out-of-range key lengths: the library refuses them and writes nothing.
    q, k, v = qkv()
    out = np.full((1, 2, 8, 16), 3.0, np.float32)
    with pytest.raises(attn_cl.AttnError) as error:
        attn_cl.attention(q, k, v, key_lengths=[9], out=out, context=context)
    assert error.value.status_name == "ATTN_ERR_INVALID_VALUE"
    assert error.value.library_message
    assert np.all(out == 3.0)
    # Probabilities from the fused path are refused where it has no cpu kernels.
    if context.device.is_gpu:
        with pytest.raises(attn_cl.AttnError, match="ATTN_ERR"):
            attn_cl.attention(q, k, v, return_probs=True, algo="fused", context=context)


def test_repeated_calls_take_new_data_and_layouts(context):
    # The second call of a signature skips validation: it must still read
    # this call's arrays, and a differently strided view must not reuse it.
    rng = np.random.default_rng(11)
    for step in range(3):
        q, k, v = (random(rng, (1, 2, 12, 16)) for _ in range(3))
        o, lse = attn_cl.attention(q, k, v, causal="top-left", return_lse=True, context=context)
        expect, expect_lse = numpy_attention(q, k, v, causal="top-left", return_lse=True)
        assert_close(o, expect)
        assert_close(lse, expect_lse)
    wide = random(rng, (1, 2, 12, 32))
    view = wide[..., 8:24]  # same shape as q, other strides
    o = attn_cl.attention(view, k, v, causal="top-left", context=context)
    assert_close(o, numpy_attention(view, k, v, causal="top-left"))
    read_only = q.copy()
    read_only.flags.writeable = False
    assert_close(attn_cl.attention(read_only, k, v, causal="top-left", context=context),
                 numpy_attention(q, k, v, causal="top-left"))
