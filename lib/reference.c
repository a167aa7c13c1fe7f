/* The CPU reference: attention in double, one query row at a time. It is the
 * ground truth the device paths are tested against, so it favours being
 * obviously right over being fast: every rule of attn_cl.h's header comment
 * is spelled out here once, in the order it gives. */
#include "attn_internal.h"
#include "half.h"
#include "philox.h"
#include "reference_rows.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct ref_tensors {
    const void *q, *k, *v;
    void *o;
    float *lse, *probs;
    const float *bias;
    const uint8_t *keep_mask;
    attn_input_arrays meta;
    int kv_f64; /* K and V are double (a KV cache's rows, dequantized) */
} ref_tensors;

/* Element `index` of K or V. */
static double load_kv(const ref_tensors *t, const void *base, size_t index, attn_dtype dtype) {
    return t->kv_f64 ? ((const double *)base)[index] : attn_load_element(base, index, dtype);
}

static int key_visible(const attn_problem *pb, const ref_tensors *t, const attn_ref_sequence *s,
                       int64_t b, int64_t h, int64_t i, int64_t j) {
    const attn_params *p = &pb->p;
    const int64_t d = attn_ref_diagonal(p, s, i);
    if (j >= s->kept_k)
        return 0;
    if (p->mask != ATTN_MASK_NONE && j > d)
        return 0;
    if (p->window.left >= 0 && j < d - p->window.left)
        return 0;
    if (p->window.right >= 0 && j > d + p->window.right)
        return 0;
    if (p->keep_mask.present)
        return t->keep_mask[attn_ref_row(&p->keep_mask.strides, b, h, i) + (size_t)j] != 0;
    return 1;
}

/* scale * q.k, then softcap, ALiBi and bias, in that order. */
static double score(const attn_problem *pb, const ref_tensors *t, const attn_ref_sequence *s,
                    int64_t b, int64_t h, int64_t i, int64_t j, size_t q_row, size_t k_row) {
    const attn_params *p = &pb->p;
    double dot = 0.0;
    for (int32_t d = 0; d < p->head_dim; d++)
        dot += attn_load_element(t->q, q_row + (size_t)d, p->dtype) *
               load_kv(t, t->k, k_row + (size_t)d, p->dtype);
    double x = (double)p->scale * dot;
    if (p->softcap > 0.0f)
        x = (double)p->softcap * tanh(x / (double)p->softcap);
    if (p->alibi)
        x -= (double)t->meta.alibi_slopes[h] * fabs((double)(j - attn_ref_diagonal(p, s, i)));
    if (p->bias.present)
        x += (double)t->bias[attn_ref_row(&p->bias.strides, b, h, i) + (size_t)j];
    return x;
}

/* One query row i of head h in sequence b: writes its O row and, when
 * wanted, its LSE and its probabilities (probs_row, seq_k entries).
 * `scores` and `acc` are scratch of seq_k and head_dim_v doubles. */
static void reference_row(const attn_problem *pb, const ref_tensors *t, const attn_ref_sequence *s,
                          int64_t b, int64_t h, int64_t i, double *scores, double *acc,
                          float *probs_row) {
    const attn_params *p = &pb->p;
    const int64_t g = h / pb->group;
    const size_t q_row = attn_ref_row(&p->q_strides, b, h, s->q0 + i);
    double max = -INFINITY;
    int nan = 0;
    for (int64_t j = 0; j < s->len_k; j++) {
        scores[j] = -INFINITY;
        if (!key_visible(pb, t, s, b, h, i, j))
            continue;
        scores[j] =
            score(pb, t, s, b, h, i, j, q_row, attn_ref_row(&p->k_strides, b, g, s->k0 + j));
        if (isnan(scores[j]))
            nan = 1;
        else if (scores[j] > max)
            max = scores[j];
    }

    /* Every key masked (a score of -inf, from a bias say, counts as masked):
     * output 0, probabilities 0, LSE -inf. A NaN score makes the row NaN. */
    double sum = 0.0;
    for (int32_t d = 0; d < p->head_dim_v; d++)
        acc[d] = 0.0;
    /* Dropout: a dropped key keeps its share of the sum (the softmax and its
     * LSE are the un-dropped ones) but adds nothing to O; kept ones are
     * scaled by 1 / (1 - p) at the end. */
    const int dropout = p->dropout_p > 0.0f;
    const uint32_t threshold = attn_dropout_threshold(p->dropout_p);
    const uint32_t stream = (uint32_t)(b * p->heads_q + h);
    const double keep_scale = 1.0 / (1.0 - (double)p->dropout_p);
    if (nan) {
        sum = NAN;
    } else if (max != -INFINITY) {
        for (int64_t j = 0; j < s->len_k; j++) {
            const double e = scores[j] == -INFINITY ? 0.0 : exp(scores[j] - max);
            sum += e;
            scores[j] = dropout && !attn_dropout_keep(p->dropout_seed, p->dropout_offset, stream,
                                                      (uint32_t)i, (uint32_t)j, threshold)
                            ? 0.0
                            : e * keep_scale;
            if (scores[j] == 0.0)
                continue;
            const size_t v_row = attn_ref_row(&p->v_strides, b, g, s->k0 + j);
            for (int32_t d = 0; d < p->head_dim_v; d++)
                acc[d] += scores[j] * load_kv(t, t->v, v_row + (size_t)d, p->dtype);
        }
    }

    const size_t o_row = attn_ref_row(&p->o_strides, b, h, s->q0 + i);
    for (int32_t d = 0; d < p->head_dim_v; d++)
        attn_store_element(t->o, o_row + (size_t)d, p->dtype, sum == 0.0 ? 0.0 : acc[d] / sum);
    if (t->lse)
        t->lse[attn_ref_row(&p->lse_strides, b, h, s->q0 + i)] =
            (float)(sum == 0.0 ? -INFINITY : max + log(sum));
    if (probs_row)
        for (int64_t j = 0; j < s->len_k; j++)
            probs_row[j] = (float)(sum == 0.0 ? 0.0 : nan ? NAN : scores[j] / sum);
}

static attn_status reference(const attn_params *params, const ref_tensors *t) {
    /* The reference has no algorithms: it computes every output whatever
     * params->algo names, so a request the device refuses only for its
     * algorithm (probabilities from ATTN_ALGO_FUSED) is answered here too. */
    attn_params request = *params;
    if (t->probs && request.algo == ATTN_ALGO_FUSED)
        request.algo = ATTN_ALGO_AUTO;
    attn_problem pb;
    attn_status status = attn_problem_make(NULL, &request, t->lse != NULL, t->probs != NULL, &pb);
    if (status == ATTN_SUCCESS)
        status = attn_problem_check_arrays(NULL, &pb, &t->meta, 0);
    if (status != ATTN_SUCCESS)
        return status;
    const attn_params *p = &pb.p;
    if ((p->bias.present && !t->bias) || (p->keep_mask.present && !t->keep_mask))
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT,
                         "attn_reference: params ask for %s, which is NULL",
                         p->bias.present && !t->bias ? "a bias" : "a keep_mask");
    if (t->probs && pb.probs_elems == 0)
        return attn_fail(NULL, ATTN_ERR_SIZE_OVERFLOW,
                         "attn_reference: batch*heads*rows*seq_k probabilities need more "
                         "bytes than size_t counts");

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

    /* Probabilities past a sequence's lengths (varlen) stay 0. */
    if (t->probs)
        memset(t->probs, 0, pb.probs_elems * sizeof(float));
    for (int64_t b = 0; b < p->batch; b++) {
        const attn_ref_sequence s = attn_ref_sequence_of(p, &t->meta, b);
        for (int64_t h = 0; h < p->heads_q; h++) {
            for (int64_t i = 0; i < s.len_q; i++) {
                /* Only the subset params->probs_* asks for, packed. */
                float *probs_row = NULL;
                const int64_t ph = h - pb.probs_head0, pi = i - pb.probs_row0;
                if (t->probs && ph >= 0 && ph < pb.probs_heads && pi >= 0 && pi < pb.probs_rows) {
                    size_t row =
                        ((size_t)b * (size_t)pb.probs_heads + (size_t)ph) * (size_t)pb.probs_rows +
                        (size_t)pi;
                    probs_row = t->probs + row * (size_t)p->seq_k;
                }
                reference_row(&pb, t, &s, b, h, i, scores, acc, probs_row);
            }
        }
    }

    free(scores);
    free(acc);
    return ATTN_SUCCESS;
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
    const ref_tensors t = {.q = q, .k = k, .v = v, .o = o, .lse = lse, .probs = probs};
    return reference(params, &t);
}

attn_status attn_reference_host_f64_kv(const attn_params *params, const attn_host_tensors *tensors) {
    ref_tensors t = {.q = tensors->q,
                     .k = tensors->k,
                     .v = tensors->v,
                     .o = tensors->o,
                     .lse = tensors->lse,
                     .meta = attn_input_arrays_of_host(tensors),
                     .kv_f64 = 1};
    return reference(params, &t);
}

attn_status attn_reference_host(const attn_params *params, const attn_host_tensors *tensors) {
    if (!params || !tensors || !tensors->q || !tensors->k || !tensors->v || !tensors->o)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT,
                         "attn_reference_host: params, tensors and their q, k, v and o are "
                         "required");
    const ref_tensors t = {.q = tensors->q,
                           .k = tensors->k,
                           .v = tensors->v,
                           .o = tensors->o,
                           .lse = tensors->lse,
                           .probs = tensors->probs,
                           .bias = tensors->bias,
                           .keep_mask = tensors->keep_mask,
                           .meta = attn_input_arrays_of_host(tensors)};
    return reference(params, &t);
}
