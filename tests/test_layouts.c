/* Tensor layouts: the strides of each layout, varlen totals, and resolving params into the shapes
 * the naive implementation and the comparison walk. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
void test_varlen_lengths(const attn_params *p, uint64_t seed, int32_t *len_q, int32_t *len_k) {
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
    test_varlen_lengths(p, seed, len_q, len_k);
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

size_t test_element_at(const test_shape *s, int64_t b, int64_t h, int64_t i, int64_t d) {
    return (size_t)(b * s->strides.batch + h * s->strides.head + i * s->strides.seq + d);
}
