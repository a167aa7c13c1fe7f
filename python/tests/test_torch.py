"""attn_cl.torch.scaled_dot_product_attention against PyTorch's on the same inputs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import attn_cl.torch as attn_torch  # noqa: E402

BOUND = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def assert_close(actual, expected):
    bound = BOUND[actual.dtype]
    torch.testing.assert_close(actual.float(), expected.float(), atol=bound, rtol=bound)


def inputs(batch=2, heads=4, heads_kv=4, seq_q=21, seq_k=21, dim=32, dim_v=32,
           dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=generator).to(dtype)  # noqa: E731
    return (make(batch, heads, seq_q, dim), make(batch, heads_kv, seq_k, dim),
            make(batch, heads_kv, seq_k, dim_v))


def reference(q, k, v, **kwargs):
    # PyTorch in float32 on the same stored values: the 16-bit results are
    # compared with one rounding of the exact answer.
    return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs).to(q.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("is_causal", [False, True])
def test_values(context, dtype, is_causal):
    q, k, v = inputs(dtype=dtype, dim_v=24)
    out = attn_torch.scaled_dot_product_attention(q, k, v, is_causal=is_causal, context=context)
    assert out.dtype == dtype and out.shape == (2, 4, 21, 24)
    assert_close(out, reference(q, k, v, is_causal=is_causal))


def test_top_left_causal_with_more_keys(context):
    q, k, v = inputs(seq_q=7, seq_k=19)
    out = attn_torch.scaled_dot_product_attention(q, k, v, is_causal=True, context=context)
    assert_close(out, reference(q, k, v, is_causal=True))


def test_gqa_and_scale(context):
    q, k, v = inputs(heads=8, heads_kv=2, seq_q=13, seq_k=29)
    out = attn_torch.scaled_dot_product_attention(q, k, v, scale=0.2, enable_gqa=True,
                                                  context=context)
    assert_close(out, reference(q, k, v, scale=0.2, enable_gqa=True))
    with pytest.raises(ValueError, match="enable_gqa"):
        attn_torch.scaled_dot_product_attention(q, k, v, context=context)


@pytest.mark.parametrize("shape", [(2, 4, 13, 17), (1, 4, 13, 17), (2, 1, 13, 17), (13, 17),
                                   (1, 17)], ids=str)
def test_masks_broadcast(context, shape):
    q, k, v = inputs(seq_q=13, seq_k=17)
    generator = torch.Generator().manual_seed(1)
    keep = torch.rand(shape, generator=generator) < 0.8
    keep[..., 0] = True  # no fully masked row: PyTorch gives NaN there, we give 0
    out = attn_torch.scaled_dot_product_attention(q, k, v, attn_mask=keep, context=context)
    assert_close(out, reference(q, k, v, attn_mask=keep))
    bias = torch.randn(shape, generator=generator)
    out = attn_torch.scaled_dot_product_attention(q, k, v, attn_mask=bias, context=context)
    assert_close(out, reference(q, k, v, attn_mask=bias))


def test_three_dimensional_and_strided(context):
    q, k, v = inputs(batch=1)
    q3, k3, v3 = q[0], k[0], v[0]
    out = attn_torch.scaled_dot_product_attention(q3, k3, v3, context=context)
    assert out.shape == q3.shape
    assert_close(out, reference(q3, k3, v3))
    # A [B, S, H, D] tensor transposed to [B, H, S, D]: read in place.
    q_bshd = torch.randn(2, 21, 4, 32)
    view = q_bshd.transpose(1, 2)
    assert not view.is_contiguous()
    q, k, v = inputs()
    out = attn_torch.scaled_dot_product_attention(view, k, v, context=context)
    assert_close(out, reference(view, k, v))


def test_lse_through_attention(context):
    q, k, v = inputs()
    out, lse = attn_torch.attention(q, k, v, causal="bottom-right", return_lse=True,
                                    context=context)
    scores = (q @ k.transpose(-1, -2)) / np.sqrt(32)
    scores = scores.masked_fill(torch.ones(21, 21, dtype=torch.bool).triu(1), float("-inf"))
    torch.testing.assert_close(lse, torch.logsumexp(scores, -1), atol=2e-5, rtol=2e-5)


def test_bad_input(context):
    q, k, v = inputs()
    with pytest.raises(TypeError, match="torch.float64"):
        attn_torch.scaled_dot_product_attention(q.double(), k.double(), v.double())
    with pytest.raises(ValueError, match="either attn_mask or is_causal"):
        attn_torch.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(21, 21).bool(),
                                                is_causal=True)
    with pytest.raises(NotImplementedError, match="dropout"):
        attn_torch.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    with pytest.raises(ValueError, match="last dimension is not contiguous"):
        attn_torch.scaled_dot_product_attention(q.detach().transpose(2, 3), k.transpose(2, 3),
                                                v)


def test_repeated_calls_take_new_data(context):
    for seed in range(3):
        q, k, v = inputs(seed=seed)
        out = attn_torch.scaled_dot_product_attention(q, k, v, is_causal=True, context=context)
        assert_close(out, reference(q, k, v, is_causal=True))
    q_bshd = torch.randn(2, 21, 4, 32)
    out = attn_torch.scaled_dot_product_attention(q_bshd.transpose(1, 2), k, v, is_causal=True,
                                                  context=context)
    assert_close(out, reference(q_bshd.transpose(1, 2), k, v, is_causal=True))
