"""An attention function for transformers' attention interface.

Importing this module registers "attn_cl", so that a model loaded or built
with attn_implementation="attn_cl" runs its attention on libattn_cl:

    import attn_cl.transformers
    model = AutoModelForCausalLM.from_config(config, attn_implementation="attn_cl")

The masks are the boolean ones transformers makes for its SDPA path (None
when the causal mask alone describes them, which is then given to the
library as a causal mask, bottom-right aligned for a KV cache). Grouped
key/value heads are read in place, never repeated.
"""

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from . import torch as attn_torch

NAME = "attn_cl"


def attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                      is_causal=None, softcap=None, **kwargs):
    """query [B, H, L, D], key/value [B, Hkv, S, D] -> ([B, L, H, D], None)."""
    if dropout and module.training:
        raise NotImplementedError("attn_cl: attention dropout is not supported")
    options = {}
    if scaling is not None:
        options["scale"] = scaling
    if softcap:
        options["softcap"] = softcap
    if attention_mask is None:
        if is_causal is None:
            is_causal = getattr(module, "is_causal", True)
        if is_causal and query.shape[2] > 1:
            # With a cache the queries are the last L of S keys' positions.
            options["causal"] = "bottom-right"
    elif attention_mask.dtype == torch.bool:
        options["mask"] = attention_mask[:, :, :, :key.shape[2]]
    else:
        options["bias"] = attention_mask[:, :, :, :key.shape[2]]
    with torch.no_grad():
        out = attn_torch.attention(query, key, value, **options)
    return out.transpose(1, 2).contiguous(), None


def register():
    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)


register()

__all__ = ["NAME", "attention_forward", "register"]
