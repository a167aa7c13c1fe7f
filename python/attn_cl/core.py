"""The NumPy API: devices, contexts, plans, attention and the CPU reference.

Arrays go to the library as they are: a pointer and element strides, so a
strided view whose last dimension is contiguous is never copied. Each call
builds an attn_params from the arrays and options; a context keeps a plan
per distinct attn_params (shapes, strides, dtype, options), so a call in a
loop reuses validated, built kernels and the plan's device buffers.
"""

import collections
import ctypes
import threading
from dataclasses import dataclass

import numpy as np

from . import _native as N
from ._native import AttnError

_execute_host = N.lib.attn_plan_execute_host

try:  # bfloat16 arrays are ml_dtypes' (optional)
    import ml_dtypes

    bfloat16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - exercised only without ml_dtypes
    bfloat16 = None

_DTYPE_CODES = {np.dtype(np.float32): N.DTYPE_F32, np.dtype(np.float16): N.DTYPE_F16}
if bfloat16 is not None:
    _DTYPE_CODES[bfloat16] = N.DTYPE_BF16
_CODE_DTYPES = {code: dtype for dtype, code in _DTYPE_CODES.items()}

_CAUSAL = {None: N.MASK_NONE, "top-left": N.MASK_CAUSAL_TOP_LEFT,
           "bottom-right": N.MASK_CAUSAL_BOTTOM_RIGHT}
_ALGOS = {"auto": N.ALGO_AUTO, "three-kernel": N.ALGO_THREE_KERNEL, "fused": N.ALGO_FUSED}
_ALGO_NAMES = {code: name for name, code in _ALGOS.items()}

# Plans a context keeps per distinct request, least recently used dropped
# first: each holds kernels and device copies of its tensors.
PLAN_CACHE_SIZE = 16
# Call signatures (shapes, strides, dtypes, options) a context remembers for
# the repeated-call path; past it the table starts over.
FAST_CACHE_SIZE = 64


# ---- Devices and contexts ---------------------------------------------------


@dataclass(frozen=True)
class Device:
    """One OpenCL device, as attn_list_devices reports it."""
    platform_index: int
    device_index: int
    is_gpu: bool
    compute_units: int
    global_mem_bytes: int
    max_alloc_bytes: int
    local_mem_bytes: int
    platform_name: str
    device_name: str
    vendor: str
    device_version: str
    driver_version: str

    @property
    def spec(self):
        """"P:D", as ATTN_CL_DEVICE and Context(device=...) take it."""
        return f"{self.platform_index}:{self.device_index}"

    @classmethod
    def _from_info(cls, info):
        text = lambda field: getattr(info, field).decode(errors="replace")  # noqa: E731
        return cls(info.platform_index, info.device_index, bool(info.is_gpu), info.compute_units,
                   info.global_mem_bytes, info.max_alloc_bytes, info.local_mem_bytes,
                   text("platform_name"), text("device_name"), text("vendor"),
                   text("device_version"), text("driver_version"))

    def __str__(self):
        kind = "GPU" if self.is_gpu else "device"
        return f"{self.spec} {self.device_name} ({kind}, {self.platform_name})"


def devices():
    """Every OpenCL device of every platform (an empty list when there is none)."""
    count = ctypes.c_size_t()
    status = N.lib.attn_list_devices(None, 0, ctypes.byref(count))
    if status != 0:
        if N.status_name(status) == "ATTN_ERR_NO_DEVICE":
            return []
        N.raise_for(status, "attn_list_devices")
    infos = (N.DeviceInfo * max(count.value, 1))()
    N.raise_for(N.lib.attn_list_devices(infos, count.value, ctypes.byref(count)),
                "attn_list_devices")
    return [Device._from_info(infos[i]) for i in range(count.value)]


def _device_indices(device):
    if device is None:
        return -1, -1
    if isinstance(device, Device):
        return device.platform_index, device.device_index
    if isinstance(device, str):
        try:
            platform, index = (int(part) for part in device.split(":"))
        except ValueError:
            raise ValueError(f"device {device!r}: expected \"platform:device\", e.g. \"0:0\"") \
                from None
        return platform, index
    if isinstance(device, tuple) and len(device) == 2:
        return int(device[0]), int(device[1])
    if isinstance(device, int) and not isinstance(device, bool):
        listed = devices()
        if not 0 <= device < len(listed):
            raise ValueError(f"device {device}: there are {len(listed)} devices")
        return listed[device].platform_index, listed[device].device_index
    raise TypeError(f"device: expected None, an index, \"P:D\", (P, D) or a Device, "
                    f"not {type(device).__name__}")


class Context:
    """A device, its queue, its kernel cache and the plans of past calls.

    Context() chooses like the C library: ATTN_CL_DEVICE, then the first GPU,
    then the first device. `device` may be an index into devices(), "P:D",
    (P, D) or a Device. `tuning` is attn_context_set_tuning's spec. A context
    may be shared by threads.
    """

    def __init__(self, device=None, *, tuning=None):
        self._handle = None
        options = N.ContextOptions()
        N.lib.attn_context_options_init(ctypes.byref(options))
        options.platform_index, options.device_index = _device_indices(device)
        handle = N.context_t()
        N.raise_for(N.lib.attn_context_create(ctypes.byref(options), ctypes.byref(handle)),
                    "attn_context_create")
        self._handle = handle
        self._lock = threading.Lock()
        self._plans = collections.OrderedDict()  # request key -> [idle _PlanHandle, ...]
        self._fast = {}  # call signature -> _Repeat (see attention())
        if tuning is not None:
            self.set_tuning(tuning)

    @property
    def handle(self):
        if self._handle is None:
            raise ValueError("the context is closed")
        return self._handle

    @property
    def device(self):
        info = N.DeviceInfo()
        N.raise_for(N.lib.attn_context_device_info(self.handle, ctypes.byref(info)),
                    "attn_context_device_info")
        return Device._from_info(info)

    def set_tuning(self, spec):
        N.raise_for(N.lib.attn_context_set_tuning(
            self.handle, None if spec is None else spec.encode()), "attn_context_set_tuning")
        self.clear_plans()  # plans chose their kernels under the old tuning

    def clear_plans(self):
        with self._lock:
            plans, self._plans = self._plans, collections.OrderedDict()
            self._fast = {}
        for idle in plans.values():
            for plan in idle:
                plan.destroy()

    def close(self):
        """Destroys the plans and the context; later calls on it raise ValueError."""
        if self._handle is not None:
            self.clear_plans()
            N.lib.attn_context_destroy(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __repr__(self):
        return f"Context({self.device})" if self._handle is not None else "Context(closed)"

    # Plans of past calls, per request (attn_params and outputs): a list of
    # idle plans, from which a call pops one (a plan is one thread's at a
    # time) and to which it appends it back. list.pop and list.append are
    # atomic, so the lists need no lock; the lock guards the dicts.
    def _idle_plans(self, key):
        with self._lock:
            idle = self._plans.get(key)
            if idle is None:
                idle = self._plans[key] = []
                while len(self._plans) > PLAN_CACHE_SIZE:
                    # Dropped plans are destroyed when no call holds them (_PlanHandle.__del__).
                    self._plans.popitem(last=False)
            else:
                self._plans.move_to_end(key)
            return idle

    def _remember(self, signature, entry):
        with self._lock:
            if len(self._fast) >= FAST_CACHE_SIZE:
                self._fast.clear()
            self._fast[signature] = entry

    def attention(self, q, k, v, **options):
        """attention() on this context."""
        return attention(q, k, v, context=self, **options)

    def plan(self, q, k, v, **options):
        """Plan(q, k, v, context=self, ...)."""
        return Plan(q, k, v, context=self, **options)


_default = None
_default_lock = threading.Lock()


def default_context():
    """The context calls without context= use, created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Context()
        return _default


class _PlanHandle:
    """One attn_plan_t."""

    def __init__(self, context, params, outputs):
        self.context = context
        handle = N.plan_t()
        N.raise_for(N.lib.attn_plan_create(context.handle, ctypes.byref(params), outputs,
                                           ctypes.byref(handle)), "attn_plan_create")
        self.handle = handle

    @property
    def algo(self):
        return _ALGO_NAMES[N.lib.attn_plan_algo(self.handle)]

    def execute(self, tensors):
        if self.context._handle is None or self.handle is None:
            raise ValueError("the plan's context is closed, or the plan is")
        N.raise_for(N.lib.attn_plan_execute_host(self.handle, ctypes.byref(tensors)),
                    "attn_plan_execute_host")

    def destroy(self):
        if self.handle is not None:
            N.lib.attn_plan_destroy(self.handle)
            self.handle = None

    def __del__(self):
        try:
            if self.context._handle is not None:
                self.destroy()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


# ---- Requests: arrays and options to attn_params and pointers ---------------


def _storage_code(array, name, storage):
    if storage is not None:
        return storage
    code = _DTYPE_CODES.get(array.dtype)
    if code is None:
        names = "float32, float16" + (", bfloat16 (ml_dtypes)" if bfloat16 is not None else "")
        raise TypeError(f"{name} has dtype {array.dtype}; expected {names}")
    return code


def _element_strides(array, name):
    """Element strides of every dimension; the last must be 1."""
    size = array.itemsize
    if array.shape[-1] > 1 and array.strides[-1] != size:
        raise ValueError(f"{name}'s last dimension is not contiguous (stride "
                         f"{array.strides[-1]} bytes, element {size} bytes); the library reads "
                         "each row as one run: pass a view whose last stride is the element size")
    strides = []
    for extent, stride in zip(array.shape, array.strides):
        if stride % size:
            raise ValueError(f"{name} has a stride of {stride} bytes, not a multiple of its "
                             f"{size}-byte elements")
        # A dimension of one element steps nowhere: 0 keeps the library's
        # extent exact whatever NumPy recorded.
        strides.append(0 if extent == 1 else stride // size)
    return strides


def _usable(array, name):
    """The array itself when the library can read it in place, else a copy it can.

    Only layouts the library cannot express are copied: negative strides, or
    a view whose strides are all 0 (which attn_strides reads as "packed").
    """
    strides = _element_strides(array, name)
    if any(s < 0 for s in strides):
        return np.ascontiguousarray(array)
    if any(extent > 1 for extent in array.shape[:-1]) and not any(strides[:-1]):
        return np.ascontiguousarray(array)
    return array


def _bhs(strides, layout):
    """attn_strides (batch, head, seq) from the element strides of a 4-D tensor."""
    if layout == "bhsd":
        return strides[0], strides[1], strides[2]
    return strides[0], strides[2], strides[1]


def _set_strides(target, batch, head, seq):
    target.batch, target.head, target.seq = batch, head, seq


def _int32_vector(values, name, length):
    array = np.ascontiguousarray(values, dtype=np.int32)
    if array.ndim != 1 or array.shape[0] != length:
        raise ValueError(f"{name} must have {length} entries (shape ({length},)), "
                         f"not shape {array.shape}")
    return array


def _score_operand(values, name, batch, heads, seq_q, seq_k, dtype, operand):
    """A bias or keep-mask broadcastable to [B, Hq, Sq, Sk] into `operand`; returns the array."""
    array = np.asarray(values)
    if dtype == np.uint8:
        if array.dtype == np.bool_:
            array = array.view(np.uint8)
        elif array.dtype != np.uint8:
            raise TypeError(f"{name} must be a boolean array (True = attend), not {array.dtype}")
    elif array.dtype != np.float32:
        if not np.issubdtype(array.dtype, np.floating) and array.dtype != bfloat16:
            raise TypeError(f"{name} must be a float array, not {array.dtype}")
        array = array.astype(np.float32)
    if array.ndim > 4:
        raise ValueError(f"{name} must have at most 4 dimensions, broadcasting to "
                         f"[batch={batch}, heads={heads}, {seq_q}, {seq_k}], not shape {array.shape}")
    array = array.reshape((1,) * (4 - array.ndim) + array.shape)
    full = (batch, heads, seq_q, seq_k)
    for dim, (extent, want) in enumerate(zip(array.shape, full)):
        if extent not in (1, want):
            raise ValueError(f"{name} of shape {array.shape} does not broadcast to "
                             f"[{batch}, {heads}, {seq_q}, {seq_k}] (dimension {dim})")
    # The library broadcasts batch and heads itself; query rows and keys must be there.
    if array.shape[2:] != (seq_q, seq_k):
        array = np.broadcast_to(array, array.shape[:2] + (seq_q, seq_k))
    # A dimension broadcast by a 0 stride becomes one the library broadcasts.
    index = tuple(slice(0, 1) if array.shape[d] > 1 and array.strides[d] == 0 else slice(None)
                  for d in range(2)) + (Ellipsis,)
    array = array[index]
    if (array.strides[3] != array.itemsize and seq_k > 1) or array.strides[2] <= 0 or \
            any(s < 0 for s in array.strides):
        array = np.ascontiguousarray(array)
    strides = _element_strides(array, name)
    operand.present = 1
    operand.batch = array.shape[0]
    operand.heads = array.shape[1]
    _set_strides(operand.strides, strides[0], strides[1], strides[2])
    return array


def _pointer(array):
    return None if array is None else array.ctypes.data


class _Request:
    """attn_params, the tensors' pointers and the outputs of one forward."""

    __slots__ = ("params", "outputs", "tensors", "out", "lse", "probs", "keep", "key")


_STATIC_OPTIONS = ("causal", "scale", "window", "softcap", "dropout_p", "dropout_seed",
                   "dropout_offset", "return_lse", "return_probs", "probs_heads", "probs_rows",
                   "layout", "algo", "max_seqlen_q", "max_seqlen_k")


def _probs_range(value, name, count):
    """A (begin, end) pair of Python slice bounds (negative from the end, None
    open) as the absolute [begin, end) the library takes, or a ValueError."""
    if value is None:
        return 0, count
    try:
        begin, end = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (begin, end), not {value!r}") from None
    for bound in (begin, end):
        if bound is not None and not isinstance(bound, (int, np.integer)):
            raise ValueError(f"{name} bounds must be integers or None, not {value!r}")
    begin, end, _ = slice(begin, end).indices(count)
    if begin >= end:
        raise ValueError(f"{name}={value!r} selects nothing of {count}")
    return begin, end


def _request(q, k, v, *, causal=None, scale=None, window=None, softcap=None, alibi_slopes=None,
             bias=None, mask=None, key_lengths=None, cu_seqlens_q=None, cu_seqlens_k=None,
             max_seqlen_q=None, max_seqlen_k=None, dropout_p=0.0, dropout_seed=0,
             dropout_offset=0, return_lse=False, return_probs=False, probs_heads=None,
             probs_rows=None, layout="bhsd", algo="auto", out=None, storage=None,
             allocate=None):
    """Checks the arrays and options and lays them out for the library.

    `storage` overrides the dtype code (for 16-bit data viewed as integers);
    `allocate(shape, dtype_code)` makes the output (default: NumPy).
    """
    for name, value in (("dropout_seed", dropout_seed), ("dropout_offset", dropout_offset)):
        if not isinstance(value, (int, np.integer)) or not 0 <= value < 1 << 64:
            raise ValueError(f"{name} must be an integer in [0, 2**64), not {value!r}")
    if layout not in ("bhsd", "bshd"):
        raise ValueError(f"layout must be \"bhsd\" or \"bshd\", not {layout!r}")
    if causal not in _CAUSAL:
        raise ValueError(f"causal must be None, \"top-left\" or \"bottom-right\", not {causal!r}")
    if algo not in _ALGOS:
        raise ValueError(f"algo must be one of {sorted(_ALGOS)}, not {algo!r}")
    q, k, v = (np.asarray(t) if not isinstance(t, np.ndarray) else t for t in (q, k, v))
    code = _storage_code(q, "q", storage)
    for name, t in (("k", k), ("v", v)):
        if _storage_code(t, name, storage) != code or t.dtype != q.dtype:
            raise TypeError(f"q, k and v must share a dtype: q is {q.dtype}, {name} is {t.dtype}")
    varlen = cu_seqlens_q is not None or cu_seqlens_k is not None
    if varlen and (cu_seqlens_q is None or cu_seqlens_k is None):
        raise ValueError("varlen needs both cu_seqlens_q and cu_seqlens_k")
    ndim = 3 if varlen else 4
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.ndim != ndim:
            what = ("[total, heads, dim]" if layout == "bshd" else "[heads, total, dim]") \
                if varlen else ("[batch, heads, seq, dim]" if layout == "bhsd"
                                else "[batch, seq, heads, dim]")
            raise ValueError(f"{name} must be {ndim}-D {what} (layout {layout!r}"
                             f"{', varlen' if varlen else ''}), not shape {t.shape}")
    q, k, v = _usable(q, "q"), _usable(k, "k"), _usable(v, "v")
    sq_, sk_ = _element_strides(q, "q"), _element_strides(k, "k")
    sv_ = _element_strides(v, "v")

    if varlen:
        # Packed rows: [total, H, D] ("bshd", FlashAttention's) or [H, total, D].
        if layout == "bshd":
            (total_q, heads_q, dim), (total_k, heads_kv, dim_k) = q.shape, k.shape
            v_total, v_heads, dim_v = v.shape
            row, head = 0, 1
        else:
            (heads_q, total_q, dim), (heads_kv, total_k, dim_k) = q.shape, k.shape
            v_heads, v_total, dim_v = v.shape
            row, head = 1, 0
        cu_q = np.ascontiguousarray(cu_seqlens_q, dtype=np.int32)
        cu_k = np.ascontiguousarray(cu_seqlens_k, dtype=np.int32)
        if cu_q.ndim != 1 or cu_k.shape != cu_q.shape or cu_q.shape[0] < 2:
            raise ValueError(f"cu_seqlens_q and cu_seqlens_k must both be 1-D with batch + 1 "
                             f"entries, not shapes {cu_q.shape} and {cu_k.shape}")
        batch = cu_q.shape[0] - 1
        seq_q = int(max_seqlen_q) if max_seqlen_q is not None else int(np.diff(cu_q).max())
        seq_k = int(max_seqlen_k) if max_seqlen_k is not None else int(np.diff(cu_k).max())
        q_bhs = (0, sq_[head], sq_[row])
        k_bhs = (0, sk_[head], sk_[row])
        v_bhs = (0, sv_[head], sv_[row])
    else:
        if layout == "bhsd":
            batch, heads_q, seq_q, dim = q.shape
            k_batch, heads_kv, seq_k, dim_k = k.shape
            v_batch, v_heads, v_seq, dim_v = v.shape
        else:
            batch, seq_q, heads_q, dim = q.shape
            k_batch, seq_k, heads_kv, dim_k = k.shape
            v_batch, v_seq, v_heads, dim_v = v.shape
        if k_batch != batch or v_batch != batch:
            raise ValueError(f"q, k and v must have the same batch: {batch}, {k_batch}, {v_batch}")
        if v_seq != seq_k:
            raise ValueError(f"k and v must have the same sequence length: {seq_k} and {v_seq}")
        q_bhs, k_bhs, v_bhs = _bhs(sq_, layout), _bhs(sk_, layout), _bhs(sv_, layout)
    if varlen and (v_total != total_k):
        raise ValueError(f"k and v must have the same rows: {total_k} and {v_total}")
    if v_heads != heads_kv:
        raise ValueError(f"k and v must have the same number of heads: {heads_kv} and {v_heads}")
    if dim_k != dim:
        raise ValueError(f"q and k must have the same head dimension: {dim} and {dim_k}")
    if heads_kv and heads_q % heads_kv:
        raise ValueError(f"k/v heads ({heads_kv}) must divide q heads ({heads_q})")

    params = N.new_params(batch, heads_q, seq_q, seq_k, dim)
    params.heads_kv = heads_kv
    params.head_dim_v = dim_v
    params.dtype = code
    params.mask = _CAUSAL[causal]
    params.algo = _ALGOS[algo]
    if scale is not None:
        scale = float(scale)
        if scale == 0.0:
            raise ValueError("scale=0 would mean the default 1/sqrt(head_dim) to the library; "
                             "pass None for the default")
        params.scale = scale
    if softcap:
        params.softcap = float(softcap)
    if dropout_p:  # the library refuses p outside [0, 1)
        params.dropout_p = float(dropout_p)
        params.dropout_seed = int(dropout_seed)
        params.dropout_offset = int(dropout_offset)
    if window is not None:
        try:
            left, right = window
        except (TypeError, ValueError):
            raise ValueError(f"window must be (left, right), not {window!r}") from None
        params.window.enabled = 1
        params.window.left = -1 if left is None else int(left)
        params.window.right = -1 if right is None else int(right)
    _set_strides(params.q_strides, *q_bhs)
    _set_strides(params.k_strides, *k_bhs)
    _set_strides(params.v_strides, *v_bhs)

    keep = [q, k, v]
    tensors = N.HostTensors()
    tensors.q, tensors.k, tensors.v = q.ctypes.data, k.ctypes.data, v.ctypes.data
    if varlen:
        params.varlen = 1
        params.total_q, params.total_k = total_q, total_k
        tensors.cu_seqlens_q, tensors.cu_seqlens_k = cu_q.ctypes.data, cu_k.ctypes.data
        keep += [cu_q, cu_k]
    if alibi_slopes is not None:
        slopes = np.ascontiguousarray(alibi_slopes, dtype=np.float32)
        if slopes.shape != (heads_q,):
            raise ValueError(f"alibi_slopes must have one slope per query head, shape "
                             f"({heads_q},), not {slopes.shape}")
        params.alibi = 1
        tensors.alibi_slopes = slopes.ctypes.data
        keep.append(slopes)
    if key_lengths is not None:
        lengths = _int32_vector(key_lengths, "key_lengths", batch)
        params.key_padding = 1
        tensors.key_lengths = lengths.ctypes.data
        keep.append(lengths)
    if bias is not None:
        bias = _score_operand(bias, "bias", batch, heads_q, seq_q, seq_k, np.float32, params.bias)
        tensors.bias = bias.ctypes.data
        keep.append(bias)
    if mask is not None:
        mask = _score_operand(mask, "mask", batch, heads_q, seq_q, seq_k, np.uint8,
                              params.keep_mask)
        tensors.keep_mask = mask.ctypes.data
        keep.append(mask)

    # Outputs: O like Q with head_dim_v (or the caller's), LSE [B, Hq, Sq]
    # ([Hq, total_q] with varlen), probabilities [B, Hq, Sq, Sk] contiguous.
    if varlen:
        o_shape = (total_q, heads_q, dim_v) if layout == "bshd" else (heads_q, total_q, dim_v)
    elif layout == "bhsd":
        o_shape = (batch, heads_q, seq_q, dim_v)
    else:
        o_shape = (batch, seq_q, heads_q, dim_v)
    allocate = allocate or _numpy_empty
    if out is None:
        out = allocate(o_shape, code)
    else:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a NumPy array, not {type(out).__name__}")
        if out.shape != o_shape or out.dtype != q.dtype:
            raise ValueError(f"out must have shape {o_shape} and dtype {q.dtype}, "
                             f"not {out.shape} {out.dtype}")
        if not out.flags.writeable:
            raise ValueError("out is read-only")
    so_ = _element_strides(out, "out")
    if any(s < 0 for s in so_):
        raise ValueError("out has a negative stride")
    if varlen:
        row, head = (0, 1) if layout == "bshd" else (1, 0)
        _set_strides(params.o_strides, 0, so_[head], so_[row])
    else:
        _set_strides(params.o_strides, *_bhs(so_, layout))
    outputs = 0
    lse = probs = None
    if return_lse:
        lse_shape = (heads_q, total_q) if varlen else (batch, heads_q, seq_q)
        lse = np.empty(lse_shape, np.float32)
        if varlen:
            _set_strides(params.lse_strides, 0, total_q, 1)
        outputs |= N.PLAN_LSE
    if return_probs:
        h0, h1 = _probs_range(probs_heads, "probs_heads", heads_q)
        r0, r1 = _probs_range(probs_rows, "probs_rows", seq_q)
        params.probs_heads_begin, params.probs_heads_end = h0, h1
        params.probs_rows_begin, params.probs_rows_end = r0, r1
        probs = np.empty((batch, h1 - h0, r1 - r0, seq_k), np.float32)
        outputs |= N.PLAN_PROBS
    elif probs_heads is not None or probs_rows is not None:
        raise ValueError("probs_heads and probs_rows need return_probs=True")
    tensors.o = _pointer(out)
    tensors.lse = _pointer(lse)
    tensors.probs = _pointer(probs)

    request = _Request()
    request.params, request.outputs, request.tensors = params, outputs, tensors
    request.out, request.lse, request.probs, request.keep = out, lse, probs, keep
    request.key = bytes(params) + bytes([outputs])
    return request


def _numpy_empty(shape, code):
    dtype = _CODE_DTYPES.get(code)
    if dtype is None:
        raise TypeError("bfloat16 needs the ml_dtypes package")
    return np.empty(shape, dtype)


def _result(request):
    results = [request.out]
    if request.lse is not None:
        results.append(request.lse)
    if request.probs is not None:
        results.append(request.probs)
    return results[0] if len(results) == 1 else tuple(results)


def _address(array):
    """The address of an array's first element, quickly for the common case."""
    try:  # a writable contiguous array: ~5x cheaper than array.ctypes.data
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    except (TypeError, ValueError, BufferError):
        return array.ctypes.data


class _Repeat:
    """What a call with a signature seen before needs beyond the arrays' addresses."""

    __slots__ = ("key", "params", "outputs", "o_shape", "o_dtype", "lse_shape", "probs_shape",
                 "idle")

    def __init__(self, request, idle, o_dtype):
        self.key, self.params, self.outputs = request.key, request.params, request.outputs
        self.o_shape, self.o_dtype = request.out.shape, o_dtype
        self.lse_shape = None if request.lse is None else request.lse.shape
        self.probs_shape = None if request.probs is None else request.probs.shape
        self.idle = idle


def _execute(context, idle, params, outputs, tensors):
    if context._handle is None:
        raise ValueError("the context is closed")
    try:
        plan = idle.pop()
    except IndexError:
        plan = _PlanHandle(context, params, outputs)
    try:
        status = _execute_host(plan.handle, ctypes.byref(tensors))
        if status:
            N.raise_for(status, "attn_plan_execute_host")
    finally:
        idle.append(plan)


def _run(request, context):
    _execute(context, context._idle_plans(request.key), request.params, request.outputs,
             request.tensors)


def _repeat(context, entry, q, k, v, out, allocate_extra=np.empty):
    """The repeated-call path: the plan and attn_params of the first call with this signature."""
    lse = probs = None
    tensors = N.HostTensors(q, k, v, out)
    if entry.lse_shape is not None:
        lse = allocate_extra(entry.lse_shape, np.float32)
        tensors.lse = _address(lse)
    if entry.probs_shape is not None:
        probs = allocate_extra(entry.probs_shape, np.float32)
        tensors.probs = _address(probs)
    _execute(context, entry.idle, entry.params, entry.outputs, tensors)
    return lse, probs


def _signature(q, k, v):
    return (q.shape, q.strides, q.dtype, k.shape, k.strides, k.dtype, v.shape, v.strides,
            v.dtype)


def _untouched(request, q, k, v):
    """Whether the request reads q, k and v in place (then its signature may be remembered)."""
    keep = request.keep
    return keep[0] is q and keep[1] is k and keep[2] is v


# ---- The calls ----------------------------------------------------------------


def attention(q, k, v, *, causal=None, scale=None, window=None, softcap=None, alibi_slopes=None,
              bias=None, mask=None, key_lengths=None, cu_seqlens_q=None, cu_seqlens_k=None,
              max_seqlen_q=None, max_seqlen_k=None, dropout_p=0.0, dropout_seed=0,
              dropout_offset=0, return_lse=False, return_probs=False, probs_heads=None,
              probs_rows=None, layout="bhsd", algo="auto", out=None, context=None):
    """softmax(scale · q·kᵀ, modified and masked) · v on an OpenCL device.

    q [B, Hq, Sq, D], k [B, Hkv, Sk, D], v [B, Hkv, Sk, Dv] (layout "bhsd";
    "bshd" is [B, S, H, D]); float32, float16 or ml_dtypes.bfloat16; strided
    views whose last dimension is contiguous are read in place. With
    cu_seqlens_q/k (int32 prefix sums of B + 1 entries) the tensors are packed
    sequences, [total, H, D] ("bshd") or [H, total, D] ("bhsd").

    causal: None, "top-left" (PyTorch's is_causal) or "bottom-right" (the
    KV-cache convention). window: (left, right) keys around the diagonal,
    None or negative for unbounded. softcap: c for c·tanh(s/c). alibi_slopes:
    [Hq] floats. bias: float, broadcastable to [B, Hq, Sq, Sk], added to the
    scores. mask: bool, same broadcasting, True = attend. key_lengths: [B]
    ints, batch b sees keys j < key_lengths[b]. dropout_p: the probability
    in [0, 1) of dropping each attention weight (kept ones scaled by
    1/(1-p)), drawn by Philox-4x32-10 from dropout_seed and dropout_offset
    (integers in [0, 2**64)): the same seed and offset give the same mask on
    every path and device; probabilities returned are the dropped, scaled
    weights; LSE is the un-dropped softmax's. algo: "auto", "fused" or
    "three-kernel". out: an output array to write (else one is allocated).

    Returns O, or a tuple (O, lse?, probs?) with return_lse (float32
    [B, Hq, Sq], natural log; [Hq, total_q] with varlen) and return_probs
    (float32 [B, Hq, Sq, Sk]). probs_heads and probs_rows ask for a subset
    of the probabilities, (begin, end) query heads and query rows (within
    each sequence) as Python slice bounds (negative from the end, None
    open): probs is then [B, heads, rows, Sk] of those, and only they are
    computed and written (e.g. one head's last 16 rows:
    probs_heads=(3, 4), probs_rows=(-16, None)). Library failures raise
    AttnError.
    """
    context = context or _default or default_context()
    # A call with only q, k, v and scalar options whose signature was seen
    # before skips validation: the same attn_params, new addresses.
    signature = None
    if (bias is None and mask is None and alibi_slopes is None and key_lengths is None and
            cu_seqlens_q is None and cu_seqlens_k is None and out is None and
            type(q) is np.ndarray and type(k) is np.ndarray and type(v) is np.ndarray):
        signature = (_signature(q, k, v), causal, scale,
                     None if window is None else tuple(window), softcap, dropout_p, dropout_seed,
                     dropout_offset, return_lse, return_probs,
                     None if probs_heads is None else tuple(probs_heads),
                     None if probs_rows is None else tuple(probs_rows), layout, algo)
        entry = context._fast.get(signature)
        if entry is not None:
            out = np.empty(entry.o_shape, entry.o_dtype)
            lse, probs = _repeat(context, entry, _address(q), _address(k), _address(v),
                                 _address(out))
            if lse is None and probs is None:
                return out
            return tuple(x for x in (out, lse, probs) if x is not None)
    request = _request(q, k, v, causal=causal, scale=scale, window=window, softcap=softcap,
                       alibi_slopes=alibi_slopes, bias=bias, mask=mask, key_lengths=key_lengths,
                       cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
                       max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, dropout_p=dropout_p,
                       dropout_seed=dropout_seed, dropout_offset=dropout_offset,
                       return_lse=return_lse, return_probs=return_probs,
                       probs_heads=probs_heads, probs_rows=probs_rows, layout=layout,
                       algo=algo, out=out)
    idle = context._idle_plans(request.key)
    _execute(context, idle, request.params, request.outputs, request.tensors)
    if signature is not None and _untouched(request, q, k, v):
        context._remember(signature, _Repeat(request, idle, q.dtype))
    return _result(request)


class _Backward:
    """attn_params and the tensors of one backward; the gradients to return."""

    __slots__ = ("params", "tensors", "grads", "keep", "dbias_full", "bias_shape")


def _backward_request(q, k, v, out, dout, lse, want_dbias, options):
    """Lays out a backward: the forward's request with O, dO, LSE and the gradients.

    The library lays dQ, dK, dV out like Q, K, V and dO like O, so the
    arrays go contiguous (a copy only where they are not) and the
    gradients are allocated alike.
    """
    for name in ("return_lse", "return_probs", "out"):
        if name in options:
            raise TypeError(f"attention_backward takes no {name}= (it returns the gradients)")
    q, k, v = (np.ascontiguousarray(np.asarray(t)) for t in (q, k, v))
    out = np.asarray(out)
    if not out.flags.c_contiguous or not out.flags.writeable:
        out = np.array(out, order="C")  # _request wants a writable O; the backward only reads it
    dout = np.ascontiguousarray(np.asarray(dout))
    if dout.shape != out.shape or dout.dtype != out.dtype:
        raise ValueError(f"dout must have out's shape and dtype {out.shape} {out.dtype}, not "
                         f"{dout.shape} {dout.dtype}")
    bias = options.get("bias")
    bias_shape = None if bias is None else np.shape(bias)
    if want_dbias and bias is None:
        raise ValueError("want_dbias needs a bias")
    request = _request(q, k, v, out=out, return_lse=True, **options)
    lse = np.ascontiguousarray(lse, dtype=np.float32)
    if lse.shape != request.lse.shape:
        raise ValueError(f"lse must have shape {request.lse.shape} (the forward's), not "
                         f"{lse.shape}")
    t = N.BackwardHostTensors()
    f = request.tensors
    t.q, t.k, t.v, t.o = f.q, f.k, f.v, f.o
    t.dout, t.lse = dout.ctypes.data, lse.ctypes.data
    t.bias, t.keep_mask, t.key_lengths = f.bias, f.keep_mask, f.key_lengths
    t.alibi_slopes, t.cu_seqlens_q, t.cu_seqlens_k = f.alibi_slopes, f.cu_seqlens_q, f.cu_seqlens_k
    q_used, k_used, v_used = request.keep[:3]
    grads = [np.empty_like(q_used), np.empty_like(k_used), np.empty_like(v_used)]
    t.dq, t.dk, t.dv = (g.ctypes.data for g in grads)
    b = _Backward()
    b.dbias_full = None
    if want_dbias:
        operand = next(a for a in request.keep if a.ctypes.data == f.bias)
        if not operand.flags.c_contiguous:  # dBias is laid out like the bias it reads
            raise ValueError("want_dbias needs a bias the library reads in place (contiguous)")
        b.dbias_full = np.empty(operand.shape, np.float32)
        t.dbias = b.dbias_full.ctypes.data
    b.params, b.tensors, b.grads, b.bias_shape = request.params, t, grads, bias_shape
    b.keep = request.keep + [out, dout, lse] + grads
    return b


def _backward_result(b):
    """dq, dk, dv and, when asked, dbias summed to the caller's bias shape."""
    if b.dbias_full is None:
        return tuple(b.grads)
    dbias = b.dbias_full
    padded = (1,) * (4 - len(b.bias_shape)) + tuple(b.bias_shape)
    axes = tuple(d for d in range(4) if padded[d] == 1 and dbias.shape[d] != 1)
    if axes:  # the library widened the bias over query rows or keys
        dbias = dbias.sum(axis=axes, keepdims=True, dtype=np.float32)
    return tuple(b.grads) + (dbias.reshape(b.bias_shape),)


def attention_backward(q, k, v, out, dout, lse, *, want_dbias=False, context=None, **options):
    """The gradients of attention(q, k, v, **options): (dq, dk, dv[, dbias]).

    out and lse are the forward's O and log-sum-exp (attention(...,
    return_lse=True)), dout the gradient of the loss with respect to O; the
    options (causal, scale, window, softcap, alibi_slopes, bias, mask,
    key_lengths, cu_seqlens_q/k, layout, ...) must be the forward's. dq, dk,
    dv have the dtypes and shapes of q, k, v (GQA: dk, dv summed over each
    group); with want_dbias, dbias (float32) has the bias's shape, summed
    over the dimensions it broadcasts. Deterministic: the same inputs give
    the same bits on every call.
    """
    context = context or _default or default_context()
    if context._handle is None:
        raise ValueError("the context is closed")
    b = _backward_request(q, k, v, out, dout, lse, want_dbias, options)
    N.raise_for(N.lib.attn_backward_host(context.handle, ctypes.byref(b.params),
                                         ctypes.byref(b.tensors)), "attn_backward_host")
    return _backward_result(b)


def reference_backward(q, k, v, dout, *, want_dbias=False, **options):
    """attention_backward on the CPU in double precision (the library's reference).

    It recomputes O and the log-sum-exp itself, so it needs only dout.
    """
    options.pop("context", None)
    out, lse = reference(q, k, v, return_lse=True, **options)
    b = _backward_request(q, k, v, out, dout, lse, want_dbias, options)
    N.raise_for(N.lib.attn_reference_backward(ctypes.byref(b.params), ctypes.byref(b.tensors)),
                "attn_reference_backward")
    return _backward_result(b)


def reference(q, k, v, **options):
    """attention() on the CPU in double precision (the library's reference), same arguments.

    Slow: meant for checking results.
    """
    options.pop("context", None)
    request = _request(q, k, v, **options)
    N.raise_for(N.lib.attn_reference_host(ctypes.byref(request.params),
                                          ctypes.byref(request.tensors)), "attn_reference_host")
    return _result(request)


def check(q, k, v, *, context=None, **options):
    """The algorithm attention() would run ("fused" or "three-kernel"), or AttnError."""
    request = _request(q, k, v, **options)
    algo = ctypes.c_int()
    context = context or default_context()
    N.raise_for(N.lib.attn_check(context.handle, ctypes.byref(request.params),
                                 int(request.lse is not None), int(request.probs is not None),
                                 ctypes.byref(algo)), "attn_check")
    return _ALGO_NAMES[algo.value]


class Plan:
    """A forward with fixed shapes, strides, dtype and options, built once.

    Plan(q, k, v, **options) validates and builds from example arrays (their
    contents are not read); plan(q, k, v, bias=..., out=...) then runs on
    arrays of the same shapes and strides, taking the per-call tensors
    (bias, mask, alibi_slopes, key_lengths, cu_seqlens_q/k) and out.
    A plan runs one call at a time (calls from several threads wait).
    """

    _PER_CALL = ("bias", "mask", "alibi_slopes", "key_lengths", "cu_seqlens_q", "cu_seqlens_k",
                 "out")

    def __init__(self, q, k, v, *, context=None, **options):
        unknown = set(options) - set(_STATIC_OPTIONS) - set(self._PER_CALL)
        if unknown:
            raise TypeError(f"Plan: unknown options {sorted(unknown)}")
        self.context = context or default_context()
        self._static = {name: value for name, value in options.items()
                        if name in _STATIC_OPTIONS}
        request = _request(q, k, v, **options)
        self._key = request.key
        self._plan = _PlanHandle(self.context, request.params, request.outputs)
        self._lock = threading.Lock()
        # Calls with arrays laid out like these skip validation (see __call__).
        self._repeat = None
        if len(self._static) == len(options) and _untouched(request, q, k, v):
            self._signature = _signature(q, k, v)
            self._repeat = _Repeat(request, None, q.dtype)

    @property
    def algo(self):
        """"fused" or "three-kernel"."""
        return self._plan.algo

    def __call__(self, q, k, v, **tensors):
        entry = self._repeat
        if (entry is not None and not tensors and type(q) is np.ndarray and
                type(k) is np.ndarray and type(v) is np.ndarray and
                _signature(q, k, v) == self._signature):
            out = np.empty(entry.o_shape, entry.o_dtype)
            args = N.HostTensors(_address(q), _address(k), _address(v), _address(out))
            lse = probs = None
            if entry.lse_shape is not None:
                lse = np.empty(entry.lse_shape, np.float32)
                args.lse = _address(lse)
            if entry.probs_shape is not None:
                probs = np.empty(entry.probs_shape, np.float32)
                args.probs = _address(probs)
            with self._lock:
                self._plan.execute(args)
            if lse is None and probs is None:
                return out
            return tuple(x for x in (out, lse, probs) if x is not None)
        unknown = set(tensors) - set(self._PER_CALL)
        if unknown:
            raise TypeError(f"Plan call: unknown arguments {sorted(unknown)} (options are "
                            "fixed when the plan is made)")
        request = _request(q, k, v, **self._static, **tensors)
        if request.key != self._key:
            raise ValueError("these arrays do not match the plan (shape, strides, dtype or "
                             "which optional tensors are given differ); make another Plan")
        with self._lock:
            self._plan.execute(request.tensors)
        return _result(request)

    def close(self):
        self._plan.destroy()


def merge(o_a, lse_a, o_b, lse_b, *, layout="bhsd"):
    """Combines two forwards of the same queries over disjoint keys, on the host.

    o_x [B, Hq, Sq, Dv] ("bshd": [B, Sq, Hq, Dv]) contiguous, lse_x float32
    [B, Hq, Sq] contiguous. Returns (o, lse) over the union of the keys.
    """
    o_a, o_b = np.ascontiguousarray(o_a), np.ascontiguousarray(o_b)
    lse_a = np.ascontiguousarray(lse_a, dtype=np.float32)
    lse_b = np.ascontiguousarray(lse_b, dtype=np.float32)
    if o_a.shape != o_b.shape or o_a.dtype != o_b.dtype or o_a.ndim != 4:
        raise ValueError(f"o_a and o_b must be 4-D of one shape and dtype: {o_a.shape} "
                         f"{o_a.dtype}, {o_b.shape} {o_b.dtype}")
    if layout == "bhsd":
        batch, heads, seq, dim_v = o_a.shape
    elif layout == "bshd":
        batch, seq, heads, dim_v = o_a.shape
    else:
        raise ValueError(f"layout must be \"bhsd\" or \"bshd\", not {layout!r}")
    if lse_a.shape != (batch, heads, seq) or lse_b.shape != lse_a.shape:
        raise ValueError(f"lse_a and lse_b must have shape {(batch, heads, seq)}")
    params = N.new_params(batch, heads, seq, seq, dim_v)
    params.dtype = _storage_code(o_a, "o_a", None)
    _set_strides(params.o_strides, *_bhs(_element_strides(o_a, "o_a"), layout))
    o, lse = np.empty_like(o_a), np.empty_like(lse_a)
    tensors = N.MergeTensors(o_a.ctypes.data, o_b.ctypes.data, lse_a.ctypes.data,
                             lse_b.ctypes.data, o.ctypes.data, lse.ctypes.data)
    N.raise_for(N.lib.attn_merge(ctypes.byref(params), ctypes.byref(tensors)), "attn_merge")
    return o, lse


__all__ = ["AttnError", "Context", "Device", "Plan", "attention", "bfloat16", "check",
           "default_context", "devices", "merge", "reference"]
