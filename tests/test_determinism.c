/* Same inputs, same device, same kernels: the same bits. For each
 * algorithm (and each fused kernel variant) and several shapes, O, LSE and
 * (three-kernel) the probabilities must be identical byte for byte across
 *   - RUNS host calls on one context,
 *   - the device-memory call on that context,
 *   - a host call on a second context,
 *   - (three-kernel) a host call with the heads in one-head chunks
 *     (ATTN_CL_SCRATCH_LIMIT): chunking changes which launch computes a
 *     head, never how.
 * The shapes span many work-groups, so that the device's scheduling of
 * them varies from run to run. Nothing is compared with the reference
 * here: test_forward does that. */
#include "test_runs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RUNS 3

#define NONE ATTN_MASK_NONE
#define TL ATTN_MASK_CAUSAL_TOP_LEFT
#define BR ATTN_MASK_CAUSAL_BOTTOM_RIGHT

typedef struct shape {
    int32_t batch, heads_q, heads_kv, seq_q, seq_k, head_dim, head_dim_v;
    attn_mask mask;
    test_layout layout;
} shape;

/* clang-format off */
static const shape shapes[] = {
    /* B  Hq Hkv   Sq   Sk   D  Dv  mask  layout */
    {1, 4, 4,  257, 257,  64,  0, NONE, TEST_BHSD},
    {2, 4, 2,  100, 300,  32,  0, BR,   TEST_BSHD},
    {1, 2, 1,  300, 100,  80, 16, TL,   TEST_PADDED},
    {3, 2, 2,    1, 513, 128,  0, BR,   TEST_BHSD},
    {1, 3, 3,   65,  65,  31,  0, TL,   TEST_HBSD},
};
/* clang-format on */

typedef struct path {
    const char *name;
    attn_algo algo;
    const char *tuning; /* attn_context_set_tuning spec ("" = the table's) */
} path;

static const path paths[] = {
    {"three-kernel", ATTN_ALGO_THREE_KERNEL, ""},
    {"three-kernel gpu", ATTN_ALGO_THREE_KERNEL, "variant=gpu,rows=16,tile_k=32,wg=128"},
    {"fused (table entry)", ATTN_ALGO_FUSED, ""},
    {"fused cpu narrow", ATTN_ALGO_FUSED, "variant=cpu,rows=1,tile_k=4,wg=1,vec=4,unroll=4"},
    {"fused gpu", ATTN_ALGO_FUSED, "variant=gpu,rows=16,tile_k=32,wg=128"},
    {"fused gpu odd", ATTN_ALGO_FUSED, "variant=gpu,rows=4,tile_k=12,wg=12"},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static int failures;

/* Runs `t` and compares with `first` (or makes it the first); returns
 * whether it ran and matched, with why in `why`. */
static int same_as_first(attn_context_t ctx, const test_problem *t, test_call call, int probs,
                         test_outputs *first, char *why, size_t size) {
    test_outputs out;
    if (test_run_forward(ctx, t, call, 1, probs, &out, why, size) != ATTN_SUCCESS) {
        return 0;
    }
    if (!first->o) {
        *first = out;
        return 1;
    }
    /* The host call's probabilities have no device-call counterpart. */
    test_outputs a = *first, b = out;
    if (!a.probs || !b.probs) {
        a.probs = b.probs = NULL;
        a.probs_bytes = b.probs_bytes = 0;
    }
    const int same = test_outputs_equal(&a, &b);
    if (!same) {
        snprintf(why, size, "bits differ");
    }
    test_outputs_free(&out);
    return same;
}

static void check(const path *pa, const shape *s, size_t index, attn_context_t ctx,
                  attn_context_t other) {
    attn_params p;
    attn_params_init(&p, s->batch, s->heads_q, s->seq_q, s->seq_k, s->head_dim);
    p.heads_kv = s->heads_kv;
    p.head_dim_v = s->head_dim_v;
    p.mask = s->mask;
    p.algo = pa->algo;
    test_set_layout(&p, s->layout);
    const int probs = pa->algo == ATTN_ALGO_THREE_KERNEL;
    char what[200];
    test_describe(what, sizeof what, &p, s->layout);

    test_problem t;
    if (test_problem_init(&t, &p, 7000 + index, 1.0f, 1, probs) != 0) {
        printf("%-20s %-52s reference failed  FAIL\n", pa->name, what);
        failures++;
        return;
    }
    test_outputs first = {0};
    char why[300] = "";
    int ok = 1, compared = 0;
    const char *stage = "";
    for (int r = 0; r < RUNS && ok; r++, compared++) {
        stage = "host call again";
        ok = same_as_first(ctx, &t, TEST_CALL_HOST, probs, &first, why, sizeof why);
    }
    if (ok) {
        stage = "device-memory call";
        ok = same_as_first(ctx, &t, TEST_CALL_DEVICE, probs, &first, why, sizeof why);
        compared++;
    }
    if (ok) {
        stage = "second context";
        ok = same_as_first(other, &t, TEST_CALL_HOST, probs, &first, why, sizeof why);
        compared++;
    }
    if (ok && probs) {
        char limit[32];
        snprintf(limit, sizeof limit, "%zu", (size_t)s->seq_q * (size_t)s->seq_k * sizeof(float));
        setenv("ATTN_CL_SCRATCH_LIMIT", limit, 1);
        stage = "one-head chunks";
        ok = same_as_first(ctx, &t, TEST_CALL_HOST, probs, &first, why, sizeof why);
        unsetenv("ATTN_CL_SCRATCH_LIMIT");
        compared++;
    }
    char detail[400];
    if (ok) {
        snprintf(detail, sizeof detail, "%d results identical", compared);
    } else {
        snprintf(detail, sizeof detail, "%s: %s", stage, why);
    }
    printf("%-20s %-52s %s  %s\n", pa->name, what, detail, ok ? "PASS" : "FAIL");
    fflush(stdout);
    failures += !ok;
    test_outputs_free(&first);
    test_problem_free(&t);
}

int main(void) {
    unsetenv("ATTN_CL_TUNE"); /* each path sets its own spec */
    unsetenv("ATTN_CL_SCRATCH_LIMIT");
    attn_context_t ctx = test_context_create();
    attn_context_t other = NULL;
    if (!test_ok(NULL, attn_context_create(NULL, &other), "second attn_context_create")) {
        return 1;
    }
    for (size_t i = 0; i < COUNT(paths); i++) {
        if (!test_ok(ctx, attn_context_set_tuning(ctx, paths[i].tuning), "set_tuning") ||
            !test_ok(other, attn_context_set_tuning(other, paths[i].tuning), "set_tuning")) {
            failures++;
            continue;
        }
        for (size_t s = 0; s < COUNT(shapes); s++) {
            check(&paths[i], &shapes[s], s, ctx, other);
        }
    }
    attn_context_destroy(other);
    attn_context_destroy(ctx);
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
