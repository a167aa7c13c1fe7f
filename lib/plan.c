/* Plans: a problem validated, its algorithm chosen and configured, and its
 * kernels built once; then executed many times on host or device tensors.
 * What an execute needs beyond the caller's tensors (the host call's device
 * copies, the workspace, the input arrays' device copies and their host
 * staging) is allocated on first use and kept, so repeated executes
 * allocate nothing. */
#include "attn_internal.h"
#include "host_copy.h"

#include <stdlib.h>
#include <string.h>

struct attn_plan {
    attn_context_t ctx;
    attn_problem pb;
    const attn_algorithm *algorithm;
    attn_algo_state *state;
    size_t workspace_bytes;
    uint32_t outputs;     /* ATTN_PLAN_* */
    pthread_mutex_t lock; /* one execute at a time: the state's kernels and the kept buffers */

    cl_mem workspace; /* NULL until an execute needs the plan's own */

    /* The input arrays' device copies, and the host staging they are written
     * from (without blocking, so that the device call does not wait for the
     * queue); arrays_written completes once the last write has read it. */
    cl_mem arrays[ATTN_INPUT_COUNT];
    unsigned char *arrays_host;
    cl_event arrays_written;

    /* The host call's device copies of the tensors and host staging of its
     * outputs, so that a failure leaves the caller's outputs untouched. */
    cl_mem q, k, v, o, lse, bias, keep_mask;
    void *o_host;
    float *lse_host, *probs_host;

    /* What another kind of plan keeps (lib/kvcache.c), freed with the plan. */
    void *ext;
    void (*ext_free)(void *ext);
};

/* ---- Creation ------------------------------------------------------------ */

attn_status attn_plan_create(attn_context_t ctx, const attn_params *params, uint32_t outputs,
                             attn_plan_t *out) {
    if (out)
        *out = NULL;
    if (!ctx)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "attn_plan_create: ctx is NULL");
    if (!out)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT, "attn_plan_create: plan is NULL");
    if (outputs & ~(uint32_t)(ATTN_PLAN_LSE | ATTN_PLAN_PROBS | ATTN_PLAN_BACKWARD))
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                         "attn_plan_create: outputs 0x%x has bits that are no ATTN_PLAN_* flag",
                         (unsigned)outputs);
    attn_problem pb;
    attn_status status = attn_problem_make(ctx, params, (outputs & ATTN_PLAN_LSE) != 0,
                                           (outputs & ATTN_PLAN_PROBS) != 0, &pb);
    if (status != ATTN_SUCCESS)
        return status;
    status = attn_plan_create_problem(ctx, &pb, outputs, out);
    /* The backward's kernels, beside the forward's (lib/backward.c). */
    if (status == ATTN_SUCCESS && (outputs & ATTN_PLAN_BACKWARD)) {
        status = attn_backward_attach(ctx, *out);
        if (status != ATTN_SUCCESS) {
            attn_plan_destroy(*out);
            *out = NULL;
        }
    }
    return status;
}

attn_status attn_plan_create_problem(attn_context_t ctx, const attn_problem *pb, uint32_t outputs,
                                     attn_plan_t *out) {
    attn_status status;
    attn_plan_t plan = calloc(1, sizeof *plan);
    if (!plan)
        return attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY, "cannot allocate a plan");
    if (pthread_mutex_init(&plan->lock, NULL) != 0) {
        free(plan);
        return attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY, "cannot initialize a plan's lock");
    }
    plan->ctx = ctx;
    plan->pb = *pb;
    plan->outputs = outputs;
    pthread_mutex_lock(&ctx->lock);
    status = attn_dispatch(ctx, &plan->pb, &plan->algorithm, &plan->state);
    if (status == ATTN_SUCCESS)
        status = plan->algorithm->build(ctx, plan->state);
    pthread_mutex_unlock(&ctx->lock);
    if (status != ATTN_SUCCESS) {
        attn_plan_destroy(plan);
        return status;
    }
    plan->workspace_bytes = plan->algorithm->workspace_bytes(plan->state);
    *out = plan;
    return ATTN_SUCCESS;
}

static void free_arrays_host(cl_event event, cl_int status, void *host) {
    (void)event;
    (void)status;
    free(host);
}

void attn_plan_destroy(attn_plan_t plan) {
    if (!plan)
        return;
    if (plan->arrays_written) {
        /* The last write may still be queued: its staging goes once it has run. */
        if (clSetEventCallback(plan->arrays_written, CL_COMPLETE, free_arrays_host,
                               plan->arrays_host) == CL_SUCCESS)
            plan->arrays_host = NULL;
        else
            clWaitForEvents(1, &plan->arrays_written);
        clReleaseEvent(plan->arrays_written);
    }
    free(plan->arrays_host);
    if (plan->algorithm)
        plan->algorithm->destroy(plan->state);
    /* Buffers still used by enqueued work live until it completes. */
    cl_mem mems[8] = {plan->workspace, plan->q,   plan->k,    plan->v,
                      plan->o,         plan->lse, plan->bias, plan->keep_mask};
    for (int i = 0; i < 8; i++)
        if (mems[i])
            clReleaseMemObject(mems[i]);
    attn_input_arrays_release(plan->arrays);
    free(plan->o_host);
    free(plan->lse_host);
    free(plan->probs_host);
    if (plan->ext_free)
        plan->ext_free(plan->ext);
    pthread_mutex_destroy(&plan->lock);
    free(plan);
}

/* ---- For other kinds of plans (lib/kvcache.c) ---------------------------------- */

const attn_problem *attn_plan_problem(attn_plan_t plan) {
    return &plan->pb;
}

attn_context_t attn_plan_context(attn_plan_t plan) {
    return plan->ctx;
}

uint32_t attn_plan_outputs(attn_plan_t plan) {
    return plan->outputs;
}

void attn_plan_set_ext(attn_plan_t plan, void *ext, void (*ext_free)(void *ext)) {
    plan->ext = ext;
    plan->ext_free = ext_free;
}

void *attn_plan_ext(attn_plan_t plan) {
    return plan->ext;
}

void attn_plan_lock(attn_plan_t plan) {
    pthread_mutex_lock(&plan->lock);
}

void attn_plan_unlock(attn_plan_t plan) {
    pthread_mutex_unlock(&plan->lock);
}

attn_algo attn_plan_algo(attn_plan_t plan) {
    return plan && plan->algorithm ? plan->algorithm->id : ATTN_ALGO_AUTO;
}

size_t attn_plan_workspace_size(attn_plan_t plan) {
    return plan ? plan->workspace_bytes : 0;
}

/* ---- What executes keep ---------------------------------------------------- */

attn_status attn_create_buffer(attn_context_t ctx, const char *name, size_t bytes, cl_mem *out) {
    const size_t max_alloc = (size_t)ctx->info.max_alloc_bytes;
    if (max_alloc && bytes > max_alloc)
        return attn_fail(ctx, ATTN_ERR_DEVICE_OUT_OF_MEMORY,
                         "%s needs %zu bytes, above the device's largest allocation (%zu)", name,
                         bytes, max_alloc);
    cl_int err;
    *out = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, bytes ? bytes : 1, NULL, &err);
    if (err != CL_SUCCESS) {
        *out = NULL;
        return attn_fail(ctx, (attn_status)err, "clCreateBuffer for %s (%zu bytes) failed: %s (%d)",
                         name, bytes, attn_cl_error_name(err), (int)err);
    }
    return ATTN_SUCCESS;
}

static attn_status own_workspace(attn_plan_t plan) {
    if (plan->workspace || !plan->workspace_bytes)
        return ATTN_SUCCESS;
    return attn_create_buffer(plan->ctx, "the workspace", plan->workspace_bytes, &plan->workspace);
}

attn_status attn_plan_run_locked(attn_plan_t plan, attn_device_args *d, cl_mem workspace,
                                 size_t workspace_offset, cl_uint num_wait,
                                 const cl_event *wait_list, cl_event *event) {
    attn_status status = ATTN_SUCCESS;
    d->workspace = NULL;
    if (workspace && plan->workspace_bytes) {
        d->workspace = workspace;
        d->workspace_offset = workspace_offset;
    } else {
        status = own_workspace(plan);
        d->workspace = plan->workspace;
        d->workspace_offset = 0;
    }
    if (!d->workspace)
        d->workspace = d->q; /* no scratch needed; kernels still want a buffer */
    if (status == ATTN_SUCCESS)
        status = plan->algorithm->run(plan->ctx, plan->state, d, num_wait, wait_list, event);
    return status;
}

/* Writes the host arrays of `m` that the problem uses and that are not
 * given on the device into the plan's device copies, and points `d` at the
 * device arrays. */
static attn_status write_arrays(attn_plan_t plan, const attn_input_arrays *m,
                                const cl_mem on_device[ATTN_INPUT_COUNT], attn_device_args *d) {
    attn_context_t ctx = plan->ctx;
    size_t at[ATTN_INPUT_COUNT], total = 0;
    for (int i = 0; i < ATTN_INPUT_COUNT; i++) {
        at[i] = total;
        total += attn_round_up(attn_input_array_bytes(&plan->pb, (attn_input_array)i), 8);
    }
    if (total == 0)
        return ATTN_SUCCESS;
    if (!plan->arrays[0] && !plan->arrays_host) {
        plan->arrays_host = malloc(total);
        if (!plan->arrays_host)
            return attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY,
                             "cannot allocate %zu bytes of input-array staging", total);
        attn_status status = attn_input_arrays_create(ctx, &plan->pb, plan->arrays);
        if (status != ATTN_SUCCESS) {
            free(plan->arrays_host);
            plan->arrays_host = NULL;
            return status;
        }
    }
    /* The previous execute's write must have read the staging first. */
    if (plan->arrays_written) {
        cl_int err = clWaitForEvents(1, &plan->arrays_written);
        clReleaseEvent(plan->arrays_written);
        plan->arrays_written = NULL;
        if (err != CL_SUCCESS)
            return attn_fail_cl(ctx, err, "clWaitForEvents (input arrays)");
    }
    for (int i = 0; i < ATTN_INPUT_COUNT; i++) {
        const size_t bytes = attn_input_array_bytes(&plan->pb, (attn_input_array)i);
        d->arrays[i] = NULL;
        if (!bytes)
            continue;
        if (on_device && on_device[i]) {
            d->arrays[i] = on_device[i];
            continue;
        }
        memcpy(plan->arrays_host + at[i], attn_input_array_host(m, (attn_input_array)i), bytes);
        cl_event written = NULL;
        cl_int err = clEnqueueWriteBuffer(ctx->queue, plan->arrays[i], CL_FALSE, 0, bytes,
                                          plan->arrays_host + at[i], 0, NULL, &written);
        if (err != CL_SUCCESS)
            return attn_fail(ctx, (attn_status)err, "clEnqueueWriteBuffer for %s failed: %s (%d)",
                             attn_input_array_name((attn_input_array)i), attn_cl_error_name(err),
                             (int)err);
        /* In order: the last write's completion covers the earlier ones. */
        if (plan->arrays_written)
            clReleaseEvent(plan->arrays_written);
        plan->arrays_written = written;
        d->arrays[i] = plan->arrays[i];
    }
    return ATTN_SUCCESS;
}

/* ---- Device execute ------------------------------------------------------------ */

/* Bias and keep-mask are given exactly when params ask for them. */
static attn_status check_operands(attn_context_t ctx, const char *call, const attn_problem *pb,
                                  int has_bias, int has_keep_mask) {
    const attn_params *p = &pb->p;
    if (p->bias.present && !has_bias)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT, "%s: params ask for a bias, which is NULL",
                         call);
    if (p->keep_mask.present && !has_keep_mask)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT,
                         "%s: params ask for a keep_mask, which is NULL", call);
    return ATTN_SUCCESS;
}

static attn_status check_lse(attn_plan_t plan, const char *call, int has_lse) {
    const int wanted = (plan->outputs & ATTN_PLAN_LSE) != 0;
    if (has_lse == wanted)
        return ATTN_SUCCESS;
    return attn_fail(plan->ctx, ATTN_ERR_INVALID_VALUE,
                     "%s: the plan was made %s ATTN_PLAN_LSE, but the tensors %s an lse", call,
                     wanted ? "with" : "without", has_lse ? "have" : "lack");
}

/* Each array given on the device, by attn_input_array (NULL: on the host). */
static void device_arrays_of(const attn_device_tensors *t, cl_mem out[ATTN_INPUT_COUNT],
                             unsigned *mask) {
#define DEVICE_ROW(name, type, count, enabled) out[ATTN_INPUT_##name] = t->name##_mem;
    ATTN_INPUT_ARRAYS(DEVICE_ROW)
#undef DEVICE_ROW
    *mask = 0;
    for (int i = 0; i < ATTN_INPUT_COUNT; i++)
        if (out[i])
            *mask |= 1u << i;
}

static attn_status execute_device(attn_plan_t plan, const attn_device_tensors *t, cl_mem workspace,
                                  size_t workspace_offset, cl_uint num_wait,
                                  const cl_event *wait_list, cl_event *event) {
    attn_context_t ctx = plan->ctx;
    const attn_problem *pb = &plan->pb;
    const char *call = "attn_forward_device";
    if (!t || !t->q || !t->k || !t->v || !t->o)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT,
                         "%s: tensors and their q, k, v and o are required", call);
    if ((num_wait > 0) != (wait_list != NULL))
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                         "wait_list must be NULL exactly when num_wait_events is 0");
    attn_status status = check_lse(plan, call, t->lse != NULL);
    if (status == ATTN_SUCCESS)
        status = check_operands(ctx, call, pb, t->bias != NULL, t->keep_mask != NULL);
    cl_mem on_device[ATTN_INPUT_COUNT];
    unsigned on_device_mask;
    device_arrays_of(t, on_device, &on_device_mask);
    const attn_input_arrays host_arrays = attn_input_arrays_of_device(t);
    if (status == ATTN_SUCCESS)
        status = attn_problem_check_arrays(ctx, pb, &host_arrays, on_device_mask);
    if (status != ATTN_SUCCESS)
        return status;

    attn_device_args d = {.q = t->q,
                          .k = t->k,
                          .v = t->v,
                          .o = t->o,
                          .lse = t->lse,
                          .bias = pb->p.bias.present ? t->bias : NULL,
                          .keep_mask = pb->p.keep_mask.present ? t->keep_mask : NULL,
                          .callers_outputs = 1};
    const size_t es = pb->element_size;
    const struct {
        const char *name;
        cl_mem mem;
        size_t offset, extent, element_size;
        size_t *element_offset;
    } tensors[7] = {
        {"Q", t->q, t->q_offset, pb->q_extent, es, &d.q_offset},
        {"K", t->k, t->k_offset, pb->k_extent, es, &d.k_offset},
        {"V", t->v, t->v_offset, pb->v_extent, es, &d.v_offset},
        {"O", t->o, t->o_offset, pb->o_extent, es, &d.o_offset},
        {"LSE", t->lse, t->lse_offset, pb->lse_extent, sizeof(float), &d.lse_offset},
        {"the bias", d.bias, t->bias_offset, pb->bias_extent, sizeof(float), &d.bias_offset},
        {"the keep_mask", d.keep_mask, t->keep_mask_offset, pb->keep_mask_extent, 1,
         &d.keep_mask_offset},
    };
    for (int i = 0; i < 7 && status == ATTN_SUCCESS; i++)
        if (tensors[i].mem)
            status = attn_check_device_tensor(ctx, tensors[i].name, tensors[i].mem,
                                              tensors[i].offset, tensors[i].extent,
                                              tensors[i].element_size, tensors[i].element_offset);
    if (status == ATTN_SUCCESS && workspace && plan->workspace_bytes) {
        if (workspace_offset % ATTN_WORKSPACE_ALIGN != 0)
            status = attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                               "the workspace offset %zu is not a multiple of %d", workspace_offset,
                               ATTN_WORKSPACE_ALIGN);
        else
            status = attn_check_device_tensor(ctx, "the workspace", workspace, workspace_offset,
                                              plan->workspace_bytes, 1, &d.workspace_offset);
        d.workspace = workspace;
    }
    if (status == ATTN_SUCCESS)
        status = attn_check_device_overlap(ctx, pb, t);
    if (status != ATTN_SUCCESS)
        return status;

    pthread_mutex_lock(&plan->lock);
    if (!d.workspace) {
        status = own_workspace(plan);
        d.workspace = plan->workspace;
        d.workspace_offset = 0;
    }
    if (!d.workspace)
        d.workspace = t->q; /* no scratch needed; kernels still want a buffer */
    if (status == ATTN_SUCCESS)
        status = write_arrays(plan, &host_arrays, on_device, &d);
    if (status == ATTN_SUCCESS)
        status = plan->algorithm->run(ctx, plan->state, &d, num_wait, wait_list, event);
    pthread_mutex_unlock(&plan->lock);
    return status;
}

attn_status attn_plan_execute_device(attn_plan_t plan, const attn_device_tensors *tensors,
                                     cl_mem workspace, size_t workspace_offset,
                                     cl_uint num_wait_events, const cl_event *wait_list,
                                     cl_event *event) {
    if (event)
        *event = NULL;
    if (!plan)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "attn_plan_execute_device: plan is NULL");
    if (plan->pb.kv.enabled)
        return attn_fail(plan->ctx, ATTN_ERR_INVALID_VALUE,
                         "attn_plan_execute_device: a KV-cache plan runs through "
                         "attn_plan_execute_kvcache_device");
    return execute_device(plan, tensors, workspace, workspace_offset, num_wait_events, wait_list,
                          event);
}

/* ---- Host execute -------------------------------------------------------------- */

/* The staged O and LSE into the caller's memory: only the elements the
 * forward wrote, so that O and LSE may interleave (a packed [O | LSE] record)
 * and gaps keep the caller's data. */
static void copy_outputs(attn_plan_t plan, const attn_host_tensors *t) {
    const attn_params *p = &plan->pb.p;
    attn_output_rows rows = {.batch = p->batch,
                             .heads = p->heads_q,
                             .rows = p->varlen ? p->total_q : p->seq_q,
                             .inner = p->head_dim_v,
                             .strides = p->o_strides,
                             .element_size = plan->pb.element_size,
                             .cu_seqlens = p->varlen ? t->cu_seqlens_q : NULL};
    attn_copy_output_rows(t->o, plan->o_host, &rows);
    if (t->lse) {
        rows.inner = 1;
        rows.strides = p->lse_strides;
        rows.element_size = sizeof(float);
        attn_copy_output_rows(t->lse, plan->lse_host, &rows);
    }
}

/* The host call's device copies and output staging, made on its first execute. */
static attn_status own_host_buffers(attn_plan_t plan) {
    if (plan->q)
        return ATTN_SUCCESS;
    attn_context_t ctx = plan->ctx;
    const attn_problem *pb = &plan->pb;
    const size_t es = pb->element_size;
    const size_t o_bytes = pb->o_extent * es, lse_bytes = pb->lse_extent * sizeof(float);
    /* Device buffers first: a request past the device's limits fails
     * before the host staging is allocated. */
    attn_status status = attn_create_buffer(ctx, "Q", pb->q_extent * es, &plan->q);
    if (status == ATTN_SUCCESS)
        status = attn_create_buffer(ctx, "K", pb->k_extent * es, &plan->k);
    if (status == ATTN_SUCCESS)
        status = attn_create_buffer(ctx, "V", pb->v_extent * es, &plan->v);
    if (status == ATTN_SUCCESS)
        status = attn_create_buffer(ctx, "O", o_bytes, &plan->o);
    if (status == ATTN_SUCCESS && pb->want_lse)
        status = attn_create_buffer(ctx, "LSE", lse_bytes, &plan->lse);
    if (status == ATTN_SUCCESS && pb->p.bias.present)
        status = attn_create_buffer(ctx, "the bias", pb->bias_extent * sizeof(float), &plan->bias);
    if (status == ATTN_SUCCESS && pb->p.keep_mask.present)
        status = attn_create_buffer(ctx, "the keep_mask", pb->keep_mask_extent, &plan->keep_mask);
    if (status == ATTN_SUCCESS)
        status = own_workspace(plan);
    if (status == ATTN_SUCCESS) {
        plan->o_host = malloc(o_bytes);
        if (pb->want_lse)
            plan->lse_host = malloc(lse_bytes);
        if (!plan->o_host || (pb->want_lse && !plan->lse_host))
            status = attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY,
                               "cannot allocate host staging for the outputs (%zu + %zu bytes)",
                               o_bytes, pb->want_lse ? lse_bytes : 0);
    }
    if (status != ATTN_SUCCESS) {
        cl_mem *mems[7] = {&plan->q,   &plan->k,    &plan->v,        &plan->o,
                           &plan->lse, &plan->bias, &plan->keep_mask};
        for (int i = 0; i < 7; i++) {
            if (*mems[i])
                clReleaseMemObject(*mems[i]);
            *mems[i] = NULL;
        }
        free(plan->o_host);
        free(plan->lse_host);
        plan->o_host = NULL;
        plan->lse_host = NULL;
    }
    return status;
}

attn_status attn_write_buffer(attn_context_t ctx, const char *name, cl_mem buffer, size_t bytes,
                              const void *host) {
    cl_int err = clEnqueueWriteBuffer(ctx->queue, buffer, CL_FALSE, 0, bytes, host, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return attn_fail(ctx, (attn_status)err, "clEnqueueWriteBuffer for %s failed: %s (%d)", name,
                         attn_cl_error_name(err), (int)err);
    return ATTN_SUCCESS;
}

attn_status attn_read_buffer(attn_context_t ctx, const char *name, cl_mem buffer, size_t bytes,
                             void *host) {
    cl_int err = clEnqueueReadBuffer(ctx->queue, buffer, CL_TRUE, 0, bytes, host, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return attn_fail(ctx, (attn_status)err, "clEnqueueReadBuffer for %s failed: %s (%d)", name,
                         attn_cl_error_name(err), (int)err);
    return ATTN_SUCCESS;
}

static attn_status execute_host_locked(attn_plan_t plan, const attn_host_tensors *t) {
    attn_context_t ctx = plan->ctx;
    const attn_problem *pb = &plan->pb;
    const size_t es = pb->element_size;
    const size_t o_bytes = pb->o_extent * es, lse_bytes = pb->lse_extent * sizeof(float);
    attn_status status = own_host_buffers(plan);
    if (status == ATTN_SUCCESS && t->probs && !plan->probs_host) {
        plan->probs_host = malloc(pb->probs_elems * sizeof(float));
        if (!plan->probs_host)
            status =
                attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY,
                          "cannot allocate host staging for %zu probabilities", pb->probs_elems);
    }
    attn_device_args d = {.q = plan->q,
                          .k = plan->k,
                          .v = plan->v,
                          .o = plan->o,
                          .lse = t->lse ? plan->lse : NULL,
                          .bias = plan->bias,
                          .keep_mask = plan->keep_mask,
                          .workspace = plan->workspace ? plan->workspace : plan->q,
                          .probs_host = t->probs ? plan->probs_host : NULL};
    const attn_input_arrays arrays = attn_input_arrays_of_host(t);
    if (status == ATTN_SUCCESS)
        status = attn_write_buffer(ctx, "Q", plan->q, pb->q_extent * es, t->q);
    if (status == ATTN_SUCCESS)
        status = attn_write_buffer(ctx, "K", plan->k, pb->k_extent * es, t->k);
    if (status == ATTN_SUCCESS)
        status = attn_write_buffer(ctx, "V", plan->v, pb->v_extent * es, t->v);
    /* O and LSE need no initial contents: only the rows the forward writes
     * come back (copy_outputs). */
    if (status == ATTN_SUCCESS && plan->bias)
        status = attn_write_buffer(ctx, "the bias", plan->bias, pb->bias_extent * sizeof(float),
                                   t->bias);
    if (status == ATTN_SUCCESS && plan->keep_mask)
        status = attn_write_buffer(ctx, "the keep_mask", plan->keep_mask, pb->keep_mask_extent,
                                   t->keep_mask);
    if (status == ATTN_SUCCESS)
        status = write_arrays(plan, &arrays, NULL, &d);
    if (status == ATTN_SUCCESS)
        status = plan->algorithm->run(ctx, plan->state, &d, 0, NULL, NULL);
    if (status == ATTN_SUCCESS)
        status = attn_read_buffer(ctx, "O", plan->o, o_bytes, plan->o_host);
    if (status == ATTN_SUCCESS && t->lse)
        status = attn_read_buffer(ctx, "LSE", plan->lse, lse_bytes, plan->lse_host);
    if (status == ATTN_SUCCESS) {
        copy_outputs(plan, t);
        if (t->probs)
            memcpy(t->probs, plan->probs_host, pb->probs_elems * sizeof(float));
    } else {
        /* Writes from the caller's memory may still be queued. */
        clFinish(ctx->queue);
    }
    return status;
}

attn_status attn_plan_execute_host(attn_plan_t plan, const attn_host_tensors *t) {
    if (!plan)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "attn_plan_execute_host: plan is NULL");
    attn_context_t ctx = plan->ctx;
    const char *call = "attn_forward_host";
    if (plan->pb.kv.enabled)
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                         "attn_plan_execute_host: a KV-cache plan runs through "
                         "attn_plan_execute_kvcache_host");
    if (!t || !t->q || !t->k || !t->v || !t->o)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT,
                         "%s: tensors and their q, k, v and o are required", call);
    attn_status status = check_lse(plan, call, t->lse != NULL);
    if (status == ATTN_SUCCESS && t->probs && !(plan->outputs & ATTN_PLAN_PROBS))
        status = attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                           "%s: probabilities asked of a plan made without ATTN_PLAN_PROBS", call);
    if (status == ATTN_SUCCESS)
        status = check_operands(ctx, call, &plan->pb, t->bias != NULL, t->keep_mask != NULL);
    const attn_input_arrays arrays = attn_input_arrays_of_host(t);
    if (status == ATTN_SUCCESS)
        status = attn_problem_check_arrays(ctx, &plan->pb, &arrays, 0);
    if (status != ATTN_SUCCESS)
        return status;
    pthread_mutex_lock(&plan->lock);
    status = execute_host_locked(plan, t);
    pthread_mutex_unlock(&plan->lock);
    return status;
}

/* ---- Shared with the merge call ------------------------------------------------ */

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
