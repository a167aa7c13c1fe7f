/* attn_reference against answers worked out by hand, and against itself under
 * layouts and head groupings that must not change the result. Every device
 * test trusts the reference, so this one runs first and needs no device. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

/* One line per case: the largest error found, the tolerance, the verdict. */
static void report(const char *name, double err, double tol) {
    int ok = err <= tol; /* NaN fails */
    printf("%-64s max err %.2e <= %.1e %s\n", name, err, tol, ok ? "PASS" : "FAIL");
    failures += !ok;
}

/* The reference's outputs for one request, sized to the tensors' extents. */
typedef struct outputs {
    attn_params r;
    float *o, *lse, *probs;
    size_t o_elems, lse_elems, probs_elems;
} outputs;

static outputs run(const attn_params *p, const float *q, const float *k, const float *v) {
    outputs out;
    test_resolve(p, &out.r);
    test_shape os = test_tensor_shape(&out.r, TEST_O);
    test_shape ls = test_tensor_shape(&out.r, TEST_LSE);
    test_shape ps = test_tensor_shape(&out.r, TEST_PROBS);
    out.o_elems = test_shape_extent(&os);
    out.lse_elems = test_shape_extent(&ls);
    out.probs_elems = test_shape_extent(&ps);
    out.o = test_alloc_sentinel(out.o_elems * sizeof(float));
    out.lse = test_alloc_sentinel(out.lse_elems * sizeof(float));
    out.probs = test_alloc_sentinel(out.probs_elems * sizeof(float));
    attn_status st = attn_reference(p, q, k, v, out.o, out.lse, out.probs);
    if (st != ATTN_SUCCESS) {
        printf("FAIL: attn_reference: %s: %s\n", attn_status_name(st), attn_last_error(NULL));
        exit(1);
    }
    return out;
}

static void outputs_free(outputs *out) {
    free(out->o);
    free(out->lse);
    free(out->probs);
}

static size_t at(const attn_strides *s, int64_t b, int64_t h, int64_t i) {
    return (size_t)(b * s->batch + h * s->head + i * s->seq);
}

static float *random_floats(test_rng *rng, size_t n, float range) {
    float *data = test_alloc_sentinel(n * sizeof(float));
    test_fill_uniform(rng, data, n, -range, range);
    return data;
}

/* Q = 0 makes every score 0: O is the mean of V's rows, LSE = log(seq_k),
 * every probability 1/seq_k. */
static void uniform_scores(void) {
    const int sk = 5, d = 3, dv = 4;
    attn_params p;
    attn_params_init(&p, 1, 1, 2, sk, d);
    p.head_dim_v = dv;
    float q[2 * 3] = {0};
    float k[5 * 3], v[5 * 4];
    for (int i = 0; i < sk * d; i++) {
        k[i] = (float)(i % 7) - 3.0f;
    }
    for (int i = 0; i < sk * dv; i++) {
        v[i] = (float)i * 0.25f;
    }
    outputs out = run(&p, q, k, v);
    double err = 0.0, lse_err = 0.0, p_err = 0.0;
    for (int i = 0; i < 2; i++) {
        for (int c = 0; c < dv; c++) {
            double mean = 0.0;
            for (int j = 0; j < sk; j++) {
                mean += v[j * dv + c];
            }
            err = fmax(err, fabs(out.o[i * dv + c] - mean / sk));
        }
        lse_err = fmax(lse_err, fabs(out.lse[i] - log((double)sk)));
        for (int j = 0; j < sk; j++) {
            p_err = fmax(p_err, fabs(out.probs[i * sk + j] - 1.0 / sk));
        }
    }
    report("uniform scores: O = mean of V rows", err, 1e-6);
    report("uniform scores: LSE = log(seq_k)", lse_err, 1e-6);
    report("uniform scores: probs = 1/seq_k", p_err, 1e-7);
    outputs_free(&out);
}

/* Two keys with scores 0 and ln 3: probabilities 1/4 and 3/4, LSE = ln 4. */
static void two_keys(void) {
    attn_params p;
    attn_params_init(&p, 1, 1, 1, 2, 1);
    p.scale = (float)log(3.0);
    float q[1] = {1.0f}, k[2] = {0.0f, 1.0f}, v[2] = {8.0f, -4.0f};
    outputs out = run(&p, q, k, v);
    double want = 0.25 * 8.0 + 0.75 * -4.0;
    /* The float scale carries ln 3 to ~1e-7 relative. */
    report("two keys, scores 0 and ln 3: O", fabs(out.o[0] - want), 1e-6);
    report("two keys, scores 0 and ln 3: LSE = ln 4", fabs(out.lse[0] - log(4.0)), 1e-6);
    report("two keys, scores 0 and ln 3: probs 1/4 3/4",
           fmax(fabs(out.probs[0] - 0.25), fabs(out.probs[1] - 0.75)), 1e-7);
    outputs_free(&out);
}

/* One key aligned with the query 100 logits above the rest takes all the
 * weight: O is that key's V row. */
static void dominant_key(void) {
    const int sk = 9, d = 4, hot = 6;
    attn_params p;
    attn_params_init(&p, 1, 1, 1, sk, d);
    p.scale = 1.0f;
    float q[4] = {1.0f, 0.0f, 0.0f, 0.0f};
    float k[9 * 4] = {0};
    k[hot * d] = 100.0f;
    test_rng rng;
    test_rng_seed(&rng, 11);
    float *v = random_floats(&rng, (size_t)sk * d, 1.0f);
    outputs out = run(&p, q, k, v);
    double err = 0.0;
    for (int c = 0; c < d; c++) {
        err = fmax(err, fabs(out.o[c] - v[hot * d + c]));
    }
    report("dominant key: O = its V row", err, 1e-12);
    report("dominant key: LSE = its score", fabs(out.lse[0] - 100.0), 1e-5);
    outputs_free(&out);
    free(v);
}

/* Causal, random data: query 0 sees only key 0, so O row 0 is V row 0
 * exactly and its LSE is its one score. */
static void causal_first_row(void) {
    const int s = 6, d = 5;
    test_rng rng;
    test_rng_seed(&rng, 12);
    float *q = random_floats(&rng, (size_t)s * d, 1.0f);
    float *k = random_floats(&rng, (size_t)s * d, 1.0f);
    float *v = random_floats(&rng, (size_t)s * d, 1.0f);
    const attn_mask masks[2] = {ATTN_MASK_CAUSAL_TOP_LEFT, ATTN_MASK_CAUSAL_BOTTOM_RIGHT};
    for (int m = 0; m < 2; m++) {
        attn_params p;
        attn_params_init(&p, 1, 1, s, s, d);
        p.mask = masks[m];
        outputs out = run(&p, q, k, v);
        double err = 0.0, score = 0.0;
        for (int c = 0; c < d; c++) {
            err = fmax(err, fabs(out.o[c] - v[c]));
            score += (double)q[c] * k[c];
        }
        score *= (double)out.r.scale;
        char name[96];
        snprintf(name, sizeof name, "causal %s, row 0: O = V row 0", test_mask_name(p.mask));
        report(name, err, 0.0);
        snprintf(name, sizeof name, "causal %s, row 0: LSE = q0.k0 * scale",
                 test_mask_name(p.mask));
        report(name, fabs(out.lse[0] - score), 1e-6);
        outputs_free(&out);
    }
    free(q);
    free(k);
    free(v);
}

/* Which keys get weight: with random data every visible key has a positive
 * probability and every masked one exactly 0. Covers Sq < Sk, Sq > Sk (where
 * bottom-right masks whole rows) and Sq == Sk (where the alignments agree). */
static void mask_pattern(int sq, int sk, attn_mask mask) {
    const int d = 3;
    test_rng rng;
    test_rng_seed(&rng, 13);
    float *q = random_floats(&rng, (size_t)sq * d, 1.0f);
    float *k = random_floats(&rng, (size_t)sk * d, 1.0f);
    float *v = random_floats(&rng, (size_t)sk * d, 1.0f);
    attn_params p;
    attn_params_init(&p, 1, 1, sq, sk, d);
    p.mask = mask;
    outputs out = run(&p, q, k, v);
    size_t wrong = 0, masked_rows = 0;
    double row_err = 0.0;
    for (int i = 0; i < sq; i++) {
        int last = mask == ATTN_MASK_NONE              ? sk - 1
                   : mask == ATTN_MASK_CAUSAL_TOP_LEFT ? i
                                                       : i + sk - sq;
        double sum = 0.0;
        for (int j = 0; j < sk; j++) {
            float pr = out.probs[(size_t)i * sk + j];
            wrong += j <= last ? !(pr > 0.0f) : pr != 0.0f;
            sum += pr;
        }
        if (last < 0) {
            /* Fully masked: O 0, LSE -inf, probs 0 (checked above), no NaN. */
            masked_rows++;
            for (int c = 0; c < d; c++) {
                wrong += out.o[i * d + c] != 0.0f;
            }
            wrong += !(isinf(out.lse[i]) && out.lse[i] < 0);
        } else {
            row_err = fmax(row_err, fabs(sum - 1.0));
            wrong += !isfinite(out.lse[i]);
        }
    }
    char name[96];
    snprintf(name, sizeof name, "mask %s Sq%d Sk%d: pattern (%zu rows fully masked)",
             test_mask_name(mask), sq, sk, masked_rows);
    report(name, (double)wrong, 0.0);
    snprintf(name, sizeof name, "mask %s Sq%d Sk%d: visible probs sum to 1", test_mask_name(mask),
             sq, sk);
    report(name, row_err, 1e-6);
    outputs_free(&out);
    free(q);
    free(k);
    free(v);
}

/* The two alignments are the same mask when Sq == Sk; with Sq < Sk the last
 * bottom-right query sees every key, so it equals the unmasked row. */
static void alignments_agree(void) {
    const int d = 7;
    test_rng rng;
    test_rng_seed(&rng, 14);
    float *q = random_floats(&rng, (size_t)9 * d, 1.0f);
    float *k = random_floats(&rng, (size_t)20 * d, 1.0f);
    float *v = random_floats(&rng, (size_t)20 * d, 1.0f);

    attn_params p;
    attn_params_init(&p, 1, 1, 9, 9, d);
    p.mask = ATTN_MASK_CAUSAL_TOP_LEFT;
    outputs tl = run(&p, q, k, v);
    p.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
    outputs br = run(&p, q, k, v);
    report("Sq == Sk: top-left == bottom-right (bytes differ)",
           (double)(memcmp(tl.o, br.o, 9 * d * sizeof(float)) != 0), 0.0);
    outputs_free(&tl);
    outputs_free(&br);

    attn_params_init(&p, 1, 1, 9, 20, d);
    p.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
    br = run(&p, q, k, v);
    p.mask = ATTN_MASK_NONE;
    outputs none = run(&p, q, k, v);
    report("Sq < Sk: last bottom-right row == unmasked row (bytes differ)",
           (double)(memcmp(br.o + 8 * d, none.o + 8 * d, d * sizeof(float)) != 0), 0.0);
    outputs_free(&br);
    outputs_free(&none);
    free(q);
    free(k);
    free(v);
}

/* O must be probs · V and every row of probs a distribution. */
static void probs_consistent(void) {
    const int b = 2, h = 3, sq = 17, sk = 23, d = 6, dv = 5;
    test_rng rng;
    test_rng_seed(&rng, 15);
    attn_params p;
    attn_params_init(&p, b, h, sq, sk, d);
    p.head_dim_v = dv;
    p.mask = ATTN_MASK_CAUSAL_TOP_LEFT;
    float *q = random_floats(&rng, (size_t)b * h * sq * d, 2.0f);
    float *k = random_floats(&rng, (size_t)b * h * sk * d, 2.0f);
    float *v = random_floats(&rng, (size_t)b * h * sk * dv, 1.0f);
    outputs out = run(&p, q, k, v);
    double sum_err = 0.0, o_err = 0.0;
    for (int row = 0; row < b * h * sq; row++) {
        const float *pr = out.probs + (size_t)row * sk;
        const float *vh = v + (size_t)(row / sq) * sk * dv;
        double sum = 0.0;
        for (int j = 0; j < sk; j++) {
            sum += pr[j];
        }
        sum_err = fmax(sum_err, fabs(sum - 1.0));
        for (int c = 0; c < dv; c++) {
            double acc = 0.0;
            for (int j = 0; j < sk; j++) {
                acc += (double)pr[j] * vh[j * dv + c];
            }
            o_err = fmax(o_err, fabs(out.o[(size_t)row * dv + c] - acc));
        }
    }
    report("probs rows sum to 1", sum_err, 1e-6);
    report("O = probs . V", o_err, 1e-6);
    outputs_free(&out);
    free(q);
    free(k);
    free(v);
}

/* Copies a packed BHSD tensor into the layout `s` describes. */
static float *relayout(const float *packed, const test_shape *s) {
    size_t n = test_shape_extent(s);
    float *out = test_alloc_sentinel(n * sizeof(float));
    const float *src = packed;
    for (int64_t b = 0; b < s->batch; b++) {
        for (int64_t h = 0; h < s->heads; h++) {
            for (int64_t i = 0; i < s->seq; i++, src += s->inner) {
                memcpy(out + at(&s->strides, b, h, i), src, (size_t)s->inner * sizeof(float));
            }
        }
    }
    return out;
}

/* Strides only move data: BSHD, HBSD and padded copies of the same tensors
 * must give bit-identical O, LSE and probs, and leave the gaps alone. */
static void layouts_agree(void) {
    const int b = 2, hq = 4, hkv = 2, sq = 5, sk = 8, d = 3, dv = 2;
    test_rng rng;
    test_rng_seed(&rng, 16);
    attn_params base;
    attn_params_init(&base, b, hq, sq, sk, d);
    base.heads_kv = hkv;
    base.head_dim_v = dv;
    base.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
    float *q = random_floats(&rng, (size_t)b * hq * sq * d, 1.0f);
    float *k = random_floats(&rng, (size_t)b * hkv * sk * d, 1.0f);
    float *v = random_floats(&rng, (size_t)b * hkv * sk * dv, 1.0f);
    outputs want = run(&base, q, k, v);

    const test_layout layouts[3] = {TEST_BSHD, TEST_HBSD, TEST_PADDED};
    for (int l = 0; l < 3; l++) {
        attn_params p = base;
        test_set_layout(&p, layouts[l]);
        attn_params r;
        test_resolve(&p, &r);
        test_shape qs = test_tensor_shape(&r, TEST_Q), ks = test_tensor_shape(&r, TEST_K);
        test_shape vs = test_tensor_shape(&r, TEST_V), os = test_tensor_shape(&r, TEST_O);
        test_shape ls = test_tensor_shape(&r, TEST_LSE);
        float *lq = relayout(q, &qs), *lk = relayout(k, &ks), *lv = relayout(v, &vs);
        outputs got = run(&p, lq, lk, lv);
        size_t differ = 0, gaps = 0;
        test_shape packed_o = test_tensor_shape(&want.r, TEST_O);
        test_shape packed_l = test_tensor_shape(&want.r, TEST_LSE);
        unsigned char *o_cov = calloc(got.o_elems, 1), *l_cov = calloc(got.lse_elems, 1);
        for (int64_t bb = 0; bb < b; bb++) {
            for (int64_t hh = 0; hh < hq; hh++) {
                for (int64_t i = 0; i < sq; i++) {
                    size_t go = at(&os.strides, bb, hh, i), wo = at(&packed_o.strides, bb, hh, i);
                    differ += memcmp(got.o + go, want.o + wo, dv * sizeof(float)) != 0;
                    memset(o_cov + go, 1, dv);
                    size_t gl = at(&ls.strides, bb, hh, i), wl = at(&packed_l.strides, bb, hh, i);
                    differ += memcmp(got.lse + gl, want.lse + wl, sizeof(float)) != 0;
                    l_cov[gl] = 1;
                }
            }
        }
        differ += memcmp(got.probs, want.probs, want.probs_elems * sizeof(float)) != 0;
        for (size_t e = 0; e < got.o_elems; e++) {
            gaps += !o_cov[e] && !test_is_sentinel(got.o + e, sizeof(float));
        }
        for (size_t e = 0; e < got.lse_elems; e++) {
            gaps += !l_cov[e] && !test_is_sentinel(got.lse + e, sizeof(float));
        }
        char name[96];
        snprintf(name, sizeof name, "%s == bhsd, GQA %d/%d (rows differing)",
                 test_layout_name(layouts[l]), hq, hkv);
        report(name, (double)differ, 0.0);
        snprintf(name, sizeof name, "%s: elements outside the tensors untouched",
                 test_layout_name(layouts[l]));
        report(name, (double)gaps, 0.0);
        free(o_cov);
        free(l_cov);
        free(lq);
        free(lk);
        free(lv);
        outputs_free(&got);
    }
    outputs_free(&want);
    free(q);
    free(k);
    free(v);
}

/* Grouped-query attention is ordinary attention with each K/V head repeated
 * for the query heads of its group. */
static void gqa_expands(void) {
    const int b = 2, hq = 6, hkv = 2, s = 7, d = 4, group = hq / hkv;
    test_rng rng;
    test_rng_seed(&rng, 17);
    attn_params p;
    attn_params_init(&p, b, hq, s, s, d);
    p.heads_kv = hkv;
    p.mask = ATTN_MASK_CAUSAL_TOP_LEFT;
    size_t head = (size_t)s * d;
    float *q = random_floats(&rng, b * hq * head, 1.0f);
    float *k = random_floats(&rng, b * hkv * head, 1.0f);
    float *v = random_floats(&rng, b * hkv * head, 1.0f);
    float *k_full = test_alloc_sentinel(b * hq * head * sizeof(float));
    float *v_full = test_alloc_sentinel(b * hq * head * sizeof(float));
    for (int bb = 0; bb < b; bb++) {
        for (int h = 0; h < hq; h++) {
            size_t src = ((size_t)bb * hkv + h / group) * head, dst = ((size_t)bb * hq + h) * head;
            memcpy(k_full + dst, k + src, head * sizeof(float));
            memcpy(v_full + dst, v + src, head * sizeof(float));
        }
    }
    outputs grouped = run(&p, q, k, v);
    p.heads_kv = 0; /* default: as many as heads_q */
    outputs full = run(&p, q, k_full, v_full);
    size_t n = b * hq * head;
    report("GQA 6/2 == K/V heads repeated by hand (bytes differ)",
           (double)(memcmp(grouped.o, full.o, n * sizeof(float)) != 0 ||
                    memcmp(grouped.lse, full.lse, (size_t)b * hq * s * sizeof(float)) != 0),
           0.0);
    outputs_free(&grouped);
    outputs_free(&full);
    free(q);
    free(k);
    free(v);
    free(k_full);
    free(v_full);
}

/* scale 0 means 1/sqrt(head_dim), and the scale multiplies the scores. */
static void scale_default(void) {
    const int s = 4, d = 9;
    test_rng rng;
    test_rng_seed(&rng, 18);
    float *q = random_floats(&rng, (size_t)s * d, 1.0f);
    float *k = random_floats(&rng, (size_t)s * d, 1.0f);
    float *v = random_floats(&rng, (size_t)s * d, 1.0f);
    attn_params p;
    attn_params_init(&p, 1, 1, s, s, d);
    outputs def = run(&p, q, k, v);
    p.scale = (float)(1.0 / 3.0);
    outputs expl = run(&p, q, k, v);
    report("scale 0 == 1/sqrt(head_dim) (bytes differ)",
           (double)(memcmp(def.o, expl.o, (size_t)s * d * sizeof(float)) != 0), 0.0);
    /* Doubling the scale is the same as doubling Q. */
    p.scale = (float)(2.0 / 3.0);
    outputs twice = run(&p, q, k, v);
    for (int i = 0; i < s * d; i++) {
        q[i] *= 2.0f;
    }
    p.scale = (float)(1.0 / 3.0);
    outputs q2 = run(&p, q, k, v);
    double err = 0.0;
    for (int i = 0; i < s * d; i++) {
        err = fmax(err, fabs(twice.o[i] - q2.o[i]));
    }
    report("scale 2/3 == scale 1/3 with Q doubled", err, 1e-7);
    outputs_free(&def);
    outputs_free(&expl);
    outputs_free(&twice);
    outputs_free(&q2);
    free(q);
    free(k);
    free(v);
}

/* Logits in the thousands must not overflow: the max is subtracted first. */
static void large_logits(void) {
    const int s = 33, d = 16;
    test_rng rng;
    test_rng_seed(&rng, 19);
    float *q = random_floats(&rng, (size_t)s * d, 30.0f);
    float *k = random_floats(&rng, (size_t)s * d, 30.0f);
    float *v = random_floats(&rng, (size_t)s * d, 1.0f);
    attn_params p;
    attn_params_init(&p, 1, 1, s, s, d);
    outputs out = run(&p, q, k, v);
    size_t bad = 0;
    double max_lse = 0.0;
    for (int i = 0; i < s * d; i++) {
        bad += !isfinite(out.o[i]) || fabsf(out.o[i]) > 1.0f;
    }
    for (int i = 0; i < s; i++) {
        bad += !isfinite(out.lse[i]);
        max_lse = fmax(max_lse, out.lse[i]);
    }
    char name[96];
    snprintf(name, sizeof name, "Q, K x30 (LSE up to %.0f): non-finite or |O| > 1", max_lse);
    report(name, (double)bad, 0.0);
    outputs_free(&out);
    free(q);
    free(k);
    free(v);
}

/* The naive fp32 attention sets every device bound, so it must itself be
 * close to the reference; and the reference answers probabilities whatever
 * algorithm the parameters name. */
static void naive_agrees(void) {
    test_rng rng;
    test_rng_seed(&rng, 20);
    attn_params p;
    attn_params_init(&p, 2, 4, 31, 45, 24);
    p.heads_kv = 2;
    p.head_dim_v = 12;
    p.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
    p.algo = ATTN_ALGO_FUSED;
    test_set_layout(&p, TEST_PADDED);
    test_problem t;
    if (test_problem_init(&t, &p, 21, 1.0f, 1, 1) != 0) {
        failures++;
        return;
    }
    test_result ro = test_compare(&t.o_shape, t.naive_o, t.ref_o, t.ref_o, 0);
    test_result rl = test_compare(&t.lse_shape, t.naive_lse, t.ref_lse, t.ref_lse, 0);
    test_result rp = test_compare(&t.probs_shape, t.naive_probs, t.ref_probs, t.ref_probs, 0);
    report("naive fp32 vs reference: O (padded, GQA, probs, FUSED named)", ro.max_err, 1e-5);
    report("naive fp32 vs reference: LSE", rl.max_err, 1e-5);
    report("naive fp32 vs reference: probs", rp.max_err, 1e-6);
    test_problem_free(&t);
}

/* The reference validates like the library: a few statuses here, the rest
 * in test_bad_input. */
static void rejects(void) {
    float x[64] = {0};
    float o[64];
    attn_params p;
    attn_params_init(&p, 1, 4, 2, 2, 4);
    memset(o, TEST_SENTINEL_BYTE, sizeof o);
    attn_status st = attn_reference(&p, x, NULL, x, o, NULL, NULL);
    report("reference: NULL k -> ATTN_ERR_NULL_ARGUMENT, O untouched",
           (double)(st != ATTN_ERR_NULL_ARGUMENT || !test_is_sentinel(o, sizeof o) ||
                    !*attn_last_error(NULL)),
           0.0);
    p.heads_kv = 3;
    st = attn_reference(&p, x, x, x, o, NULL, NULL);
    report("reference: heads_kv 3 of 4 -> ATTN_ERR_INVALID_SIZE, O untouched",
           (double)(st != ATTN_ERR_INVALID_SIZE || !test_is_sentinel(o, sizeof o)), 0.0);
    p.heads_kv = 0;
    p.head_dim = ATTN_MAX_HEAD_DIM + 1;
    st = attn_reference(&p, x, x, x, o, NULL, NULL);
    report("reference: head_dim ATTN_MAX_HEAD_DIM + 1 -> ATTN_ERR_UNSUPPORTED_HEAD_DIM",
           (double)(st != ATTN_ERR_UNSUPPORTED_HEAD_DIM || !test_is_sentinel(o, sizeof o)), 0.0);
}

int main(void) {
    uniform_scores();
    two_keys();
    dominant_key();
    causal_first_row();
    const attn_mask masks[3] = {ATTN_MASK_NONE, ATTN_MASK_CAUSAL_TOP_LEFT,
                                ATTN_MASK_CAUSAL_BOTTOM_RIGHT};
    const int shapes[3][2] = {{5, 11}, {11, 5}, {6, 6}};
    for (int m = 0; m < 3; m++) {
        for (int s = 0; s < 3; s++) {
            mask_pattern(shapes[s][0], shapes[s][1], masks[m]);
        }
    }
    alignments_agree();
    probs_consistent();
    layouts_agree();
    gqa_expands();
    scale_default();
    large_logits();
    naive_agrees();
    rejects();
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
