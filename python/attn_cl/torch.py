"""PyTorch CPU tensors on libattn_cl: a drop-in scaled_dot_product_attention.

Tensors reach the library as NumPy views of their own memory (no copies;
bfloat16 as its 16-bit pattern), so only the layouts the library cannot
express are copied, as in the NumPy API. Importing this module needs torch;
the rest of the package does not.
"""

import math

import numpy as np
import torch

from . import _native as N
from . import core

_CODES = {torch.float32: N.DTYPE_F32, torch.float16: N.DTYPE_F16, torch.bfloat16: N.DTYPE_BF16}
_NUMPY_VIEW = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.uint16}


def _as_numpy(tensor, name):
    """A NumPy array over the tensor's memory (16-bit floats as their bits)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, not {type(tensor).__name__}")
    if tensor.device.type != "cpu":
        raise ValueError(f"{name} is on {tensor.device}; attn_cl.torch takes CPU tensors "
                         "(the library does its own device transfers)")
    if tensor.dtype not in _CODES:
        raise TypeError(f"{name} has dtype {tensor.dtype}; expected torch.float32, "
                        "torch.float16 or torch.bfloat16")
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


def _empty(shape, code):
    dtype = {v: k for k, v in _CODES.items()}[code]
    return torch.empty(shape, dtype=dtype)


# Options that are not tensors: a call that gives only these (and tensors
# laid out as a previous call's) takes the repeated-call path.
_SCALAR_OPTIONS = frozenset(("causal", "scale", "window", "softcap", "dropout_p", "return_lse",
                             "return_probs", "probs_heads", "probs_rows", "layout",
                             "algo"))


def attention(query, key, value, *, context=None, **options):
    """attn_cl.attention on CPU tensors: the same options; returns tensors.

    bias and mask may be tensors or arrays; the outputs are new tensors.
    """
    context = context or core._default or core.default_context()
    signature = None
    if (options.keys() <= _SCALAR_OPTIONS and type(query) is torch.Tensor and
            type(key) is torch.Tensor and type(value) is torch.Tensor):
        signature = ("torch", query.shape, query.stride(), query.dtype, query.device,
                     key.shape, key.stride(), key.dtype, key.device,
                     value.shape, value.stride(), value.dtype, value.device,
                     tuple(sorted((name, tuple(value) if isinstance(value, list) else value)
                                  for name, value in options.items())))
        entry = context._fast.get(signature)
        if entry is not None:
            out = torch.empty(entry.o_shape, dtype=entry.o_dtype)
            lse, probs = core._repeat(context, entry, query.data_ptr(), key.data_ptr(),
                                      value.data_ptr(), out.data_ptr())
            if lse is None and probs is None:
                return out
            return tuple(torch.from_numpy(x) if isinstance(x, np.ndarray) else x
                         for x in (out, lse, probs) if x is not None)
    code = _CODES.get(query.dtype) if isinstance(query, torch.Tensor) else None
    q, k, v = (_as_numpy(t, n) for t, n in ((query, "query"), (key, "key"), (value, "value")))
    for name in ("bias", "mask", "alibi_slopes", "key_lengths", "cu_seqlens_q", "cu_seqlens_k"):
        if isinstance(options.get(name), torch.Tensor):
            options[name] = options[name].detach().cpu().numpy()
    if options.get("out") is not None:
        raise TypeError("out= is not supported for tensors; use the returned tensor")
    holder = {}

    def allocate(shape, dtype_code):
        holder["out"] = _empty(shape, dtype_code)
        return _as_numpy(holder["out"], "out")

    request = core._request(q, k, v, storage=code, allocate=allocate, **options)
    idle = context._idle_plans(request.key)
    core._execute(context, idle, request.params, request.outputs, request.tensors)
    if signature is not None and core._untouched(request, q, k, v):
        context._remember(signature, core._Repeat(request, idle, query.dtype))
    results = [holder["out"]]
    if request.lse is not None:
        results.append(torch.from_numpy(request.lse))
    if request.probs is not None:
        results.append(torch.from_numpy(request.probs))
    return results[0] if len(results) == 1 else tuple(results)


def _from_numpy(array, dtype):
    """A tensor over a NumPy array the library wrote (16-bit floats from their bits)."""
    tensor = torch.from_numpy(array)
    if dtype == torch.bfloat16:
        return tensor.view(torch.bfloat16)
    return tensor


class _Attention(torch.autograd.Function):
    """attention() with its backward: the forward keeps O and LSE, the backward
    is the library's (deterministic, O(n) memory)."""

    @staticmethod
    def forward(ctx, query, key, value, bias, context, options):
        if bias is not None:
            options = dict(options, bias=bias)
        out, lse = attention(query, key, value, context=context, return_lse=True, **options)
        ctx.save_for_backward(query, key, value, out, lse, bias)
        ctx.context, ctx.options = context, options
        return out

    @staticmethod
    def backward(ctx, dout):
        query, key, value, out, lse, bias = ctx.saved_tensors
        options = dict(ctx.options)
        if bias is not None:
            options["bias"] = bias.detach().numpy()
        want_dbias = bias is not None and ctx.needs_input_grad[3]
        code = _CODES[query.dtype]
        grads = core.attention_backward(
            _as_numpy(query, "query"), _as_numpy(key, "key"), _as_numpy(value, "value"),
            _as_numpy(out, "out"), _as_numpy(dout.contiguous().to(out.dtype), "dout"),
            lse.numpy(), want_dbias=want_dbias, context=ctx.context, storage=code, **options)
        dq, dk, dv = (_from_numpy(g, query.dtype) for g in grads[:3])
        dbias = torch.from_numpy(grads[3]) if want_dbias else None
        return dq, dk, dv, dbias, None, None


def attention_differentiable(query, key, value, *, bias=None, context=None, **options):
    """attention() on CPU tensors that autograd differentiates (q, k, v and a float
    bias), through the library's backward. Options are attention()'s, tensors
    for bias only; the result is O."""
    context = context or core._default or core.default_context()
    for name in ("return_lse", "return_probs", "out"):
        if options.get(name):
            raise TypeError(f"{name}= is not available with autograd")
    for name in ("mask", "alibi_slopes", "key_lengths", "cu_seqlens_q", "cu_seqlens_k"):
        if isinstance(options.get(name), torch.Tensor):
            options[name] = options[name].detach().cpu().numpy()
    if bias is not None and not isinstance(bias, torch.Tensor):
        bias = torch.as_tensor(np.asarray(bias, dtype=np.float32))
    if bias is not None and bias.dtype != torch.float32:
        bias = bias.to(torch.float32)
    return _Attention.apply(query, key, value, bias, context, options)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False, *, context=None):
    """torch.nn.functional.scaled_dot_product_attention on libattn_cl (CPU tensors).

    The same semantics: query [..., L, E], key [..., S, E], value [..., S, Ev]
    (batch dimensions broadcast-free; 3-D and 4-D are taken), is_causal is
    top-left aligned, a boolean attn_mask keeps True, a float attn_mask is
    added to the scores, both broadcast to [B, H, L, S]; enable_gqa lets key
    and value have fewer heads. Rows that a mask hides entirely give 0 (PyTorch
    gives NaN there). Differentiable: inputs (and a float attn_mask) that
    require grad get their gradients from the library's backward.
    """
    if dropout_p:
        raise NotImplementedError("dropout_p: the drop-in does not follow torch's random "
                                  "generator; attn_cl.attention takes dropout_p with an explicit "
                                  "dropout_seed and dropout_offset")
    if is_causal and attn_mask is not None:
        raise ValueError("pass either attn_mask or is_causal, not both (as PyTorch requires)")
    if query.dim() != key.dim() or query.dim() != value.dim() or query.dim() not in (3, 4):
        raise ValueError(f"query, key and value must all be 3-D or 4-D, not "
                         f"{query.dim()}-D, {key.dim()}-D and {value.dim()}-D")
    squeeze = query.dim() == 3
    if squeeze:  # [H, L, E]: one batch
        query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
    heads_q, heads_kv = query.shape[1], key.shape[1]
    if heads_q != heads_kv and not enable_gqa:
        raise ValueError(f"query has {heads_q} heads and key {heads_kv}: pass enable_gqa=True "
                         "for grouped-query attention")
    options = {"causal": "top-left" if is_causal else None}
    if scale is not None:
        if scale == 0:
            raise ValueError("scale=0 is not supported (it would be read as the default)")
        options["scale"] = scale
    elif query.shape[-1]:
        options["scale"] = 1.0 / math.sqrt(query.shape[-1])
    bias = None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            options["mask"] = attn_mask
        else:
            bias = attn_mask.to(torch.float32)
    grads = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (query, key, value, bias))
    if grads:
        out = attention_differentiable(query, key, value, bias=bias, context=context, **options)
    else:
        if bias is not None:
            options["bias"] = bias
        out = attention(query, key, value, context=context, **options)
    return out.squeeze(0) if squeeze else out


__all__ = ["attention", "attention_differentiable", "scaled_dot_product_attention"]
