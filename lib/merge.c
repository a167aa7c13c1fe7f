/* Merging two partial forwards over disjoint key sets by their log-sum-exps
 * (attn_merge on the host, attn_merge_device through kernels/merge.cl):
 *     lse = log(exp(lse_a) + exp(lse_b)),  O = w_a O_a + w_b O_b,
 *     w_x = exp(lse_x - lse).
 * A part at -inf weighs exactly 0 (its O is never read into the sum); both
 * at -inf give O = 0 and LSE -inf; a NaN LSE makes the row NaN. A part at
 * +inf dominates: w = 1 for it and exactly 0 for the other (the limit of
 * the weights as its LSE grows), LSE +inf; both at +inf give LSE +inf (the
 * sum is infinite either way) and O NaN (the weights have no limit). The
 * kernel follows the same rules in float. */
#include "attn_internal.h"
#include "half.h"

#include <math.h>
#include <stdio.h>

/* The rows a merge covers: [batch][heads_q][rows] through the plan's O and
 * LSE strides (varlen: batch 1, the packed total of rows). */
static void merge_shape(const attn_problem *pb, int64_t *batch, int64_t *rows) {
    const attn_params *p = &pb->p;
    *batch = p->varlen ? 1 : p->batch;
    *rows = p->varlen ? p->total_q : p->seq_q;
}

attn_status attn_merge(const attn_params *params, const attn_merge_tensors *t) {
    if (!t || !t->o_a || !t->o_b || !t->lse_a || !t->lse_b || !t->o || !t->lse)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT,
                         "attn_merge: tensors and all six of their pointers are required");
    attn_problem pb;
    attn_status status = attn_problem_make(NULL, params, 1, 0, &pb);
    if (status != ATTN_SUCCESS)
        return status;
    const attn_params *p = &pb.p;
    int64_t batch, rows;
    merge_shape(&pb, &batch, &rows);
    for (int64_t b = 0; b < batch; b++)
        for (int64_t h = 0; h < p->heads_q; h++)
            for (int64_t i = 0; i < rows; i++) {
                const size_t at = (size_t)(b * p->lse_strides.batch + h * p->lse_strides.head +
                                           i * p->lse_strides.seq);
                const size_t row =
                    (size_t)(b * p->o_strides.batch + h * p->o_strides.head + i * p->o_strides.seq);
                const double la = t->lse_a[at], lb = t->lse_b[at];
                const double m = fmax(la, lb);
                double wa = 0.0, wb = 0.0, merged = -INFINITY;
                if (isnan(la) || isnan(lb)) {
                    wa = wb = merged = NAN;
                } else if (m == INFINITY) {
                    merged = INFINITY;
                    wa = la != INFINITY ? 0.0 : lb != INFINITY ? 1.0 : NAN;
                    wb = lb != INFINITY ? 0.0 : la != INFINITY ? 1.0 : NAN;
                } else if (m != -INFINITY) {
                    const double ea = exp(la - m), eb = exp(lb - m), sum = ea + eb;
                    wa = ea / sum;
                    wb = eb / sum;
                    merged = m + log(sum);
                }
                for (int32_t d = 0; d < p->head_dim_v; d++) {
                    const size_t e = row + (size_t)d;
                    const double a = wa == 0.0 ? 0.0 : wa * attn_load_element(t->o_a, e, p->dtype);
                    const double c = wb == 0.0 ? 0.0 : wb * attn_load_element(t->o_b, e, p->dtype);
                    attn_store_element(t->o, e, p->dtype, a + c);
                }
                t->lse[at] = (float)merged;
            }
    return ATTN_SUCCESS;
}

attn_status attn_merge_device(attn_context_t ctx, const attn_params *params,
                              const attn_merge_device_tensors *t, cl_uint num_wait_events,
                              const cl_event *wait_list, cl_event *event) {
    /* First, so that every failure, however early, leaves it NULL. */
    if (event)
        *event = NULL;
    if (!ctx)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "attn_merge_device: ctx is NULL");
    if (!t || !t->o_a || !t->o_b || !t->lse_a || !t->lse_b || !t->o || !t->lse)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT,
                         "attn_merge_device: tensors and all six of their buffers are required");
    if ((num_wait_events > 0) != (wait_list != NULL))
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                         "wait_list must be NULL exactly when num_wait_events is 0");
    attn_problem pb;
    attn_status status = attn_problem_make(ctx, params, 1, 0, &pb);
    if (status != ATTN_SUCCESS)
        return status;
    const attn_params *p = &pb.p;
    const size_t es = pb.element_size;
    const struct {
        const char *name;
        cl_mem mem;
        size_t offset, extent, element_size;
    } buffers[6] = {
        {"O_a", t->o_a, t->o_a_offset, pb.o_extent, es},
        {"O_b", t->o_b, t->o_b_offset, pb.o_extent, es},
        {"O", t->o, t->o_offset, pb.o_extent, es},
        {"LSE_a", t->lse_a, t->lse_a_offset, pb.lse_extent, sizeof(float)},
        {"LSE_b", t->lse_b, t->lse_b_offset, pb.lse_extent, sizeof(float)},
        {"LSE", t->lse, t->lse_offset, pb.lse_extent, sizeof(float)},
    };
    size_t offsets[6];
    for (int i = 0; i < 6 && status == ATTN_SUCCESS; i++) {
        size_t elements = 0;
        status = attn_check_device_tensor(ctx, buffers[i].name, buffers[i].mem, buffers[i].offset,
                                          buffers[i].extent, buffers[i].element_size, &elements);
        offsets[i] = elements;
    }
    if (status != ATTN_SUCCESS)
        return status;

    char options[128];
    snprintf(options, sizeof options, "-DDTYPE=%d -DHEAD_DIM_V=%d", (int)p->dtype, p->head_dim_v);
    int64_t batch, rows;
    merge_shape(&pb, &batch, &rows);
    const char *name = "merge_partials";
    pthread_mutex_lock(&ctx->lock);
    cl_kernel kernel;
    status = attn_get_kernel(ctx, "merge", name, options, &kernel);
    if (status == ATTN_SUCCESS) {
        attn_args a;
        attn_args_begin(&a, ctx, kernel, name);
        attn_arg_buffer(&a, t->o_a, offsets[0]);
        attn_arg_buffer(&a, t->o_b, offsets[1]);
        attn_arg_tensor(&a, t->o, offsets[2], &p->o_strides);
        attn_arg_buffer(&a, t->lse_a, offsets[3]);
        attn_arg_buffer(&a, t->lse_b, offsets[4]);
        attn_arg_tensor(&a, t->lse, offsets[5], &p->lse_strides);
        status = attn_args_end(&a);
    }
    if (status == ATTN_SUCCESS) {
        const size_t global[3] = {(size_t)rows, (size_t)p->heads_q, (size_t)batch};
        status =
            attn_enqueue_kernel(ctx, kernel, name, global, NULL, num_wait_events, wait_list, event);
    }
    pthread_mutex_unlock(&ctx->lock);
    return status;
}
