/* The one-call API: attn_check, attn_prepare and the attn_forward* calls,
 * each a plan made for the call (plan.c) and, for the forwards, executed
 * once. */
#include "attn_internal.h"

attn_status attn_check(attn_context_t ctx, const attn_params *params, int want_lse, int want_probs,
                       attn_algo *algo) {
    if (!ctx)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "attn_check: ctx is NULL");
    attn_problem pb;
    attn_status status = attn_problem_make(ctx, params, want_lse, want_probs, &pb);
    if (status != ATTN_SUCCESS)
        return status;
    const attn_algorithm *algorithm;
    attn_algo_state *state;
    pthread_mutex_lock(&ctx->lock);
    status = attn_dispatch(ctx, &pb, &algorithm, &state);
    pthread_mutex_unlock(&ctx->lock);
    if (status != ATTN_SUCCESS)
        return status;
    if (algo)
        *algo = algorithm->id;
    algorithm->destroy(state);
    return ATTN_SUCCESS;
}

static uint32_t outputs_of(int want_lse, int want_probs) {
    return (want_lse ? ATTN_PLAN_LSE : 0u) | (want_probs ? ATTN_PLAN_PROBS : 0u);
}

attn_status attn_prepare(attn_context_t ctx, const attn_params *params, int want_lse,
                         int want_probs) {
    if (!ctx)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "attn_prepare: ctx is NULL");
    /* The plan's kernels come from the context's program cache, which keeps
     * the programs it built. */
    attn_plan_t plan;
    attn_status status = attn_plan_create(ctx, params, outputs_of(want_lse, want_probs), &plan);
    attn_plan_destroy(plan);
    return status;
}

attn_status attn_forward_host(attn_context_t ctx, const attn_params *params,
                              const attn_host_tensors *t) {
    if (!ctx)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "attn_forward_host: ctx is NULL");
    if (!t || !t->q || !t->k || !t->v || !t->o)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT,
                         "attn_forward_host: tensors and their q, k, v and o are required");
    attn_plan_t plan;
    attn_status status =
        attn_plan_create(ctx, params, outputs_of(t->lse != NULL, t->probs != NULL), &plan);
    if (status == ATTN_SUCCESS)
        status = attn_plan_execute_host(plan, t);
    attn_plan_destroy(plan);
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

attn_status attn_forward_device(attn_context_t ctx, const attn_params *params,
                                const attn_device_tensors *t, cl_uint num_wait_events,
                                const cl_event *wait_list, cl_event *event) {
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
    attn_plan_t plan;
    attn_status status = attn_plan_create(ctx, params, outputs_of(t->lse != NULL, 0), &plan);
    if (status == ATTN_SUCCESS)
        status = attn_plan_execute_device(plan, t, NULL, 0, num_wait_events, wait_list, event);
    attn_plan_destroy(plan);
    return status;
}
