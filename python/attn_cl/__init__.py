"""libattn_cl from Python: exact transformer attention on any OpenCL device.

    import numpy as np, attn_cl
    q = k = v = np.random.rand(1, 8, 1024, 64).astype(np.float32)
    o = attn_cl.attention(q, k, v, causal="bottom-right")

attn_cl.torch has a drop-in scaled_dot_product_attention for CPU tensors;
importing attn_cl.transformers registers attn_implementation="attn_cl".
"""

from ._native import AttnError, version_string
from .core import (Context, Device, Plan, attention, attention_backward, bfloat16, check,
                   default_context, devices, merge, reference, reference_backward)

__version__ = "0.3.0"
__all__ = ["AttnError", "Context", "Device", "Plan", "attention", "attention_backward",
           "bfloat16", "check", "default_context", "devices", "merge", "reference",
           "reference_backward", "version_string"]
