/* The CPU reference: attention in double, one query row at a time. It is the
 * ground truth the device paths are tested against, so it favours being
 * obviously right over being fast. */
#include "attn_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* Whether query `i` may see key `j` under the plan's mask. */
static int key_visible(const attn_params *p, int64_t i, int64_t j) {
    switch (p->mask) {
    case ATTN_MASK_CAUSAL_TOP_LEFT:
        return j <= i;
    case ATTN_MASK_CAUSAL_BOTTOM_RIGHT:
        return j <= i + (int64_t)p->seq_k - (int64_t)p->seq_q;
    default:
        return 1;
    }
}

/* Element offset of row (b, h, s) in a tensor laid out by `st`. The plan has
 * checked that every such offset fits the tensor's extent. */
static size_t row_offset(const attn_strides *st, int64_t b, int64_t h, int64_t s) {
    return (size_t)b * (size_t)st->batch + (size_t)h * (size_t)st->head +
           (size_t)s * (size_t)st->seq;
}

/* One query row: fills o_row (head_dim_v values) and returns the
 * log-sum-exp; writes this row's probabilities when probs_row is not NULL.
 * `scores` and `acc` are scratch of seq_k and head_dim_v doubles. */
static double reference_row(const attn_plan *plan, const float *q_row, const float *k_head,
                            const float *v_head, int64_t i, double *scores, double *acc,
                            float *o_row, float *probs_row) {
    const attn_params *p = &plan->p;
    const double scale = (double)p->scale;
    double max = -INFINITY;

    for (int64_t j = 0; j < p->seq_k; j++) {
        if (!key_visible(p, i, j)) {
            scores[j] = -INFINITY;
            continue;
        }
        const float *k_row = k_head + (size_t)j * (size_t)p->k_strides.seq;
        double dot = 0.0;
        for (int32_t d = 0; d < p->head_dim; d++) {
            dot += (double)q_row[d] * (double)k_row[d];
        }
        scores[j] = scale * dot;
        if (scores[j] > max) {
            max = scores[j];
        }
    }

    for (int32_t d = 0; d < p->head_dim_v; d++) {
        acc[d] = 0.0;
    }

    /* Every key masked: output 0, probabilities 0, LSE -inf (never NaN). */
    if (max == -INFINITY) {
        for (int32_t d = 0; d < p->head_dim_v; d++) {
            o_row[d] = 0.0f;
        }
        if (probs_row) {
            for (int64_t j = 0; j < p->seq_k; j++) {
                probs_row[j] = 0.0f;
            }
        }
        return -INFINITY;
    }

    double sum = 0.0;
    for (int64_t j = 0; j < p->seq_k; j++) {
        double e = scores[j] == -INFINITY ? 0.0 : exp(scores[j] - max);
        scores[j] = e;
        sum += e;
        if (e == 0.0) {
            continue;
        }
        const float *v_row = v_head + (size_t)j * (size_t)p->v_strides.seq;
        for (int32_t d = 0; d < p->head_dim_v; d++) {
            acc[d] += e * (double)v_row[d];
        }
    }

    for (int32_t d = 0; d < p->head_dim_v; d++) {
        o_row[d] = (float)(acc[d] / sum);
    }
    if (probs_row) {
        for (int64_t j = 0; j < p->seq_k; j++) {
            probs_row[j] = (float)(scores[j] / sum);
        }
    }
    return max + log(sum);
}

attn_status attn_reference(const attn_params *params, const void *q, const void *k, const void *v,
                           void *o, float *lse, float *probs) {
    if (!params || !q || !k || !v || !o) {
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "attn_reference: %s is NULL",
                         !params ? "params"
                         : !q    ? "q"
                         : !k    ? "k"
                         : !v    ? "v"
                                 : "o");
    }

    /* The reference has no algorithms: it computes every output whatever
     * params->algo names, so a request the device refuses only for its
     * algorithm (probabilities from ATTN_ALGO_FUSED) is answered here too. */
    attn_params request = *params;
    if (probs && request.algo == ATTN_ALGO_FUSED) {
        request.algo = ATTN_ALGO_AUTO;
    }
    attn_plan plan;
    attn_status status = attn_plan_make(NULL, &request, lse != NULL, probs != NULL, &plan);
    if (status != ATTN_SUCCESS) {
        return status;
    }
    const attn_params *p = &plan.p;
    if (probs && plan.probs_elems == 0) {
        return attn_fail(NULL, ATTN_ERR_SIZE_OVERFLOW,
                         "attn_reference: batch*heads_q*seq_q*seq_k probabilities need more "
                         "bytes than size_t counts");
    }

    /* All allocation happens before the first write, so a failure leaves the
     * caller's outputs untouched. */
    double *scores = malloc((size_t)p->seq_k * sizeof *scores);
    double *acc = malloc((size_t)p->head_dim_v * sizeof *acc);
    if (!scores || !acc) {
        free(scores);
        free(acc);
        return attn_fail(NULL, ATTN_ERR_HOST_OUT_OF_MEMORY,
                         "attn_reference: cannot allocate %d scores", (int)p->seq_k);
    }

    const float *qf = q, *kf = k, *vf = v;
    float *of = o;
    for (int64_t b = 0; b < p->batch; b++) {
        for (int64_t h = 0; h < p->heads_q; h++) {
            const int64_t g = h / plan.group;
            const float *k_head = kf + row_offset(&p->k_strides, b, g, 0);
            const float *v_head = vf + row_offset(&p->v_strides, b, g, 0);
            for (int64_t i = 0; i < p->seq_q; i++) {
                float *probs_row = NULL;
                if (probs) {
                    size_t row =
                        ((size_t)b * (size_t)p->heads_q + (size_t)h) * (size_t)p->seq_q + (size_t)i;
                    probs_row = probs + row * (size_t)p->seq_k;
                }
                double row_lse =
                    reference_row(&plan, qf + row_offset(&p->q_strides, b, h, i), k_head, v_head, i,
                                  scores, acc, of + row_offset(&p->o_strides, b, h, i), probs_row);
                if (lse) {
                    lse[row_offset(&p->lse_strides, b, h, i)] = (float)row_lse;
                }
            }
        }
    }

    free(scores);
    free(acc);
    return ATTN_SUCCESS;
}
