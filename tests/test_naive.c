/* The naive fp32 attention every device result's error bound is measured against. */
#include "test_util.h"

#include "philox.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- Naive fp32 attention --------------------------------------------------- */

/* One sequence's rows in the tensors, its lengths and the keys before its
 * padding. */
typedef struct naive_sequence {
    int64_t q0, k0, len_q, len_k, kept_k;
} naive_sequence;

static naive_sequence naive_sequence_of(const attn_params *r, const test_extras *x, int64_t b) {
    naive_sequence s = {0, 0, r->seq_q, r->seq_k, r->seq_k};
    if (r->varlen) {
        s.q0 = x->cu_seqlens_q[b];
        s.k0 = x->cu_seqlens_k[b];
        s.len_q = x->cu_seqlens_q[b + 1] - s.q0;
        s.len_k = x->cu_seqlens_k[b + 1] - s.k0;
        s.kept_k = s.len_k;
    }
    if (r->key_padding && x->key_lengths[b] < s.kept_k) {
        s.kept_k = x->key_lengths[b];
    }
    return s;
}

void test_naive_fp32(const attn_params *r, const float *q, const float *k, const float *v,
                     const test_extras *x, float *o, float *lse, float *probs) {
    test_shape qs = test_tensor_shape(r, TEST_Q), ks = test_tensor_shape(r, TEST_K);
    test_shape vs = test_tensor_shape(r, TEST_V), os = test_tensor_shape(r, TEST_O);
    test_shape ls = test_tensor_shape(r, TEST_LSE), ps = test_tensor_shape(r, TEST_PROBS);
    test_shape bs = test_tensor_shape(r, TEST_BIAS), ms = test_tensor_shape(r, TEST_KEEP_MASK);
    const test_extras none = {0};
    x = x ? x : &none;
    float *s = malloc((size_t)r->seq_k * sizeof *s);
    float *acc = malloc((size_t)r->head_dim_v * sizeof *acc);
    if (!s || !acc) {
        fprintf(stderr, "test: out of host memory\n");
        exit(1);
    }
    if (probs) {
        memset(probs, 0,
               (size_t)r->batch * (size_t)r->heads_q * (size_t)r->seq_q * (size_t)r->seq_k *
                   sizeof *probs);
    }
    const int64_t group = r->heads_q / r->heads_kv;
    for (int64_t b = 0; b < r->batch; b++) {
        const naive_sequence sq = naive_sequence_of(r, x, b);
        const int64_t tb = r->varlen ? 0 : b; /* the tensors' batch index */
        for (int64_t h = 0; h < r->heads_q; h++) {
            const int64_t g = h / group;
            for (int64_t i = 0; i < sq.len_q; i++) {
                const int64_t diag =
                    r->mask == ATTN_MASK_CAUSAL_TOP_LEFT ? i : i + sq.len_k - sq.len_q;
                const float *qr = q + test_element_at(&qs, tb, h, sq.q0 + i, 0);
                float max = -INFINITY;
                for (int64_t j = 0; j < sq.len_k; j++) {
                    s[j] = -INFINITY;
                    int visible = j < sq.kept_k;
                    visible &= r->mask == ATTN_MASK_NONE || j <= diag;
                    visible &= r->window.left < 0 || j >= diag - r->window.left;
                    visible &= r->window.right < 0 || j <= diag + r->window.right;
                    if (visible && r->keep_mask.present) {
                        visible = x->keep_mask[test_element_at(&ms, b, h, i, j)] != 0;
                    }
                    if (!visible) {
                        continue;
                    }
                    const float *kr = k + test_element_at(&ks, tb, g, sq.k0 + j, 0);
                    float dot = 0.0f;
                    for (int64_t d = 0; d < r->head_dim; d++) {
                        dot += qr[d] * kr[d];
                    }
                    float score = r->scale * dot;
                    if (r->softcap > 0.0f) {
                        score = r->softcap * tanhf(score / r->softcap);
                    }
                    if (r->alibi) {
                        score -= x->alibi_slopes[h] * fabsf((float)(j - diag));
                    }
                    if (r->bias.present) {
                        score += x->bias[test_element_at(&bs, b, h, i, j)];
                    }
                    s[j] = score;
                    max = fmaxf(max, score);
                }
                float sum = 0.0f;
                for (int64_t d = 0; d < r->head_dim_v; d++) {
                    acc[d] = 0.0f;
                }
                /* Dropout (attn_cl.h): P * keep / (1 - p), the sum un-dropped. */
                const float keep_scale = 1.0f / (1.0f - r->dropout_p);
                const uint32_t threshold = attn_dropout_threshold(r->dropout_p);
                for (int64_t j = 0; j < sq.len_k && max != -INFINITY; j++) {
                    s[j] = s[j] == -INFINITY ? 0.0f : expf(s[j] - max);
                    sum += s[j];
                    if (r->dropout_p > 0.0f) {
                        const int kept = attn_dropout_keep(r->dropout_seed, r->dropout_offset,
                                                           (uint32_t)(b * r->heads_q + h),
                                                           (uint32_t)i, (uint32_t)j, threshold);
                        s[j] = kept ? s[j] * keep_scale : 0.0f;
                    }
                    if (s[j] == 0.0f) {
                        continue; /* a masked key's V is never read (it may be garbage) */
                    }
                    const float *vr = v + test_element_at(&vs, tb, g, sq.k0 + j, 0);
                    for (int64_t d = 0; d < r->head_dim_v; d++) {
                        acc[d] += s[j] * vr[d];
                    }
                }
                /* A NaN sum (scores past FLT_MAX: inf - inf) is this
                 * implementation failing, and says so: NaN, not the 0 of a
                 * row with no visible key. */
                const float empty = isnan(sum) ? NAN : 0.0f;
                float *orow = o + test_element_at(&os, tb, h, sq.q0 + i, 0);
                for (int64_t d = 0; d < r->head_dim_v; d++) {
                    orow[d] = sum > 0.0f ? acc[d] / sum : empty;
                }
                if (lse) {
                    lse[test_element_at(&ls, tb, h, sq.q0 + i, 0)] = sum > 0.0f   ? max + logf(sum)
                                                                     : isnan(sum) ? NAN
                                                                                  : -INFINITY;
                }
                if (probs) {
                    float *prow = probs + test_element_at(&ps, b, h, i, 0);
                    for (int64_t j = 0; j < sq.len_k; j++) {
                        prow[j] = sum > 0.0f ? s[j] / sum : empty;
                    }
                }
            }
        }
    }
    free(s);
    free(acc);
}
