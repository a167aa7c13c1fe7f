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

/* Rows of Q/O and K/V in the tensors, and their batch count: with varlen one
 * batch of the packed totals. */
static void tensor_rows(const attn_params *p, int64_t *batch, int64_t *rows_q, int64_t *rows_k) {
    *batch = p->varlen ? 1 : p->batch;
    *rows_q = p->varlen ? p->total_q : p->seq_q;
    *rows_k = p->varlen ? p->total_k : p->seq_k;
}

void test_set_layout(attn_params *p, test_layout layout) {
    int64_t hkv = p->heads_kv ? p->heads_kv : p->heads_q;
    int64_t dv = p->head_dim_v ? p->head_dim_v : p->head_dim;
    int64_t b, sq, sk;
    tensor_rows(p, &b, &sq, &sk);
    p->q_strides = strides_for(layout, b, p->heads_q, sq, p->head_dim);
    p->k_strides = strides_for(layout, b, hkv, sk, p->head_dim);
    p->v_strides = strides_for(layout, b, hkv, sk, dv);
    p->o_strides = strides_for(layout, b, p->heads_q, sq, dv);
    p->lse_strides = strides_for(layout, b, p->heads_q, sq, 1);
}

/* Sequence lengths of a varlen request, drawn from their own stream of
 * `seed`: sequence 0 is the longest on both sides. */
static void varlen_lengths(const attn_params *p, uint64_t seed, int32_t *len_q, int32_t *len_k) {
    test_rng rng;
    test_rng_seed(&rng, seed ^ 0x5eed5eed5eedull);
    for (int32_t b = 0; b < p->batch; b++) {
        len_q[b] = b == 0 ? p->seq_q : (int32_t)test_rng_float(&rng, 0.0f, (float)p->seq_q + 1.0f);
        len_k[b] = b == 0 ? p->seq_k : (int32_t)test_rng_float(&rng, 0.0f, (float)p->seq_k + 1.0f);
        len_q[b] = len_q[b] > p->seq_q ? p->seq_q : len_q[b];
        len_k[b] = len_k[b] > p->seq_k ? p->seq_k : len_k[b];
    }
}

void test_varlen_totals(attn_params *p, uint64_t seed) {
    int32_t *len_q = calloc((size_t)p->batch, sizeof *len_q);
    int32_t *len_k = calloc((size_t)p->batch, sizeof *len_k);
    if (!len_q || !len_k) {
        fprintf(stderr, "test: out of host memory\n");
        exit(1);
    }
    varlen_lengths(p, seed, len_q, len_k);
    p->total_q = p->total_k = 0;
    for (int32_t b = 0; b < p->batch; b++) {
        p->total_q += len_q[b];
        p->total_k += len_k[b];
    }
    free(len_q);
    free(len_k);
}

static void resolve_strides(attn_strides *s, int64_t heads, int64_t seq, int64_t inner) {
    if (s->batch == 0 && s->head == 0 && s->seq == 0) {
        s->seq = inner;
        s->head = seq * inner;
        s->batch = heads * seq * inner;
    }
}

/* A bias or keep-mask: broadcast sizes, packed strides when none given, and
 * broadcast dimensions stepping 0. */
static void resolve_operand(attn_score_operand *op, const attn_params *p) {
    if (!op->present) {
        *op = (attn_score_operand){0};
        return;
    }
    op->present = 1;
    op->batch = op->batch == 0 ? 1 : op->batch;
    op->heads = op->heads == 0 ? 1 : op->heads;
    resolve_strides(&op->strides, op->heads, p->seq_q, p->seq_k);
    if (op->batch == 1) {
        op->strides.batch = 0;
    }
    if (op->heads == 1) {
        op->strides.head = 0;
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
    r->varlen = r->varlen != 0;
    r->alibi = r->alibi != 0;
    r->key_padding = r->key_padding != 0;
    if (!r->window.enabled) {
        r->window = (attn_window){0, -1, -1};
    }
    int64_t b, sq, sk;
    tensor_rows(r, &b, &sq, &sk);
    resolve_strides(&r->q_strides, r->heads_q, sq, r->head_dim);
    resolve_strides(&r->k_strides, r->heads_kv, sk, r->head_dim);
    resolve_strides(&r->v_strides, r->heads_kv, sk, r->head_dim_v);
    resolve_strides(&r->o_strides, r->heads_q, sq, r->head_dim_v);
    resolve_strides(&r->lse_strides, r->heads_q, sq, 1);
    if (r->varlen) {
        r->q_strides.batch = r->k_strides.batch = r->v_strides.batch = 0;
        r->o_strides.batch = r->lse_strides.batch = 0;
    }
    resolve_operand(&r->bias, r);
    resolve_operand(&r->keep_mask, r);
}

test_shape test_tensor_shape(const attn_params *r, test_tensor which) {
    int64_t b, sq, sk;
    tensor_rows(r, &b, &sq, &sk);
    test_shape s = {b, r->heads_q, sq, r->head_dim, r->q_strides};
    switch (which) {
    case TEST_Q:
        break;
    case TEST_K:
        s = (test_shape){b, r->heads_kv, sk, r->head_dim, r->k_strides};
        break;
    case TEST_V:
        s = (test_shape){b, r->heads_kv, sk, r->head_dim_v, r->v_strides};
        break;
    case TEST_O:
        s = (test_shape){b, r->heads_q, sq, r->head_dim_v, r->o_strides};
        break;
    case TEST_LSE:
        s = (test_shape){b, r->heads_q, sq, 1, r->lse_strides};
        break;
    case TEST_PROBS: {
        int64_t row = r->seq_k;
        attn_strides st = {r->heads_q * r->seq_q * row, r->seq_q * row, row};
        s = (test_shape){r->batch, r->heads_q, r->seq_q, r->seq_k, st};
        break;
    }
    case TEST_BIAS:
    case TEST_KEEP_MASK: {
        const attn_score_operand *op = which == TEST_BIAS ? &r->bias : &r->keep_mask;
        s = (test_shape){op->batch, op->heads, r->seq_q, r->seq_k, op->strides};
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
                const float *qr = q + element_at(&qs, tb, h, sq.q0 + i, 0);
                float max = -INFINITY;
                for (int64_t j = 0; j < sq.len_k; j++) {
                    s[j] = -INFINITY;
                    int visible = j < sq.kept_k;
                    visible &= r->mask == ATTN_MASK_NONE || j <= diag;
                    visible &= r->window.left < 0 || j >= diag - r->window.left;
                    visible &= r->window.right < 0 || j <= diag + r->window.right;
                    if (visible && r->keep_mask.present) {
                        visible = x->keep_mask[element_at(&ms, b, h, i, j)] != 0;
                    }
                    if (!visible) {
                        continue;
                    }
                    const float *kr = k + element_at(&ks, tb, g, sq.k0 + j, 0);
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
                        score += x->bias[element_at(&bs, b, h, i, j)];
                    }
                    s[j] = score;
                    max = fmaxf(max, score);
                }
                float sum = 0.0f;
                for (int64_t d = 0; d < r->head_dim_v; d++) {
                    acc[d] = 0.0f;
                }
                for (int64_t j = 0; j < sq.len_k && max != -INFINITY; j++) {
                    s[j] = s[j] == -INFINITY ? 0.0f : expf(s[j] - max);
                    sum += s[j];
                    if (s[j] == 0.0f) {
                        continue; /* a masked key's V is never read (it may be garbage) */
                    }
                    const float *vr = v + element_at(&vs, tb, g, sq.k0 + j, 0);
                    for (int64_t d = 0; d < r->head_dim_v; d++) {
                        acc[d] += s[j] * vr[d];
                    }
                }
                float *orow = o + element_at(&os, tb, h, sq.q0 + i, 0);
                for (int64_t d = 0; d < r->head_dim_v; d++) {
                    orow[d] = sum > 0.0f ? acc[d] / sum : 0.0f;
                }
                if (lse) {
                    lse[element_at(&ls, tb, h, sq.q0 + i, 0)] =
                        sum > 0.0f ? max + logf(sum) : -INFINITY;
                }
                if (probs) {
                    float *prow = probs + element_at(&ps, b, h, i, 0);
                    for (int64_t j = 0; j < sq.len_k; j++) {
                        prow[j] = sum > 0.0f ? s[j] / sum : 0.0f;
                    }
                }
            }
        }
    }
    free(s);
    free(acc);
}

/* ---- Storage types ------------------------------------------------------------- */

size_t test_dtype_size(attn_dtype dtype) {
    return dtype == ATTN_DTYPE_F32 ? sizeof(float) : sizeof(uint16_t);
}

const char *test_dtype_name(attn_dtype dtype) {
    switch (dtype) {
    case ATTN_DTYPE_F32:
        return "f32";
    case ATTN_DTYPE_F16:
        return "f16";
    case ATTN_DTYPE_BF16:
        return "bf16";
    }
    return "?";
}

void *test_to_storage(attn_dtype dtype, const float *in, size_t n) {
    void *out = test_alloc_sentinel(n * test_dtype_size(dtype));
    if (dtype == ATTN_DTYPE_F16) {
        attn_f32_to_f16(in, out, n);
    } else if (dtype == ATTN_DTYPE_BF16) {
        attn_f32_to_bf16(in, out, n);
    } else {
        memcpy(out, in, n * sizeof(float));
    }
    return out;
}

void test_from_storage(attn_dtype dtype, const void *in, float *out, size_t n) {
    if (dtype == ATTN_DTYPE_F16) {
        attn_f16_to_f32(in, out, n);
    } else if (dtype == ATTN_DTYPE_BF16) {
        attn_bf16_to_f32(in, out, n);
    } else {
        memmove(out, in, n * sizeof(float));
    }
}

void test_round_to_storage(attn_dtype dtype, float *data, size_t n) {
    if (dtype == ATTN_DTYPE_F32) {
        return;
    }
    void *stored = test_to_storage(dtype, data, n);
    test_from_storage(dtype, stored, data, n);
    free(stored);
}

/* ---- Comparison --------------------------------------------------------------- */

/* test_compare with the agreement naive_fp32 must reach. */
static test_result compare(const test_shape *s, const float *out, const float *ref,
                           const float *naive, size_t buffer_elems, double naive_rtol) {
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
    r.naive_disagrees |= !(naive_max <= naive_rtol * fmax(1.0, ref_max));
    r.ok = r.max_err <= r.bound && r.nmse <= r.nmse_bound && r.mismatch == 0 &&
           r.gaps_written == 0 && !r.naive_disagrees;
    return r;
}

test_result test_compare(const test_shape *s, const float *out, const float *ref,
                         const float *naive, size_t buffer_elems) {
    return compare(s, out, ref, naive, buffer_elems, TEST_NAIVE_RTOL);
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
                memset(x->keep_mask + element_at(&ms, b, h, 1, 0), 0, (size_t)r->seq_k);
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
        varlen_lengths(r, seed, len_q, len_k);
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
    test_result r = compare(&t->o_shape, o, t->ref_o, t->naive_o, 0, TEST_NAIVE_RTOL + rounding);
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
                memset(covered + element_at(s, b, h, i, 0), 1, (size_t)s->inner);
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
    int n = snprintf(buf, size, "B%d Hq%d Hkv%d Sq%d Sk%d D%d Dv%d %s %s", r.batch, r.heads_q,
                     r.heads_kv, r.seq_q, r.seq_k, r.head_dim, r.head_dim_v, test_mask_name(r.mask),
                     test_layout_name(layout));
#define APPEND(...)                                                                                \
    do {                                                                                           \
        if (n > 0 && (size_t)n < size) {                                                           \
            n += snprintf(buf + n, size - (size_t)n, __VA_ARGS__);                                 \
        }                                                                                          \
    } while (0)
    if (r.dtype != ATTN_DTYPE_F32) {
        APPEND(" %s", test_dtype_name(r.dtype));
    }
    if (r.window.enabled) {
        APPEND(" win=%d,%d", r.window.left, r.window.right);
    }
    if (r.softcap > 0.0f) {
        APPEND(" softcap=%g", (double)r.softcap);
    }
    if (r.alibi) {
        APPEND(" alibi");
    }
    if (r.bias.present) {
        APPEND(" bias=%dx%d", r.bias.batch, r.bias.heads);
    }
    if (r.keep_mask.present) {
        APPEND(" keep=%dx%d", r.keep_mask.batch, r.keep_mask.heads);
    }
    if (r.key_padding) {
        APPEND(" pad");
    }
    if (r.varlen) {
        APPEND(" varlen(%d,%d)", r.total_q, r.total_k);
    }
#undef APPEND
}

/* Parses one case into params and options; returns 0 on a bad word. */
int test_parse_case(const char *text, attn_params *p, test_layout *layout, float *qk, int *quick) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", text);
    attn_params_init(p, 1, 1, 1, 1, 1);
    p->heads_kv = 0;
    p->head_dim_v = 0;
    *layout = TEST_BHSD;
    *qk = 1.0f;
    *quick = 0;
    int hkv = 0, dv = 0;
    for (char *w = strtok(buf, " "); w; w = strtok(NULL, " ")) {
        int a = 0, b = 0;
        float f = 0;
        if (sscanf(w, "B%d", &a) == 1) {
            p->batch = a;
        } else if (sscanf(w, "Hq%d", &a) == 1) {
            p->heads_q = a;
        } else if (sscanf(w, "Hkv%d", &a) == 1) {
            hkv = a;
        } else if (sscanf(w, "Sq%d", &a) == 1) {
            p->seq_q = a;
        } else if (sscanf(w, "Sk%d", &a) == 1) {
            p->seq_k = a;
        } else if (sscanf(w, "Dv%d", &a) == 1) {
            dv = a;
        } else if (sscanf(w, "D%d", &a) == 1) {
            p->head_dim = a;
        } else if (!strcmp(w, "none") || !strcmp(w, "tl") || !strcmp(w, "br")) {
            p->mask = !strcmp(w, "tl")   ? ATTN_MASK_CAUSAL_TOP_LEFT
                      : !strcmp(w, "br") ? ATTN_MASK_CAUSAL_BOTTOM_RIGHT
                                         : ATTN_MASK_NONE;
        } else if (!strcmp(w, "bhsd") || !strcmp(w, "bshd") || !strcmp(w, "hbsd") ||
                   !strcmp(w, "padded")) {
            *layout = !strcmp(w, "bshd")     ? TEST_BSHD
                      : !strcmp(w, "hbsd")   ? TEST_HBSD
                      : !strcmp(w, "padded") ? TEST_PADDED
                                             : TEST_BHSD;
        } else if (!strcmp(w, "f32") || !strcmp(w, "f16") || !strcmp(w, "bf16")) {
            p->dtype = !strcmp(w, "f16")    ? ATTN_DTYPE_F16
                       : !strcmp(w, "bf16") ? ATTN_DTYPE_BF16
                                            : ATTN_DTYPE_F32;
        } else if (sscanf(w, "win=%d,%d", &a, &b) == 2) {
            p->window = (attn_window){1, a, b};
        } else if (sscanf(w, "softcap=%f", &f) == 1) {
            p->softcap = f;
        } else if (sscanf(w, "qk=%f", &f) == 1) {
            *qk = f;
        } else if (!strcmp(w, "alibi")) {
            p->alibi = 1;
        } else if (sscanf(w, "bias=%dx%d", &a, &b) == 2) {
            p->bias = (attn_score_operand){1, a, b, {0, 0, 0}};
        } else if (sscanf(w, "keep=%dx%d", &a, &b) == 2) {
            p->keep_mask = (attn_score_operand){1, a, b, {0, 0, 0}};
        } else if (!strcmp(w, "pad")) {
            p->key_padding = 1;
        } else if (!strcmp(w, "varlen")) {
            p->varlen = 1;
        } else if (!strcmp(w, "quick")) {
            *quick = 1;
        } else {
            printf("FAIL: bad word '%s' in case \"%s\"\n", w, text);
            return 0;
        }
    }
    p->heads_kv = hkv ? hkv : p->heads_q;
    p->head_dim_v = dv ? dv : p->head_dim;
    return 1;
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

void test_sweep_begin(int argc, char **argv, attn_algo *algo) {
    if (argc != 2 || (strcmp(argv[1], "three-kernel") != 0 && strcmp(argv[1], "fused") != 0)) {
        fprintf(stderr, "usage: %s three-kernel|fused\n", argv[0]);
        exit(2);
    }
    *algo = strcmp(argv[1], "fused") == 0 ? ATTN_ALGO_FUSED : ATTN_ALGO_THREE_KERNEL;
    const char *tune = getenv("ATTN_CL_TUNE");
    printf("algorithm %s%s%s\n", argv[1], tune && *tune ? ", ATTN_CL_TUNE=" : "",
           tune && *tune ? tune : "");
    printf("bound: max|out-ref| <= 2*max|naive_fp32-ref| + %.0e*max(1,max|ref|), "
           "NMSE <= 4*NMSE(naive_fp32) + %.0e%s\n",
           TEST_ATOL, TEST_NMSE_FLOOR, test_quick() ? " (quick subset)" : "");
}

int test_ok(attn_context_t ctx, attn_status status, const char *what) {
    if (status == ATTN_SUCCESS) {
        return 1;
    }
    printf("FAIL: %s: %s: %s\n", what, attn_status_name(status), attn_last_error(ctx));
    return 0;
}
