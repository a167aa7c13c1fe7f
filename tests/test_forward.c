/* attn_forward against attn_reference on one algorithm (argv[1]:
 * "three-kernel" or "fused"; ATTN_CL_TUNE picks the fused kernel variant),
 * over a covering set of shapes rather than their full product: every
 * length {1, 2, 7, 64, 100, 128, 257, 1000}, every head dim {1, 8, 16, 31,
 * 32, 64, 80, 96, 128, 256}, every mask, Sq < Sk and Sq > Sk, batch and
 * heads > 1, GQA/MQA, head_dim_v != head_dim, each layout, LSE and (on the
 * three-kernel path, the one that makes them) probabilities, large logits,
 * and the head-chunked path (ATTN_CL_SCRATCH_LIMIT).
 *
 * Bound (see test_util.h): max|out - ref| <= 2 * max|naive_fp32 - ref| + atol,
 * atol = 1e-6 * max(1, max|ref|); NMSE <= 4 * NMSE(naive_fp32) + 1e-10; for
 * O, LSE and probabilities alike. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NONE ATTN_MASK_NONE
#define TL ATTN_MASK_CAUSAL_TOP_LEFT
#define BR ATTN_MASK_CAUSAL_BOTTOM_RIGHT

typedef struct sweep_case {
    int32_t batch, heads_q, heads_kv, seq_q, seq_k, head_dim, head_dim_v;
    attn_mask mask;
    test_layout layout;
    float qk_range; /* Q and K drawn from [-qk_range, qk_range) */
    float scale;    /* 0: the default */
    int lse, probs;
    int quick; /* also in the ATTN_TEST_QUICK subset: all D16 bottom-right, so
                  that memcheck builds one kernel set (LLVM under valgrind is slow) */
} sweep_case;

/* clang-format off */
static const sweep_case cases[] = {
    /* B  Hq Hkv   Sq    Sk    D  Dv  mask  layout     qk   scale lse probs quick */
    /* Every length with Sq == Sk; each head dim at least once. */
    {1, 1, 1,    1,    1,   1,  0, NONE, TEST_BHSD,   1, 0,    1, 1, 0},
    {1, 1, 1,    2,    2,   8,  0, TL,   TEST_BHSD,   1, 0,    1, 1, 0},
    {1, 2, 2,    7,    7,  16,  0, BR,   TEST_BHSD,   1, 0,    1, 1, 1},
    {2, 2, 2,   64,   64,  32,  0, NONE, TEST_BHSD,   1, 0,    1, 1, 0},
    {2, 3, 3,  100,  100,  31,  0, TL,   TEST_BSHD,   1, 0,    1, 1, 0},
    {1, 4, 2,  128,  128,  64,  0, BR,   TEST_BHSD,   1, 0,    1, 0, 0},
    {1, 2, 2,  257,  257,  80,  0, TL,   TEST_PADDED, 1, 0,    1, 0, 0},
    {1, 1, 1,  128,  128, 256,  0, NONE, TEST_BHSD,   1, 0,    0, 1, 0},
    {1, 1, 1, 1000, 1000,  64,  0, TL,   TEST_BHSD,   1, 0,    1, 0, 0},
    {1, 1, 1, 1000, 1000, 128,  0, NONE, TEST_BSHD,   1, 0,    1, 0, 0},
    {2, 2, 1,    1,    1,  32,  0, TL,   TEST_BHSD,   1, 0,    1, 1, 0},
    {2, 2, 2, 1000, 1000,  32,  0, BR,   TEST_PADDED, 1, 0,    1, 0, 0},
    {1, 1, 1, 1000, 1000, 256,  0, NONE, TEST_BHSD,   1, 0,    1, 0, 0},
    /* Sq < Sk and Sq > Sk under each mask (bottom-right with Sq > Sk masks
     * whole rows: O 0, LSE -inf). */
    {1, 2, 2,    7,  100,  31,  0, TL,   TEST_BHSD,   1, 0,    1, 1, 0},
    {1, 2, 2,    7,  100,  31,  0, BR,   TEST_BHSD,   1, 0,    1, 1, 0},
    {1, 2, 2,  100,    7,   8,  0, TL,   TEST_BHSD,   1, 0,    1, 1, 0},
    {1, 2, 2,  100,    7,   8,  0, BR,   TEST_BHSD,   1, 0,    1, 1, 0},
    {1, 1, 1,    2,    7,   8,  0, BR,   TEST_BHSD,   1, 0,    1, 1, 0},
    {1, 1, 1,    7,    2,  16,  0, BR,   TEST_PADDED, 1, 0,    1, 1, 1},
    {2, 2, 2,   64,  257,  96,  0, NONE, TEST_HBSD,   1, 0,    1, 1, 0},
    {1, 2, 2,  257,   64,  96,  0, BR,   TEST_BHSD,   1, 0,    1, 1, 0},
    {1, 1, 1, 1000,    7,  16,  0, BR,   TEST_BHSD,   1, 0,    1, 0, 0},
    {1, 1, 1,    2, 1000,   8,  0, TL,   TEST_BHSD,   1, 0,    1, 1, 0},
    {1, 2, 2,   64,  257, 256,  0, TL,   TEST_BHSD,   1, 0,    1, 0, 0},
    {1, 2, 1, 1000,  257,  96,  0, TL,   TEST_BSHD,   1, 0,    1, 1, 0},
    /* Decoding: one query, a long KV cache, grouped heads. */
    {1, 8, 2,    1, 1000, 128,  0, BR,   TEST_BSHD,   1, 0,    1, 1, 0},
    {3, 4, 1,    1,  100,  64,  0, NONE, TEST_BHSD,   1, 0,    1, 0, 0},
    /* Batch and heads > 1 with GQA and MQA in every layout. */
    {2, 4, 1,  257,   64,  32,  0, NONE, TEST_HBSD,   1, 0,    1, 0, 0},
    {2, 6, 3,  100,  128,  80,  0, TL,   TEST_BSHD,   1, 0,    1, 0, 0},
    {2, 4, 2,    7,    7,  31,  0, BR,   TEST_PADDED, 1, 0,    1, 1, 0},
    {3, 2, 1,   64,    2,   1,  0, NONE, TEST_BSHD,   1, 0,    1, 1, 0},
    /* head_dim_v != head_dim, both ways. */
    {1, 2, 2,   64,  100,  64, 32, NONE, TEST_BHSD,   1, 0,    1, 0, 0},
    {2, 2, 1,  100,   64,  16, 128, BR,  TEST_BSHD,   1, 0,    1, 1, 0},
    {1, 1, 1,  257,  128,  80, 96, TL,   TEST_PADDED, 1, 0,    1, 0, 0},
    {1, 2, 2,    2,    7,   1,  8, NONE, TEST_BHSD,   1, 0,    1, 1, 0},
    {1, 1, 1,    7,    2, 256,  1, BR,   TEST_BHSD,   1, 0,    1, 1, 0},
    {1, 2, 1,  128,   64,   8, 256, TL,  TEST_HBSD,   1, 0,    1, 0, 0},
    /* The remaining (head dim, mask) pairs, so every head dim meets every
     * mask, on odd lengths. */
    {1, 2, 2,   33,   65,   1,  0, TL,   TEST_BHSD,   1, 0,    1, 0, 0},
    {1, 2, 2,   65,   33,   1,  0, BR,   TEST_BSHD,   1, 0,    1, 0, 0},
    {2, 2, 1,   33,   33,   8,  0, NONE, TEST_PADDED, 1, 0,    1, 0, 0},
    {1, 3, 3,   65,   65,  16, 16, TL,   TEST_HBSD,   1, 0,    1, 0, 0},
    {1, 2, 2,   17,   70,  31,  0, NONE, TEST_BHSD,   1, 0,    1, 1, 0},
    {1, 2, 1,   70,   17,  80,  0, NONE, TEST_BSHD,   1, 0,    1, 0, 0},
    {1, 2, 2,   70,   70,  80,  0, BR,   TEST_BHSD,   1, 0,    1, 0, 0},
    {1, 2, 2,   33,   65, 128,  0, TL,   TEST_PADDED, 1, 0,    1, 0, 0},
    {1, 1, 1,   65,   33,  32, 256, BR,  TEST_BHSD,   1, 0,    1, 0, 0},
    /* An explicit scale, negative too. */
    {1, 2, 2,   64,   64,  32,  0, TL,   TEST_BHSD,   1, 0.5f, 1, 1, 0},
    {1, 1, 1,  100,  100,  16,  0, NONE, TEST_BHSD,   1, -2.0f, 1, 1, 0},
    /* Large logits: Q and K scaled by 30, scores in the thousands. */
    {1, 2, 2,  128,  128,  64,  0, NONE, TEST_BHSD,  30, 0,    1, 1, 0},
    {1, 1, 1,  100,  257,  32,  0, BR,   TEST_BSHD,  30, 0,    1, 1, 0},
    {1, 1, 1,    7,    7,   8,  0, TL,   TEST_BHSD,  30, 0,    1, 1, 0},
    {1, 1, 1, 1000, 1000,  64,  0, TL,   TEST_BHSD,  30, 0,    1, 0, 0},
};
/* clang-format on */

static int failures;
static attn_algo algo;

/* Runs one request against its reference; prints one line. `label` prefixes
 * the line (e.g. the scratch limit). */
static void run_case(attn_context_t ctx, const sweep_case *c, uint64_t seed, const char *label) {
    attn_params p;
    attn_params_init(&p, c->batch, c->heads_q, c->seq_q, c->seq_k, c->head_dim);
    p.heads_kv = c->heads_kv;
    p.head_dim_v = c->head_dim_v;
    p.mask = c->mask;
    p.scale = c->scale;
    p.algo = algo;
    test_set_layout(&p, c->layout);
    const int want_probs = c->probs && test_sweep_probs();

    char desc[128];
    test_describe(desc, sizeof desc, &p, c->layout);
    if (c->qk_range != 1.0f || c->scale != 0.0f) {
        size_t n = strlen(desc);
        snprintf(desc + n, sizeof desc - n, " qk*%g scale %g", (double)c->qk_range,
                 (double)c->scale);
    }

    test_problem t;
    if (test_problem_init(&t, &p, seed, c->qk_range, c->lse, want_probs) != 0) {
        printf("%s%s FAIL (reference)\n", label, desc);
        failures++;
        return;
    }
    float *o = test_alloc_sentinel(t.o_elems * sizeof(float));
    float *lse = c->lse ? test_alloc_sentinel(t.lse_elems * sizeof(float)) : NULL;
    float *probs = want_probs ? test_alloc_sentinel(t.probs_elems * sizeof(float)) : NULL;

    double start = test_seconds();
    attn_status st = attn_forward(ctx, &p, t.q, t.k, t.v, o, lse, probs);
    double ms = 1e3 * (test_seconds() - start);

    int ok = st == ATTN_SUCCESS;
    char line[512];
    if (!ok) {
        snprintf(line, sizeof line, "%s: %s", attn_status_name(st), attn_last_error(ctx));
    } else {
        test_result r = test_compare(&t.o_shape, o, t.ref_o, t.naive_o, t.o_elems);
        ok &= r.ok;
        int n = 0;
        char part[160];
        test_format_result(part, sizeof part, "O", &r);
        n += snprintf(line + n, sizeof line - (size_t)n, "%s", part);
        if (lse) {
            r = test_compare(&t.lse_shape, lse, t.ref_lse, t.naive_lse, t.lse_elems);
            ok &= r.ok;
            test_format_result(part, sizeof part, "LSE", &r);
            n += snprintf(line + n, sizeof line - (size_t)n, " | %s", part);
        }
        if (probs) {
            r = test_compare(&t.probs_shape, probs, t.ref_probs, t.naive_probs, t.probs_elems);
            ok &= r.ok;
            test_format_result(part, sizeof part, "P", &r);
            snprintf(line + n, sizeof line - (size_t)n, " | %s", part);
        }
    }
    printf("%s%-58s %7.1f ms  %s  %s\n", label, desc, ms, line, ok ? "PASS" : "FAIL");
    fflush(stdout);
    failures += !ok;
    free(o);
    free(lse);
    free(probs);
    test_problem_free(&t);
}

static void set_scratch_limit(size_t bytes) {
    char value[32];
    snprintf(value, sizeof value, "%zu", bytes);
    setenv("ATTN_CL_SCRATCH_LIMIT", value, 1);
}

/* ATTN_CL_SCRATCH_LIMIT caps the score scratch, so the heads go through in
 * chunks; results must not change. A cap below one head's scores must fail
 * with ATTN_ERR_DEVICE_OUT_OF_MEMORY and write nothing. */
static void chunked(attn_context_t ctx) {
    const sweep_case c = {2, 8, 2, 64, 100, 16, 0, BR, TEST_BSHD, 1, 0, 1, 1, 1};
    const size_t head_bytes = (size_t)c.seq_q * (size_t)c.seq_k * sizeof(float);
    const size_t limits[3] = {head_bytes, 3 * head_bytes + head_bytes / 2, 7 * head_bytes};
    /* Under memcheck one chunked run is enough to walk the loop. */
    for (int i = test_quick() ? 1 : 0; i < (test_quick() ? 2 : 3); i++) {
        set_scratch_limit(limits[i]);
        char label[64];
        snprintf(label, sizeof label, "[scratch %zu heads] ", limits[i] / head_bytes);
        run_case(ctx, &c, 1000 + (uint64_t)i, label);
    }

    set_scratch_limit(head_bytes - 1);
    attn_params p;
    attn_params_init(&p, c.batch, c.heads_q, c.seq_q, c.seq_k, c.head_dim);
    p.heads_kv = c.heads_kv;
    p.mask = c.mask;
    p.algo = algo;
    test_problem t;
    if (test_problem_init(&t, &p, 1003, 1.0f, 1, 1) != 0) {
        failures++;
        unsetenv("ATTN_CL_SCRATCH_LIMIT");
        return;
    }
    float *o = test_alloc_sentinel(t.o_elems * sizeof(float));
    float *lse = test_alloc_sentinel(t.lse_elems * sizeof(float));
    float *probs = test_alloc_sentinel(t.probs_elems * sizeof(float));
    attn_status st = attn_forward(ctx, &p, t.q, t.k, t.v, o, lse, probs);
    int untouched = test_is_sentinel(o, t.o_elems * sizeof(float)) &&
                    test_is_sentinel(lse, t.lse_elems * sizeof(float)) &&
                    test_is_sentinel(probs, t.probs_elems * sizeof(float));
    attn_algo algo = ATTN_ALGO_AUTO;
    attn_status checked = attn_check(ctx, &p, 1, 1, &algo);
    int ok = st == ATTN_ERR_DEVICE_OUT_OF_MEMORY && untouched && *attn_last_error(ctx) &&
             checked == ATTN_ERR_DEVICE_OUT_OF_MEMORY;
    printf("[scratch %zu bytes < one head] forward -> %s, attn_check -> %s, outputs %s  %s\n",
           head_bytes - 1, attn_status_name(st), attn_status_name(checked),
           untouched ? "untouched" : "WRITTEN", ok ? "PASS" : "FAIL");
    failures += !ok;
    free(o);
    free(lse);
    free(probs);
    test_problem_free(&t);
    unsetenv("ATTN_CL_SCRATCH_LIMIT");
}

/* A subset of the probabilities (params.probs_*): the wanted heads' wanted
 * rows, packed, against the same elements of the full reference; and
 * subsets out of range, empty or reversed refused with
 * ATTN_ERR_INVALID_VALUE, every output untouched. */
typedef struct subset_case {
    int32_t heads_begin, heads_end, rows_begin, rows_end; /* as params takes them */
} subset_case;

static void subset_run(attn_context_t ctx, const test_problem *t, const subset_case *s,
                       const char *label) {
    attn_params p = t->p;
    p.probs_heads_begin = s->heads_begin;
    p.probs_heads_end = s->heads_end;
    p.probs_rows_begin = s->rows_begin;
    p.probs_rows_end = s->rows_end;
    const int64_t h0 = s->heads_begin, r0 = s->rows_begin;
    const int64_t nh = (s->heads_end ? s->heads_end : t->r.heads_q) - h0;
    const int64_t nr = (s->rows_end ? s->rows_end : t->r.seq_q) - r0;
    const int64_t sk = t->r.seq_k, batch = t->r.batch;
    const size_t elems = (size_t)(batch * nh * nr * sk);
    void *o = test_alloc_output(t);
    float *probs = test_alloc_sentinel(elems * sizeof(float));
    float *ref = malloc(elems * sizeof(float)), *naive = malloc(elems * sizeof(float));
    /* The subset of the full reference, in the subset's packed layout. */
    for (int64_t b = 0; b < batch; b++)
        for (int64_t h = 0; h < nh; h++)
            for (int64_t i = 0; i < nr; i++) {
                const size_t from = test_element_at(&t->probs_shape, b, h0 + h, r0 + i, 0);
                const size_t to = (size_t)(((b * nh + h) * nr + i) * sk);
                memcpy(ref + to, t->ref_probs + from, (size_t)sk * sizeof(float));
                memcpy(naive + to, t->naive_probs + from, (size_t)sk * sizeof(float));
            }
    const test_shape shape = {batch, nh, nr, sk, {nh * nr * sk, nr * sk, sk}};
    attn_algo used = ATTN_ALGO_AUTO;
    attn_status st = attn_check(ctx, &p, 0, 1, &used);
    const attn_host_tensors h = test_host_tensors(t, o, NULL, probs);
    if (st == ATTN_SUCCESS)
        st = attn_forward_host(ctx, &p, &h);
    int ok = st == ATTN_SUCCESS;
    char line[300];
    if (!ok) {
        snprintf(line, sizeof line, "%s: %s", attn_status_name(st), attn_last_error(ctx));
    } else {
        test_result r = test_compare(&shape, probs, ref, naive, elems);
        test_result ro = test_compare_output(t, o);
        ok = r.ok && ro.ok && used == algo;
        test_format_result(line, sizeof line, "P", &r);
    }
    printf("[probs heads %d..%d rows %d..%d] %s  %s  %s\n", s->heads_begin, s->heads_end,
           s->rows_begin, s->rows_end, label, line, ok ? "PASS" : "FAIL");
    failures += !ok;
    free(o);
    free(probs);
    free(ref);
    free(naive);
}

static void subsets_of(attn_context_t ctx, const char *text, uint64_t seed, int with_bad) {
    attn_params p;
    test_layout layout;
    float qk;
    int quick;
    if (!test_parse_case(text, &p, &layout, &qk, &quick)) {
        failures++;
        return;
    }
    p.algo = algo;
    if (p.varlen)
        test_varlen_totals(&p, seed);
    test_set_layout(&p, layout);
    test_problem t;
    if (test_problem_init(&t, &p, seed, qk, 0, 1) != 0) {
        failures++;
        return;
    }
    const int32_t rows = t.r.seq_q;
    const subset_case good[] = {
        {0, 0, 0, 0},           /* all */
        {1, 3, rows - 16, 0},   /* two heads, the last 16 rows */
        {3, 4, rows - 1, rows}, /* one head, one row */
        {0, 0, 5, 12},          /* every head, rows inside */
        {2, 0, 0, 1},           /* the last heads, the first row */
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (test_quick() && i != 1)
            continue;
        subset_run(ctx, &t, &good[i], text);
    }
    if (!with_bad) {
        test_problem_free(&t);
        return;
    }
    const subset_case bad[] = {
        {0, 5, 0, 0},  /* heads past heads_q */
        {-1, 0, 0, 0}, /* negative */
        {2, 2, 0, 0},  /* empty */
        {3, 1, 0, 0},  /* reversed */
        {0, 0, 70, 0}, /* rows: empty at the end */
        {0, 0, 9, 4},  /* rows reversed */
        {0, 0, 0, 71}, /* rows past seq_q */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        attn_params q = t.p;
        q.probs_heads_begin = bad[i].heads_begin;
        q.probs_heads_end = bad[i].heads_end;
        q.probs_rows_begin = bad[i].rows_begin;
        q.probs_rows_end = bad[i].rows_end;
        float *o = test_alloc_sentinel(t.o_elems * sizeof(float));
        float *probs = test_alloc_sentinel(t.probs_elems * sizeof(float));
        attn_status st = attn_forward(ctx, &q, t.q, t.k, t.v, o, NULL, probs);
        const int untouched = test_is_sentinel(o, t.o_elems * sizeof(float)) &&
                              test_is_sentinel(probs, t.probs_elems * sizeof(float));
        /* Without probabilities the subset is not read. */
        attn_status without = attn_check(ctx, &q, 0, 0, NULL);
        const int ok = st == ATTN_ERR_INVALID_VALUE && untouched &&
                       strstr(attn_last_error(ctx), "probs_") && without == ATTN_SUCCESS;
        printf("[bad probs heads %d..%d rows %d..%d] -> %s (%s), without probabilities %s, "
               "outputs %s  %s\n",
               bad[i].heads_begin, bad[i].heads_end, bad[i].rows_begin, bad[i].rows_end,
               attn_status_name(st), attn_last_error(ctx), attn_status_name(without),
               untouched ? "untouched" : "WRITTEN", ok ? "PASS" : "FAIL");
        failures += !ok;
        free(o);
        free(probs);
    }
    test_problem_free(&t);
}

/* The problems subsets are taken of: plain, and with what a subset's rows
 * and keys meet (rows past a varlen sequence, a window, a keep-mask, ALiBi,
 * 16-bit storage); the bad ranges on the first. */
static const char *const subset_problems[] = {
    "B2 Hq4 Hkv2 Sq70 Sk90 D16 br bshd",
    "B3 Hq4 Hkv2 Sq40 Sk50 D16 br bshd f16 varlen win=9,3 keep=1x4 alibi",
};

static void subsets(attn_context_t ctx) {
    for (size_t i = 0; i < sizeof subset_problems / sizeof subset_problems[0]; i++)
        if (!test_quick() || i == 0)
            subsets_of(ctx, subset_problems[i], 2000 + i, i == 0);
}

int main(int argc, char **argv) {
    test_sweep_begin(argc, argv, &algo);
    unsetenv("ATTN_CL_SCRATCH_LIMIT");
    const int quick = test_quick();
    attn_context_t ctx = test_context_create();
    double start = test_seconds();
    int run = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (quick && !cases[i].quick) {
            continue;
        }
        run_case(ctx, &cases[i], 1 + i, "");
        run++;
    }
    if (test_sweep_probs()) {
        chunked(ctx);
        subsets(ctx);
    }
    attn_context_destroy(ctx);
    printf("%s: %d case(s)%s, %d failure(s), %.1f s\n", failures ? "FAIL" : "PASS", run,
           test_sweep_probs() ? " + chunking and subset checks" : "", failures,
           test_seconds() - start);
    return failures ? 1 : 0;
}
