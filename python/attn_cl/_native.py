"""The C library through ctypes: its structs, its calls, its errors.

ctypes needs no compiler at install time beyond the one that builds the
library, and a CDLL call releases the GIL for its whole duration, so device
work in one Python thread does not stop the others. The structs below mirror
include/attn_cl.h; _layout.check() compares them at import with the sizes and
offsets the C compiler reports (python/struct_layout.c), so a header change
the mirrors miss fails at import rather than passing wrong memory.
"""

import ctypes
import os
from ctypes import (POINTER, Structure, c_char, c_char_p, c_float, c_int, c_int32, c_int64,
                    c_size_t, c_uint32, c_uint64, c_void_p)

from . import _layout

# Enums are C ints (checked against sizeof(attn_mask) etc. at import).
c_enum = c_int

MASK_NONE, MASK_CAUSAL_TOP_LEFT, MASK_CAUSAL_BOTTOM_RIGHT = 0, 1, 2
ALGO_AUTO, ALGO_THREE_KERNEL, ALGO_FUSED = 0, 1, 2
DTYPE_F32, DTYPE_F16, DTYPE_BF16 = 0, 1, 2
PLAN_LSE, PLAN_PROBS = 1, 2


class Strides(Structure):
    _fields_ = [("batch", c_int64), ("head", c_int64), ("seq", c_int64)]


class ScoreOperand(Structure):
    _fields_ = [("present", c_int32), ("batch", c_int32), ("heads", c_int32),
                ("strides", Strides)]


class Window(Structure):
    _fields_ = [("enabled", c_int32), ("left", c_int32), ("right", c_int32)]


class Params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("batch", c_int32),
        ("heads_q", c_int32),
        ("heads_kv", c_int32),
        ("seq_q", c_int32),
        ("seq_k", c_int32),
        ("head_dim", c_int32),
        ("head_dim_v", c_int32),
        ("scale", c_float),
        ("mask", c_enum),
        ("algo", c_enum),
        ("dtype", c_enum),
        ("q_strides", Strides),
        ("k_strides", Strides),
        ("v_strides", Strides),
        ("o_strides", Strides),
        ("lse_strides", Strides),
        ("softcap", c_float),
        ("alibi", c_int32),
        ("bias", ScoreOperand),
        ("keep_mask", ScoreOperand),
        ("window", Window),
        ("key_padding", c_int32),
        ("varlen", c_int32),
        ("total_q", c_int32),
        ("total_k", c_int32),
        ("dropout_p", c_float),
        ("dropout_seed", c_uint64),
        ("dropout_offset", c_uint64),
        ("probs_heads_begin", c_int32),
        ("probs_heads_end", c_int32),
        ("probs_rows_begin", c_int32),
        ("probs_rows_end", c_int32),
    ]


class DeviceInfo(Structure):
    _fields_ = [
        ("platform_index", c_int32),
        ("device_index", c_int32),
        ("is_gpu", c_int32),
        ("compute_units", c_int32),
        ("global_mem_bytes", c_uint64),
        ("max_alloc_bytes", c_uint64),
        ("local_mem_bytes", c_uint64),
        ("platform_name", c_char * 128),
        ("device_name", c_char * 128),
        ("vendor", c_char * 128),
        ("device_version", c_char * 128),
        ("driver_version", c_char * 128),
    ]


class ContextOptions(Structure):
    _fields_ = [("platform_index", c_int32), ("device_index", c_int32),
                ("enable_profiling", c_int32)]


class HostTensors(Structure):
    _fields_ = [
        ("q", c_void_p),
        ("k", c_void_p),
        ("v", c_void_p),
        ("o", c_void_p),
        ("lse", c_void_p),
        ("probs", c_void_p),
        ("bias", c_void_p),
        ("keep_mask", c_void_p),
        ("key_lengths", c_void_p),
        ("alibi_slopes", c_void_p),
        ("cu_seqlens_q", c_void_p),
        ("cu_seqlens_k", c_void_p),
    ]


class BackwardHostTensors(Structure):
    _fields_ = [
        ("q", c_void_p),
        ("k", c_void_p),
        ("v", c_void_p),
        ("o", c_void_p),
        ("dout", c_void_p),
        ("lse", c_void_p),
        ("dq", c_void_p),
        ("dk", c_void_p),
        ("dv", c_void_p),
        ("dbias", c_void_p),
        ("bias", c_void_p),
        ("keep_mask", c_void_p),
        ("key_lengths", c_void_p),
        ("alibi_slopes", c_void_p),
        ("cu_seqlens_q", c_void_p),
        ("cu_seqlens_k", c_void_p),
    ]


class MergeTensors(Structure):
    _fields_ = [("o_a", c_void_p), ("o_b", c_void_p), ("lse_a", c_void_p),
                ("lse_b", c_void_p), ("o", c_void_p), ("lse", c_void_p)]


# Python name of each mirror -> its C name, for the layout check.
STRUCTS = {
    "attn_strides": Strides,
    "attn_score_operand": ScoreOperand,
    "attn_window": Window,
    "attn_params": Params,
    "attn_device_info": DeviceInfo,
    "attn_context_options": ContextOptions,
    "attn_host_tensors": HostTensors,
    "attn_merge_tensors": MergeTensors,
    "attn_backward_host_tensors": BackwardHostTensors,
}
ENUMS = ("attn_mask", "attn_algo", "attn_dtype", "attn_status")

context_t = c_void_p
plan_t = c_void_p
status_t = c_int

# name: (restype, argtypes)
_SIGNATURES = {
    "attn_params_init": (None, [POINTER(Params), c_int32, c_int32, c_int32, c_int32, c_int32]),
    "attn_list_devices": (status_t, [POINTER(DeviceInfo), c_size_t, POINTER(c_size_t)]),
    "attn_context_options_init": (None, [POINTER(ContextOptions)]),
    "attn_context_create": (status_t, [POINTER(ContextOptions), POINTER(context_t)]),
    "attn_context_destroy": (None, [context_t]),
    "attn_context_set_tuning": (status_t, [context_t, c_char_p]),
    "attn_context_device_info": (status_t, [context_t, POINTER(DeviceInfo)]),
    "attn_check": (status_t, [context_t, POINTER(Params), c_int, c_int, POINTER(c_enum)]),
    "attn_plan_create": (status_t, [context_t, POINTER(Params), c_uint32, POINTER(plan_t)]),
    "attn_plan_destroy": (None, [plan_t]),
    "attn_plan_algo": (c_enum, [plan_t]),
    "attn_plan_execute_host": (status_t, [plan_t, POINTER(HostTensors)]),
    "attn_forward_host": (status_t, [context_t, POINTER(Params), POINTER(HostTensors)]),
    "attn_reference_host": (status_t, [POINTER(Params), POINTER(HostTensors)]),
    "attn_merge": (status_t, [POINTER(Params), POINTER(MergeTensors)]),
    "attn_backward_host": (status_t, [context_t, POINTER(Params), POINTER(BackwardHostTensors)]),
    "attn_reference_backward": (status_t, [POINTER(Params), POINTER(BackwardHostTensors)]),
    "attn_status_name": (c_char_p, [status_t]),
    "attn_last_error": (c_char_p, [context_t]),
    "attn_version_string": (c_char_p, []),
    "attn_py_struct_layout": (c_int, [c_size_t, POINTER(c_char_p), POINTER(c_size_t)]),
}


def _load():
    # The package's own copy of the library, installed beside this file.
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "_libattn_cl.so")
    if not os.path.exists(path):
        raise ImportError(
            f"attn_cl: the native library {path} is missing; install the package with "
            "`pip install .` from the repository root (it builds the library)")
    lib = ctypes.CDLL(path)
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


lib = _load()
_layout.check(lib, STRUCTS, ENUMS, c_enum)


class AttnError(RuntimeError):
    """A libattn_cl call failed.

    `status` is the numeric status, `status_name` its name
    ("ATTN_ERR_INVALID_SIZE", "CL_OUT_OF_RESOURCES", ...), and the message is
    the library's own (attn_last_error).
    """

    def __init__(self, status, status_name, message, call=None):
        self.status = status
        self.status_name = status_name
        self.library_message = message
        self.call = call
        where = f"{call}: " if call else ""
        super().__init__(f"{where}{status_name}: {message}")


def raise_for(status, call, ctx=None):
    """Raises AttnError for a non-zero status with the calling thread's message."""
    if status == 0:
        return
    name = lib.attn_status_name(status).decode()
    # The thread's own latest failure: valid whichever context failed, and
    # never rewritten by another thread's failure.
    message = (lib.attn_last_error(None) or b"").decode(errors="replace")
    raise AttnError(status, name, message, call)


def status_name(status):
    return lib.attn_status_name(status).decode()


def version_string():
    return lib.attn_version_string().decode()


def new_params(batch, heads, seq_q, seq_k, head_dim):
    params = Params()
    lib.attn_params_init(ctypes.byref(params), batch, heads, seq_q, seq_k, head_dim)
    return params
