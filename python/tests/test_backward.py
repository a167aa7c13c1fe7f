"""attn_cl.attention_backward and autograd through attn_cl.torch.

The device gradients against the library's double reference backward
(attn_cl.reference_backward), against PyTorch's autograd in float64 on the
same inputs, and torch.autograd.gradcheck's finite differences of the
library's own forward.
"""

import warnings

import numpy as np
import pytest

import attn_cl
from conftest import TOLERANCE, random

# Gradients sum over keys and query rows: a little more room than O.
GRAD_TOLERANCE = {name: 4 * bound for name, bound in TOLERANCE.items()}

FEATURES = {
    "plain": {},
    "causal-top-left": {"causal": "top-left"},
    "causal-bottom-right": {"causal": "bottom-right"},
    "window": {"causal": "bottom-right", "window": (3, 0)},
    "softcap": {"softcap": 2.5},
    "alibi": {"alibi_slopes": [0.5, 0.25, 0.125, 0.0625]},
    "key-lengths": {"key_lengths": [17, 5]},
    "bias": {"bias": "per-head"},
    "mask": {"mask": "random"},
    "dropout": {"dropout_p": 0.3, "dropout_seed": 7, "dropout_offset": 3},
    "dropout-causal-bias": {"causal": "bottom-right", "bias": "per-head", "dropout_p": 0.2,
                            "dropout_seed": 2**64 - 1, "dropout_offset": 9},
}


def _options(rng, name, seq_q=13, seq_k=17):
    options = dict(FEATURES[name])
    if options.get("bias") == "per-head":
        options["bias"] = random(rng, (1, 4, seq_q, seq_k))
    if options.get("mask") == "random":
        mask = rng.random((2, 1, seq_q, seq_k)) < 0.7
        mask[:, :, :, 0] = True
        options["mask"] = mask
    return options


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_matches_reference(context, feature):
    rng = np.random.default_rng(1)
    q, k, v = random(rng, (2, 4, 13, 16)), random(rng, (2, 2, 17, 16)), random(rng, (2, 2, 17, 8))
    options = _options(rng, feature)
    want_dbias = "bias" in options
    out, lse = attn_cl.attention(q, k, v, return_lse=True, context=context, **options)
    dout = random(rng, out.shape)
    got = attn_cl.attention_backward(q, k, v, out, dout, lse, want_dbias=want_dbias,
                                     context=context, **options)
    ref = attn_cl.reference_backward(q, k, v, dout, want_dbias=want_dbias, **options)
    assert len(got) == (4 if want_dbias else 3)
    for name, g, r, like in zip(("dq", "dk", "dv", "dbias"), got, ref, (q, k, v, options.get("bias"))):
        assert g.shape == like.shape and g.dtype == like.dtype, name
        np.testing.assert_allclose(g, r, atol=GRAD_TOLERANCE["float32"], rtol=1e-4, err_msg=name)
    # Every sum in a fixed order: the same bits again.
    again = attn_cl.attention_backward(q, k, v, out, dout, lse, want_dbias=want_dbias,
                                       context=context, **options)
    for g, a in zip(got, again):
        assert np.array_equal(g, a)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_storage(context, dtype):
    np_dtype = np.float16 if dtype == "float16" else attn_cl.bfloat16
    rng = np.random.default_rng(2)
    q, k, v = (random(rng, shape, np_dtype) for shape in ((1, 2, 9, 8), (1, 2, 11, 8),
                                                          (1, 2, 11, 8)))
    out, lse = attn_cl.attention(q, k, v, causal="top-left", return_lse=True, context=context)
    dout = random(rng, out.shape, np_dtype)
    got = attn_cl.attention_backward(q, k, v, out, dout, lse, causal="top-left", context=context)
    ref = attn_cl.reference_backward(q, k, v, dout, causal="top-left")
    for g, r in zip(got, ref):
        assert g.dtype == np_dtype
        np.testing.assert_allclose(g.astype(np.float32), r.astype(np.float32),
                                   atol=GRAD_TOLERANCE[dtype], rtol=GRAD_TOLERANCE[dtype])


def test_dbias_summed_over_broadcast_dimensions(context):
    rng = np.random.default_rng(3)
    q, k, v = random(rng, (2, 4, 6, 8)), random(rng, (2, 4, 7, 8)), random(rng, (2, 4, 7, 8))
    bias = random(rng, (2, 1, 1, 7))  # a per-key bias, broadcast over heads and query rows
    out, lse = attn_cl.attention(q, k, v, bias=bias, return_lse=True, context=context)
    dout = random(rng, out.shape)
    *_, dbias = attn_cl.attention_backward(q, k, v, out, dout, lse, bias=bias, want_dbias=True,
                                           context=context)
    full = random(rng, (2, 4, 6, 7)) * 0 + np.broadcast_to(bias, (2, 4, 6, 7))
    *_, dfull = attn_cl.attention_backward(q, k, v, out, dout, lse, bias=full, want_dbias=True,
                                           context=context)
    assert dbias.shape == bias.shape
    np.testing.assert_allclose(dbias, dfull.sum(axis=(1, 2), keepdims=True), atol=1e-5)


def test_bad_input(context):
    rng = np.random.default_rng(4)
    q, k, v = random(rng, (1, 2, 5, 8)), random(rng, (1, 2, 6, 8)), random(rng, (1, 2, 6, 8))
    out, lse = attn_cl.attention(q, k, v, return_lse=True, context=context)
    with pytest.raises(ValueError, match="dout"):
        attn_cl.attention_backward(q, k, v, out, out[:, :, :4], lse, context=context)
    with pytest.raises(ValueError, match="lse"):
        attn_cl.attention_backward(q, k, v, out, out, lse[:, :1], context=context)
    with pytest.raises(ValueError, match="want_dbias"):
        attn_cl.attention_backward(q, k, v, out, out, lse, want_dbias=True, context=context)


torch = pytest.importorskip("torch")
import attn_cl.torch as attn_torch  # noqa: E402


def test_sdpa_gradients_match_pytorch(context):
    torch.manual_seed(0)
    q = torch.randn(2, 4, 13, 16, requires_grad=True)
    k = torch.randn(2, 2, 17, 16, requires_grad=True)
    v = torch.randn(2, 2, 17, 8, requires_grad=True)
    bias = torch.randn(1, 4, 13, 17, requires_grad=True)
    out = attn_torch.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True,
                                                  context=context)
    dout = torch.randn_like(out)
    out.backward(dout)
    q2, k2, v2, b2 = (t.detach().double().requires_grad_() for t in (q, k, v, bias))
    out2 = torch.nn.functional.scaled_dot_product_attention(q2, k2, v2, attn_mask=b2,
                                                            enable_gqa=True)
    out2.backward(dout.double())
    for got, want in ((out, out2), (q.grad, q2.grad), (k.grad, k2.grad), (v.grad, v2.grad),
                      (bias.grad, b2.grad)):
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("is_causal", [False, True])
def test_gradcheck(context, is_causal):
    torch.manual_seed(1)
    shapes = ((1, 2, 5, 4), (1, 2, 6, 4), (1, 2, 6, 3), (1, 1, 5, 6))
    inputs = tuple(torch.randn(*shape, requires_grad=True) for shape in shapes)
    if is_causal:
        inputs = inputs[:3]

    def attention(q, k, v, bias=None):
        return attn_torch.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                                       is_causal=is_causal, context=context)

    # The library computes in float32: finite differences with a float32 step.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.autograd.gradcheck(attention, inputs, eps=1e-2, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("causal", [None, "top-left"])
def test_gradcheck_dropout(context, causal):
    """Autograd through the library's backward with dropout: the fixed seed and
    offset draw the same mask in every forward gradcheck makes and in the
    backward, so the dropped forward is a differentiable function of q, k, v
    and the bias."""
    torch.manual_seed(3)
    shapes = ((1, 2, 5, 4), (1, 2, 9, 4), (1, 2, 9, 3), (1, 2, 5, 9))
    inputs = tuple(torch.randn(*shape, requires_grad=True) for shape in shapes)

    def attention(q, k, v, bias):
        return attn_torch.attention_differentiable(q, k, v, bias=bias, causal=causal,
                                                   dropout_p=0.4, dropout_seed=11,
                                                   dropout_offset=4, context=context)

    out = attention(*inputs)
    undropped = attn_torch.attention_differentiable(*inputs[:3], bias=inputs[3], causal=causal,
                                                    context=context)
    assert not torch.allclose(out, undropped)  # the mask is drawn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.autograd.gradcheck(attention, inputs, eps=1e-2, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_autograd_16_bit(context, dtype):
    dtype = getattr(torch, dtype)
    torch.manual_seed(2)
    q, k, v = (torch.randn(1, 2, 9, 8, dtype=dtype, requires_grad=True) for _ in range(3))
    out = attn_torch.scaled_dot_product_attention(q, k, v, is_causal=True, context=context)
    out.backward(torch.ones_like(out))
    q2, k2, v2 = (t.detach().double().requires_grad_() for t in (q, k, v))
    torch.nn.functional.scaled_dot_product_attention(q2, k2, v2, is_causal=True).backward(
        torch.ones(out.shape, dtype=torch.float64))
    for got, want in ((q.grad, q2.grad), (k.grad, k2.grad), (v.grad, v2.grad)):
        assert got.dtype == dtype
        bound = 4 * TOLERANCE["float16" if dtype == torch.float16 else "bfloat16"]
        torch.testing.assert_close(got.double(), want, atol=bound, rtol=bound)
