/* The CPU reference backward: the exact gradients of lib/reference.c's
 * forward, in double, one query row at a time. Like the forward reference
 * it favours being obviously right: the probabilities and D are recomputed
 * here in double from Q, K and V (not read from the caller's O and LSE), so
 * that it is the ground truth the device backward is tested against.
 *
 * The masks and modifiers are attn_cl.h's rules, spelled out as in
 * lib/reference.c; tests/test_reference_backward.c checks every one of them
 * against central finite differences of that forward. */
#include "attn_internal.h"
#include "half.h"
#include "host_copy.h"
#include "philox.h"
#include "reference_rows.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int visible(const attn_params *p, const attn_backward_host_tensors *t,
                   const attn_ref_sequence *s, int64_t b, int64_t h, int64_t i, int64_t j) {
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

/* The modified score of key j, and in *dmod its derivative with respect
 * to scale * q.k (softcap's 1 - tanh^2; 1 without softcap). */
static double modified(const attn_params *p, const attn_backward_host_tensors *t,
                       const attn_ref_sequence *s, int64_t b, int64_t h, int64_t i, int64_t j,
                       size_t q_row, size_t k_row, double *dmod) {
    double dot = 0.0;
    for (int32_t d = 0; d < p->head_dim; d++)
        dot += attn_load_element(t->q, q_row + (size_t)d, p->dtype) *
               attn_load_element(t->k, k_row + (size_t)d, p->dtype);
    double x = (double)p->scale * dot;
    *dmod = 1.0;
    if (p->softcap > 0.0f) {
        const double th = tanh(x / (double)p->softcap);
        x = (double)p->softcap * th;
        *dmod = 1.0 - th * th;
    }
    if (p->alibi)
        x -= (double)t->alibi_slopes[h] * fabs((double)(j - attn_ref_diagonal(p, s, i)));
    if (p->bias.present)
        x += (double)t->bias[attn_ref_row(&p->bias.strides, b, h, i) + (size_t)j];
    return x;
}

/* Accumulators in double, indexed like the tensors they become. */
typedef struct grads {
    double *dq, *dk, *dv, *dbias;
} grads;

/* Query row i of head h in sequence b: its probabilities, dS, and their
 * contributions to every gradient. `p_row`, `ds` and `dmod` are scratch
 * of seq_k doubles. */
static void backward_row(const attn_problem *pb, const attn_backward_host_tensors *t,
                         const attn_ref_sequence *s, int64_t b, int64_t h, int64_t i, double *p_row,
                         double *ds, double *dmod, grads *g) {
    const attn_params *p = &pb->p;
    const int64_t kv = h / pb->group;
    const size_t q_row = attn_ref_row(&p->q_strides, b, h, s->q0 + i);
    const size_t do_row = attn_ref_row(&p->o_strides, b, h, s->q0 + i);
    double max = -INFINITY;
    int nan = 0;
    for (int64_t j = 0; j < s->len_k; j++) {
        p_row[j] = -INFINITY;
        dmod[j] = 0.0;
        if (!visible(p, t, s, b, h, i, j))
            continue;
        p_row[j] = modified(p, t, s, b, h, i, j, q_row,
                            attn_ref_row(&p->k_strides, b, kv, s->k0 + j), &dmod[j]);
        if (isnan(p_row[j]))
            nan = 1;
        else if (p_row[j] > max)
            max = p_row[j];
    }
    /* Every key masked: the row contributes nothing (its O is the constant
     * 0). A NaN score makes the row's contributions NaN, as its O is. */
    if (!nan && max == -INFINITY)
        return;
    double sum = 0.0;
    for (int64_t j = 0; j < s->len_k; j++) {
        p_row[j] = nan                     ? (p_row[j] == -INFINITY ? 0.0 : NAN)
                   : p_row[j] == -INFINITY ? 0.0
                                           : exp(p_row[j] - max);
        sum += p_row[j];
    }
    /* An LSE past fp32 (the forward stores +inf, attn_reference's rounding
     * of max + log(sum)): the row contributes nothing, as the kernels do,
     * which cannot recover a probability from an infinite LSE. */
    if (!nan && (float)(max + log(sum)) == INFINITY)
        return;
    /* dP_j = dO . V_j; D = sum_j P_j dP_j (= dO . O); dS_j = P_j (dP_j - D).
     * Dropout: O weighs V_j by W_j = Z_j P_j / (1 - p), Z_j lib/reference.c's
     * mask, so dV_j = W_j dO and dP_j = Z_j (dO . V_j) / (1 - p); the softmax
     * (and so dS's P) is the un-dropped one. The mask is a pure function of
     * (seed, offset, b, h, i, j): drawn again where needed. */
    const int dropout = p->dropout_p > 0.0f;
    const uint32_t threshold = attn_dropout_threshold(p->dropout_p);
    const uint32_t stream = (uint32_t)(b * p->heads_q + h);
    const double keep_scale = 1.0 / (1.0 - (double)p->dropout_p);
    double dsum = 0.0;
    for (int64_t j = 0; j < s->len_k; j++) {
        p_row[j] /= sum;
        ds[j] = 0.0;
        if (p_row[j] == 0.0)
            continue;
        if (dropout && !attn_dropout_keep(p->dropout_seed, p->dropout_offset, stream, (uint32_t)i,
                                          (uint32_t)j, threshold))
            continue; /* dP_j = 0, whatever V_j holds */
        const size_t v_row = attn_ref_row(&p->v_strides, b, kv, s->k0 + j);
        double dp = 0.0;
        for (int32_t d = 0; d < p->head_dim_v; d++)
            dp += attn_load_element(t->dout, do_row + (size_t)d, p->dtype) *
                  attn_load_element(t->v, v_row + (size_t)d, p->dtype);
        if (dropout)
            dp *= keep_scale;
        ds[j] = dp;
        dsum += p_row[j] * dp;
    }
    for (int64_t j = 0; j < s->len_k; j++) {
        if (p_row[j] == 0.0)
            continue;
        ds[j] = p_row[j] * (ds[j] - dsum);
        const size_t k_row = attn_ref_row(&p->k_strides, b, kv, s->k0 + j);
        const size_t v_row = attn_ref_row(&p->v_strides, b, kv, s->k0 + j);
        const double w = !dropout ? p_row[j]
                         : attn_dropout_keep(p->dropout_seed, p->dropout_offset, stream,
                                             (uint32_t)i, (uint32_t)j, threshold)
                             ? p_row[j] * keep_scale
                             : 0.0;
        if (w != 0.0) /* a dropped key's V_j gets nothing (not 0 times dO) */
            for (int32_t d = 0; d < p->head_dim_v; d++)
                g->dv[v_row + (size_t)d] +=
                    w * attn_load_element(t->dout, do_row + (size_t)d, p->dtype);
        if (g->dbias)
            g->dbias[attn_ref_row(&p->bias.strides, b, h, i) + (size_t)j] += ds[j];
        const double dx = ds[j] * dmod[j] * (double)p->scale;
        for (int32_t d = 0; d < p->head_dim; d++) {
            g->dq[q_row + (size_t)d] += dx * attn_load_element(t->k, k_row + (size_t)d, p->dtype);
            g->dk[k_row + (size_t)d] += dx * attn_load_element(t->q, q_row + (size_t)d, p->dtype);
        }
    }
}

/* Rounds `acc` (extent elements) to `dtype` in `staging` and copies the
 * rows `rows` describes into `out`, as the device call's host copy does:
 * nothing between the rows, nor (varlen) rows outside every sequence. */
static void store_rows(void *out, void *staging, const double *acc, size_t extent, attn_dtype dtype,
                       int as_float, const attn_output_rows *rows) {
    for (size_t e = 0; e < extent; e++) {
        if (as_float)
            ((float *)staging)[e] = (float)acc[e];
        else
            attn_store_element(staging, e, dtype, acc[e]);
    }
    attn_copy_output_rows(out, staging, rows);
}

attn_status attn_reference_backward(const attn_params *params,
                                    const attn_backward_host_tensors *t) {
    if (!params || !t || !t->q || !t->k || !t->v || !t->dout || !t->dq || !t->dk || !t->dv)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT,
                         "attn_reference_backward: params, tensors and their q, k, v, dout, dq, "
                         "dk and dv are required");
    attn_params request = *params;
    request.algo = ATTN_ALGO_AUTO;
    attn_problem pb;
    attn_status status = attn_problem_make(NULL, &request, 1, 0, &pb);
    const attn_input_arrays meta = attn_input_arrays_of_backward_host(t);
    if (status == ATTN_SUCCESS)
        status = attn_problem_check_arrays(NULL, &pb, &meta, 0);
    if (status != ATTN_SUCCESS)
        return status;
    const attn_params *p = &pb.p;
    if ((p->bias.present && !t->bias) || (p->keep_mask.present && !t->keep_mask))
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT,
                         "attn_reference_backward: params ask for %s, which is NULL",
                         p->bias.present && !t->bias ? "a bias" : "a keep_mask");
    if (t->dbias && !p->bias.present)
        return attn_fail(NULL, ATTN_ERR_INVALID_VALUE,
                         "attn_reference_backward: dbias asked for without a bias");

    /* Everything allocated before the first write: a failure leaves the
     * gradients untouched. */
    const size_t n = (size_t)p->seq_k;
    double *scratch = malloc(3 * n * sizeof *scratch);
    size_t most = pb.q_extent > pb.k_extent ? pb.q_extent : pb.k_extent;
    most = pb.v_extent > most ? pb.v_extent : most;
    most = t->dbias && pb.bias_extent > most ? pb.bias_extent : most;
    void *staging =
        malloc(most * (pb.element_size > sizeof(float) ? pb.element_size : sizeof(float)));
    grads g = {calloc(pb.q_extent, sizeof(double)), calloc(pb.k_extent, sizeof(double)),
               calloc(pb.v_extent, sizeof(double)),
               t->dbias ? calloc(pb.bias_extent, sizeof(double)) : NULL};
    if (!scratch || !staging || !g.dq || !g.dk || !g.dv || (t->dbias && !g.dbias)) {
        free(scratch);
        free(staging);
        free(g.dq);
        free(g.dk);
        free(g.dv);
        free(g.dbias);
        return attn_fail(NULL, ATTN_ERR_HOST_OUT_OF_MEMORY,
                         "attn_reference_backward: cannot allocate the accumulators");
    }
    for (int64_t b = 0; b < p->batch; b++) {
        const attn_ref_sequence s = attn_ref_sequence_of(p, &meta, b);
        for (int64_t h = 0; h < p->heads_q; h++)
            for (int64_t i = 0; i < s.len_q; i++)
                backward_row(&pb, t, &s, b, h, i, scratch, scratch + n, scratch + 2 * n, &g);
    }

    const size_t es = pb.element_size;
    const int32_t *cu_q = p->varlen ? t->cu_seqlens_q : NULL;
    const int32_t *cu_k = p->varlen ? t->cu_seqlens_k : NULL;
    const int64_t rows_q = p->varlen ? p->total_q : p->seq_q;
    const int64_t rows_k = p->varlen ? p->total_k : p->seq_k;
    const attn_output_rows dq_rows = {p->batch,     p->heads_q, rows_q, p->head_dim,
                                      p->q_strides, es,         cu_q};
    const attn_output_rows dk_rows = {p->batch,     p->heads_kv, rows_k, p->head_dim,
                                      p->k_strides, es,          cu_k};
    const attn_output_rows dv_rows = {p->batch,     p->heads_kv, rows_k, p->head_dim_v,
                                      p->v_strides, es,          cu_k};
    const attn_output_rows dbias_rows = {p->bias.batch,   p->bias.heads, p->seq_q, p->seq_k,
                                         p->bias.strides, sizeof(float), NULL};
    store_rows(t->dq, staging, g.dq, pb.q_extent, p->dtype, 0, &dq_rows);
    store_rows(t->dk, staging, g.dk, pb.k_extent, p->dtype, 0, &dk_rows);
    store_rows(t->dv, staging, g.dv, pb.v_extent, p->dtype, 0, &dv_rows);
    if (t->dbias)
        store_rows(t->dbias, staging, g.dbias, pb.bias_extent, ATTN_DTYPE_F32, 1, &dbias_rows);
    free(staging);
    free(scratch);
    free(g.dq);
    free(g.dk);
    free(g.dv);
    free(g.dbias);
    return ATTN_SUCCESS;
}
