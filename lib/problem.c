/* Validation of attn_params at the API edge into an attn_problem: defaults
 * resolved, strides explicit, every extent known to fit size_t. */
#include "attn_internal.h"

#include <math.h>

void attn_params_init(attn_params *params, int32_t batch, int32_t heads, int32_t seq_q,
                      int32_t seq_k, int32_t head_dim) {
    if (!params)
        return;
    *params = (attn_params){0};
    params->struct_size = sizeof *params;
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

/* A score operand's broadcast size: 0 and 1 broadcast; otherwise it must be
 * the full count. Returns 0 for any other value. */
static int32_t operand_size(int32_t size, int32_t full) {
    if (size == 0 || size == 1)
        return 1;
    return size == full ? full : 0;
}

attn_status attn_problem_make(attn_context_t ctx, const attn_params *params, int want_lse,
                              int want_probs, attn_problem *pb) {
    if (!params)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT, "params is NULL");
    if (params->struct_size != sizeof(attn_params))
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                         "params->struct_size is %u, but this library's attn_params has %zu "
                         "bytes: initialize params with attn_params_init, and build against "
                         "the header of the library you run with",
                         (unsigned)params->struct_size, sizeof(attn_params));
    attn_problem out = {.p = *params};
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
    if ((unsigned)p->dtype > ATTN_DTYPE_BF16)
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE, "dtype %d is not an attn_dtype",
                         (int)p->dtype);
    if (!isfinite(p->scale))
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE, "scale must be finite");
    if (p->scale == 0.0f)
        p->scale = (float)(1.0 / sqrt((double)p->head_dim));
    if (!isfinite(p->softcap) || p->softcap < 0.0f)
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                         "softcap must be finite and >= 0 (0: off), not %g", (double)p->softcap);

    /* !(p >= 0) also catches NaN. */
    if (!(p->dropout_p >= 0.0f) || p->dropout_p >= 1.0f)
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                         "dropout_p must be in [0, 1) (0: off), not %g", (double)p->dropout_p);
    if (p->dropout_p == 0.0f)
        p->dropout_seed = p->dropout_offset = 0; /* off: nothing to key a build or cache by */

    /* Flags are booleans from here on. */
    p->alibi = p->alibi != 0;
    p->key_padding = p->key_padding != 0;
    p->varlen = p->varlen != 0;
    p->window.enabled = p->window.enabled != 0;
    if (!p->window.enabled)
        p->window.left = p->window.right = -1;
    p->window.left = p->window.left < 0 ? -1 : p->window.left;
    p->window.right = p->window.right < 0 ? -1 : p->window.right;

    /* Packed sequences: every tensor is one "batch" of total rows, and the
     * kernels find a sequence's rows through cu_seqlens, never the batch
     * stride. */
    int64_t rows_q = p->seq_q, rows_k = p->seq_k, tensor_batch = p->batch;
    if (p->varlen) {
        if (p->total_q <= 0 || p->total_k <= 0)
            return attn_fail(ctx, ATTN_ERR_INVALID_SIZE,
                             "varlen: total_q %d and total_k %d must be positive", p->total_q,
                             p->total_k);
        rows_q = p->total_q;
        rows_k = p->total_k;
        tensor_batch = 1;
    }

    attn_score_operand *ops[2] = {&p->bias, &p->keep_mask};
    const char *op_names[2] = {"bias", "keep_mask"};
    for (int t = 0; t < 2; t++) {
        ops[t]->present = ops[t]->present != 0;
        if (!ops[t]->present) {
            *ops[t] = (attn_score_operand){0};
            continue;
        }
        const int32_t bb = operand_size(ops[t]->batch, p->batch);
        const int32_t bh = operand_size(ops[t]->heads, p->heads_q);
        if (!bb || !bh)
            return attn_fail(ctx, ATTN_ERR_INVALID_SIZE,
                             "%s is [%d, %d, seq_q, seq_k]: its batch must be 1 or %d and its "
                             "heads 1 or %d",
                             op_names[t], ops[t]->batch, ops[t]->heads, p->batch, p->heads_q);
        ops[t]->batch = bb;
        ops[t]->heads = bh;
    }

    out.group = p->heads_q / p->heads_kv;
    out.element_size = p->dtype == ATTN_DTYPE_F32 ? sizeof(float) : sizeof(uint16_t);

    enum { T_Q, T_K, T_V, T_O, T_LSE, T_BIAS, T_MASK, T_COUNT };
    tensor_shape shapes[T_COUNT] = {
        {"Q", {tensor_batch, p->heads_q, rows_q}, &p->q_strides, p->head_dim, 0},
        {"K", {tensor_batch, p->heads_kv, rows_k}, &p->k_strides, p->head_dim, 0},
        {"V", {tensor_batch, p->heads_kv, rows_k}, &p->v_strides, p->head_dim_v, 0},
        {"O", {tensor_batch, p->heads_q, rows_q}, &p->o_strides, p->head_dim_v, 1},
        {"LSE", {tensor_batch, p->heads_q, rows_q}, &p->lse_strides, 1, 1},
        {"bias", {p->bias.batch, p->bias.heads, p->seq_q}, &p->bias.strides, p->seq_k, 0},
        {"keep_mask",
         {p->keep_mask.batch, p->keep_mask.heads, p->seq_q},
         &p->keep_mask.strides,
         p->seq_k,
         0},
    };
    const size_t element_sizes[T_COUNT] = {out.element_size,
                                           out.element_size,
                                           out.element_size,
                                           out.element_size,
                                           sizeof(float),
                                           sizeof(float),
                                           1};
    size_t *extents[T_COUNT] = {&out.q_extent,        &out.k_extent,   &out.v_extent,
                                &out.o_extent,        &out.lse_extent, &out.bias_extent,
                                &out.keep_mask_extent};
    for (int t = 0; t < T_COUNT; t++) {
        if ((t == T_BIAS && !p->bias.present) || (t == T_MASK && !p->keep_mask.present))
            continue;
        attn_status status = default_strides(ctx, &shapes[t]);
        if (status == ATTN_SUCCESS)
            status = tensor_extent(ctx, &shapes[t], extents[t]);
        if (status != ATTN_SUCCESS)
            return status;
        size_t bytes;
        if (!mul_add(*extents[t], element_sizes[t], 0, &bytes))
            return attn_fail(ctx, ATTN_ERR_SIZE_OVERFLOW, "%s needs more bytes than size_t counts",
                             shapes[t].name);
    }
    /* The kernels index b * stride: a broadcast (or packed) dimension steps 0. */
    if (p->varlen) {
        p->q_strides.batch = p->k_strides.batch = p->v_strides.batch = 0;
        p->o_strides.batch = p->lse_strides.batch = 0;
    }
    for (int t = 0; t < 2; t++) {
        if (ops[t]->batch == 1)
            ops[t]->strides.batch = 0;
        if (ops[t]->heads == 1)
            ops[t]->strides.head = 0;
    }

    out.want_lse = want_lse != 0;
    out.want_probs = want_probs != 0;

    /* The subset of probabilities: [begin, end) ranges, end 0 the last;
     * checked only when probabilities are wanted. */
    const struct {
        const char *name;
        int32_t begin, end, count;
        int32_t *first, *n;
    } ranges[2] = {
        {"heads", p->probs_heads_begin, p->probs_heads_end, p->heads_q, &out.probs_head0,
         &out.probs_heads},
        {"rows", p->probs_rows_begin, p->probs_rows_end, p->seq_q, &out.probs_row0,
         &out.probs_rows},
    };
    for (int r = 0; r < 2; r++) {
        if (!out.want_probs) { /* unused: the whole range */
            *ranges[r].first = 0;
            *ranges[r].n = ranges[r].count;
            continue;
        }
        const int32_t end = ranges[r].end == 0 ? ranges[r].count : ranges[r].end;
        if (ranges[r].begin < 0 || end > ranges[r].count || ranges[r].begin >= end)
            return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                             "probs_%s_begin %d .. probs_%s_end %d: the probabilities' %s must "
                             "be a non-empty range within 0..%d (an end of 0 means %d)",
                             ranges[r].name, ranges[r].begin, ranges[r].name, ranges[r].end,
                             ranges[r].name, ranges[r].count, ranges[r].count);
        *ranges[r].first = ranges[r].begin;
        *ranges[r].n = end - ranges[r].begin;
    }

    /* The probabilities handed back count batch * heads * rows * seq_k
     * floats of the subset; 0 when that overflows, which the algorithms
     * refuse. */
    size_t elems = 1;
    const size_t factors[4] = {(size_t)p->batch, (size_t)out.probs_heads, (size_t)out.probs_rows,
                               (size_t)p->seq_k};
    int overflow = 0;
    for (int i = 0; i < 4; i++)
        overflow |= !mul_add(elems, factors[i], 0, &elems);
    size_t prob_bytes;
    overflow |= !mul_add(elems, sizeof(float), 0, &prob_bytes);
    out.probs_elems = overflow ? 0 : elems;

    *pb = out;
    return ATTN_SUCCESS;
}
