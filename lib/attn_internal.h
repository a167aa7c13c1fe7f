/* Internal declarations shared by the files of lib/. Nothing here is exported
 * from the shared library (it is built with hidden visibility). */
#ifndef ATTN_INTERNAL_H
#define ATTN_INTERNAL_H

#include "attn_cl.h"
#include "cl_calls.h"

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

/* ---- Validated request (plan.c) ------------------------------------------ */

/* The parameters after validation: defaults resolved, strides explicit, the
 * extent each tensor covers (in elements, from its first element) known to
 * fit size_t. Algorithms take a plan and never re-check it. */
typedef struct attn_plan {
    attn_params p; /* heads_kv, head_dim_v, scale, flags and all strides resolved; batch
                      strides 0 with varlen, broadcast strides 0 in bias and keep_mask */
    int32_t group; /* heads_q / heads_kv */
    size_t q_extent, k_extent, v_extent, o_extent, lse_extent; /* elements */
    size_t bias_extent, keep_mask_extent;                      /* elements, when present */
    size_t element_size;                                       /* of Q, K, V, O storage */
    size_t probs_elems;                                        /* batch * heads_q * seq_q * seq_k */
    int want_lse, want_probs;
    attn_algo algo; /* resolved: never ATTN_ALGO_AUTO */
} attn_plan;

/* Validates `params` (NULL, sizes, head dims, enums, scale, strides,
 * overflow) into `plan`. `want_lse` / `want_probs` say which optional outputs
 * the caller asked for; they take part in choosing the algorithm. */
attn_status attn_plan_make(attn_context_t ctx, const attn_params *params, int want_lse,
                           int want_probs, attn_plan *plan);

/* The small per-batch and per-head arrays, in host memory. */
typedef struct attn_metadata {
    const int32_t *key_lengths, *cu_seqlens_q, *cu_seqlens_k;
    const float *alibi_slopes;
} attn_metadata;

/* Checks that `m` holds exactly the arrays plan asks for, with values in
 * range (lengths, prefix sums, finite slopes). */
attn_status attn_plan_metadata(attn_context_t ctx, const attn_plan *plan, const attn_metadata *m);

/* Device copies of the metadata a plan uses (metadata.c): fills a's
 * key_lengths, alibi_slopes, cu_seqlens_q/k buffers from a->meta (NULL for
 * the absent ones). They are released by attn_metadata_release once the
 * forward is enqueued: the runtime keeps them until its kernels complete. */
typedef struct attn_device_args attn_device_args;
attn_status attn_metadata_upload(attn_context_t ctx, const attn_plan *plan, attn_device_args *a);
void attn_metadata_release(attn_device_args *a);

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

/* ---- Algorithms (three_kernel.c, fused.c) -------------------------------- */

/* Device tensors as the kernels see them: offsets in elements. */
struct attn_device_args {
    cl_mem q, k, v, o, lse; /* lse NULL when plan->want_lse is 0 */
    size_t q_offset, k_offset, v_offset, o_offset, lse_offset;
    cl_mem bias, keep_mask; /* NULL unless the plan has them */
    size_t bias_offset, keep_mask_offset;
    /* The metadata, on the host (checked) and in device buffers of the
     * library's (NULL when absent). */
    attn_metadata meta;
    cl_mem key_lengths, alibi_slopes, cu_seqlens_q, cu_seqlens_k;
    /* O and LSE are the caller's (attn_forward_device): they may be written
     * only by the last command an algorithm enqueues, so that a failure
     * leaves them untouched. The host call's are the library's own. */
    int callers_outputs;
};

/* Checks one caller buffer (from its byte offset) against `extent`
 * elements of `element_size` bytes and turns the offset into elements
 * (forward.c; the merge call uses it too). */
attn_status attn_check_device_tensor(attn_context_t ctx, const char *name, cl_mem mem,
                                     size_t offset, size_t extent, size_t element_size,
                                     size_t *element_offset);

/* Refuses (ATTN_ERR_INVALID_VALUE) device tensors where an output's bytes
 * meet an input's in one buffer, sub-buffers resolved to their parent, or
 * where O and LSE share an element (device_overlap.c). The tensors have
 * passed attn_check_device_tensor. */
attn_status attn_check_device_overlap(attn_context_t ctx, const attn_plan *plan,
                                      const attn_device_tensors *t);

/* Each algorithm enqueues its work after `wait_list` on ctx->queue and, when
 * `done` is not NULL, returns an event that completes with the last write of
 * O/LSE. The caller holds ctx->lock. On failure the algorithm waits for
 * whatever it had already enqueued (clFinish) and releases its temporaries. */
attn_status attn_three_kernel_run(attn_context_t ctx, const attn_plan *plan,
                                  const attn_device_args *args, float *probs_host, cl_uint num_wait,
                                  const cl_event *wait_list, cl_event *done);
/* Whether the device can hold one head's scores (attn_check uses it). */
attn_status attn_three_kernel_check(attn_context_t ctx, const attn_plan *plan);
/* Builds the kernels attn_three_kernel_run would use for `plan`. */
attn_status attn_three_kernel_prepare(attn_context_t ctx, const attn_plan *plan);

/* Whether the tuning and the device's limits let the fused path run `plan`
 * (attn_check uses it; it builds nothing). */
attn_status attn_fused_check(attn_context_t ctx, const attn_plan *plan);
attn_status attn_fused_run(attn_context_t ctx, const attn_plan *plan, const attn_device_args *args,
                           cl_uint num_wait, const cl_event *wait_list, cl_event *done);
attn_status attn_fused_prepare(attn_context_t ctx, const attn_plan *plan);

/* Shared helpers for kernel launches (launch.c). */

/* Sets `count` arguments from index `first`, given as (size_t size, const
 * void *value) pairs; wrap each with ATTN_ARG(x) to pass sizeof x and &x. */
attn_status attn_set_kernel_args(attn_context_t ctx, cl_kernel kernel, const char *kernel_name,
                                 cl_uint first, int count, ...);
#define ATTN_ARG(x) sizeof(x), (const void *)&(x)

/* A strided tensor's five arguments from `first`: buffer, element offset,
 * batch, head and seq strides. */
attn_status attn_set_tensor_args(attn_context_t ctx, cl_kernel kernel, const char *kernel_name,
                                 cl_uint first, cl_mem mem, size_t offset,
                                 const attn_strides *strides);

/* The FEATURE_PARAMS block every attention kernel ends with
 * (kernels/common.cl), from `first`; ATTN_FEATURE_ARGS arguments. */
#define ATTN_FEATURE_ARGS 19
attn_status attn_set_feature_args(attn_context_t ctx, cl_kernel kernel, const char *kernel_name,
                                  cl_uint first, const attn_plan *plan, const attn_device_args *a);

/* The -D options of the plan's storage type, masks and modifiers, which
 * every attention kernel is built with. */
void attn_feature_options(const attn_plan *plan, char *buf, size_t size);

/* clEnqueueNDRangeKernel over three dimensions on ctx->queue; `local` may be
 * NULL (the runtime chooses). A failure names the kernel. */
attn_status attn_enqueue_kernel(attn_context_t ctx, cl_kernel kernel, const char *kernel_name,
                                const size_t global[3], const size_t local[3], cl_uint num_wait,
                                const cl_event *wait_list, cl_event *event);

size_t attn_round_up(size_t value, size_t multiple);

#endif
