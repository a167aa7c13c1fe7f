#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- Data ----------------------------------------------------------------- */

void test_rng_seed(test_rng *rng, uint64_t seed) {
    rng->state = seed;
}

/* splitmix64: tiny, seedable, and the same sequence on every platform. */
static uint64_t rng_next(test_rng *rng) {
    uint64_t z = (rng->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float test_rng_float(test_rng *rng, float lo, float hi) {
    double unit = (double)(rng_next(rng) >> 11) * 0x1.0p-53;
    return (float)(lo + (hi - lo) * unit);
}

void test_fill_uniform(test_rng *rng, float *data, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) {
        data[i] = test_rng_float(rng, lo, hi);
    }
}

void *test_alloc_sentinel(size_t bytes) {
    void *data = malloc(bytes ? bytes : 1);
    if (!data) {
        fprintf(stderr, "test: out of host memory (%zu bytes)\n", bytes);
        exit(1);
    }
    memset(data, TEST_SENTINEL_BYTE, bytes);
    return data;
}

int test_is_sentinel(const void *data, size_t bytes) {
    const unsigned char *c = data;
    for (size_t i = 0; i < bytes; i++) {
        if (c[i] != TEST_SENTINEL_BYTE) {
            return 0;
        }
    }
    return 1;
}

int test_quick(void) {
    const char *env = getenv("ATTN_TEST_QUICK");
    return env && *env && strcmp(env, "0") != 0;
}

double test_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- Layouts -------------------------------------------------------------- */

const char *test_layout_name(test_layout layout) {
    switch (layout) {
    case TEST_BHSD:
        return "bhsd";
    case TEST_BSHD:
        return "bshd";
    case TEST_HBSD:
        return "hbsd";
    case TEST_PADDED:
        return "padded";
    }
    return "?";
}

static attn_strides strides_for(test_layout layout, int64_t batch, int64_t heads, int64_t seq,
                                int64_t inner) {
    (void)batch;
    attn_strides s = {0, 0, 0};
    switch (layout) {
    case TEST_BHSD:
        break;
    case TEST_BSHD:
        s.head = inner;
        s.seq = heads * inner;
        s.batch = seq * heads * inner;
        break;
    case TEST_HBSD:
        s.seq = inner;
        s.batch = seq * inner;
        s.head = batch * seq * inner;
        break;
    case TEST_PADDED:
        s.seq = inner + 3;
        s.head = seq * s.seq + 5;
        s.batch = heads * s.head + 7;
        break;
    }
    return s;
}

void test_set_layout(attn_params *p, test_layout layout) {
    int64_t hkv = p->heads_kv ? p->heads_kv : p->heads_q;
    int64_t dv = p->head_dim_v ? p->head_dim_v : p->head_dim;
    p->q_strides = strides_for(layout, p->batch, p->heads_q, p->seq_q, p->head_dim);
    p->k_strides = strides_for(layout, p->batch, hkv, p->seq_k, p->head_dim);
    p->v_strides = strides_for(layout, p->batch, hkv, p->seq_k, dv);
    p->o_strides = strides_for(layout, p->batch, p->heads_q, p->seq_q, dv);
    p->lse_strides = strides_for(layout, p->batch, p->heads_q, p->seq_q, 1);
}

static void resolve_strides(attn_strides *s, int64_t heads, int64_t seq, int64_t inner) {
    if (s->batch == 0 && s->head == 0 && s->seq == 0) {
        s->seq = inner;
        s->head = seq * inner;
        s->batch = heads * seq * inner;
    }
}

void test_resolve(const attn_params *p, attn_params *r) {
    *r = *p;
    if (r->heads_kv == 0) {
        r->heads_kv = r->heads_q;
    }
    if (r->head_dim_v == 0) {
        r->head_dim_v = r->head_dim;
    }
    if (r->scale == 0.0f) {
        r->scale = (float)(1.0 / sqrt((double)r->head_dim));
    }
    resolve_strides(&r->q_strides, r->heads_q, r->seq_q, r->head_dim);
    resolve_strides(&r->k_strides, r->heads_kv, r->seq_k, r->head_dim);
    resolve_strides(&r->v_strides, r->heads_kv, r->seq_k, r->head_dim_v);
    resolve_strides(&r->o_strides, r->heads_q, r->seq_q, r->head_dim_v);
    resolve_strides(&r->lse_strides, r->heads_q, r->seq_q, 1);
}

test_shape test_tensor_shape(const attn_params *r, test_tensor which) {
    test_shape s = {r->batch, r->heads_q, r->seq_q, r->head_dim, r->q_strides};
    switch (which) {
    case TEST_Q:
        break;
    case TEST_K:
        s = (test_shape){r->batch, r->heads_kv, r->seq_k, r->head_dim, r->k_strides};
        break;
    case TEST_V:
        s = (test_shape){r->batch, r->heads_kv, r->seq_k, r->head_dim_v, r->v_strides};
        break;
    case TEST_O:
        s = (test_shape){r->batch, r->heads_q, r->seq_q, r->head_dim_v, r->o_strides};
        break;
    case TEST_LSE:
        s = (test_shape){r->batch, r->heads_q, r->seq_q, 1, r->lse_strides};
        break;
    case TEST_PROBS: {
        int64_t row = r->seq_k;
        attn_strides st = {r->heads_q * r->seq_q * row, r->seq_q * row, row};
        s = (test_shape){r->batch, r->heads_q, r->seq_q, r->seq_k, st};
        break;
    }
    }
    return s;
}

size_t test_shape_extent(const test_shape *s) {
    return (size_t)((s->batch - 1) * s->strides.batch + (s->heads - 1) * s->strides.head +
                    (s->seq - 1) * s->strides.seq + s->inner);
}

static size_t element_at(const test_shape *s, int64_t b, int64_t h, int64_t i, int64_t d) {
    return (size_t)(b * s->strides.batch + h * s->strides.head + i * s->strides.seq + d);
}

/* ---- Naive fp32 attention --------------------------------------------------- */

static int visible(const attn_params *r, int64_t i, int64_t j) {
    if (r->mask == ATTN_MASK_CAUSAL_TOP_LEFT) {
        return j <= i;
    }
    if (r->mask == ATTN_MASK_CAUSAL_BOTTOM_RIGHT) {
        return j <= i + r->seq_k - r->seq_q;
    }
    return 1;
}

void test_naive_fp32(const attn_params *r, const float *q, const float *k, const float *v, float *o,
                     float *lse, float *probs) {
    test_shape qs = test_tensor_shape(r, TEST_Q), ks = test_tensor_shape(r, TEST_K);
    test_shape vs = test_tensor_shape(r, TEST_V), os = test_tensor_shape(r, TEST_O);
    test_shape ls = test_tensor_shape(r, TEST_LSE), ps = test_tensor_shape(r, TEST_PROBS);
    float *s = malloc((size_t)r->seq_k * sizeof *s);
    float *acc = malloc((size_t)r->head_dim_v * sizeof *acc);
    if (!s || !acc) {
        fprintf(stderr, "test: out of host memory\n");
        exit(1);
    }
    const int64_t group = r->heads_q / r->heads_kv;
    for (int64_t b = 0; b < r->batch; b++) {
        for (int64_t h = 0; h < r->heads_q; h++) {
            const int64_t g = h / group;
            for (int64_t i = 0; i < r->seq_q; i++) {
                const float *qr = q + element_at(&qs, b, h, i, 0);
                float max = -INFINITY;
                for (int64_t j = 0; j < r->seq_k; j++) {
                    s[j] = -INFINITY;
                    if (!visible(r, i, j)) {
                        continue;
                    }
                    const float *kr = k + element_at(&ks, b, g, j, 0);
                    float dot = 0.0f;
                    for (int64_t d = 0; d < r->head_dim; d++) {
                        dot += qr[d] * kr[d];
                    }
                    s[j] = r->scale * dot;
                    max = fmaxf(max, s[j]);
                }
                float sum = 0.0f;
                for (int64_t d = 0; d < r->head_dim_v; d++) {
                    acc[d] = 0.0f;
                }
                for (int64_t j = 0; j < r->seq_k; j++) {
                    s[j] = s[j] == -INFINITY ? 0.0f : expf(s[j] - max);
                    sum += s[j];
                    const float *vr = v + element_at(&vs, b, g, j, 0);
                    for (int64_t d = 0; d < r->head_dim_v; d++) {
                        acc[d] += s[j] * vr[d];
                    }
                }
                float *orow = o + element_at(&os, b, h, i, 0);
                for (int64_t d = 0; d < r->head_dim_v; d++) {
                    orow[d] = sum > 0.0f ? acc[d] / sum : 0.0f;
                }
                if (lse) {
                    lse[element_at(&ls, b, h, i, 0)] = sum > 0.0f ? max + logf(sum) : -INFINITY;
                }
                if (probs) {
                    float *prow = probs + element_at(&ps, b, h, i, 0);
                    for (int64_t j = 0; j < r->seq_k; j++) {
                        prow[j] = sum > 0.0f ? s[j] / sum : 0.0f;
                    }
                }
            }
        }
    }
    free(s);
    free(acc);
}

/* ---- Comparison --------------------------------------------------------------- */

test_result test_compare(const test_shape *s, const float *out, const float *ref,
                         const float *naive, size_t buffer_elems) {
    test_result r = {0};
    double naive_max = 0.0, ref_max = 0.0, err2 = 0.0, naive_err2 = 0.0, ref2 = 0.0;
    unsigned char *covered = buffer_elems ? calloc(buffer_elems, 1) : NULL;
    size_t logical = 0;
    for (int64_t b = 0; b < s->batch; b++) {
        for (int64_t h = 0; h < s->heads; h++) {
            for (int64_t i = 0; i < s->seq; i++) {
                for (int64_t d = 0; d < s->inner; d++, logical++) {
                    size_t at = element_at(s, b, h, i, d);
                    if (covered) {
                        covered[at] = 1;
                    }
                    double o = out[at], f = ref[at], n = naive[at];
                    if (isinf(f) && f < 0) {
                        r.mismatch += !(isinf(o) && o < 0);
                        r.naive_disagrees |= !(isinf(n) && n < 0);
                        continue;
                    }
                    if (!isfinite(n)) {
                        r.naive_disagrees = 1;
                        continue;
                    }
                    if (!isfinite(o)) {
                        r.mismatch++;
                        continue;
                    }
                    double err = fabs(o - f);
                    if (err > r.max_err) {
                        r.max_err = err;
                        r.worst = logical;
                    }
                    naive_max = fmax(naive_max, fabs(n - f));
                    ref_max = fmax(ref_max, fabs(f));
                    err2 += (o - f) * (o - f);
                    naive_err2 += (n - f) * (n - f);
                    ref2 += f * f;
                }
            }
        }
    }
    if (covered) {
        for (size_t at = 0; at < buffer_elems; at++) {
            if (!covered[at] && !test_is_sentinel(out + at, sizeof *out)) {
                r.gaps_written++;
            }
        }
        free(covered);
    }
    /* An all-zero reference (every row masked) leaves nothing to normalize
     * by: the squared error itself must then be tiny. */
    double norm = ref2 > 0.0 ? ref2 : 1.0;
    r.nmse = err2 / norm;
    r.nmse_bound = 4.0 * naive_err2 / norm + TEST_NMSE_FLOOR;
    r.bound = 2.0 * naive_max + TEST_ATOL * fmax(1.0, ref_max);
    r.naive_disagrees |= !(naive_max <= TEST_NAIVE_RTOL * fmax(1.0, ref_max));
    r.ok = r.max_err <= r.bound && r.nmse <= r.nmse_bound && r.mismatch == 0 &&
           r.gaps_written == 0 && !r.naive_disagrees;
    return r;
}

void test_format_result(char *buf, size_t size, const char *name, const test_result *r) {
    int n = snprintf(buf, size, "%s err %.2e <= %.2e nmse %.1e <= %.1e", name, r->max_err, r->bound,
                     r->nmse, r->nmse_bound);
    if (n > 0 && (size_t)n < size && r->mismatch) {
        n += snprintf(buf + n, size - (size_t)n, " %zu non-finite mismatches", r->mismatch);
    }
    if (n > 0 && (size_t)n < size && r->gaps_written) {
        n += snprintf(buf + n, size - (size_t)n, " %zu gap elements written", r->gaps_written);
    }
    if (n > 0 && (size_t)n < size && r->naive_disagrees) {
        snprintf(buf + n, size - (size_t)n, " NAIVE FP32 AND REFERENCE DISAGREE");
    }
}

/* ---- A whole problem --------------------------------------------------------- */

static float *alloc_floats(size_t n) {
    return test_alloc_sentinel(n * sizeof(float));
}

int test_problem_init(test_problem *t, const attn_params *p, uint64_t seed, float qk_range,
                      int want_lse, int want_probs) {
    memset(t, 0, sizeof *t);
    t->p = *p;
    test_resolve(p, &t->r);
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
    attn_status st = attn_reference(p, t->q, t->k, t->v, t->ref_o, t->ref_lse, t->ref_probs);
    if (st != ATTN_SUCCESS) {
        printf("attn_reference failed: %s: %s\n", attn_status_name(st), attn_last_error(NULL));
        return -1;
    }
    test_naive_fp32(&t->r, t->q, t->k, t->v, t->naive_o, t->naive_lse, t->naive_probs);
    return 0;
}

void test_problem_free(test_problem *t) {
    free(t->q);
    free(t->k);
    free(t->v);
    free(t->ref_o);
    free(t->ref_lse);
    free(t->ref_probs);
    free(t->naive_o);
    free(t->naive_lse);
    free(t->naive_probs);
    memset(t, 0, sizeof *t);
}

const char *test_mask_name(attn_mask mask) {
    switch (mask) {
    case ATTN_MASK_NONE:
        return "none";
    case ATTN_MASK_CAUSAL_TOP_LEFT:
        return "top-left";
    case ATTN_MASK_CAUSAL_BOTTOM_RIGHT:
        return "bottom-right";
    }
    return "?";
}

void test_describe(char *buf, size_t size, const attn_params *p, test_layout layout) {
    attn_params r;
    test_resolve(p, &r);
    snprintf(buf, size, "B%d Hq%d Hkv%d Sq%d Sk%d D%d Dv%d %s %s", r.batch, r.heads_q, r.heads_kv,
             r.seq_q, r.seq_k, r.head_dim, r.head_dim_v, test_mask_name(r.mask),
             test_layout_name(layout));
}

/* ---- Devices ------------------------------------------------------------------ */

attn_context_t test_context_create(void) {
    attn_context_t ctx = NULL;
    attn_status st = attn_context_create(NULL, &ctx);
    if (st == ATTN_ERR_NO_DEVICE) {
        printf("SKIP: no OpenCL device: %s\n", attn_last_error(NULL));
        exit(TEST_SKIP);
    }
    if (st != ATTN_SUCCESS) {
        printf("FAIL: attn_context_create: %s: %s\n", attn_status_name(st), attn_last_error(NULL));
        exit(1);
    }
    attn_device_info info;
    if (attn_context_device_info(ctx, &info) == ATTN_SUCCESS) {
        printf("device %d:%d %s (%s)\n", info.platform_index, info.device_index, info.device_name,
               info.platform_name);
    }
    return ctx;
}

int test_ok(attn_context_t ctx, attn_status status, const char *what) {
    if (status == ATTN_SUCCESS) {
        return 1;
    }
    printf("FAIL: %s: %s: %s\n", what, attn_status_name(status), attn_last_error(ctx));
    return 0;
}
