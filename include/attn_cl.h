/*
 * libattn_cl — exact transformer attention on any OpenCL 1.2 device.
 *
 *   O[b,h] = softmax(modify(scale · Q[b,h] · K[b,g]ᵀ)  masked) · V[b,g],
 *   g = h / (heads_q / heads_kv)
 *
 * Shapes (element strides per tensor, last dimension contiguous):
 *   Q [batch, heads_q,  seq_q, head_dim]      K [batch, heads_kv, seq_k, head_dim]
 *   V [batch, heads_kv, seq_k, head_dim_v]    O [batch, heads_q,  seq_q, head_dim_v]
 *   LSE [batch, heads_q, seq_q] (natural-log log-sum-exp of the modified, masked scores)
 *   With params.varlen, sequences are packed: row r of Q is query r - cu_seqlens_q[b]
 *   of sequence b for cu_seqlens_q[b] <= r < cu_seqlens_q[b + 1] (likewise K, V with
 *   cu_seqlens_k); the batch strides are unused.
 *
 * The diagonal: query i of a sequence with sq queries and sk keys is aligned
 * with key diag(i) = i under ATTN_MASK_CAUSAL_TOP_LEFT, and diag(i) = i + sk - sq
 * otherwise (bottom-right: the last query with the last key).
 *
 * Each score s = scale · q·k is modified, in this order:
 *   1. softcap (params.softcap = c > 0):  s = c · tanh(s / c)
 *   2. ALiBi (params.alibi):              s -= slope[h] · |j - diag(i)|
 *   3. additive bias (params.bias):       s += bias[b, h, i, j]
 * and then masked (the key gets probability 0), whatever came before:
 *   - ATTN_MASK_CAUSAL_TOP_LEFT / _BOTTOM_RIGHT: keys j > diag(i)
 *     (top-left is PyTorch's is_causal; bottom-right FlashAttention >= 2.1's and
 *     the KV-cache convention; the two coincide when seq_q == seq_k);
 *   - a sliding window (params.window): keys outside
 *     [diag(i) - left, diag(i) + right] (a negative extent is unbounded);
 *   - key padding (params.key_padding): keys j >= key_lengths[b];
 *   - a boolean mask (params.keep_mask): keys whose byte keep_mask[b, h, i, j] is 0.
 *   A query row whose keys are all masked gives output 0, probabilities 0
 *   and log-sum-exp -INFINITY, never NaN.
 *
 * Storage: Q, K, V and O are float, IEEE half or bfloat16 (params.dtype);
 * LSE, probabilities and the bias are float. Accumulation is fp32 on the
 * device and double in the CPU reference, which reads the same stored
 * values. Any finite scale (subnormal included) and scores or biases up to
 * +-FLT_MAX are computed within the accuracy bound of docs/accuracy.md.
 * NaN or infinity in an input propagates like in the reference: a NaN
 * score makes its row's O and LSE NaN; a NaN or infinity in V at key j
 * reaches row i's O exactly when j's weight in row i is nonzero, so never
 * when row i does not see j (causal mask, window, key padding, keep-mask, a
 * -INFINITY score). Weights are fp32 on the device: a key scoring more than
 * about 87-103 below its row's maximum weighs exactly 0 there.
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
 * are serialized internally, and results do not depend on which thread calls
 * or in what order. attn_last_error(NULL) is the calling thread's most recent
 * failure of any call; attn_last_error(ctx) the most recent failure on that
 * context from any thread. Either returns a buffer of the calling thread,
 * valid until its next attn_last_error call, that other threads' failures
 * never touch. attn_context_destroy must not overlap other calls on the same
 * context. The ATTN_CL_* environment variables are read during calls: do
 * not change them while calls run.
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
#define ATTN_CL_VERSION_MINOR 3
#define ATTN_CL_VERSION_PATCH 0

/* Largest head_dim / head_dim_v the kernels are built for. */
#define ATTN_MAX_HEAD_DIM 512

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
    /* A kernel source could not be read from ATTN_CL_KERNEL_DIR: missing,
     * not a regular file, or larger than 16 MiB. */
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
    /* Tile by tile with an online softmax: O(n) memory. With probabilities,
     * the forward and then each probability exp(s - lse) from the row's
     * shift and sum, tile by tile: no score matrix beyond the output. */
    ATTN_ALGO_FUSED = 2,
} attn_algo;

typedef enum attn_dtype {
    ATTN_DTYPE_F32 = 0,  /* float */
    ATTN_DTYPE_F16 = 1,  /* IEEE 754 half, in uint16_t (core OpenCL: no cl_khr_fp16 needed) */
    ATTN_DTYPE_BF16 = 2, /* bfloat16, the top 16 bits of a float, in uint16_t */
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

/* An optional per-score operand, [batch | 1, heads_q | 1, seq_q, seq_k]: an
 * additive float bias or a boolean keep-mask of one byte per score. A size of
 * 1 (or 0, meaning 1) broadcasts that dimension. Keys are contiguous; the
 * strides step over batch, head and query rows (all zero: packed). With
 * varlen, i and j index within each sequence and seq_q, seq_k are the
 * maximum lengths. */
typedef struct attn_score_operand {
    int32_t present; /* 0: none */
    int32_t batch;   /* 1 or params.batch */
    int32_t heads;   /* 1 or params.heads_q */
    attn_strides strides;
} attn_score_operand;

/* A sliding window around the diagonal: keys diag(i) - left .. diag(i) + right.
 * A negative extent leaves that side unbounded. */
typedef struct attn_window {
    int32_t enabled;
    int32_t left, right;
} attn_window;

/* Fill with attn_params_init() and then change what differs: fields added in
 * later versions get defaults there, so callers keep compiling. Every field
 * beyond the sizes means "off" when zero. */
typedef struct attn_params {
    /* sizeof(attn_params) of the header the caller was built with, set by
     * attn_params_init; every call refuses another value
     * (ATTN_ERR_INVALID_VALUE), so that a binary built against another
     * version's header is refused rather than misread. */
    uint32_t struct_size;
    int32_t batch; /* with varlen: the number of sequences */
    int32_t heads_q;
    int32_t heads_kv;   /* 0: same as heads_q; must divide heads_q (grouped-query attention) */
    int32_t seq_q;      /* with varlen: the longest sequence's queries */
    int32_t seq_k;      /* with varlen: the longest sequence's keys */
    int32_t head_dim;   /* of Q and K, 1..ATTN_MAX_HEAD_DIM */
    int32_t head_dim_v; /* of V and O; 0: same as head_dim */
    float scale;        /* 0: 1/sqrt(head_dim); otherwise any finite value */
    attn_mask mask;
    attn_algo algo;
    attn_dtype dtype;
    attn_strides q_strides, k_strides, v_strides, o_strides, lse_strides;

    /* Score modifiers and masks (see the top of this file for their order). */
    float softcap;                /* > 0: logit soft-capping c · tanh(s / c); 0: off */
    int32_t alibi;                /* nonzero: ALiBi, slopes per query head from the tensors */
    attn_score_operand bias;      /* additive float bias */
    attn_score_operand keep_mask; /* boolean mask, nonzero byte = keep */
    attn_window window;           /* sliding window */
    int32_t key_padding;          /* nonzero: per-batch key lengths from the tensors */

    /* Variable-length packed batches (FlashAttention's varlen convention):
     * cu_seqlens_q / cu_seqlens_k from the tensors, int32 prefix sums of
     * batch + 1 entries starting at 0. The packed tensors hold total_q
     * query rows and total_k key rows. */
    int32_t varlen;
    int32_t total_q, total_k;

    /* Dropout on the attention weights (training), after the softmax:
     *     O[i] = sum_j P[i,j] * keep(b, h, i, j) / (1 - dropout_p) * V[j]
     * where P is the softmax above. LSE stays the log-sum-exp of the
     * un-dropped softmax (what a backward pass needs), and the probabilities
     * (either path) are the dropped and scaled weights
     * P * keep / (1 - p), exactly what multiplies V. keep is a pure
     * function of (dropout_seed, dropout_offset, b, h, i, j), i and j in the
     * sequence's own coordinates (varlen included), h the query head: the
     * same mask on every path, kernel shape, tiling and device, and in
     * attn_reference. The generator is Philox-4x32-10 keyed by
     * dropout_seed (low word first); the counter is
     *     (j / 8, i, b * heads_q + h, low 32 bits of dropout_offset)
     * with the high 32 bits of dropout_offset XORed into the key's high word.
     * Its four output words hold 16-bit draws for keys 8 * (j / 8) .. + 7,
     * low half first; key j keeps when its draw >= round(p * 2^16) (capped at
     * 2^16 - 1). Two calls with the same seed and different offsets, or
     * different seeds and the same offset, draw different masks.
     * dropout_p must be in [0, 1) (NaN refused); 0 is off and costs
     * nothing. The KV-cache calls refuse dropout (ATTN_ERR_UNSUPPORTED). */
    float dropout_p;
    uint64_t dropout_seed;
    uint64_t dropout_offset;

    /* Which probabilities a call that asks for them gets: query heads
     * probs_heads_begin .. probs_heads_end - 1 and query rows (within each
     * sequence) probs_rows_begin .. probs_rows_end - 1; an end of 0 means
     * the last (heads_q, seq_q), so all four zero give every probability.
     * The output is then [batch, heads, rows, seq_k] of the subset's counts,
     * contiguous: element (b, h, i, j) at
     *     ((b * heads + h - probs_heads_begin) * rows + i - probs_rows_begin) * seq_k + j
     * (docs/api.md). A range out of bounds, empty or reversed is refused
     * with ATTN_ERR_INVALID_VALUE; without probabilities it is not read. */
    int32_t probs_heads_begin, probs_heads_end;
    int32_t probs_rows_begin, probs_rows_end;
} attn_params;

/* Defaults: heads_kv = heads_q, head_dim_v = head_dim, scale 1/sqrt(head_dim),
 * no mask or modifier, ATTN_ALGO_AUTO, f32, contiguous BHSD. */
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
 * destroy). Forwards are enqueued on `queue`. The objects must belong
 * together: `queue` of `context` and of `device`, one of the context's
 * devices (CL_QUEUE_CONTEXT, CL_QUEUE_DEVICE, CL_CONTEXT_DEVICES); otherwise
 * ATTN_ERR_INVALID_VALUE. An out-of-order queue gives ATTN_ERR_UNSUPPORTED.
 * On failure *ctx is set to NULL and nothing of the caller's is retained. */
ATTN_API attn_status attn_context_create_from_cl(cl_context context, cl_device_id device,
                                                 cl_command_queue queue, attn_context_t *ctx);

ATTN_API void attn_context_destroy(attn_context_t ctx);

/* Overrides the fused path's kernel parameters for this context, over the
 * built-in per-device table: a comma-separated key=value list such as
 * "variant=cpu,rows=8,tile_k=16" (keys variant cpu|gpu, rows, tile_k, wg,
 * vec, unroll; bench/attn_tune prints the best for a device). Keys left out
 * keep the table's value, except that naming the other kernel shape than the
 * device's entry (variant=cpu on a GPU, variant=gpu on a CPU) gives the shape
 * keys left out (rows, tile_k, wg, vec, unroll) that shape's defaults; NULL
 * or "" removes the override. The environment
 * variable ATTN_CL_TUNE, same syntax, applies over this. A malformed spec is
 * refused here (ATTN_ERR_INVALID_VALUE). Values the variant, a problem or the
 * device cannot take (local memory, work-group size) fail the forward, and
 * attn_check, by where they came from: a value set by this spec or by
 * ATTN_CL_TUNE is the caller's, ATTN_ERR_INVALID_VALUE with a message naming
 * that override; when the built-in table's own choice cannot serve a valid
 * request, ATTN_ERR_UNSUPPORTED (an override can then choose other values). */
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
 * the probabilities `probs` (float, [batch, heads_q, seq_q, seq_k] contiguous,
 * or the subset params->probs_* choose; both paths produce them, the fused
 * one from its LSE without a second softmax, and ATTN_ALGO_AUTO chooses the
 * faster for the device and shape).
 * Blocks until done. On failure nothing the caller passed is written.
 * For requests with a bias, a mask, key padding, ALiBi or varlen, whose
 * extra inputs need pointers, use attn_forward_host. */
ATTN_API attn_status attn_forward(attn_context_t ctx, const attn_params *params, const void *q,
                                  const void *k, const void *v, void *o, float *lse, float *probs);

/* Every input and output of a host-memory forward. Q, K, V and O are in
 * params->dtype; the rest as typed. Each optional input is required exactly
 * when params asks for it; NULL outputs are not computed. */
typedef struct attn_host_tensors {
    const void *q, *k, *v;
    void *o;
    float *lse;        /* laid out by params->lse_strides */
    float *probs;      /* [batch, heads_q, seq_q, seq_k] contiguous (maximum lengths with varlen),
                          or params' subset of heads and rows */
    const float *bias; /* params->bias */
    const uint8_t *keep_mask;    /* params->keep_mask */
    const int32_t *key_lengths;  /* [batch], params->key_padding; each 0..seq_k */
    const float *alibi_slopes;   /* [heads_q], params->alibi */
    const int32_t *cu_seqlens_q; /* [batch + 1], params->varlen */
    const int32_t *cu_seqlens_k; /* [batch + 1], params->varlen */
} attn_host_tensors;

/* attn_forward with every feature: the same contract. */
ATTN_API attn_status attn_forward_host(attn_context_t ctx, const attn_params *params,
                                       const attn_host_tensors *tensors);

/* The device-memory call's tensors. The per-batch and per-head arrays are
 * small arrays given either in host memory, read (and checked) during the
 * call so that they need not outlive it, or as device buffers (`*_mem`, the
 * array from the buffer's first byte), which a caller whose lengths live on
 * the device passes without a round trip. Device arrays are not read by the
 * host, so not checked: they must hold what the host arrays are checked for
 * (see attn_host_tensors); the kernels clamp every index they derive from
 * them into the tensors, so out-of-range values give unspecified results but
 * never an access outside the tensors. Give each array one way, not both. */
typedef struct attn_device_tensors {
    cl_mem q, k, v, o;
    cl_mem lse;                                                 /* NULL: not wanted */
    size_t q_offset, k_offset, v_offset, o_offset, lse_offset;  /* in bytes */
    cl_mem bias, keep_mask;                                     /* as params asks */
    size_t bias_offset, keep_mask_offset;                       /* in bytes */
    const int32_t *key_lengths, *cu_seqlens_q, *cu_seqlens_k;   /* host memory */
    const float *alibi_slopes;                                  /* host memory */
    cl_mem key_lengths_mem, cu_seqlens_q_mem, cu_seqlens_k_mem; /* or device memory */
    cl_mem alibi_slopes_mem;
} attn_device_tensors;

/* Device memory: enqueues the forward on the context's queue after
 * `wait_list`, without blocking. When `event` is not NULL it receives an event
 * that completes when O (and LSE) are written; release it with
 * clReleaseEvent. The call sets *event to NULL before anything else, so a
 * call that fails, for any reason, leaves it NULL (nothing to release). Temporary device buffers
 * are released by the library once the work completes. The caller's O and LSE are written only by
 * the last command the call enqueues: a call that fails leaves them untouched. Memory: an output
 * (O, LSE) may not share a byte with an input (Q, K, V, the bias, the keep-mask): the kernels read
 * the inputs while they write the outputs. The call refuses such tensors with
 * ATTN_ERR_INVALID_VALUE when their byte ranges meet in one buffer, a sub-buffer counting as the
 * bytes of its parent it covers (CL_MEM_ASSOCIATED_MEMOBJECT, CL_MEM_OFFSET). O and LSE may
 * interleave in one buffer (a packed [O | LSE] record) but not share an element
 * (ATTN_ERR_INVALID_VALUE). Overlap through memory the runtime cannot see (two buffers over one
 * host pointer, say) is not detected and races. */
ATTN_API attn_status attn_forward_device(attn_context_t ctx, const attn_params *params,
                                         const attn_device_tensors *tensors,
                                         cl_uint num_wait_events, const cl_event *wait_list,
                                         cl_event *event);

/* ---- Plans: validate and build once, execute many times ----------------- */

/* A plan holds everything a forward with fixed parameters needs: the
 * validated shapes, the chosen algorithm and its tuning, its kernels (built
 * at creation), and, once used, the device buffers of the host call and the
 * workspace. Executing it validates no shape, parses no tuning and
 * allocates nothing after the first execute of each kind: what a decode
 * loop, a training step or a language binding calls many times. The
 * attn_forward* calls are built on plans made for one call.
 *
 * A plan belongs to its context (which must outlive it) and may be used by
 * one thread at a time; different plans of one context may execute from
 * different threads at once. */
typedef struct attn_plan *attn_plan_t;

/* Which optional outputs executes will produce (ORed). */
enum {
    ATTN_PLAN_LSE = 1,   /* executes write the log-sum-exp */
    ATTN_PLAN_PROBS = 2, /* host executes write the probabilities */
    /* The plan also runs the backward (attn_plan_execute_backward_host /
     * _device), its kernels built with the plan's. */
    ATTN_PLAN_BACKWARD = 4,
};

/* Validates `params` (as attn_check does), chooses the algorithm and builds
 * its kernels. `outputs` is a set of ATTN_PLAN_* flags. On failure *plan is
 * NULL and the status and message are those the forward would give. */
ATTN_API attn_status attn_plan_create(attn_context_t ctx, const attn_params *params,
                                      uint32_t outputs, attn_plan_t *plan);

ATTN_API void attn_plan_destroy(attn_plan_t plan);

/* The algorithm the plan runs (never ATTN_ALGO_AUTO). */
ATTN_API attn_algo attn_plan_algo(attn_plan_t plan);

/* Device scratch, in bytes, that attn_plan_execute_device needs when the
 * caller provides it (0: none). */
ATTN_API size_t attn_plan_workspace_size(attn_plan_t plan);

/* attn_forward_host with the plan's parameters: the same contract. The
 * tensors must match the plan's outputs (lse given exactly when the plan has
 * ATTN_PLAN_LSE; probs may be NULL). The plan keeps the device copies of the
 * tensors between executes. */
ATTN_API attn_status attn_plan_execute_host(attn_plan_t plan, const attn_host_tensors *tensors);

/* attn_forward_device with the plan's parameters: the same contract. The
 * caller may provide the workspace (`workspace` of at least
 * attn_plan_workspace_size bytes from `workspace_offset`, a multiple of 256,
 * not used by other work until `event` completes); with NULL the plan uses
 * one of its own, allocated on the first such execute and reused, which
 * executes on the plan's context's queue keep in order. */
ATTN_API attn_status attn_plan_execute_device(attn_plan_t plan, const attn_device_tensors *tensors,
                                              cl_mem workspace, size_t workspace_offset,
                                              cl_uint num_wait_events, const cl_event *wait_list,
                                              cl_event *event);

/* The CPU reference: the same parameters and outputs as attn_forward,
 * accumulated in double. Slow (O(seq_q·seq_k·head_dim) per head, one thread);
 * meant for verification. */
ATTN_API attn_status attn_reference(const attn_params *params, const void *q, const void *k,
                                    const void *v, void *o, float *lse, float *probs);

/* The CPU reference with every feature (attn_forward_host's inputs). */
ATTN_API attn_status attn_reference_host(const attn_params *params,
                                         const attn_host_tensors *tensors);

/* ---- Backward ------------------------------------------------------------ */

/* The gradients of the forward with the same parameters (the same dropout
 * seed and offset included; params.algo is not read: the backward has one
 * algorithm, whatever the forward ran): given its inputs,
 * its output O, the log-sum-exp LSE it returned and dO (the gradient of the
 * loss with respect to O), compute dQ, dK, dV and, when asked, dBias:
 *
 *   P = the forward's probabilities, recomputed from Q, K and LSE
 *   dV[g] = sum over the group's heads h of P[h]^T dO[h]
 *   dP = dO V^T,   D_i = sum_j dO_i . O_i,   dS = P * (dP - D)     (per row)
 *   dBias = dS, summed over the bias's broadcast batch and heads
 *   dS through the modifiers: softcap's tanh contributes 1 - tanh^2; ALiBi
 *   and the masks none (a masked key has P = 0, so dS = 0)
 *   dQ = scale * dS K,   dK[g] = scale * sum over the group of dS^T Q
 *
 * Every feature of the forward is supported. With dropout the backward
 * redraws the forward's mask keep (a pure function of seed, offset, b, h,
 * i, j): dV takes the weights P * keep / (1 - p), dP = keep * dO V^T / (1 - p)
 * and D = dO . O of the dropped O; dS keeps the un-dropped P. Layouts: dO like O (o_strides),
 * LSE by lse_strides, dQ like Q, dK like K, dV like V (storage params.dtype,
 * accumulation fp32 on the device, double in the reference), dBias like the
 * bias (float, bias.strides, its broadcast shape). A query row whose keys
 * are all masked (LSE -inf) contributes nothing: its dQ row is 0, never NaN;
 * so does a row whose LSE is +inf (its log-sum-exp overflowed fp32, as
 * with a scale near FLT_MAX: no probability can be recovered from it), in
 * the reference too (where its LSE rounds to +inf in fp32);
 * key rows no query sees get dK = dV = 0. With varlen only the packed rows
 * of the sequences are written.
 *
 * The device computes the FlashAttention-2 way in O(n) memory, D first,
 * then dK/dV in parallel over key rows and dQ in parallel over query rows,
 * with every sum in a fixed order and no atomics: the same inputs give the
 * same bits, run to run, context to context, host call or device call. */
typedef struct attn_backward_host_tensors {
    const void *q, *k, *v, *o, *dout; /* params.dtype; dout laid out like o */
    const float *lse;                 /* the forward's, by params.lse_strides */
    void *dq, *dk, *dv;               /* params.dtype, laid out like q, k, v */
    float *dbias; /* laid out like the bias; NULL: not wanted (only with params.bias) */
    const float *bias;
    const uint8_t *keep_mask;
    const int32_t *key_lengths;
    const float *alibi_slopes;
    const int32_t *cu_seqlens_q;
    const int32_t *cu_seqlens_k;
} attn_backward_host_tensors;

/* Host memory in and out; blocks. Every input is required (the optional ones
 * exactly when params asks for them); on failure no gradient is written. */
ATTN_API attn_status attn_backward_host(attn_context_t ctx, const attn_params *params,
                                        const attn_backward_host_tensors *tensors);

/* Device memory (byte offsets), attn_forward_device's contract: enqueued
 * after `wait_list`, `event` (NULL after any failure) completes with the
 * last gradient written, and a gradient may not share a byte with any other
 * tensor of the call (ATTN_ERR_INVALID_VALUE). A call refused for its input,
 * or failing before its kernels are enqueued, leaves every gradient
 * untouched; when the enqueue of one of its kernels fails (an OpenCL
 * error), the kernels before it may have written theirs (dK and dV, then
 * dQ). */
typedef struct attn_backward_device_tensors {
    cl_mem q, k, v, o, dout, lse, dq, dk, dv, dbias; /* dbias NULL: not wanted */
    size_t q_offset, k_offset, v_offset, o_offset, dout_offset, lse_offset;
    size_t dq_offset, dk_offset, dv_offset, dbias_offset;
    cl_mem bias, keep_mask;
    size_t bias_offset, keep_mask_offset;
    const int32_t *key_lengths, *cu_seqlens_q, *cu_seqlens_k; /* host memory */
    const float *alibi_slopes;
    cl_mem key_lengths_mem, cu_seqlens_q_mem, cu_seqlens_k_mem; /* or device memory */
    cl_mem alibi_slopes_mem;
} attn_backward_device_tensors;

ATTN_API attn_status attn_backward_device(attn_context_t ctx, const attn_params *params,
                                          const attn_backward_device_tensors *tensors,
                                          cl_uint num_wait_events, const cl_event *wait_list,
                                          cl_event *event);

/* The backward with a plan's parameters (made with ATTN_PLAN_BACKWARD;
 * ATTN_ERR_INVALID_VALUE otherwise): attn_backward_host's and
 * attn_backward_device's contracts, without validating the shape again
 * and, after the first execute of each kind, without allocating. A plan
 * made for a training step runs its forward (with ATTN_PLAN_LSE) and then
 * its backward. */
ATTN_API attn_status attn_plan_execute_backward_host(attn_plan_t plan,
                                                     const attn_backward_host_tensors *tensors);
ATTN_API attn_status attn_plan_execute_backward_device(attn_plan_t plan,
                                                       const attn_backward_device_tensors *tensors,
                                                       cl_uint num_wait_events,
                                                       const cl_event *wait_list, cl_event *event);

/* The CPU reference backward, in double: the exact gradients of
 * attn_reference_host's forward at these inputs. It recomputes the
 * probabilities and D from Q, K and V itself, so o and lse are not read
 * (they may be NULL). */
ATTN_API attn_status attn_reference_backward(const attn_params *params,
                                             const attn_backward_host_tensors *tensors);

/* ---- Decoding over a KV cache -------------------------------------------- */

/* Attention of a few new query rows over a cache of keys and values that
 * grows by those rows (FlashAttention's flash_attn_with_kvcache). Sequence
 * b has cache_seqlens[b] cached keys; with `append` its new keys and values
 * (k_new, v_new [batch, heads_kv, seq_q, D]) are written into the cache at
 * positions cache_seqlens[b] .. cache_seqlens[b] + seq_q - 1 in the same
 * call, and the queries see the cached keys followed by the new ones. The
 * header's rules hold with sk = the keys a query sees (cache_seqlens[b],
 * + seq_q with append) and sq = seq_q: under ATTN_MASK_CAUSAL_BOTTOM_RIGHT
 * the last query sees every key. Cache lengths are not advanced: the caller
 * adds seq_q to cache_seqlens for the next step.
 *
 * The cache, contiguous (page_size 0):
 *   K_cache [cache_slots, heads_kv, capacity, D], V_cache [.., D_v]; sequence
 *   b uses slot cache_batch_idx[b] (with batch_idx) or b.
 * or paged (page_size > 0), any page size from 1:
 *   K_cache [num_pages, page_size, heads_kv, D] or any order the strides give
 *   (batch = the page stride, head, seq = the token stride within a page);
 *   key j of sequence b is token j % page_size of page
 *   block_table[b * max_pages + j / page_size]; capacity = max_pages * page_size.
 * The cache's storage type is kv_dtype (attn_kv_dtype): Q's (attn.dtype) by
 * default, or f32, f16, bf16 or int8 whatever Q's is. k_new / v_new are
 * activations in Q's type; the call converts them to the cache's type
 * (rounding to nearest even) or quantizes them (int8, below) before they
 * are stored, and the queries attend to the new rows as stored, so a later
 * step reads exactly what this one saw.
 *
 * int8: each row of K (and of V) is int8 values q with one float scale per
 * (token, head), k_scale / v_scale, laid out like the cache without D:
 * [cache_slots, heads_kv, capacity] or [num_pages, heads_kv, page_size]
 * (all-zero strides), or any order k_scale_strides / v_scale_strides give.
 * The value is q * scale. A new row x of D values is quantized
 * symmetrically: amax = max |x[d]|, scale = amax / 127 (float division,
 * correctly rounded), q[d] = x[d] / scale rounded to nearest even and
 * clamped to -127..127 (0 when scale is 0), in float on the device and on
 * the host alike, so the cache bytes and scales are the same bits either
 * way. A scale must be finite and >= 0: the host call and the reference
 * refuse (ATTN_ERR_INVALID_VALUE, nothing written) a NaN, infinite or
 * negative scale of a cached row the call reads, and a non-finite k_new /
 * v_new value; the device call reads neither on the host (it reads no
 * device memory on the host): there a row with a non-finite value is
 * stored with a NaN scale and zeros, and a bad scale makes the queries that
 * see its key NaN, never an access outside the tensors.
 *
 * Served by the decode kernels (K and V read in place, one pass over a kv
 * head's keys for all its query rows, split over key ranges when the batch
 * cannot fill the device, merged in a fixed order). Supported with it:
 * GQA/MQA, every mask, sliding window, softcap, ALiBi, LSE, f32/f16/bf16
 * queries over an f32/f16/bf16/int8 cache, rotary embedding. Refused (ATTN_ERR_UNSUPPORTED): varlen, key padding, a bias, a keep-mask,
 * ATTN_ALGO_THREE_KERNEL.
 *
 * Bad input in host arrays (a rotary table entry that is not finite, a cache length below 0 or past
 * the capacity with the new rows, a block-table entry outside 0..num_pages-1 where the sequence
 * reads or writes, a slot outside 0..cache_slots-1, two sequences of one call where one appends
 * into a page or slot the other uses) gives a status and leaves the outputs and the cache
 * untouched, byte for byte: one command, the last the call enqueues, writes O, LSE and the appended
 * rows. */
/* The storage type of a KV cache (attn_kvcache_params.kv_dtype). */
typedef enum attn_kv_dtype {
    ATTN_KV_DTYPE_SAME = 0, /* Q's (attn.dtype) */
    ATTN_KV_DTYPE_F32 = 1,
    ATTN_KV_DTYPE_F16 = 2,
    ATTN_KV_DTYPE_BF16 = 3,
    ATTN_KV_DTYPE_INT8 = 4, /* int8_t values and a float scale per (token, head) */
} attn_kv_dtype;

typedef struct attn_kvcache_params {
    uint32_t struct_size; /* set by attn_kvcache_params_init */
    /* batch (sequences), heads_q, heads_kv, seq_q (new query rows), head_dim,
     * head_dim_v, scale, mask, algo, dtype, q/o/lse strides, softcap, alibi,
     * window; k_strides / v_strides lay out k_new / v_new. seq_k unused. */
    attn_params attn;
    int32_t capacity;    /* contiguous: tokens a slot holds; paged: set from max_pages */
    int32_t cache_slots; /* contiguous: slots of the cache; 0: batch */
    int32_t batch_idx;   /* contiguous, nonzero: cache_batch_idx[batch] chooses each slot */
    int32_t page_size;   /* 0: contiguous; >= 1: paged */
    int32_t num_pages;   /* paged: pages of the cache */
    int32_t max_pages;   /* paged: block-table entries per sequence */
    int32_t append;      /* nonzero: k_new, v_new are written into the cache */
    /* Of K_cache and V_cache; all zero: packed [slots|pages, heads_kv,
     * capacity|page_size, D]. */
    attn_strides k_cache_strides, v_cache_strides;
    /* Rotary position embedding, applied in the call to Q and (with append)
     * to k_new before it is stored; 0: none. The first rotary_dim elements
     * of each row (even, 2..head_dim) turn by the angles of the row's
     * position: rotary_cos / rotary_sin [rotary_positions, rotary_dim / 2]
     * hold cos and sin of them. Pairs are (x[c], x[c + rotary_dim/2])
     * (halves, GPT-NeoX style) or, with rotary_interleaved, (x[2c],
     * x[2c + 1]) (GPT-J style); a pair (x, y) becomes (x cos - y sin,
     * y cos + x sin), each product and sum rounded to float, then the
     * storage type, on the device and in the reference alike. A row's
     * position is the key it is aligned with under the bottom-right causal
     * mask: new row i of sequence b is at cache_seqlens[b] + i with append,
     * cache_seqlens[b] - seq_q + i without (its keys are cached already),
     * clamped into 0..rotary_positions - 1. */
    int32_t rotary_dim;
    int32_t rotary_interleaved;
    int32_t rotary_positions;
    /* The cache's storage type (see above); ATTN_KV_DTYPE_SAME (0): Q's. */
    attn_kv_dtype kv_dtype;
    /* int8: of k_scale and v_scale; all zero: packed [slots|pages,
     * heads_kv, capacity|page_size]. Unused for the other types. */
    attn_strides k_scale_strides, v_scale_strides;
} attn_kvcache_params;

/* attn_params_init's defaults for `attn` (seq_q = seq_new), a contiguous
 * cache of `capacity` tokens per sequence (cache_slots = batch), no append. */
ATTN_API void attn_kvcache_params_init(attn_kvcache_params *params, int32_t batch, int32_t heads,
                                       int32_t seq_new, int32_t capacity, int32_t head_dim);

/* Host memory: the cache is uploaded, and with append its new rows are
 * written back into k_cache / v_cache. */
typedef struct attn_kvcache_host_tensors {
    const void *q;
    void *o;
    float *lse; /* given exactly when the plan has ATTN_PLAN_LSE */
    void *k_cache, *v_cache;
    const void *k_new, *v_new;            /* with append */
    const int32_t *cache_seqlens;         /* [batch] */
    const int32_t *cache_batch_idx;       /* [batch], with batch_idx */
    const int32_t *block_table;           /* [batch, max_pages], paged */
    const float *alibi_slopes;            /* [heads_q], attn.alibi */
    const float *rotary_cos, *rotary_sin; /* [rotary_positions, rotary_dim / 2], with rotary */
    float *k_scale, *v_scale;             /* int8 caches: the scales, appended to like the cache */
} attn_kvcache_host_tensors;

/* Device memory. Each small array is given one way: in host memory, read
 * and checked during the call, or as a device buffer (`*_mem`, from its
 * first byte), which a decode loop that keeps its lengths on the device
 * passes without a round trip. Device arrays are not read by the host, so
 * not checked (nor is the rule that no two sequences share a page or slot
 * one of them appends into): every index the kernels derive from them is
 * clamped into the cache, so bad values give unspecified results but never
 * an access outside the tensors. */
typedef struct attn_kvcache_device_tensors {
    cl_mem q, o, lse, k_cache, v_cache, k_new, v_new;
    size_t q_offset, o_offset, lse_offset, k_cache_offset, v_cache_offset, k_new_offset,
        v_new_offset;                                             /* bytes */
    const int32_t *cache_seqlens, *cache_batch_idx, *block_table; /* host memory */
    const float *alibi_slopes;
    cl_mem cache_seqlens_mem, cache_batch_idx_mem, block_table_mem; /* or device memory */
    cl_mem alibi_slopes_mem;
    /* The rotary tables, one way each like the arrays above. A decode loop
     * gives them as device buffers: host tables are copied every call. */
    const float *rotary_cos, *rotary_sin;
    cl_mem rotary_cos_mem, rotary_sin_mem;
    /* int8 caches: the scales (float), appended to like the cache. */
    cl_mem k_scale, v_scale;
    size_t k_scale_offset, v_scale_offset; /* bytes */
} attn_kvcache_device_tensors;

/* A plan for decoding steps over a cache: attn_plan_create's contract
 * (attn_plan_algo reports ATTN_ALGO_FUSED). Execute it with the calls
 * below; attn_plan_execute_host / _device refuse it. */
ATTN_API attn_status attn_plan_create_kvcache(attn_context_t ctx, const attn_kvcache_params *params,
                                              uint32_t outputs, attn_plan_t *plan);

/* attn_plan_execute_device's contract (workspace, events, untouched outputs
 * and cache on failure). Tensors that share a buffer are refused
 * (ATTN_ERR_INVALID_VALUE) where the call writes one while it reads or
 * writes the other: O and LSE (which may interleave) against every other
 * tensor; with append, K_cache, V_cache, k_scale and v_scale (written)
 * against Q, k_new and v_new, and against each other where they share an
 * element (they may interleave, e.g. K and V rows of one record). */
ATTN_API attn_status attn_plan_execute_kvcache_device(attn_plan_t plan,
                                                      const attn_kvcache_device_tensors *tensors,
                                                      cl_mem workspace, size_t workspace_offset,
                                                      cl_uint num_wait_events,
                                                      const cl_event *wait_list, cl_event *event);

/* attn_plan_execute_host's contract; blocks until done. */
ATTN_API attn_status attn_plan_execute_kvcache_host(attn_plan_t plan,
                                                    const attn_kvcache_host_tensors *tensors);

/* The CPU reference, in double, with the same inputs and effects (the
 * cache appended to in place). */
ATTN_API attn_status attn_reference_kvcache(const attn_kvcache_params *params,
                                            const attn_kvcache_host_tensors *tensors);

/* ---- Merging partial results (split-KV decoding, ring attention) --------- */

/* Two forwards of the same queries over disjoint sets of keys, each with its
 * LSE, combine into the forward over the union:
 *     lse = log(exp(lse_a) + exp(lse_b))
 *     O   = exp(lse_a - lse) · O_a + exp(lse_b - lse) · O_b
 * A row masked in one part (LSE -inf) takes the other part's values; a row
 * masked in both gives O = 0 and LSE -inf. A part whose LSE is +inf
 * dominates: the row takes its O and LSE +inf (the other part's O is not
 * read); both at +inf give LSE +inf and O NaN, since their weights are
 * undefined. A NaN LSE makes the row NaN. Host and device follow the same
 * rules. The shapes come from params:
 * batch (sequences with varlen), heads_q, seq_q (total_q with varlen),
 * head_dim_v, dtype, o_strides and lse_strides, shared by all three results.
 * `o` and `lse` may be the same memory as either part's. */
typedef struct attn_merge_tensors {
    const void *o_a, *o_b;
    const float *lse_a, *lse_b;
    void *o;
    float *lse;
} attn_merge_tensors;

/* On the host (CPU), in float. */
ATTN_API attn_status attn_merge(const attn_params *params, const attn_merge_tensors *tensors);

typedef struct attn_merge_device_tensors {
    cl_mem o_a, o_b, lse_a, lse_b, o, lse;
    size_t o_a_offset, o_b_offset, lse_a_offset, lse_b_offset, o_offset, lse_offset; /* bytes */
} attn_merge_device_tensors;

/* On the device, enqueued like attn_forward_device, with the same event
 * rule: *event is NULL after any failure. */
ATTN_API attn_status attn_merge_device(attn_context_t ctx, const attn_params *params,
                                       const attn_merge_device_tensors *tensors,
                                       cl_uint num_wait_events, const cl_event *wait_list,
                                       cl_event *event);

/* ---- Half-precision storage ----------------------------------------------- */

/* Conversions between float and the 16-bit storage types, rounding to
 * nearest even; NaN stays NaN. `n` elements; `in` and `out` must not overlap. */
ATTN_API void attn_f32_to_f16(const float *in, uint16_t *out, size_t n);
ATTN_API void attn_f16_to_f32(const uint16_t *in, float *out, size_t n);
ATTN_API void attn_f32_to_bf16(const float *in, uint16_t *out, size_t n);
ATTN_API void attn_bf16_to_f32(const uint16_t *in, float *out, size_t n);

/* ---- Errors and version ------------------------------------------------- */

/* "ATTN_ERR_INVALID_SIZE", "CL_OUT_OF_RESOURCES", ...; never NULL. */
ATTN_API const char *attn_status_name(attn_status status);

/* The message of the most recent failure, of this thread (ctx NULL) or on
 * ctx from any thread (see Threading above); "" if none. */
ATTN_API const char *attn_last_error(attn_context_t ctx);

ATTN_API const char *attn_version_string(void);
ATTN_API void attn_version(int *major, int *minor, int *patch);

#ifdef __cplusplus
}
#endif

#endif /* ATTN_CL_H */
