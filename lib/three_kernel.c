/* The three-kernel path: S = Q·Kᵀ into a score buffer, scale + mask +
 * softmax in place, O = P·V. It holds seq_q·seq_k floats per head, so heads
 * are processed in chunks sized to the device's allocation limits; it is the
 * path that can hand the probabilities back. */
#include "attn_internal.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct three_kernel_shape {
    size_t qk_tile, pv_tile, softmax_wg;
} three_kernel_shape;

typedef struct three_kernels {
    cl_kernel qk, softmax, pv;
} three_kernels;

static attn_status choose_shape(attn_context_t ctx, three_kernel_shape *shape) {
    size_t max_wg = 0;
    cl_int err =
        clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof max_wg, &max_wg, NULL);
    if (err != CL_SUCCESS)
        return attn_fail_cl(ctx, err, "clGetDeviceInfo(CL_DEVICE_MAX_WORK_GROUP_SIZE)");
    /* 16x16 tiles where the device allows 256 work-items a group, else 8x8. */
    shape->qk_tile = max_wg >= 256 ? 16 : 8;
    shape->pv_tile = shape->qk_tile;
    shape->softmax_wg = max_wg >= 64 ? 64 : 16;
    return ATTN_SUCCESS;
}

static attn_status get_kernels(attn_context_t ctx, const attn_plan *plan,
                               const three_kernel_shape *shape, three_kernels *k) {
    const attn_params *p = &plan->p;
    char options[256];
    snprintf(options, sizeof options, "-DHEAD_DIM=%d -DMASK_MODE=%d -DQK_TILE=%zu", p->head_dim,
             (int)p->mask, shape->qk_tile);
    attn_status status = attn_get_kernel(ctx, "qk_scores", "qk_scores", options, &k->qk);
    if (status != ATTN_SUCCESS)
        return status;
    snprintf(options, sizeof options, "-DMASK_MODE=%d -DHAS_LSE=%d -DSOFTMAX_WG=%zu", (int)p->mask,
             plan->want_lse, shape->softmax_wg);
    status = attn_get_kernel(ctx, "softmax", "softmax_rows", options, &k->softmax);
    if (status != ATTN_SUCCESS)
        return status;
    snprintf(options, sizeof options, "-DHEAD_DIM_V=%d -DMASK_MODE=%d -DPV_TILE=%zu", p->head_dim_v,
             (int)p->mask, shape->pv_tile);
    return attn_get_kernel(ctx, "pv", "pv", options, &k->pv);
}

/* How many heads' scores fit at once: within one allocation, within global
 * memory beside the tensors, and within ATTN_CL_SCRATCH_LIMIT when set (a
 * cap for testing the chunked path on small shapes). */
static attn_status heads_per_chunk(attn_context_t ctx, const attn_plan *plan, size_t *out) {
    const attn_params *p = &plan->p;
    const size_t total_heads = (size_t)p->batch * (size_t)p->heads_q;
    const size_t seq_q = (size_t)p->seq_q, seq_k = (size_t)p->seq_k;
    if (seq_k > SIZE_MAX / sizeof(float) / seq_q)
        return attn_fail(ctx, ATTN_ERR_SIZE_OVERFLOW, "one head's %zu x %zu scores overflow size_t",
                         seq_q, seq_k);
    const size_t per_head = seq_q * seq_k * sizeof(float);

    uint64_t limit = ctx->info.max_alloc_bytes;
    const uint64_t tensors =
        (uint64_t)(plan->q_extent + plan->k_extent + plan->v_extent + plan->o_extent) *
        plan->element_size;
    const uint64_t free_mem =
        ctx->info.global_mem_bytes > tensors ? ctx->info.global_mem_bytes - tensors : 0;
    if (free_mem < limit)
        limit = free_mem;
    const char *cap = getenv("ATTN_CL_SCRATCH_LIMIT");
    if (cap && *cap) {
        unsigned long long value = strtoull(cap, NULL, 10);
        if (value < limit)
            limit = value;
    }
    const uint64_t heads = limit / per_head;
    if (heads == 0)
        return attn_fail(ctx, ATTN_ERR_DEVICE_OUT_OF_MEMORY,
                         "the three-kernel path needs %zu bytes of scores for one head "
                         "(seq_q %zu x seq_k %zu), but only %llu bytes can be allocated; use "
                         "ATTN_ALGO_FUSED, which needs no score matrix",
                         per_head, seq_q, seq_k, (unsigned long long)limit);
    *out = heads < total_heads ? (size_t)heads : total_heads;
    return ATTN_SUCCESS;
}

attn_status attn_three_kernel_check(attn_context_t ctx, const attn_plan *plan) {
    size_t heads;
    return heads_per_chunk(ctx, plan, &heads);
}

attn_status attn_three_kernel_prepare(attn_context_t ctx, const attn_plan *plan) {
    three_kernel_shape shape;
    three_kernels kernels;
    attn_status status = choose_shape(ctx, &shape);
    if (status == ATTN_SUCCESS)
        status = get_kernels(ctx, plan, &shape, &kernels);
    return status;
}

static attn_status enqueue(attn_context_t ctx, cl_kernel kernel, const char *name,
                           const size_t global[3], const size_t local[3], cl_uint num_wait,
                           const cl_event *wait_list, cl_event *event) {
    cl_int err = clEnqueueNDRangeKernel(ctx->queue, kernel, 3, NULL, global, local, num_wait,
                                        wait_list, event);
    if (err != CL_SUCCESS)
        return attn_fail(ctx, (attn_status)err, "clEnqueueNDRangeKernel(%s) failed: %s (%d)", name,
                         attn_cl_error_name(err), (int)err);
    return ATTN_SUCCESS;
}

/* Enqueues the three kernels for heads [head_base, head_base + heads). */
static attn_status run_chunk(attn_context_t ctx, const attn_plan *plan, const attn_device_args *a,
                             const three_kernel_shape *shape, const three_kernels *k, cl_mem scores,
                             int head_base, int heads, cl_uint num_wait, const cl_event *wait_list,
                             cl_event *done) {
    const attn_params *p = &plan->p;
    const cl_ulong q_off = a->q_offset, k_off = a->k_offset, v_off = a->v_offset,
                   o_off = a->o_offset, lse_off = a->lse_offset;
    const cl_long q_sb = p->q_strides.batch, q_sh = p->q_strides.head, q_ss = p->q_strides.seq;
    const cl_long k_sb = p->k_strides.batch, k_sh = p->k_strides.head, k_ss = p->k_strides.seq;
    const cl_long v_sb = p->v_strides.batch, v_sh = p->v_strides.head, v_ss = p->v_strides.seq;
    const cl_long o_sb = p->o_strides.batch, o_sh = p->o_strides.head, o_ss = p->o_strides.seq;
    const cl_long l_sb = p->lse_strides.batch, l_sh = p->lse_strides.head,
                  l_ss = p->lse_strides.seq;
    const cl_int seq_q = p->seq_q, seq_k = p->seq_k, heads_q = p->heads_q, group = plan->group;
    const cl_int base = head_base;
    const cl_float scale = p->scale;
    /* An unused LSE argument still needs a valid buffer. */
    const cl_mem lse = a->lse ? a->lse : scores;

    attn_status status = attn_set_kernel_args(
        ctx, k->qk, "qk_scores", 16, ATTN_ARG(a->q), ATTN_ARG(q_off), ATTN_ARG(q_sb),
        ATTN_ARG(q_sh), ATTN_ARG(q_ss), ATTN_ARG(a->k), ATTN_ARG(k_off), ATTN_ARG(k_sb),
        ATTN_ARG(k_sh), ATTN_ARG(k_ss), ATTN_ARG(scores), ATTN_ARG(seq_q), ATTN_ARG(seq_k),
        ATTN_ARG(heads_q), ATTN_ARG(group), ATTN_ARG(base));
    if (status != ATTN_SUCCESS)
        return status;
    const size_t qk_global[3] = {attn_round_up((size_t)seq_k, shape->qk_tile),
                                 attn_round_up((size_t)seq_q, shape->qk_tile), (size_t)heads};
    const size_t qk_local[3] = {shape->qk_tile, shape->qk_tile, 1};
    status = enqueue(ctx, k->qk, "qk_scores", qk_global, qk_local, num_wait, wait_list, NULL);
    if (status != ATTN_SUCCESS)
        return status;

    status = attn_set_kernel_args(
        ctx, k->softmax, "softmax_rows", 11, ATTN_ARG(scores), ATTN_ARG(seq_q), ATTN_ARG(seq_k),
        ATTN_ARG(scale), ATTN_ARG(heads_q), ATTN_ARG(base), ATTN_ARG(lse), ATTN_ARG(lse_off),
        ATTN_ARG(l_sb), ATTN_ARG(l_sh), ATTN_ARG(l_ss));
    if (status != ATTN_SUCCESS)
        return status;
    const size_t sm_global[3] = {shape->softmax_wg, (size_t)heads * (size_t)seq_q, 1};
    const size_t sm_local[3] = {shape->softmax_wg, 1, 1};
    status = enqueue(ctx, k->softmax, "softmax_rows", sm_global, sm_local, 0, NULL, NULL);
    if (status != ATTN_SUCCESS)
        return status;

    status = attn_set_kernel_args(ctx, k->pv, "pv", 16, ATTN_ARG(scores), ATTN_ARG(a->v),
                                  ATTN_ARG(v_off), ATTN_ARG(v_sb), ATTN_ARG(v_sh), ATTN_ARG(v_ss),
                                  ATTN_ARG(a->o), ATTN_ARG(o_off), ATTN_ARG(o_sb), ATTN_ARG(o_sh),
                                  ATTN_ARG(o_ss), ATTN_ARG(seq_q), ATTN_ARG(seq_k),
                                  ATTN_ARG(heads_q), ATTN_ARG(group), ATTN_ARG(base));
    if (status != ATTN_SUCCESS)
        return status;
    const size_t pv_global[3] = {attn_round_up((size_t)p->head_dim_v, shape->pv_tile),
                                 attn_round_up((size_t)seq_q, shape->pv_tile), (size_t)heads};
    const size_t pv_local[3] = {shape->pv_tile, shape->pv_tile, 1};
    return enqueue(ctx, k->pv, "pv", pv_global, pv_local, 0, NULL, done);
}

attn_status attn_three_kernel_run(attn_context_t ctx, const attn_plan *plan,
                                  const attn_device_args *args, float *probs_host, cl_uint num_wait,
                                  const cl_event *wait_list, cl_event *done) {
    const attn_params *p = &plan->p;
    three_kernel_shape shape;
    three_kernels kernels;
    size_t chunk = 0;
    if (done)
        *done = NULL;
    attn_status status = choose_shape(ctx, &shape);
    if (status == ATTN_SUCCESS)
        status = get_kernels(ctx, plan, &shape, &kernels);
    if (status == ATTN_SUCCESS)
        status = heads_per_chunk(ctx, plan, &chunk);
    if (status != ATTN_SUCCESS)
        return status;

    const size_t head_elems = (size_t)p->seq_q * (size_t)p->seq_k;
    cl_int err;
    cl_mem scores = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE,
                                   chunk * head_elems * sizeof(float), NULL, &err);
    if (err != CL_SUCCESS)
        return attn_fail(ctx, (attn_status)err,
                         "clCreateBuffer for %zu bytes of scores (%zu heads) failed: %s (%d)",
                         chunk * head_elems * sizeof(float), chunk, attn_cl_error_name(err),
                         (int)err);

    const size_t total = (size_t)p->batch * (size_t)p->heads_q;
    int enqueued = 0;
    for (size_t base = 0; base < total && status == ATTN_SUCCESS; base += chunk) {
        const size_t heads = total - base < chunk ? total - base : chunk;
        const int last = base + heads == total;
        status =
            run_chunk(ctx, plan, args, &shape, &kernels, scores, (int)base, (int)heads,
                      base == 0 ? num_wait : 0, base == 0 ? wait_list : NULL, last ? done : NULL);
        enqueued = 1;
        if (status == ATTN_SUCCESS && probs_host) {
            /* The scores now hold this chunk's probabilities; the next chunk reuses them. */
            err = clEnqueueReadBuffer(ctx->queue, scores, CL_TRUE, 0,
                                      heads * head_elems * sizeof(float),
                                      probs_host + base * head_elems, 0, NULL, NULL);
            if (err != CL_SUCCESS)
                status = attn_fail_cl(ctx, err, "clEnqueueReadBuffer (probabilities)");
        }
    }
    if (status != ATTN_SUCCESS && done && *done) {
        clReleaseEvent(*done);
        *done = NULL;
    }
    if (status != ATTN_SUCCESS && enqueued)
        clFinish(ctx->queue);
    clReleaseMemObject(scores); /* freed once the enqueued kernels complete */
    return status;
}
