/* The API edge of a forward: validation into a plan, dispatch to an
 * algorithm, and for the host call the uploads, downloads and staging that
 * keep the caller's outputs untouched on failure. */
#include "attn_internal.h"
#include "host_copy.h"

#include <stdlib.h>
#include <string.h>

static attn_status check_algorithm(attn_context_t ctx, const attn_plan *plan) {
    return plan->algo == ATTN_ALGO_THREE_KERNEL ? attn_three_kernel_check(ctx, plan)
                                                : attn_fused_check(ctx, plan);
}

attn_status attn_check(attn_context_t ctx, const attn_params *params, int want_lse, int want_probs,
                       attn_algo *algo) {
    if (!ctx)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "attn_check: ctx is NULL");
    attn_plan plan;
    attn_status status = attn_plan_make(ctx, params, want_lse, want_probs, &plan);
    if (status == ATTN_SUCCESS) {
        pthread_mutex_lock(&ctx->lock);
        status = check_algorithm(ctx, &plan);
        pthread_mutex_unlock(&ctx->lock);
    }
    if (status == ATTN_SUCCESS && algo)
        *algo = plan.algo;
    return status;
}

attn_status attn_prepare(attn_context_t ctx, const attn_params *params, int want_lse,
                         int want_probs) {
    if (!ctx)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "attn_prepare: ctx is NULL");
    attn_plan plan;
    attn_status status = attn_plan_make(ctx, params, want_lse, want_probs, &plan);
    if (status != ATTN_SUCCESS)
        return status;
    pthread_mutex_lock(&ctx->lock);
    status = plan.algo == ATTN_ALGO_THREE_KERNEL ? attn_three_kernel_prepare(ctx, &plan)
                                                 : attn_fused_prepare(ctx, &plan);
    pthread_mutex_unlock(&ctx->lock);
    return status;
}

/* Uploads the metadata and runs the plan's algorithm; the caller holds
 * ctx->lock and has checked the metadata. */
static attn_status dispatch(attn_context_t ctx, const attn_plan *plan, attn_device_args *args,
                            float *probs_host, cl_uint num_wait, const cl_event *wait_list,
                            cl_event *done) {
    if (done)
        *done = NULL;
    attn_status status = check_algorithm(ctx, plan);
    if (status == ATTN_SUCCESS)
        status = attn_metadata_upload(ctx, plan, args);
    if (status != ATTN_SUCCESS)
        return status;
    if (plan->algo == ATTN_ALGO_THREE_KERNEL)
        status = attn_three_kernel_run(ctx, plan, args, probs_host, num_wait, wait_list, done);
    else
        status = attn_fused_run(ctx, plan, args, num_wait, wait_list, done);
    attn_metadata_release(args);
    return status;
}

/* Bias and keep-mask pointers are given exactly when params ask for them
 * (the metadata arrays are checked by attn_plan_metadata). */
static attn_status check_operands(attn_context_t ctx, const char *call, const attn_plan *plan,
                                  const void *bias, const void *keep_mask) {
    const attn_params *p = &plan->p;
    if (p->bias.present && !bias)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT, "%s: params ask for a bias, which is NULL",
                         call);
    if (p->keep_mask.present && !keep_mask)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT,
                         "%s: params ask for a keep_mask, which is NULL", call);
    return ATTN_SUCCESS;
}

/* A device buffer of `bytes`, filled from `host` when it is not NULL. */
static attn_status create_buffer(attn_context_t ctx, const char *name, size_t bytes,
                                 const void *host, cl_mem *out) {
    const size_t max_alloc = (size_t)ctx->info.max_alloc_bytes;
    if (max_alloc && bytes > max_alloc)
        return attn_fail(ctx, ATTN_ERR_DEVICE_OUT_OF_MEMORY,
                         "%s needs %zu bytes, above the device's largest allocation (%zu)", name,
                         bytes, max_alloc);
    cl_int err;
    cl_mem_flags flags = CL_MEM_READ_WRITE | (host ? CL_MEM_COPY_HOST_PTR : 0);
    *out = clCreateBuffer(ctx->context, flags, bytes, (void *)(uintptr_t)host, &err);
    if (err != CL_SUCCESS) {
        *out = NULL;
        return attn_fail(ctx, (attn_status)err, "clCreateBuffer for %s (%zu bytes) failed: %s (%d)",
                         name, bytes, attn_cl_error_name(err), (int)err);
    }
    return ATTN_SUCCESS;
}

static attn_status read_buffer(attn_context_t ctx, const char *name, cl_mem buffer, size_t bytes,
                               void *host) {
    cl_int err = clEnqueueReadBuffer(ctx->queue, buffer, CL_TRUE, 0, bytes, host, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return attn_fail(ctx, (attn_status)err, "clEnqueueReadBuffer for %s failed: %s (%d)", name,
                         attn_cl_error_name(err), (int)err);
    return ATTN_SUCCESS;
}

typedef struct host_staging {
    void *o;
    float *lse, *probs;
} host_staging;

static void release_all(attn_device_args *d, host_staging *st) {
    cl_mem mems[7] = {d->q, d->k, d->v, d->o, d->lse, d->bias, d->keep_mask};
    for (int i = 0; i < 7; i++)
        if (mems[i])
            clReleaseMemObject(mems[i]);
    free(st->o);
    free(st->lse);
    free(st->probs);
}

/* The staged O and LSE into the caller's memory: only the elements the
 * forward wrote, so that O and LSE may interleave (a packed [O | LSE] record)
 * and gaps keep the caller's data. */
static void copy_outputs(const attn_plan *plan, const attn_host_tensors *t,
                         const host_staging *st) {
    const attn_params *p = &plan->p;
    attn_output_rows rows = {.batch = p->batch,
                             .heads = p->heads_q,
                             .rows = p->varlen ? p->total_q : p->seq_q,
                             .inner = p->head_dim_v,
                             .strides = p->o_strides,
                             .element_size = plan->element_size,
                             .cu_seqlens = p->varlen ? t->cu_seqlens_q : NULL};
    attn_copy_output_rows(t->o, st->o, &rows);
    if (t->lse) {
        rows.inner = 1;
        rows.strides = p->lse_strides;
        rows.element_size = sizeof(float);
        attn_copy_output_rows(t->lse, st->lse, &rows);
    }
}

static attn_status forward_locked(attn_context_t ctx, const attn_plan *plan,
                                  const attn_host_tensors *t) {
    const size_t es = plan->element_size;
    const size_t o_bytes = plan->o_extent * es, lse_bytes = plan->lse_extent * sizeof(float);
    attn_device_args d = {.meta = {.key_lengths = t->key_lengths,
                                   .cu_seqlens_q = t->cu_seqlens_q,
                                   .cu_seqlens_k = t->cu_seqlens_k,
                                   .alibi_slopes = t->alibi_slopes}};
    host_staging st = {0};
    /* A request the path refuses (tuning, device limits) fails before any
     * allocation or upload. */
    attn_status status = check_algorithm(ctx, plan);
    if (status != ATTN_SUCCESS)
        return status;

    /* Device buffers first: a request past the device's limits fails
     * before the host staging of its outputs is allocated. */
    status = create_buffer(ctx, "Q", plan->q_extent * es, t->q, &d.q);
    if (status == ATTN_SUCCESS)
        status = create_buffer(ctx, "K", plan->k_extent * es, t->k, &d.k);
    if (status == ATTN_SUCCESS)
        status = create_buffer(ctx, "V", plan->v_extent * es, t->v, &d.v);
    /* O and LSE need no initial contents: only the rows the forward
     * writes come back (copy_outputs). */
    if (status == ATTN_SUCCESS)
        status = create_buffer(ctx, "O", o_bytes, NULL, &d.o);
    if (status == ATTN_SUCCESS && t->lse)
        status = create_buffer(ctx, "LSE", lse_bytes, NULL, &d.lse);
    if (status == ATTN_SUCCESS && plan->p.bias.present)
        status =
            create_buffer(ctx, "the bias", plan->bias_extent * sizeof(float), t->bias, &d.bias);
    if (status == ATTN_SUCCESS && plan->p.keep_mask.present)
        status =
            create_buffer(ctx, "the keep_mask", plan->keep_mask_extent, t->keep_mask, &d.keep_mask);
    if (status == ATTN_SUCCESS) {
        st.o = malloc(o_bytes);
        if (t->lse)
            st.lse = malloc(lse_bytes);
        if (t->probs)
            st.probs = malloc(plan->probs_elems * sizeof(float));
        if (!st.o || (t->lse && !st.lse) || (t->probs && !st.probs))
            status = attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY,
                               "cannot allocate host staging for the outputs (%zu + %zu + %zu "
                               "bytes)",
                               o_bytes, t->lse ? lse_bytes : 0,
                               t->probs ? plan->probs_elems * sizeof(float) : 0);
    }
    if (status == ATTN_SUCCESS)
        status = dispatch(ctx, plan, &d, st.probs, 0, NULL, NULL);
    if (status == ATTN_SUCCESS)
        status = read_buffer(ctx, "O", d.o, o_bytes, st.o);
    if (status == ATTN_SUCCESS && t->lse)
        status = read_buffer(ctx, "LSE", d.lse, lse_bytes, st.lse);
    if (status == ATTN_SUCCESS) {
        copy_outputs(plan, t, &st);
        if (t->probs)
            memcpy(t->probs, st.probs, plan->probs_elems * sizeof(float));
    }
    release_all(&d, &st);
    return status;
}

attn_status attn_forward_host(attn_context_t ctx, const attn_params *params,
                              const attn_host_tensors *t) {
    if (!ctx)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "attn_forward_host: ctx is NULL");
    if (!t || !t->q || !t->k || !t->v || !t->o)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT,
                         "attn_forward_host: tensors and their q, k, v and o are required");
    attn_plan plan;
    attn_status status = attn_plan_make(ctx, params, t->lse != NULL, t->probs != NULL, &plan);
    const attn_metadata meta = {.key_lengths = t->key_lengths,
                                .cu_seqlens_q = t->cu_seqlens_q,
                                .cu_seqlens_k = t->cu_seqlens_k,
                                .alibi_slopes = t->alibi_slopes};
    if (status == ATTN_SUCCESS)
        status = check_operands(ctx, "attn_forward_host", &plan, t->bias, t->keep_mask);
    if (status == ATTN_SUCCESS)
        status = attn_plan_metadata(ctx, &plan, &meta);
    if (status != ATTN_SUCCESS)
        return status;
    pthread_mutex_lock(&ctx->lock);
    status = forward_locked(ctx, &plan, t);
    pthread_mutex_unlock(&ctx->lock);
    return status;
}

attn_status attn_forward(attn_context_t ctx, const attn_params *params, const void *q,
                         const void *k, const void *v, void *o, float *lse, float *probs) {
    if (!ctx)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "attn_forward: ctx is NULL");
    if (!q || !k || !v || !o)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT, "attn_forward: q, k, v and o are required");
    const attn_host_tensors t = {.q = q, .k = k, .v = v, .o = o, .lse = lse, .probs = probs};
    return attn_forward_host(ctx, params, &t);
}

attn_status attn_check_device_tensor(attn_context_t ctx, const char *name, cl_mem mem,
                                     size_t offset, size_t extent, size_t element_size,
                                     size_t *element_offset) {
    if (offset % element_size != 0)
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                         "%s offset %zu is not a multiple of the element size %zu", name, offset,
                         element_size);
    size_t size = 0;
    cl_int err = clGetMemObjectInfo(mem, CL_MEM_SIZE, sizeof size, &size, NULL);
    if (err != CL_SUCCESS)
        return attn_fail(ctx, (attn_status)err, "clGetMemObjectInfo(%s) failed: %s (%d)", name,
                         attn_cl_error_name(err), (int)err);
    const size_t need = extent * element_size;
    if (offset > size || size - offset < need)
        return attn_fail(ctx, ATTN_ERR_BUFFER_TOO_SMALL,
                         "%s holds %zu bytes; from offset %zu the shape needs %zu", name, size,
                         offset, need);
    *element_offset = offset / element_size;
    return ATTN_SUCCESS;
}

attn_status attn_forward_device(attn_context_t ctx, const attn_params *params,
                                const attn_device_tensors *t, cl_uint num_wait_events,
                                const cl_event *wait_list, cl_event *event) {
    /* First, so that every failure, however early, leaves it NULL. */
    if (event)
        *event = NULL;
    if (!ctx)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "attn_forward_device: ctx is NULL");
    if (!t || !t->q || !t->k || !t->v || !t->o)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT,
                         "attn_forward_device: tensors and their q, k, v and o are required");
    if ((num_wait_events > 0) != (wait_list != NULL))
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                         "wait_list must be NULL exactly when num_wait_events is 0");
    attn_plan plan;
    attn_status status = attn_plan_make(ctx, params, t->lse != NULL, 0, &plan);
    if (status != ATTN_SUCCESS)
        return status;
    attn_device_args d = {.q = t->q,
                          .k = t->k,
                          .v = t->v,
                          .o = t->o,
                          .lse = t->lse,
                          .bias = plan.p.bias.present ? t->bias : NULL,
                          .keep_mask = plan.p.keep_mask.present ? t->keep_mask : NULL,
                          .meta = {.key_lengths = t->key_lengths,
                                   .cu_seqlens_q = t->cu_seqlens_q,
                                   .cu_seqlens_k = t->cu_seqlens_k,
                                   .alibi_slopes = t->alibi_slopes},
                          .callers_outputs = 1};
    status = check_operands(ctx, "attn_forward_device", &plan, t->bias, t->keep_mask);
    if (status == ATTN_SUCCESS)
        status = attn_plan_metadata(ctx, &plan, &d.meta);
    if (status != ATTN_SUCCESS)
        return status;
    const size_t es = plan.element_size;
    status = attn_check_device_tensor(ctx, "Q", t->q, t->q_offset, plan.q_extent, es, &d.q_offset);
    if (status == ATTN_SUCCESS)
        status =
            attn_check_device_tensor(ctx, "K", t->k, t->k_offset, plan.k_extent, es, &d.k_offset);
    if (status == ATTN_SUCCESS)
        status =
            attn_check_device_tensor(ctx, "V", t->v, t->v_offset, plan.v_extent, es, &d.v_offset);
    if (status == ATTN_SUCCESS)
        status =
            attn_check_device_tensor(ctx, "O", t->o, t->o_offset, plan.o_extent, es, &d.o_offset);
    if (status == ATTN_SUCCESS && t->lse)
        status = attn_check_device_tensor(ctx, "LSE", t->lse, t->lse_offset, plan.lse_extent,
                                          sizeof(float), &d.lse_offset);
    if (status == ATTN_SUCCESS && d.bias)
        status = attn_check_device_tensor(ctx, "the bias", t->bias, t->bias_offset,
                                          plan.bias_extent, sizeof(float), &d.bias_offset);
    if (status == ATTN_SUCCESS && d.keep_mask)
        status = attn_check_device_tensor(ctx, "the keep_mask", t->keep_mask, t->keep_mask_offset,
                                          plan.keep_mask_extent, 1, &d.keep_mask_offset);
    if (status == ATTN_SUCCESS)
        status = attn_check_device_overlap(ctx, &plan, t);
    if (status != ATTN_SUCCESS)
        return status;
    pthread_mutex_lock(&ctx->lock);
    status = dispatch(ctx, &plan, &d, NULL, num_wait_events, wait_list, event);
    pthread_mutex_unlock(&ctx->lock);
    return status;
}
