/* The three-kernel path: S = Q·Kᵀ into a score buffer, scale + mask +
 * softmax in place, O = P·V. It holds seq_q·seq_k floats per head, so heads
 * are processed in chunks sized to the device's allocation limits; it is the
 * path that can hand the probabilities back.
 *
 * When O and LSE are the caller's buffers and more than one command would
 * write them (several chunks, or LSE from softmax and O from P·V), they are
 * staged in buffers of the library's and copied by one last command
 * (kernels/commit.cl): a failure part-way leaves the caller's outputs
 * untouched. */
#include "attn_internal.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct three_kernel_shape {
    size_t qk_tile, pv_tile, softmax_wg;
} three_kernel_shape;

typedef struct three_kernels {
    cl_kernel qk, softmax, pv;
    cl_kernel commit; /* NULL unless the outputs are staged */
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
                               const three_kernel_shape *shape, int staged, three_kernels *k) {
    const attn_params *p = &plan->p;
    char features[256], options[512];
    attn_feature_options(plan, features, sizeof features);
    snprintf(options, sizeof options, "%s -DHEAD_DIM=%d -DQK_TILE=%zu", features, p->head_dim,
             shape->qk_tile);
    attn_status status = attn_get_kernel(ctx, "qk_scores", "qk_scores", options, &k->qk);
    if (status != ATTN_SUCCESS)
        return status;
    snprintf(options, sizeof options, "%s -DHAS_LSE=%d -DSOFTMAX_WG=%zu", features, plan->want_lse,
             shape->softmax_wg);
    status = attn_get_kernel(ctx, "softmax", "softmax_rows", options, &k->softmax);
    if (status != ATTN_SUCCESS)
        return status;
    snprintf(options, sizeof options, "%s -DHEAD_DIM_V=%d -DPV_TILE=%zu", features, p->head_dim_v,
             shape->pv_tile);
    status = attn_get_kernel(ctx, "pv", "pv", options, &k->pv);
    k->commit = NULL;
    if (status != ATTN_SUCCESS || !staged)
        return status;
    snprintf(options, sizeof options, "%s -DHEAD_DIM_V=%d -DHAS_LSE=%d", features, p->head_dim_v,
             plan->want_lse);
    return attn_get_kernel(ctx, "commit", "commit_outputs", options, &k->commit);
}

/* The staged O and LSE have the tensors' logical shape, packed:
 * [batch][heads_q][rows] rows of head_dim_v (varlen: batch 1 and the packed
 * total of rows). */
static void staging_shape(const attn_plan *plan, uint64_t *batch, uint64_t *rows) {
    const attn_params *p = &plan->p;
    *batch = p->varlen ? 1u : (uint64_t)p->batch;
    *rows = p->varlen ? (uint64_t)p->total_q : (uint64_t)p->seq_q;
}

/* Bytes of the staged O and LSE (see the top of this file). */
static uint64_t staging_bytes(const attn_plan *plan) {
    uint64_t batch, rows;
    staging_shape(plan, &batch, &rows);
    const uint64_t all = batch * (uint64_t)plan->p.heads_q * rows;
    return all * ((uint64_t)plan->p.head_dim_v * plan->element_size +
                  (plan->want_lse ? sizeof(float) : 0u));
}

/* How many heads' scores fit at once: within one allocation, within global
 * memory beside the tensors and the staged outputs (counted whether or not
 * this call stages, so that attn_check agrees with every forward), and
 * within ATTN_CL_SCRATCH_LIMIT when set (a cap for testing the chunked path
 * on small shapes). */
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
            plan->element_size +
        (uint64_t)plan->bias_extent * sizeof(float) + plan->keep_mask_extent + staging_bytes(plan);
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
                         "(seq_q %zu x seq_k %zu), but only %llu bytes can be allocated (the "
                         "tensors take %llu of the device's %llu bytes); use ATTN_ALGO_FUSED, "
                         "which needs no score matrix",
                         per_head, seq_q, seq_k, (unsigned long long)limit,
                         (unsigned long long)tensors,
                         (unsigned long long)ctx->info.global_mem_bytes);
    *out = heads < total_heads ? (size_t)heads : total_heads;
    return ATTN_SUCCESS;
}

attn_status attn_three_kernel_check(attn_context_t ctx, const attn_plan *plan) {
    size_t heads;
    return heads_per_chunk(ctx, plan, &heads);
}

/* Whether a forward of `plan` whose outputs are the caller's stages them. */
static int needs_staging(const attn_plan *plan, size_t chunk) {
    return plan->want_lse || chunk < (size_t)plan->p.batch * (size_t)plan->p.heads_q;
}

attn_status attn_three_kernel_prepare(attn_context_t ctx, const attn_plan *plan) {
    three_kernel_shape shape;
    three_kernels kernels;
    size_t chunk = 0;
    attn_status status = choose_shape(ctx, &shape);
    if (status == ATTN_SUCCESS)
        status = heads_per_chunk(ctx, plan, &chunk);
    if (status == ATTN_SUCCESS) /* the device-memory call's kernels, a superset */
        status = get_kernels(ctx, plan, &shape, needs_staging(plan, chunk), &kernels);
    return status;
}

/* Where softmax writes LSE and P·V writes O: the forward's own tensors, or
 * the contiguous staging buffers. */
typedef struct output_target {
    cl_mem o, lse; /* lse NULL when not wanted */
    size_t o_off, lse_off;
    attn_strides o_strides, lse_strides;
} output_target;

/* Enqueues the three kernels for heads [head_base, head_base + heads). */
static attn_status run_chunk(attn_context_t ctx, const attn_plan *plan, const attn_device_args *a,
                             const output_target *out, const three_kernel_shape *shape,
                             const three_kernels *k, cl_mem scores, int head_base, int heads,
                             cl_uint num_wait, const cl_event *wait_list, cl_event *done) {
    const attn_params *p = &plan->p;
    const cl_int heads_q = p->heads_q, group = plan->group, base = head_base;
    const cl_float scale = p->scale;
    /* An unused LSE argument still needs a valid buffer. */
    const cl_mem lse = out->lse ? out->lse : scores;

    attn_status status =
        attn_set_tensor_args(ctx, k->qk, "qk_scores", 0, a->q, a->q_offset, &p->q_strides);
    if (status == ATTN_SUCCESS)
        status = attn_set_tensor_args(ctx, k->qk, "qk_scores", 5, a->k, a->k_offset, &p->k_strides);
    if (status == ATTN_SUCCESS)
        status = attn_set_kernel_args(ctx, k->qk, "qk_scores", 10, 4, ATTN_ARG(scores),
                                      ATTN_ARG(heads_q), ATTN_ARG(group), ATTN_ARG(base));
    if (status == ATTN_SUCCESS)
        status = attn_set_feature_args(ctx, k->qk, "qk_scores", 14, plan, a);
    const size_t qk_global[3] = {attn_round_up((size_t)p->seq_k, shape->qk_tile),
                                 attn_round_up((size_t)p->seq_q, shape->qk_tile), (size_t)heads};
    const size_t qk_local[3] = {shape->qk_tile, shape->qk_tile, 1};
    if (status == ATTN_SUCCESS)
        status = attn_enqueue_kernel(ctx, k->qk, "qk_scores", qk_global, qk_local, num_wait,
                                     wait_list, NULL);

    if (status == ATTN_SUCCESS)
        status = attn_set_kernel_args(ctx, k->softmax, "softmax_rows", 0, 4, ATTN_ARG(scores),
                                      ATTN_ARG(scale), ATTN_ARG(heads_q), ATTN_ARG(base));
    if (status == ATTN_SUCCESS)
        status = attn_set_tensor_args(ctx, k->softmax, "softmax_rows", 4, lse, out->lse_off,
                                      &out->lse_strides);
    if (status == ATTN_SUCCESS)
        status = attn_set_feature_args(ctx, k->softmax, "softmax_rows", 9, plan, a);
    const size_t sm_global[3] = {shape->softmax_wg, (size_t)heads * (size_t)p->seq_q, 1};
    const size_t sm_local[3] = {shape->softmax_wg, 1, 1};
    if (status == ATTN_SUCCESS)
        status = attn_enqueue_kernel(ctx, k->softmax, "softmax_rows", sm_global, sm_local, 0, NULL,
                                     NULL);

    if (status == ATTN_SUCCESS)
        status = attn_set_kernel_args(ctx, k->pv, "pv", 0, 1, ATTN_ARG(scores));
    if (status == ATTN_SUCCESS)
        status = attn_set_tensor_args(ctx, k->pv, "pv", 1, a->v, a->v_offset, &p->v_strides);
    if (status == ATTN_SUCCESS)
        status = attn_set_tensor_args(ctx, k->pv, "pv", 6, out->o, out->o_off, &out->o_strides);
    if (status == ATTN_SUCCESS)
        status = attn_set_kernel_args(ctx, k->pv, "pv", 11, 3, ATTN_ARG(heads_q), ATTN_ARG(group),
                                      ATTN_ARG(base));
    if (status == ATTN_SUCCESS)
        status = attn_set_feature_args(ctx, k->pv, "pv", 14, plan, a);
    const size_t pv_global[3] = {attn_round_up((size_t)p->head_dim_v, shape->pv_tile),
                                 attn_round_up((size_t)p->seq_q, shape->pv_tile), (size_t)heads};
    const size_t pv_local[3] = {shape->pv_tile, shape->pv_tile, 1};
    if (status == ATTN_SUCCESS)
        status = attn_enqueue_kernel(ctx, k->pv, "pv", pv_global, pv_local, 0, NULL, done);
    return status;
}

/* Staging buffers for O and (when wanted) LSE, and the target that points
 * the kernels at them. */
static attn_status create_staging(attn_context_t ctx, const attn_plan *plan, output_target *out) {
    const attn_params *p = &plan->p;
    uint64_t batch, rows;
    staging_shape(plan, &batch, &rows);
    const size_t all = (size_t)(batch * (uint64_t)p->heads_q * rows);
    const size_t sizes[2] = {all * (size_t)p->head_dim_v * plan->element_size, all * sizeof(float)};
    cl_mem *mems[2] = {&out->o, &out->lse};
    *out = (output_target){0};
    for (int t = 0; t < (plan->want_lse ? 2 : 1); t++) {
        cl_int err;
        *mems[t] = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, sizes[t], NULL, &err);
        if (err != CL_SUCCESS) {
            *mems[t] = NULL;
            return attn_fail(ctx, (attn_status)err,
                             "clCreateBuffer for the staged %s (%zu bytes) failed: %s (%d)",
                             t ? "LSE" : "O", sizes[t], attn_cl_error_name(err), (int)err);
        }
    }
    /* The kernels step b * batch stride: packed, or 0 with varlen (batch 1). */
    const int64_t heads = p->heads_q, r = (int64_t)rows, dv = p->head_dim_v;
    out->o_strides = (attn_strides){p->varlen ? 0 : heads * r * dv, r * dv, dv};
    out->lse_strides = (attn_strides){p->varlen ? 0 : heads * r, r, 1};
    return ATTN_SUCCESS;
}

/* Sets commit_outputs' arguments: staging in `st`, the caller's tensors in `a`. */
static attn_status set_commit_args(attn_context_t ctx, const attn_plan *plan,
                                   const attn_device_args *a, const output_target *st,
                                   cl_kernel commit) {
    const attn_params *p = &plan->p;
    uint64_t batch, rows;
    staging_shape(plan, &batch, &rows);
    const cl_int stage_rows = (cl_int)rows;
    /* Without LSE the kernel never touches these; they still need buffers. */
    const cl_mem lse_stage = st->lse ? st->lse : st->o, lse = a->lse ? a->lse : a->o;
    attn_status status = attn_set_kernel_args(ctx, commit, "commit_outputs", 0, 1, ATTN_ARG(st->o));
    if (status == ATTN_SUCCESS)
        status = attn_set_tensor_args(ctx, commit, "commit_outputs", 1, a->o, a->o_offset,
                                      &p->o_strides);
    if (status == ATTN_SUCCESS)
        status = attn_set_kernel_args(ctx, commit, "commit_outputs", 6, 1, ATTN_ARG(lse_stage));
    if (status == ATTN_SUCCESS)
        status = attn_set_tensor_args(ctx, commit, "commit_outputs", 7, lse, a->lse_offset,
                                      &p->lse_strides);
    if (status == ATTN_SUCCESS)
        status = attn_set_kernel_args(ctx, commit, "commit_outputs", 12, 1, ATTN_ARG(stage_rows));
    if (status == ATTN_SUCCESS)
        status = attn_set_feature_args(ctx, commit, "commit_outputs", 13, plan, a);
    return status;
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
        status = heads_per_chunk(ctx, plan, &chunk);
    const int staged = args->callers_outputs && needs_staging(plan, chunk);
    if (status == ATTN_SUCCESS)
        status = get_kernels(ctx, plan, &shape, staged, &kernels);
    if (status != ATTN_SUCCESS)
        return status;

    output_target target = {.o = args->o,
                            .lse = args->lse,
                            .o_off = args->o_offset,
                            .lse_off = args->lse_offset,
                            .o_strides = p->o_strides,
                            .lse_strides = p->lse_strides};
    cl_mem scores = NULL;
    if (staged) {
        status = create_staging(ctx, plan, &target);
        if (status == ATTN_SUCCESS)
            status = set_commit_args(ctx, plan, args, &target, kernels.commit);
    }
    const size_t head_elems = (size_t)p->seq_q * (size_t)p->seq_k;
    if (status == ATTN_SUCCESS) {
        cl_int err;
        scores = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, chunk * head_elems * sizeof(float),
                                NULL, &err);
        if (err != CL_SUCCESS) {
            scores = NULL;
            status = attn_fail(ctx, (attn_status)err,
                               "clCreateBuffer for %zu bytes of scores (%zu heads) failed: %s (%d)",
                               chunk * head_elems * sizeof(float), chunk, attn_cl_error_name(err),
                               (int)err);
        }
    }

    const size_t total = (size_t)p->batch * (size_t)p->heads_q;
    int enqueued = 0;
    for (size_t base = 0; base < total && status == ATTN_SUCCESS; base += chunk) {
        const size_t heads = total - base < chunk ? total - base : chunk;
        const int last = base + heads == total && !staged;
        status =
            run_chunk(ctx, plan, args, &target, &shape, &kernels, scores, (int)base, (int)heads,
                      base == 0 ? num_wait : 0, base == 0 ? wait_list : NULL, last ? done : NULL);
        enqueued = 1;
        if (status == ATTN_SUCCESS && probs_host) {
            /* The scores now hold this chunk's probabilities; the next chunk reuses them. */
            cl_int err = clEnqueueReadBuffer(ctx->queue, scores, CL_TRUE, 0,
                                             heads * head_elems * sizeof(float),
                                             probs_host + base * head_elems, 0, NULL, NULL);
            if (err != CL_SUCCESS)
                status = attn_fail_cl(ctx, err, "clEnqueueReadBuffer (probabilities)");
        }
    }
    if (status == ATTN_SUCCESS && staged) {
        const size_t global[3] = {(size_t)p->seq_q, (size_t)p->heads_q, (size_t)p->batch};
        status =
            attn_enqueue_kernel(ctx, kernels.commit, "commit_outputs", global, NULL, 0, NULL, done);
    }
    if (status != ATTN_SUCCESS && done && *done) {
        clReleaseEvent(*done);
        *done = NULL;
    }
    if (status != ATTN_SUCCESS && enqueued)
        clFinish(ctx->queue);
    /* Freed by the runtime once the enqueued kernels complete. */
    cl_mem temporaries[3] = {scores, staged ? target.o : NULL, staged ? target.lse : NULL};
    for (int i = 0; i < 3; i++)
        if (temporaries[i])
            clReleaseMemObject(temporaries[i]);
    return status;
}
