/* Validation of attn_params at the API edge into an attn_plan: defaults
 * resolved, strides explicit, every extent known to fit size_t. */
#include "attn_internal.h"

#include <math.h>

void attn_params_init(attn_params *params, int32_t batch, int32_t heads, int32_t seq_q,
                      int32_t seq_k, int32_t head_dim) {
    if (!params)
        return;
    *params = (attn_params){0};
    params->batch = batch;
    params->heads_q = heads;
    params->heads_kv = heads;
    params->seq_q = seq_q;
    params->seq_k = seq_k;
    params->head_dim = head_dim;
    params->head_dim_v = head_dim;
    params->scale = 0.0f; /* resolved to 1/sqrt(head_dim) when the plan is made */
    params->mask = ATTN_MASK_NONE;
    params->algo = ATTN_ALGO_AUTO;
    params->dtype = ATTN_DTYPE_F32;
}

/* a * b + c without wrapping; returns 0 on overflow. */
static int mul_add(size_t a, size_t b, size_t c, size_t *out) {
    if (b != 0 && a > (SIZE_MAX - c) / b)
        return 0;
    *out = a * b + c;
    return 1;
}

/* One tensor of up to three strided dimensions over a contiguous inner run. */
typedef struct tensor_shape {
    const char *name;
    int64_t size[3]; /* batch, heads, seq */
    attn_strides *strides;
    int64_t inner; /* contiguous elements per row (head dim; 1 for LSE) */
    int is_output; /* outputs must not overlap themselves */
} tensor_shape;

/* Packed strides for a tensor given none. Each must fit int64_t: sizes near
 * INT32_MAX make the batch stride alone exceed it. */
static attn_status default_strides(attn_context_t ctx, tensor_shape *t) {
    attn_strides *s = t->strides;
    if (s->batch != 0 || s->head != 0 || s->seq != 0)
        return ATTN_SUCCESS;
    size_t head, batch;
    if (!mul_add((size_t)t->size[2], (size_t)t->inner, 0, &head) ||
        !mul_add((size_t)t->size[1], head, 0, &batch) || batch > (size_t)INT64_MAX)
        return attn_fail(ctx, ATTN_ERR_SIZE_OVERFLOW,
                         "%s spans more elements than size_t can count", t->name);
    s->seq = t->inner;
    s->head = (int64_t)head;
    s->batch = (int64_t)batch;
    return ATTN_SUCCESS;
}

/* Elements from the first to one past the last element the tensor touches. */
static attn_status tensor_extent(attn_context_t ctx, tensor_shape *t, size_t *extent) {
    const int64_t stride[3] = {t->strides->batch, t->strides->head, t->strides->seq};
    size_t last = (size_t)t->inner; /* the contiguous run of the last row */
    for (int d = 0; d < 3; d++) {
        if (stride[d] < 0)
            return attn_fail(ctx, ATTN_ERR_INVALID_VALUE, "%s has a negative stride (%lld)",
                             t->name, (long long)stride[d]);
        if (!mul_add((size_t)(t->size[d] - 1), (size_t)stride[d], last, &last))
            return attn_fail(ctx, ATTN_ERR_SIZE_OVERFLOW,
                             "%s spans more elements than size_t can count", t->name);
    }
    if (t->is_output) {
        /* Sorted by stride, each dimension must step past everything the
         * dimensions inside it cover, or two outputs would share memory. */
        int order[3] = {0, 1, 2};
        for (int i = 0; i < 3; i++)
            for (int j = i + 1; j < 3; j++)
                if (stride[order[j]] < stride[order[i]]) {
                    int tmp = order[i];
                    order[i] = order[j];
                    order[j] = tmp;
                }
        size_t covered = (size_t)t->inner;
        for (int i = 0; i < 3; i++) {
            int d = order[i];
            if (t->size[d] == 1)
                continue;
            if ((size_t)stride[d] < covered)
                return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                                 "%s strides (batch %lld, head %lld, seq %lld) make elements "
                                 "overlap",
                                 t->name, (long long)stride[0], (long long)stride[1],
                                 (long long)stride[2]);
            covered = (size_t)stride[d] * (size_t)(t->size[d] - 1) + covered;
        }
    }
    *extent = last;
    return ATTN_SUCCESS;
}

attn_status attn_plan_make(attn_context_t ctx, const attn_params *params, int want_lse,
                           int want_probs, attn_plan *plan) {
    if (!params)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT, "params is NULL");
    attn_plan out = {.p = *params};
    attn_params *p = &out.p;

    if (p->batch <= 0 || p->heads_q <= 0 || p->seq_q <= 0 || p->seq_k <= 0 || p->heads_kv < 0)
        return attn_fail(ctx, ATTN_ERR_INVALID_SIZE,
                         "sizes must be positive: batch %d, heads_q %d, heads_kv %d, seq_q %d, "
                         "seq_k %d",
                         p->batch, p->heads_q, p->heads_kv, p->seq_q, p->seq_k);
    if (p->heads_kv == 0)
        p->heads_kv = p->heads_q;
    if (p->heads_q % p->heads_kv != 0)
        return attn_fail(ctx, ATTN_ERR_INVALID_SIZE, "heads_kv %d does not divide heads_q %d",
                         p->heads_kv, p->heads_q);
    if (p->head_dim_v == 0)
        p->head_dim_v = p->head_dim;
    if (p->head_dim < 1 || p->head_dim > ATTN_MAX_HEAD_DIM || p->head_dim_v < 1 ||
        p->head_dim_v > ATTN_MAX_HEAD_DIM)
        return attn_fail(ctx, ATTN_ERR_UNSUPPORTED_HEAD_DIM,
                         "head_dim %d / head_dim_v %d: supported is 1..%d", p->head_dim,
                         p->head_dim_v, ATTN_MAX_HEAD_DIM);
    if ((unsigned)p->mask > ATTN_MASK_CAUSAL_BOTTOM_RIGHT)
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE, "mask %d is not an attn_mask", (int)p->mask);
    if ((unsigned)p->algo > ATTN_ALGO_FUSED)
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE, "algo %d is not an attn_algo", (int)p->algo);
    if ((unsigned)p->dtype != ATTN_DTYPE_F32)
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE, "dtype %d is not an attn_dtype",
                         (int)p->dtype);
    if (!isfinite(p->scale))
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE, "scale must be finite");
    if (p->scale == 0.0f)
        p->scale = (float)(1.0 / sqrt((double)p->head_dim));
    out.group = p->heads_q / p->heads_kv;
    out.element_size = sizeof(float);

    tensor_shape shapes[5] = {
        {"Q", {p->batch, p->heads_q, p->seq_q}, &p->q_strides, p->head_dim, 0},
        {"K", {p->batch, p->heads_kv, p->seq_k}, &p->k_strides, p->head_dim, 0},
        {"V", {p->batch, p->heads_kv, p->seq_k}, &p->v_strides, p->head_dim_v, 0},
        {"O", {p->batch, p->heads_q, p->seq_q}, &p->o_strides, p->head_dim_v, 1},
        {"LSE", {p->batch, p->heads_q, p->seq_q}, &p->lse_strides, 1, 1},
    };
    size_t *extents[5] = {&out.q_extent, &out.k_extent, &out.v_extent, &out.o_extent,
                          &out.lse_extent};
    for (int t = 0; t < 5; t++) {
        attn_status status = default_strides(ctx, &shapes[t]);
        if (status == ATTN_SUCCESS)
            status = tensor_extent(ctx, &shapes[t], extents[t]);
        if (status != ATTN_SUCCESS)
            return status;
        size_t bytes;
        if (!mul_add(*extents[t], out.element_size, 0, &bytes))
            return attn_fail(ctx, ATTN_ERR_SIZE_OVERFLOW, "%s needs more bytes than size_t counts",
                             shapes[t].name);
    }

    out.want_lse = want_lse != 0;
    out.want_probs = want_probs != 0;
    if (out.want_probs && p->algo == ATTN_ALGO_FUSED)
        return attn_fail(ctx, ATTN_ERR_UNSUPPORTED,
                         "the fused path does not materialize probabilities; use "
                         "ATTN_ALGO_THREE_KERNEL or ATTN_ALGO_AUTO");
    /* The fused path is faster everywhere and needs O(seq) memory; only the
     * three-kernel path materializes the probabilities. */
    out.algo = p->algo;
    if (out.algo == ATTN_ALGO_AUTO)
        out.algo = out.want_probs ? ATTN_ALGO_THREE_KERNEL : ATTN_ALGO_FUSED;

    /* The score matrix (and the probabilities handed back) count
     * batch * heads_q * seq_q * seq_k floats. */
    size_t elems = 1;
    const size_t factors[4] = {(size_t)p->batch, (size_t)p->heads_q, (size_t)p->seq_q,
                               (size_t)p->seq_k};
    int overflow = 0;
    for (int i = 0; i < 4; i++)
        overflow |= !mul_add(elems, factors[i], 0, &elems);
    size_t prob_bytes;
    overflow |= !mul_add(elems, sizeof(float), 0, &prob_bytes);
    if (overflow && out.algo == ATTN_ALGO_THREE_KERNEL)
        return attn_fail(ctx, ATTN_ERR_SIZE_OVERFLOW,
                         "batch*heads*seq_q*seq_k scores need more bytes than size_t counts");
    out.probs_elems = overflow ? 0 : elems;

    *plan = out;
    return ATTN_SUCCESS;
}
