/* Internal declarations shared by the files of lib/. Nothing here is exported
 * from the shared library (it is built with hidden visibility). */
#ifndef ATTN_INTERNAL_H
#define ATTN_INTERNAL_H

#include "attn_cl.h"
#include "cl_calls.h"
#include "input_arrays.h"

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>

#define ATTN_ERROR_MESSAGE_MAX 8192
#define ATTN_TUNING_SPEC_MAX 256

/* ---- Errors (errors.c) --------------------------------------------------- */

/* Records a message for `ctx` (or, when ctx is NULL, for the calling thread)
 * and returns `status`, so that failures read `return attn_fail(ctx, ...)`. */
attn_status attn_fail(attn_context_t ctx, attn_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* attn_fail for a failed OpenCL call: passes the OpenCL code through as the
 * status and names the call and the code in the message. */
attn_status attn_fail_cl(attn_context_t ctx, cl_int err, const char *call);

const char *attn_cl_error_name(cl_int err);

/* ---- Validated problem (problem.c, input_arrays.c) -------------------------- */

/* The parameters after validation: defaults resolved, strides explicit, the
 * extent each tensor covers (in elements, from its first element) known to
 * fit size_t. Algorithms take a problem and never re-check it. */
/* A KV-cache problem's cache (lib/kvcache.c); enabled 0 for the others. The
 * problem's p.seq_k is then the capacity, p.k_strides / p.v_strides and
 * k_extent / v_extent the cache's (batch = slot or page), and new_strides
 * lay out k_new / v_new [batch, heads_kv, seq_q, D]. */
typedef struct attn_kvcache_layout {
    int enabled, paged, append, batch_idx;
    int32_t slots;     /* cache slots (contiguous) or pages (paged) */
    int32_t page_size; /* paged */
    int32_t max_pages; /* paged: block-table columns */
    attn_strides k_new_strides, v_new_strides;
    size_t k_new_extent, v_new_extent; /* elements */
    /* Rotary embedding of Q and k_new (lib/rotary.c); rotary_dim 0: none. */
    int32_t rotary_dim, rotary_interleaved, rotary_positions;
    /* The cache's storage (lib/kv_storage.c), never ATTN_KV_DTYPE_SAME here,
     * and its element size; `convert` when it differs from Q's type (the
     * new rows are converted or quantized before they are stored). */
    attn_kv_dtype kv_dtype;
    size_t kv_element_size;
    int convert;
    /* int8: the scales' strides (resolved) and extents, in floats. */
    attn_strides k_scale_strides, v_scale_strides;
    size_t k_scale_extent, v_scale_extent;
} attn_kvcache_layout;

typedef struct attn_problem {
    attn_kvcache_layout kv;
    attn_params p; /* heads_kv, head_dim_v, scale, flags and all strides resolved; batch
                      strides 0 with varlen, broadcast strides 0 in bias and keep_mask;
                      p.algo as requested (AUTO is resolved by the dispatcher) */
    int32_t group; /* heads_q / heads_kv */
    size_t q_extent, k_extent, v_extent, o_extent, lse_extent; /* elements */
    size_t bias_extent, keep_mask_extent;                      /* elements, when present */
    size_t element_size;                                       /* of Q, K, V, O storage */
    size_t probs_elems; /* batch * probs_heads * probs_rows * seq_k (the probabilities
                           handed back); 0 if that overflows size_t */
    /* The subset of probabilities wanted (params.probs_*, resolved): heads
     * probs_head0 .. + probs_heads, rows probs_row0 .. + probs_rows. */
    int32_t probs_head0, probs_heads, probs_row0, probs_rows;
    int want_lse, want_probs;
    /* Set by lib/fused_probs.c for its forward only: the fused cpu kernel
     * also writes each row's softmax shift and sum (kernels/flash_cpu.cl's
     * HAS_ROW_STATS) into attn_device_args.row_stats. */
    int want_row_stats;
} attn_problem;

/* Validates `params` (NULL, struct_size, sizes, head dims, enums, scale,
 * strides, overflow) into `pb`. `want_lse` / `want_probs` say which optional
 * outputs the caller asked for. */
attn_status attn_problem_make(attn_context_t ctx, const attn_params *params, int want_lse,
                              int want_probs, attn_problem *pb);

/* Checks that each array of lib/input_arrays.h the problem enables is given
 * (in host memory in `m`, or as a device buffer when `on_device` has its
 * bit 1 << ATTN_INPUT_<name>) and that the host ones hold values in range
 * (lengths, prefix sums, finite slopes), so that no kernel reads or writes
 * outside the tensors whatever they hold. */
attn_status attn_problem_check_arrays(attn_context_t ctx, const attn_problem *pb,
                                      const attn_input_arrays *m, unsigned on_device);

/* Bytes of array `which` for `pb` (0 when the problem does not use it), its
 * host pointer in `m`, and its name. */
size_t attn_input_array_bytes(const attn_problem *pb, attn_input_array which);
const void *attn_input_array_host(const attn_input_arrays *m, attn_input_array which);
const char *attn_input_array_name(attn_input_array which);

/* Device buffers for the arrays `pb` uses (NULL for the others), and their
 * release (which NULLs them). */
attn_status attn_input_arrays_create(attn_context_t ctx, const attn_problem *pb,
                                     cl_mem buffers[ATTN_INPUT_COUNT]);
void attn_input_arrays_release(cl_mem buffers[ATTN_INPUT_COUNT]);

/* ---- Context (context.c, devices.c) --------------------------------------- */

typedef struct attn_program_entry attn_program_entry;

struct attn_context {
    cl_context context;
    cl_device_id device;
    cl_command_queue queue;
    attn_device_info info;
    pthread_mutex_t lock; /* serializes forwards (kernels and their args are shared) and
                             guards the program cache and the tuning spec */
    pthread_mutex_t error_lock;
    char last_error[ATTN_ERROR_MESSAGE_MAX];
    attn_program_entry *programs;           /* program cache, see program_cache.c */
    char tuning_spec[ATTN_TUNING_SPEC_MAX]; /* attn_context_set_tuning's; "" for none; under lock */
};

attn_status attn_query_device_info(attn_context_t ctx, cl_device_id device, int32_t platform_index,
                                   int32_t device_index, attn_device_info *info);

/* ---- Kernel programs (kernel_sources.c, program_cache.c) ------------------ */

/* Returns the built kernel `kernel_name` from program `program_name`
 * (kernels/<program_name>.cl, prefixed by kernels/common.cl) compiled with
 * `options`. Built once per context and options; the kernel object is owned
 * by the cache and valid until the context is destroyed. The caller holds
 * ctx->lock, since kernel arguments are per kernel object. */
attn_status attn_get_kernel(attn_context_t ctx, const char *program_name, const char *kernel_name,
                            const char *options, cl_kernel *kernel);
void attn_program_cache_clear(attn_context_t ctx);

/* ---- Algorithms (dispatch.c, fused.c, three_kernel.c) ------------------- */

/* Device tensors as the kernels see them: offsets in elements. */
typedef struct attn_device_args {
    cl_mem q, k, v, o, lse; /* lse NULL when the problem has no LSE output */
    size_t q_offset, k_offset, v_offset, o_offset, lse_offset;
    cl_mem bias, keep_mask; /* NULL unless the problem has them */
    size_t bias_offset, keep_mask_offset;
    /* The input arrays in device buffers, by attn_input_array (NULL when the
     * problem does not use one). */
    cl_mem arrays[ATTN_INPUT_COUNT];
    /* Scratch the algorithm asked for (attn_algorithm.workspace_bytes), from
     * `workspace_offset` bytes, aligned to ATTN_WORKSPACE_ALIGN. */
    cl_mem workspace;
    size_t workspace_offset;
    /* A KV-cache problem's new rows and small arrays (pb->kv): lengths,
     * slots (NULL unless batch_idx), block table (NULL unless paged). */
    cl_mem k_new, v_new;
    size_t k_new_offset, v_new_offset;
    cl_mem kv_lengths, kv_slots, kv_pages;
    cl_mem rotary_cos, rotary_sin; /* [rotary_positions, rotary_dim / 2], with rotary */
    /* int8 caches: the cache's scales, and the new rows' (packed [batch,
     * heads_kv, seq_q], set by decode.c's conversion); offsets in floats. */
    cl_mem k_scale, v_scale, kn_scale, vn_scale;
    size_t k_scale_offset, v_scale_offset, kn_scale_offset, vn_scale_offset;
    /* The probabilities, in host memory (NULL: not wanted). */
    float *probs_host;
    /* With pb->want_row_stats: where the forward writes its rows' (shift,
     * sum) pairs, [batch][heads_q][seq_q] float2 (varlen: the packed rows). */
    cl_mem row_stats;
    size_t row_stats_offset; /* elements */
    /* O and LSE are the caller's (the device call): they may be written
     * only by the last command an algorithm enqueues, so that a failure
     * leaves them untouched. The host call's are the library's own. */
    int callers_outputs;
} attn_device_args;

#define ATTN_WORKSPACE_ALIGN 256

/* What an algorithm decided for one problem on one device: its parameters,
 * options and kernels, made once by configure and build, used by every run. */
typedef struct attn_algo_state attn_algo_state;

/* The interface every algorithm provides: one file each, one row in
 * dispatch.c's table. */
typedef struct attn_algorithm {
    attn_algo id;
    const char *name;
    /* Whether the algorithm can serve `pb` on ctx's device with the
     * context's tuning, and with what configuration: no kernel builds, no
     * device allocation. The caller holds ctx->lock (tuning). */
    attn_status (*configure)(attn_context_t ctx, const attn_problem *pb, attn_algo_state **state);
    /* Builds the kernels `state` runs (objects of the state's own, so that
     * several plans may run at once). The caller holds ctx->lock. */
    attn_status (*build)(attn_context_t ctx, attn_algo_state *state);
    /* Device scratch one run needs, in bytes (0: none). */
    size_t (*workspace_bytes)(const attn_algo_state *state);
    /* Enqueues the work after `wait_list` on ctx->queue and, when `done` is
     * not NULL, returns an event that completes with the last write of
     * O/LSE. The state's kernels are not shared: the caller serializes runs
     * of one state. On failure the algorithm waits for whatever it had
     * already enqueued (clFinish) and *done is NULL. */
    attn_status (*run)(attn_context_t ctx, const attn_algo_state *state,
                       const attn_device_args *args, cl_uint num_wait, const cl_event *wait_list,
                       cl_event *done);
    void (*destroy)(attn_algo_state *state);
} attn_algorithm;

extern const attn_algorithm attn_fused_algorithm;
extern const attn_algorithm attn_three_kernel_algorithm;
/* The fused forward and then the probabilities (fused_probs.c); reported as
 * ATTN_ALGO_FUSED. */
extern const attn_algorithm attn_fused_probs_algorithm;
/* Decoding shapes on CPUs (decode.c); reported as ATTN_ALGO_FUSED. */
extern const attn_algorithm attn_decode_algorithm;

/* What lib/fused_probs.c reads of a fused cpu-variant state (fused.c) made
 * for a problem with want_row_stats: the options its program is built with
 * (kernels/flash_cpu.cl), its row block and the packed K's tiles a kv head,
 * which start at the workspace's start. */
typedef struct attn_fused_cpu_layout {
    const char *options;
    int rows;
    size_t total_tiles;
} attn_fused_cpu_layout;

attn_fused_cpu_layout attn_fused_cpu_layout_of(const attn_algo_state *state);

/* Chooses the algorithm for `pb` (AUTO resolved for the device and the
 * wanted outputs) and configures it. The caller holds ctx->lock. */
attn_status attn_dispatch(attn_context_t ctx, const attn_problem *pb,
                          const attn_algorithm **algorithm, attn_algo_state **state);

/* Checks one caller buffer (from its byte offset) against `extent`
 * elements of `element_size` bytes and turns the offset into elements
 * (plan.c; the merge call uses it too). */
attn_status attn_check_device_tensor(attn_context_t ctx, const char *name, cl_mem mem,
                                     size_t offset, size_t extent, size_t element_size,
                                     size_t *element_offset);

/* Refuses (ATTN_ERR_INVALID_VALUE) device tensors where an output's bytes
 * meet an input's in one buffer, sub-buffers resolved to their parent, or
 * where O and LSE share an element (device_overlap.c). The tensors have
 * passed attn_check_device_tensor. */
attn_status attn_check_device_overlap(attn_context_t ctx, const attn_problem *pb,
                                      const attn_device_tensors *t);

/* The KV-cache device call's tensors beyond attn_check_device_overlap's
 * (device_overlap.c): the int8 scales and the new rows against O and LSE,
 * and with append (the cache and the scales written) against Q and the
 * new rows, byte ranges; with append, K_cache, V_cache, k_scale and
 * v_scale may interleave in one buffer but not share an element.
 * ATTN_ERR_INVALID_VALUE when they do. */
attn_status attn_check_kvcache_overlap(attn_context_t ctx, const attn_problem *pb,
                                       const attn_kvcache_device_tensors *t);

/* One device tensor of a call: checked by attn_check_device_tensor (which
 * sets *element_offset) and by attn_check_disjoint. mem NULL: absent. */
typedef struct attn_mem_range {
    const char *name;
    cl_mem mem;
    size_t offset, extent, element_size; /* bytes, elements, bytes */
    size_t *element_offset;
} attn_mem_range;

/* Refuses (ATTN_ERR_INVALID_VALUE) ranges[first_output..count) that share a
 * byte with any other range, sub-buffers resolved to their parent: the
 * backward's gradients, which several kernels write while others read
 * (device_overlap.c). */
attn_status attn_check_disjoint(attn_context_t ctx, const char *call, const attn_mem_range *ranges,
                                int count, int first_output);

/* ---- Plans for other kinds of problems (plan.c, kvcache.c) ----------------- */

/* attn_plan_create after validation: dispatch, build, and a plan that owns
 * them. */
attn_status attn_plan_create_problem(attn_context_t ctx, const attn_problem *pb, uint32_t outputs,
                                     attn_plan_t *plan);
const attn_problem *attn_plan_problem(attn_plan_t plan);
attn_context_t attn_plan_context(attn_plan_t plan);
uint32_t attn_plan_outputs(attn_plan_t plan);
/* State of another kind of plan, freed by attn_plan_destroy with ext_free. */
void attn_plan_set_ext(attn_plan_t plan, void *ext, void (*ext_free)(void *ext));
void *attn_plan_ext(attn_plan_t plan);
/* One execute at a time: around attn_plan_run_locked and what it reads. */
void attn_plan_lock(attn_plan_t plan);
void attn_plan_unlock(attn_plan_t plan);
/* Runs the plan's algorithm on `d` (tensors set; workspace from the
 * caller's when given, the plan's own otherwise). */
attn_status attn_plan_run_locked(attn_plan_t plan, attn_device_args *d, cl_mem workspace,
                                 size_t workspace_offset, cl_uint num_wait,
                                 const cl_event *wait_list, cl_event *event);

/* Builds the backward's kernels into `plan` (attn_plan_create with
 * ATTN_PLAN_BACKWARD; backward.c), as its ext. Takes ctx->lock. */
attn_status attn_backward_attach(attn_context_t ctx, attn_plan_t plan);

/* ---- KV caches (kvcache.c) -------------------------------------------------- */

/* A KV-cache call's parameters and host arrays validated into `pb`, as
 * attn_plan_create_kvcache and its executes check them (the reference's
 * entry). */
attn_status attn_kvcache_validate(const attn_kvcache_params *params,
                                  const attn_kvcache_host_tensors *t, attn_problem *pb);
/* k_new / v_new copied into the host cache at each sequence's length. */
void attn_kvcache_append_host(const attn_problem *pb, const attn_kvcache_host_tensors *t);

/* ---- KV-cache storage (kv_storage.c) -------------------------------------------- */

/* The storage type a kv_dtype names as an attn_dtype (int8: -1). */
int attn_kv_as_dtype(attn_kv_dtype kv);
size_t attn_kv_element_size(attn_kv_dtype kv);
/* One row of n values of `src` (Q's storage type `from`, from element
 * src_at) into the cache's storage at dst (element dst_at), converted or, for
 * int8, quantized with its scale into *scale: include/attn_cl.h's rule, the
 * same float operations as kernels/kv_convert.cl. */
void attn_kv_store_row(const void *src, size_t src_at, attn_dtype from, int n, void *dst,
                       size_t dst_at, attn_kv_dtype kv, float *scale);
/* Element `index` of a cache row in its storage, dequantized by `scale`
 * (int8 only), in double. */
double attn_kv_load(const void *base, size_t index, attn_kv_dtype kv, float scale);
/* The host checks of an int8 cache (host call, reference): the scales of
 * every cached row the call reads finite and >= 0, and with append every
 * k_new / v_new value finite. The small arrays have been checked. */
attn_status attn_kv_check_int8_host(attn_context_t ctx, const attn_problem *pb,
                                    const attn_kvcache_host_tensors *t);

/* The reference's attention with K and V given as doubles (reference.c). */
attn_status attn_reference_host_f64_kv(const attn_params *params, const attn_host_tensors *tensors);

/* ---- Rotary embedding (rotary.c) -------------------------------------------- */

/* The position of new row i of a sequence with `cached` keys in the cache
 * (include/attn_cl.h's rule, clamped into the tables). */
int64_t attn_rotary_position(const attn_problem *pb, int64_t cached, int64_t i);

/* Rows [batch, heads, seq_q, inner] of `src` (laid out by `s`, in the
 * storage type) rotated at their positions into `dst`, packed, in the
 * storage type: the arithmetic of kernels/rotary.cl, bit for bit. */
void attn_rotary_rows_host(const attn_problem *pb, const attn_kvcache_host_tensors *t,
                           const void *src, const attn_strides *s, int64_t heads, void *dst);

/* ---- Kernel arguments and launches (launch.c) ------------------------------ */

/* Appends a kernel's arguments in order: no indices to count. The first
 * failure sticks; attn_args_end returns it, or ATTN_ERR_UNSUPPORTED when the
 * count differs from the kernel's (a host/kernel mismatch). */
typedef struct attn_args {
    attn_context_t ctx;
    cl_kernel kernel;
    const char *kernel_name;
    cl_uint next;
    attn_status status;
} attn_args;

void attn_args_begin(attn_args *a, attn_context_t ctx, cl_kernel kernel, const char *kernel_name);
/* A device buffer of `bytes` for `name` (plan.c), refused past the device's
 * largest allocation. */
attn_status attn_create_buffer(attn_context_t ctx, const char *name, size_t bytes, cl_mem *out);

/* A host call's transfers on the context's queue (plan.c): the write is
 * enqueued without waiting, the read blocks; a failure names `name`. */
attn_status attn_write_buffer(attn_context_t ctx, const char *name, cl_mem buffer, size_t bytes,
                              const void *host);
attn_status attn_read_buffer(attn_context_t ctx, const char *name, cl_mem buffer, size_t bytes,
                             void *host);

void attn_arg_mem(attn_args *a, cl_mem value);
void attn_arg_int(attn_args *a, cl_int value);
void attn_arg_float(attn_args *a, cl_float value);
void attn_arg_uint(attn_args *a, cl_uint value);
void attn_arg_ulong(attn_args *a, cl_ulong value);
/* A strided tensor: buffer, element offset, batch, head and seq strides
 * (kernels/common.cl's TENSOR). */
void attn_arg_tensor(attn_args *a, cl_mem mem, size_t offset, const attn_strides *strides);
/* A buffer and an element offset (kernels/common.cl's BUFFER). */
void attn_arg_buffer(attn_args *a, cl_mem mem, size_t offset);
/* The FEATURE_PARAMS block every attention kernel ends with
 * (kernels/common.cl). Absent inputs still get a buffer: Q's. */
void attn_arg_features(attn_args *a, const attn_problem *pb, const attn_device_args *d);
attn_status attn_args_end(attn_args *a);
/* The factors of the softmax exponent the fused kernels take after the
 * scale (fused.c; attn_softmax_exponent_of with the problem's modifiers). */
void attn_arg_exponent(attn_args *args, const attn_params *p);

/* The -D options of the problem's storage type, masks and modifiers, which
 * every attention kernel is built with. */
void attn_feature_options(const attn_problem *pb, char *buf, size_t size);

/* clEnqueueNDRangeKernel over three dimensions on ctx->queue; `local` may be
 * NULL (the runtime chooses). A failure names the kernel. */
attn_status attn_enqueue_kernel(attn_context_t ctx, cl_kernel kernel, const char *kernel_name,
                                const size_t global[3], const size_t local[3], cl_uint num_wait,
                                const cl_event *wait_list, cl_event *event);

/* A kernel object of the algorithm's own from the context's program cache
 * (built on first use); the caller releases it. The caller holds ctx->lock. */
attn_status attn_create_kernel(attn_context_t ctx, const char *program_name,
                               const char *kernel_name, const char *options, cl_kernel *kernel);

size_t attn_round_up(size_t value, size_t multiple);

/* The decode kernels' KV-cache arguments (decode.c), for problems with
 * pb->kv.enabled: what kernels/flash_decode.cl's KV_PARAMS receive. */
void attn_arg_kvcache(attn_args *a, const attn_problem *pb, const attn_device_args *d);

/* How the fused kernels turn a score difference into a softmax exponent:
 * exp2(((s/2 - m/2) * hi) * lo), hi * lo = 2 * unit * log2(e), where unit is
 * what one score unit is worth (|scale| for raw q.k, 1 for modified scores);
 * LSE = m * unit + ln(l). lib/softmax_exponent.c says why the split. */
typedef struct attn_softmax_exponent {
    float hi, lo, unit;
} attn_softmax_exponent;

attn_softmax_exponent attn_softmax_exponent_of(const attn_params *p, int modifiers);

#endif
