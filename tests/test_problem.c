/* A whole test problem: its inputs, extras, reference and naive outputs, and the comparison of a
 * device output. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- A whole problem --------------------------------------------------------- */

static float *alloc_floats(size_t n) {
    return test_alloc_sentinel(n * sizeof(float));
}

/* The extra inputs t->r asks for, from `rng` (see test_problem_init). */
static void make_extras(test_problem *t, test_rng *rng, uint64_t seed) {
    const attn_params *r = &t->r;
    test_extras *x = &t->x;
    if (r->bias.present) {
        test_shape bs = test_tensor_shape(r, TEST_BIAS);
        x->bias_elems = test_shape_extent(&bs);
        x->bias = alloc_floats(x->bias_elems);
        for (size_t e = 0; e < x->bias_elems; e++) {
            x->bias[e] = test_rng_float(rng, 0.0f, 1.0f) < 0.03f ? -INFINITY
                                                                 : test_rng_float(rng, -2.0f, 2.0f);
        }
    }
    if (r->keep_mask.present) {
        test_shape ms = test_tensor_shape(r, TEST_KEEP_MASK);
        x->keep_mask_elems = test_shape_extent(&ms);
        x->keep_mask = test_alloc_sentinel(x->keep_mask_elems);
        for (size_t e = 0; e < x->keep_mask_elems; e++) {
            x->keep_mask[e] = test_rng_float(rng, 0.0f, 1.0f) < 0.8f;
        }
        for (int64_t b = 0; b < ms.batch && r->seq_q > 1; b++) {
            for (int64_t h = 0; h < ms.heads; h++) {
                memset(x->keep_mask + test_element_at(&ms, b, h, 1, 0), 0, (size_t)r->seq_k);
            }
        }
    }
    if (r->key_padding) {
        x->key_lengths = test_alloc_sentinel((size_t)r->batch * sizeof(int32_t));
        for (int32_t b = 0; b < r->batch; b++) {
            x->key_lengths[b] = b == 0   ? r->seq_k
                                : b == 1 ? 0
                                         : (int32_t)test_rng_float(rng, 0.0f, (float)r->seq_k);
        }
    }
    if (r->alibi) {
        x->alibi_slopes = alloc_floats((size_t)r->heads_q);
        for (int32_t h = 0; h < r->heads_q; h++) {
            x->alibi_slopes[h] = exp2f(-8.0f * (float)(h + 1) / (float)r->heads_q);
        }
    }
    if (r->varlen) {
        const size_t n = (size_t)r->batch + 1;
        int32_t *len_q = calloc(n, sizeof *len_q), *len_k = calloc(n, sizeof *len_k);
        x->cu_seqlens_q = test_alloc_sentinel(n * sizeof(int32_t));
        x->cu_seqlens_k = test_alloc_sentinel(n * sizeof(int32_t));
        if (!len_q || !len_k) {
            fprintf(stderr, "test: out of host memory\n");
            exit(1);
        }
        test_varlen_lengths(r, seed, len_q, len_k);
        x->cu_seqlens_q[0] = x->cu_seqlens_k[0] = 0;
        for (int32_t b = 0; b < r->batch; b++) {
            x->cu_seqlens_q[b + 1] = x->cu_seqlens_q[b] + len_q[b];
            x->cu_seqlens_k[b + 1] = x->cu_seqlens_k[b] + len_k[b];
        }
        free(len_q);
        free(len_k);
    }
}

int test_problem_init(test_problem *t, const attn_params *p, uint64_t seed, float qk_range,
                      int want_lse, int want_probs) {
    memset(t, 0, sizeof *t);
    t->p = *p;
    if (t->p.varlen && t->p.total_q == 0) {
        test_varlen_totals(&t->p, seed);
    }
    test_resolve(&t->p, &t->r);
    t->q_shape = test_tensor_shape(&t->r, TEST_Q);
    t->k_shape = test_tensor_shape(&t->r, TEST_K);
    t->v_shape = test_tensor_shape(&t->r, TEST_V);
    t->o_shape = test_tensor_shape(&t->r, TEST_O);
    t->lse_shape = test_tensor_shape(&t->r, TEST_LSE);
    t->probs_shape = test_tensor_shape(&t->r, TEST_PROBS);
    t->q_elems = test_shape_extent(&t->q_shape);
    t->k_elems = test_shape_extent(&t->k_shape);
    t->v_elems = test_shape_extent(&t->v_shape);
    t->o_elems = test_shape_extent(&t->o_shape);
    t->lse_elems = test_shape_extent(&t->lse_shape);
    t->probs_elems = test_shape_extent(&t->probs_shape);

    test_rng rng;
    test_rng_seed(&rng, seed);
    t->q = alloc_floats(t->q_elems);
    t->k = alloc_floats(t->k_elems);
    t->v = alloc_floats(t->v_elems);
    test_fill_uniform(&rng, t->q, t->q_elems, -qk_range, qk_range);
    test_fill_uniform(&rng, t->k, t->k_elems, -qk_range, qk_range);
    test_fill_uniform(&rng, t->v, t->v_elems, -1.0f, 1.0f);
    const attn_dtype dtype = t->p.dtype;
    test_round_to_storage(dtype, t->q, t->q_elems);
    test_round_to_storage(dtype, t->k, t->k_elems);
    test_round_to_storage(dtype, t->v, t->v_elems);
    t->q_store = test_to_storage(dtype, t->q, t->q_elems);
    t->k_store = test_to_storage(dtype, t->k, t->k_elems);
    t->v_store = test_to_storage(dtype, t->v, t->v_elems);
    make_extras(t, &rng, seed);

    t->ref_o = alloc_floats(t->o_elems);
    t->naive_o = alloc_floats(t->o_elems);
    if (want_lse) {
        t->ref_lse = alloc_floats(t->lse_elems);
        t->naive_lse = alloc_floats(t->lse_elems);
    }
    if (want_probs) {
        t->ref_probs = alloc_floats(t->probs_elems);
        t->naive_probs = alloc_floats(t->probs_elems);
    }
    return test_problem_compute_outputs(t);
}

int test_problem_compute_outputs(test_problem *t) {
    /* The reference reads the float copies, which hold exactly the stored
     * values, and writes O in float: unrounded, the truth to compare with. */
    attn_params as_f32 = t->p;
    as_f32.dtype = ATTN_DTYPE_F32;
    attn_host_tensors ref = test_host_tensors(t, t->ref_o, t->ref_lse, t->ref_probs);
    ref.q = t->q;
    ref.k = t->k;
    ref.v = t->v;
    attn_status st = attn_reference_host(&as_f32, &ref);
    if (st != ATTN_SUCCESS) {
        printf("attn_reference_host failed: %s: %s\n", attn_status_name(st), attn_last_error(NULL));
        return -1;
    }
    test_naive_fp32(&t->r, t->q, t->k, t->v, &t->x, t->naive_o, t->naive_lse, t->naive_probs);
    /* The library rounds its O to the storage type: so does the naive one,
     * whose error then includes that rounding. */
    test_round_to_storage(t->p.dtype, t->naive_o, t->o_elems);
    return 0;
}

void test_problem_free(test_problem *t) {
    void *all[] = {t->q,
                   t->k,
                   t->v,
                   t->q_store,
                   t->k_store,
                   t->v_store,
                   t->ref_o,
                   t->ref_lse,
                   t->ref_probs,
                   t->naive_o,
                   t->naive_lse,
                   t->naive_probs,
                   t->x.bias,
                   t->x.keep_mask,
                   t->x.key_lengths,
                   t->x.alibi_slopes,
                   t->x.cu_seqlens_q,
                   t->x.cu_seqlens_k};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        free(all[i]);
    }
    memset(t, 0, sizeof *t);
}

void *test_alloc_output(const test_problem *t) {
    return test_alloc_sentinel(t->o_elems * test_dtype_size(t->p.dtype));
}

attn_host_tensors test_host_tensors(const test_problem *t, void *o, float *lse, float *probs) {
    return (attn_host_tensors){.q = t->q_store,
                               .k = t->k_store,
                               .v = t->v_store,
                               .o = o,
                               .lse = lse,
                               .probs = probs,
                               .bias = t->x.bias,
                               .keep_mask = t->x.keep_mask,
                               .key_lengths = t->x.key_lengths,
                               .alibi_slopes = t->x.alibi_slopes,
                               .cu_seqlens_q = t->x.cu_seqlens_q,
                               .cu_seqlens_k = t->x.cu_seqlens_k};
}

test_result test_compare_output(const test_problem *t, const void *o_store) {
    const attn_dtype dtype = t->p.dtype;
    const size_t size = test_dtype_size(dtype);
    float *o = alloc_floats(t->o_elems);
    test_from_storage(dtype, o_store, o, t->o_elems);
    /* naive_fp32's O is rounded to the storage type: it agrees with the
     * reference to within that rounding (half an ulp at 1: 2^-11 for f16,
     * 2^-8 for bf16) besides TEST_NAIVE_RTOL. */
    const double rounding = dtype == ATTN_DTYPE_F16    ? 0x1p-11
                            : dtype == ATTN_DTYPE_BF16 ? 0x1p-8
                                                       : 0.0;
    test_result r =
        test_compare_rtol(&t->o_shape, o, t->ref_o, t->naive_o, 0, TEST_NAIVE_RTOL + rounding);
    /* Gaps: every element the tensor does not cover still holds the
     * sentinel, byte for byte in the storage type. */
    unsigned char *covered = calloc(t->o_elems ? t->o_elems : 1, 1);
    if (!covered) {
        fprintf(stderr, "test: out of host memory\n");
        exit(1);
    }
    const test_shape *s = &t->o_shape;
    for (int64_t b = 0; b < s->batch; b++) {
        for (int64_t h = 0; h < s->heads; h++) {
            for (int64_t i = 0; i < s->seq; i++) {
                memset(covered + test_element_at(s, b, h, i, 0), 1, (size_t)s->inner);
            }
        }
    }
    for (size_t e = 0; e < t->o_elems; e++) {
        if (!covered[e] && !test_is_sentinel((const char *)o_store + e * size, size)) {
            r.gaps_written++;
        }
    }
    r.ok &= r.gaps_written == 0;
    free(covered);
    free(o);
    return r;
}
