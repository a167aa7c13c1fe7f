/*
 * libattn_cl — exact transformer attention on any OpenCL 1.2 device.
 *
 *   O[b,h] = softmax(scale · Q[b,h] · K[b,g]ᵀ  masked) · V[b,g],
 *   g = h / (heads_q / heads_kv)
 *
 * Shapes (element strides per tensor, last dimension contiguous):
 *   Q [batch, heads_q,  seq_q, head_dim]      K [batch, heads_kv, seq_k, head_dim]
 *   V [batch, heads_kv, seq_k, head_dim_v]    O [batch, heads_q,  seq_q, head_dim_v]
 *   LSE [batch, heads_q, seq_q] (natural-log log-sum-exp of the scaled, masked scores)
 *
 * Conventions:
 *   - ATTN_MASK_CAUSAL_TOP_LEFT:     query i sees keys j <= i            (PyTorch is_causal)
 *   - ATTN_MASK_CAUSAL_BOTTOM_RIGHT: query i sees keys j <= i + seq_k - seq_q
 *     (FlashAttention >= 2.1 and KV-cache decoding: the last query sees every key).
 *     The two coincide when seq_q == seq_k.
 *   - A query row whose keys are all masked gives output 0, probabilities 0
 *     and log-sum-exp -INFINITY, never NaN.
 *   - Accumulation is fp32 on the device and double in the CPU reference.
 *
 * Status codes: 0 is success; -1 .. -1999 are OpenCL error codes passed through
 * unchanged (CL_OUT_OF_RESOURCES, CL_BUILD_PROGRAM_FAILURE, ...); the library's
 * own codes start at -2001. attn_status_name() names both.
 *
 * Errors: the library never prints, aborts or exits. Every failing call returns
 * a status and records a message (with the OpenCL error name and, for a kernel
 * that fails to build, the compiler log) readable through attn_last_error().
 * A failing forward leaves the caller's output buffers untouched.
 *
 * Threading: a context may be shared by several threads; calls on one context
 * are serialized internally. attn_last_error(ctx) holds the message of the most
 * recent failure on that context from any thread; attn_last_error(NULL) holds
 * the calling thread's most recent failure of a call without a context.
 */
#ifndef ATTN_CL_H
#define ATTN_CL_H

#include <stddef.h>
#include <stdint.h>

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#ifdef __APPLE__
#include <OpenCL/cl.h>
#else
#include <CL/cl.h>
#endif

#if defined(_WIN32) && defined(ATTN_CL_BUILDING_SHARED)
#define ATTN_API __declspec(dllexport)
#elif defined(__GNUC__) || defined(__clang__)
#define ATTN_API __attribute__((visibility("default")))
#else
#define ATTN_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define ATTN_CL_VERSION_MAJOR 0
#define ATTN_CL_VERSION_MINOR 1
#define ATTN_CL_VERSION_PATCH 0

/* Largest head_dim / head_dim_v the kernels are built for. */
#define ATTN_MAX_HEAD_DIM 256

typedef enum attn_status {
    ATTN_SUCCESS = 0,
    /* -1 .. -1999: OpenCL error codes, passed through unchanged. */

    /* A required pointer or cl_mem is NULL. */
    ATTN_ERR_NULL_ARGUMENT = -2001,
    /* A size is zero or negative, or heads_kv does not divide heads_q. */
    ATTN_ERR_INVALID_SIZE = -2002,
    /* head_dim or head_dim_v outside 1..ATTN_MAX_HEAD_DIM. */
    ATTN_ERR_UNSUPPORTED_HEAD_DIM = -2003,
    /* An element or byte count does not fit size_t. */
    ATTN_ERR_SIZE_OVERFLOW = -2004,
    /* A cl_mem, from its offset, is smaller than the shape needs. */
    ATTN_ERR_BUFFER_TOO_SMALL = -2005,
    /* An enum out of range, a non-finite scale, a bad stride or offset. */
    ATTN_ERR_INVALID_VALUE = -2006,
    /* A valid request this build or device cannot serve. */
    ATTN_ERR_UNSUPPORTED = -2007,
    /* The device cannot hold even one head's working set. */
    ATTN_ERR_DEVICE_OUT_OF_MEMORY = -2008,
    /* A host allocation failed. */
    ATTN_ERR_HOST_OUT_OF_MEMORY = -2009,
    /* No OpenCL platform or device, or none matching the request. */
    ATTN_ERR_NO_DEVICE = -2010,
    /* ATTN_CL_DEVICE or the options name no device that exists. */
    ATTN_ERR_INVALID_DEVICE_SPEC = -2011,
    /* A kernel source could not be read (ATTN_CL_KERNEL_DIR). */
    ATTN_ERR_KERNEL_SOURCE = -2012,
} attn_status;

typedef enum attn_mask {
    ATTN_MASK_NONE = 0,
    ATTN_MASK_CAUSAL_TOP_LEFT = 1,
    ATTN_MASK_CAUSAL_BOTTOM_RIGHT = 2,
} attn_mask;

typedef enum attn_algo {
    /* The best path that can serve the request. */
    ATTN_ALGO_AUTO = 0,
    /* Q.K^T, then scale+mask+softmax, then P.V: holds the score matrix and
     * can return the probabilities. */
    ATTN_ALGO_THREE_KERNEL = 1,
    /* Tile by tile with an online softmax: O(n) memory. */
    ATTN_ALGO_FUSED = 2,
} attn_algo;

typedef enum attn_dtype {
    ATTN_DTYPE_F32 = 0, /* storage type of Q, K, V and O; LSE and probabilities are always float */
} attn_dtype;

/* Element strides of one tensor. All three zero means contiguous, i.e. BHSD
 * packed: seq = last dim, head = seq_len * seq, batch = heads * head.
 * BSHD is seq = heads * dim, head = dim, batch = seq_len * heads * dim.
 * For LSE, "seq" is the step between consecutive queries. */
typedef struct attn_strides {
    int64_t batch;
    int64_t head;
    int64_t seq;
} attn_strides;

/* Fill with attn_params_init() and then change what differs: fields added in
 * later versions get defaults there, so callers keep compiling. */
typedef struct attn_params {
    int32_t batch;
    int32_t heads_q;
    int32_t heads_kv; /* 0: same as heads_q; must divide heads_q (grouped-query attention) */
    int32_t seq_q;
    int32_t seq_k;
    int32_t head_dim;   /* of Q and K, 1..ATTN_MAX_HEAD_DIM */
    int32_t head_dim_v; /* of V and O; 0: same as head_dim */
    float scale;        /* 0: 1/sqrt(head_dim); otherwise any finite value */
    attn_mask mask;
    attn_algo algo;
    attn_dtype dtype;
    attn_strides q_strides, k_strides, v_strides, o_strides, lse_strides;
} attn_params;

/* Defaults: heads_kv = heads_q, head_dim_v = head_dim, scale 1/sqrt(head_dim),
 * no mask, ATTN_ALGO_AUTO, f32, contiguous BHSD. */
ATTN_API void attn_params_init(attn_params *params, int32_t batch, int32_t heads, int32_t seq_q,
                               int32_t seq_k, int32_t head_dim);

/* ---- Devices and contexts ------------------------------------------------ */

typedef struct attn_context *attn_context_t;

typedef struct attn_device_info {
    int32_t platform_index;
    int32_t device_index;
    int32_t is_gpu; /* CL_DEVICE_TYPE_GPU */
    int32_t compute_units;
    uint64_t global_mem_bytes;
    uint64_t max_alloc_bytes;
    uint64_t local_mem_bytes;
    char platform_name[128];
    char device_name[128];
    char vendor[128];
    char device_version[128];
    char driver_version[128];
} attn_device_info;

/* Lists every device of every platform. Writes at most `capacity` entries to
 * `out` (which may be NULL when capacity is 0) and the total to *count. */
ATTN_API attn_status attn_list_devices(attn_device_info *out, size_t capacity, size_t *count);

typedef struct attn_context_options {
    int32_t platform_index;   /* -1 (default): choose automatically */
    int32_t device_index;     /* -1 (default): choose automatically; index within the platform */
    int32_t enable_profiling; /* create the queue with CL_QUEUE_PROFILING_ENABLE */
} attn_context_options;

ATTN_API void attn_context_options_init(attn_context_options *options);

/* Chooses a device: explicit options first, then the environment variable
 * ATTN_CL_DEVICE="platform:device" (indices as attn_list_devices reports),
 * then the first GPU of any platform, then the first device. `options` may be
 * NULL. On failure *ctx is set to NULL and attn_last_error(NULL) says why. */
ATTN_API attn_status attn_context_create(const attn_context_options *options, attn_context_t *ctx);

/* Wraps a caller's context, device and in-order queue (retained, released on
 * destroy). Forwards are enqueued on `queue`. */
ATTN_API attn_status attn_context_create_from_cl(cl_context context, cl_device_id device,
                                                 cl_command_queue queue, attn_context_t *ctx);

ATTN_API void attn_context_destroy(attn_context_t ctx);

/* Overrides the fused path's kernel parameters for this context, over the
 * built-in per-device table: a comma-separated key=value list such as
 * "variant=cpu,rows=8,tile_k=16" (keys variant cpu|gpu, rows, tile_k, wg,
 * vec, unroll; bench/attn_tune prints the best for a device). Keys left out
 * keep the table's value; NULL or "" removes the override. The environment
 * variable ATTN_CL_TUNE, same syntax, applies over this. A malformed spec is
 * refused here (ATTN_ERR_INVALID_VALUE); values a problem or the device
 * cannot take fail the forward with ATTN_ERR_INVALID_VALUE. */
ATTN_API attn_status attn_context_set_tuning(attn_context_t ctx, const char *spec);

ATTN_API attn_status attn_context_device_info(attn_context_t ctx, attn_device_info *info);
ATTN_API cl_command_queue attn_context_queue(attn_context_t ctx);

/* ---- Forward ------------------------------------------------------------ */

/* Says whether a forward with these parameters and optional outputs (lse,
 * probabilities) will run on this context's device, and which algorithm it
 * will use; on refusal returns the same status and message the forward would.
 * It is the validation and dispatch code the forward itself runs. */
ATTN_API attn_status attn_check(attn_context_t ctx, const attn_params *params, int want_lse,
                                int want_probs, attn_algo *algo);

/* Builds (or finds in the context's cache) every kernel such a forward uses,
 * so that the first forward does not pay for compilation. */
ATTN_API attn_status attn_prepare(attn_context_t ctx, const attn_params *params, int want_lse,
                                  int want_probs);

/* Host memory in and out: uploads Q, K, V, computes and downloads O and, when
 * not NULL, the log-sum-exp `lse` (float, laid out by params->lse_strides) and
 * the probabilities `probs` (float, [batch, heads_q, seq_q, seq_k] contiguous;
 * only the three-kernel path produces them, so ATTN_ALGO_AUTO chooses it then).
 * Blocks until done. On failure nothing the caller passed is written. */
ATTN_API attn_status attn_forward(attn_context_t ctx, const attn_params *params, const void *q,
                                  const void *k, const void *v, void *o, float *lse, float *probs);

typedef struct attn_device_tensors {
    cl_mem q, k, v, o;
    cl_mem lse;                                                /* NULL: not wanted */
    size_t q_offset, k_offset, v_offset, o_offset, lse_offset; /* in bytes */
} attn_device_tensors;

/* Device memory: enqueues the forward on the context's queue after
 * `wait_list`, without blocking. When `event` is not NULL it receives an event
 * that completes when O (and LSE) are written; release it with
 * clReleaseEvent. Temporary device buffers are
 * released by the library once the work completes. */
ATTN_API attn_status attn_forward_device(attn_context_t ctx, const attn_params *params,
                                         const attn_device_tensors *tensors,
                                         cl_uint num_wait_events, const cl_event *wait_list,
                                         cl_event *event);

/* The CPU reference: the same parameters and outputs as attn_forward,
 * accumulated in double. Slow (O(seq_q·seq_k·head_dim) per head, one thread);
 * meant for verification. */
ATTN_API attn_status attn_reference(const attn_params *params, const void *q, const void *k,
                                    const void *v, void *o, float *lse, float *probs);

/* ---- Errors and version ------------------------------------------------- */

/* "ATTN_ERR_INVALID_SIZE", "CL_OUT_OF_RESOURCES", ...; never NULL. */
ATTN_API const char *attn_status_name(attn_status status);

/* The message of the most recent failure (see Threading above); "" if none. */
ATTN_API const char *attn_last_error(attn_context_t ctx);

ATTN_API const char *attn_version_string(void);
ATTN_API void attn_version(int *major, int *minor, int *patch);

#ifdef __cplusplus
}
#endif

#endif /* ATTN_CL_H */
