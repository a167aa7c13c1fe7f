/* attn_reference_backward against central finite differences of
 * attn_reference_host, for every feature (f32, small shapes), and its 16-bit
 * storage against the same values in f32.
 *
 * The loss is L = sum(dO * O) over O's elements, so dL/dx is what the
 * backward computes from dO. Each input element x (Q, K, V and the bias's
 * elements) is moved to the floats nearest x + e and x - e and
 * (L+ - L-) / (x+ - x-) taken at e and e/2, combined by Richardson's rule
 * (truncation O(e^4)). O is stored in float, so each L carries rounding of
 * about 3e-8 per O element the move changes; measured, ~2e-6 of
 * gradient. Bound: max|analytic - fd| <= FD_TOL * max(1, max|analytic|).
 * A gradient missing a term (softcap's 1 - tanh^2 at |s/c| ~ 0.5, a group
 * member's dK, a broadcast dBias summed once) is off by 1e-2 or more.
 *
 * Also: fully masked query rows (a padded-out batch, a keep-mask row) get
 * dQ exactly 0, and no gradient is NaN; elements between rows keep the
 * caller's bytes. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FD_STEP 0.0625
#define FD_TOL 2e-5

static const char *const cases[] = {
    "B2 Hq2 Hkv2 Sq5 Sk7 D3 none bhsd",
    "B1 Hq2 Hkv2 Sq6 Sk4 D4 Dv3 tl bshd",
    "B1 Hq2 Hkv2 Sq4 Sk6 D3 br padded",
    "B1 Hq4 Hkv2 Sq5 Sk6 D3 br bhsd",
    "B1 Hq3 Hkv1 Sq4 Sk5 D2 Dv4 none hbsd",
    "B2 Hq2 Hkv2 Sq5 Sk7 D3 none bhsd bias=2x2",
    "B2 Hq2 Hkv1 Sq5 Sk7 D3 tl bshd bias=1x2",
    "B2 Hq2 Hkv2 Sq5 Sk7 D3 br padded bias=2x1",
    "B2 Hq2 Hkv2 Sq4 Sk6 D3 none bhsd bias=1x1",
    "B2 Hq2 Hkv2 Sq5 Sk7 D3 none bhsd keep=2x2",
    "B3 Hq2 Hkv2 Sq5 Sk7 D3 none bhsd pad",
    "B1 Hq2 Hkv2 Sq8 Sk8 D3 none bhsd win=2,1",
    "B1 Hq2 Hkv1 Sq6 Sk9 D3 br bshd win=3,0",
    "B1 Hq2 Hkv2 Sq6 Sk8 D3 tl bhsd alibi",
    "B1 Hq2 Hkv2 Sq5 Sk7 D3 none bhsd softcap=2 qk=2",
    "B1 Hq4 Hkv2 Sq5 Sk7 D3 br bshd softcap=1.5 qk=2 alibi bias=1x4",
    "B3 Hq2 Hkv1 Sq6 Sk7 D3 none bhsd varlen",
    "B3 Hq2 Hkv2 Sq6 Sk7 D3 br bshd varlen pad",
    "B2 Hq4 Hkv2 Sq5 Sk6 D3 Dv2 tl padded alibi bias=2x1 keep=1x4 pad win=3,1 softcap=3 qk=2",
    /* Dropout: the forward's loss with the same seed and offset (its mask
     * does not depend on the inputs, so the loss stays differentiable). */
    "B2 Hq2 Hkv2 Sq5 Sk7 D3 none bhsd drop=0.3,5,7",
    "B1 Hq2 Hkv2 Sq6 Sk8 D3 tl bhsd drop=0.5",
    "B1 Hq4 Hkv2 Sq5 Sk6 D3 br bshd drop=0.25,3,18446744073709551615",
    "B2 Hq2 Hkv2 Sq5 Sk7 D3 none bhsd bias=2x1 drop=0.4,9,1",
    "B3 Hq2 Hkv1 Sq6 Sk7 D3 br bshd varlen pad drop=0.35,11,2",
    ("B2 Hq4 Hkv2 Sq5 Sk6 D3 Dv2 tl padded alibi bias=2x1 keep=1x4 pad win=3,1 softcap=3 qk=2 "
     "drop=0.2,8,9"),
};

/* 16-bit storage: the reference on stored halves against the reference on
 * the same values in f32; the two differ by one rounding of the result. */
static const char *const storage_cases[] = {
    "B2 Hq4 Hkv2 Sq9 Sk13 D8 br bshd f16 bias=2x1 pad",
    "B2 Hq2 Hkv1 Sq13 Sk9 D8 Dv5 tl padded bf16 softcap=3 alibi",
    "B3 Hq2 Hkv2 Sq9 Sk11 D4 none bhsd f16 varlen keep=1x2",
    "B2 Hq4 Hkv2 Sq9 Sk13 D8 br bshd bf16 bias=2x1 drop=0.3,4,4",
};

static int failures;

typedef struct loss_ctx {
    const test_problem *t;
    const float *dout; /* o_elems floats */
    float *o;
} loss_ctx;

static double loss(const loss_ctx *c) {
    const test_problem *t = c->t;
    attn_host_tensors h = test_host_tensors(t, c->o, NULL, NULL);
    attn_status st = attn_reference_host(&t->p, &h);
    if (st != ATTN_SUCCESS) {
        printf("  attn_reference_host: %s %s\n", attn_status_name(st), attn_last_error(NULL));
        return NAN;
    }
    const test_shape *s = &t->o_shape;
    double sum = 0.0;
    for (int64_t b = 0; b < s->batch; b++)
        for (int64_t h2 = 0; h2 < s->heads; h2++)
            for (int64_t i = 0; i < s->seq; i++)
                for (int64_t d = 0; d < s->inner; d++) {
                    const size_t at = test_element_at(s, b, h2, i, d);
                    sum += (double)c->dout[at] * (double)c->o[at];
                }
    return sum;
}

static double central(const loss_ctx *c, float *x, double e) {
    const float x0 = *x;
    const float xp = (float)((double)x0 + e), xm = (float)((double)x0 - e);
    *x = xp;
    const double lp = loss(c);
    *x = xm;
    const double lm = loss(c);
    *x = x0;
    return (lp - lm) / ((double)xp - (double)xm);
}

/* Every element `shape` covers in `x` (float storage) against `grad`. */
static void check_fd(const loss_ctx *c, const char *name, float *x, const float *grad,
                     const test_shape *s, double *max_err, double *max_grad, int *nonfinite) {
    for (int64_t b = 0; b < s->batch; b++)
        for (int64_t h = 0; h < s->heads; h++)
            for (int64_t i = 0; i < s->seq; i++)
                for (int64_t d = 0; d < s->inner; d++) {
                    const size_t at = test_element_at(s, b, h, i, d);
                    if (!isfinite(grad[at])) {
                        (*nonfinite)++;
                        continue;
                    }
                    if (!isfinite(x[at])) /* a -inf bias: no neighbourhood */
                        continue;
                    const double d1 = central(c, &x[at], FD_STEP);
                    const double d2 = central(c, &x[at], FD_STEP / 2);
                    const double fd = (4.0 * d2 - d1) / 3.0;
                    const double err = fabs(fd - (double)grad[at]);
                    if (err > *max_err)
                        *max_err = err;
                    if (fabs(grad[at]) > *max_grad)
                        *max_grad = fabs(grad[at]);
                }
    (void)name;
}

/* Elements of buf (n) that `s` does not cover still hold the sentinel. */
static size_t gaps_written(const void *buf, size_t n, size_t elem, const test_shape *s) {
    unsigned char *covered = calloc(n ? n : 1, 1);
    for (int64_t b = 0; b < s->batch; b++)
        for (int64_t h = 0; h < s->heads; h++)
            for (int64_t i = 0; i < s->seq; i++)
                for (int64_t d = 0; d < s->inner; d++)
                    covered[test_element_at(s, b, h, i, d)] = 1;
    size_t written = 0;
    for (size_t i = 0; i < n; i++)
        if (!covered[i] && !test_is_sentinel((const unsigned char *)buf + i * elem, elem))
            written++;
    free(covered);
    return written;
}

/* Query rows whose LSE is -inf (every key masked) must have dQ rows of 0. */
static size_t masked_rows_nonzero(const test_problem *t, const float *dq) {
    size_t bad = 0;
    for (int64_t b = 0; b < t->lse_shape.batch; b++)
        for (int64_t h = 0; h < t->lse_shape.heads; h++)
            for (int64_t i = 0; i < t->lse_shape.seq; i++) {
                if (t->ref_lse[test_element_at(&t->lse_shape, b, h, i, 0)] != -INFINITY)
                    continue;
                for (int64_t d = 0; d < t->q_shape.inner; d++)
                    bad += dq[test_element_at(&t->q_shape, b, h, i, d)] != 0.0f;
            }
    return bad;
}

static void run_case(const char *text, uint64_t seed) {
    attn_params p;
    test_layout layout;
    float qk;
    int quick;
    if (!test_parse_case(text, &p, &layout, &qk, &quick)) {
        failures++;
        return;
    }
    if (p.varlen)
        test_varlen_totals(&p, seed);
    test_set_layout(&p, layout);
    test_problem t;
    if (test_problem_init(&t, &p, seed, qk, 1, 0) != 0) {
        printf("%s  FAIL (reference)\n", text);
        failures++;
        return;
    }
    test_rng rng;
    test_rng_seed(&rng, seed * 7 + 1);
    float *dout = malloc(t.o_elems * sizeof *dout);
    test_fill_uniform(&rng, dout, t.o_elems, -1.0f, 1.0f);
    float *o = malloc(t.o_elems * sizeof *o);
    float *dq = test_alloc_sentinel(t.q_elems * sizeof(float));
    float *dk = test_alloc_sentinel(t.k_elems * sizeof(float));
    float *dv = test_alloc_sentinel(t.v_elems * sizeof(float));
    const test_shape bias_shape = test_tensor_shape(&t.r, TEST_BIAS);
    float *dbias = t.x.bias ? test_alloc_sentinel(t.x.bias_elems * sizeof(float)) : NULL;
    attn_backward_host_tensors bt = {.q = t.q_store,
                                     .k = t.k_store,
                                     .v = t.v_store,
                                     .o = t.ref_o,
                                     .dout = dout,
                                     .lse = t.ref_lse,
                                     .dq = dq,
                                     .dk = dk,
                                     .dv = dv,
                                     .dbias = dbias,
                                     .bias = t.x.bias,
                                     .keep_mask = t.x.keep_mask,
                                     .key_lengths = t.x.key_lengths,
                                     .alibi_slopes = t.x.alibi_slopes,
                                     .cu_seqlens_q = t.x.cu_seqlens_q,
                                     .cu_seqlens_k = t.x.cu_seqlens_k};
    attn_status st = attn_reference_backward(&t.p, &bt);
    char desc[256];
    test_describe(desc, sizeof desc, &t.p, layout);
    if (st != ATTN_SUCCESS) {
        printf("%s  FAIL attn_reference_backward: %s %s\n", desc, attn_status_name(st),
               attn_last_error(NULL));
        failures++;
    } else {
        const loss_ctx c = {&t, dout, o};
        double max_err = 0.0, max_grad = 0.0;
        int nonfinite = 0;
        check_fd(&c, "dQ", (float *)t.q_store, dq, &t.q_shape, &max_err, &max_grad, &nonfinite);
        check_fd(&c, "dK", (float *)t.k_store, dk, &t.k_shape, &max_err, &max_grad, &nonfinite);
        check_fd(&c, "dV", (float *)t.v_store, dv, &t.v_shape, &max_err, &max_grad, &nonfinite);
        if (dbias)
            check_fd(&c, "dBias", t.x.bias, dbias, &bias_shape, &max_err, &max_grad, &nonfinite);
        const size_t gaps = gaps_written(dq, t.q_elems, 4, &t.q_shape) +
                            gaps_written(dk, t.k_elems, 4, &t.k_shape) +
                            gaps_written(dv, t.v_elems, 4, &t.v_shape) +
                            (dbias ? gaps_written(dbias, t.x.bias_elems, 4, &bias_shape) : 0);
        const size_t masked = masked_rows_nonzero(&t, dq);
        const double bound = FD_TOL * fmax(1.0, max_grad);
        const int ok =
            max_err <= bound && nonfinite == 0 && gaps == 0 && masked == 0 && max_grad > 0.0;
        printf("%s%s  fd err %.2e <= %.2e (max|grad| %.2e) nonfinite %d gaps %zu masked %zu  %s\n",
               desc, dbias ? " +dbias" : "", max_err, bound, max_grad, nonfinite, gaps, masked,
               ok ? "PASS" : "FAIL");
        failures += !ok;
    }
    free(dout);
    free(o);
    free(dq);
    free(dk);
    free(dv);
    free(dbias);
    test_problem_free(&t);
}

/* The largest |a - b| relative to one storage ulp of b. */
static double storage_err(attn_dtype dtype, const void *stored, const float *ref,
                          const test_shape *s) {
    const double ulp = dtype == ATTN_DTYPE_F16 ? 0x1p-10 : 0x1p-7;
    double worst = 0.0;
    for (int64_t b = 0; b < s->batch; b++)
        for (int64_t h = 0; h < s->heads; h++)
            for (int64_t i = 0; i < s->seq; i++)
                for (int64_t d = 0; d < s->inner; d++) {
                    const size_t at = test_element_at(s, b, h, i, d);
                    float a;
                    test_from_storage(dtype, (const uint16_t *)stored + at, &a, 1);
                    const double err = fabs((double)a - (double)ref[at]) /
                                       (ulp * fmax(fabs((double)ref[at]), 0x1p-14));
                    if (!(err <= worst))
                        worst = isnan(err) ? INFINITY : err;
                }
    return worst;
}

static void run_storage_case(const char *text, uint64_t seed) {
    attn_params p;
    test_layout layout;
    float qk;
    int quick;
    if (!test_parse_case(text, &p, &layout, &qk, &quick)) {
        failures++;
        return;
    }
    if (p.varlen)
        test_varlen_totals(&p, seed);
    test_set_layout(&p, layout);
    test_problem t;
    if (test_problem_init(&t, &p, seed, qk, 1, 0) != 0) {
        printf("%s  FAIL (reference)\n", text);
        failures++;
        return;
    }
    test_rng rng;
    test_rng_seed(&rng, seed * 7 + 1);
    float *dout = malloc(t.o_elems * sizeof *dout);
    test_fill_uniform(&rng, dout, t.o_elems, -1.0f, 1.0f);
    test_round_to_storage(p.dtype, dout, t.o_elems);
    void *dout_store = test_to_storage(p.dtype, dout, t.o_elems);
    const size_t es = test_dtype_size(p.dtype);
    void *g16[3] = {test_alloc_sentinel(t.q_elems * es), test_alloc_sentinel(t.k_elems * es),
                    test_alloc_sentinel(t.v_elems * es)};
    float *g32[3] = {malloc(t.q_elems * 4), malloc(t.k_elems * 4), malloc(t.v_elems * 4)};
    attn_backward_host_tensors bt = {.q = t.q_store,
                                     .k = t.k_store,
                                     .v = t.v_store,
                                     .dout = dout_store,
                                     .dq = g16[0],
                                     .dk = g16[1],
                                     .dv = g16[2],
                                     .bias = t.x.bias,
                                     .keep_mask = t.x.keep_mask,
                                     .key_lengths = t.x.key_lengths,
                                     .alibi_slopes = t.x.alibi_slopes,
                                     .cu_seqlens_q = t.x.cu_seqlens_q,
                                     .cu_seqlens_k = t.x.cu_seqlens_k};
    attn_status st = attn_reference_backward(&t.p, &bt);
    attn_params f32 = t.p;
    f32.dtype = ATTN_DTYPE_F32;
    attn_backward_host_tensors bf = bt;
    bf.q = t.q;
    bf.k = t.k;
    bf.v = t.v;
    bf.dout = dout;
    bf.dq = g32[0];
    bf.dk = g32[1];
    bf.dv = g32[2];
    if (st == ATTN_SUCCESS)
        st = attn_reference_backward(&f32, &bf);
    char desc[256];
    test_describe(desc, sizeof desc, &t.p, layout);
    if (st != ATTN_SUCCESS) {
        printf("%s  FAIL attn_reference_backward: %s %s\n", desc, attn_status_name(st),
               attn_last_error(NULL));
        failures++;
    } else {
        const double err = fmax(storage_err(p.dtype, g16[0], g32[0], &t.q_shape),
                                fmax(storage_err(p.dtype, g16[1], g32[1], &t.k_shape),
                                     storage_err(p.dtype, g16[2], g32[2], &t.v_shape)));
        const size_t gaps = gaps_written(g16[0], t.q_elems, es, &t.q_shape) +
                            gaps_written(g16[1], t.k_elems, es, &t.k_shape) +
                            gaps_written(g16[2], t.v_elems, es, &t.v_shape);
        const int ok = err <= 1.0 && gaps == 0;
        printf("%s  vs f32: %.2f storage ulp <= 1, gaps %zu  %s\n", desc, err, gaps,
               ok ? "PASS" : "FAIL");
        failures += !ok;
    }
    for (int i = 0; i < 3; i++) {
        free(g16[i]);
        free(g32[i]);
    }
    free(dout);
    free(dout_store);
    test_problem_free(&t);
}

int main(void) {
    const double start = test_seconds();
    const size_t count = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < count; i++)
        run_case(cases[i], 300 + i);
    const size_t storage_count = sizeof storage_cases / sizeof storage_cases[0];
    for (size_t i = 0; i < storage_count; i++)
        run_storage_case(storage_cases[i], 400 + i);
    printf("%s: %zu case(s), %d failure(s), %.1f s\n", failures ? "FAIL" : "PASS",
           count + storage_count, failures, test_seconds() - start);
    return failures ? 1 : 0;
}
