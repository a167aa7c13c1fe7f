/* What the CPU references (reference.c, reference_backward.c,
 * reference_kvcache.c) share to find rows: a sequence's place and extent in
 * the (packed) tensors, the key a query is aligned with, and a row's element
 * offset. One definition, so the forward's and the backward's references
 * cannot disagree on where a sequence starts or what its diagonal is. */
#ifndef ATTN_REFERENCE_ROWS_H
#define ATTN_REFERENCE_ROWS_H

#include "attn_internal.h"

#include <stddef.h>
#include <stdint.h>

/* Where one sequence's rows are and how many keys its queries may see. */
typedef struct attn_ref_sequence {
    int64_t q0, k0;       /* first row in the (packed) tensors */
    int64_t len_q, len_k; /* its queries and keys */
    int64_t kept_k;       /* keys before the padding: min(len_k, key_lengths[b]) */
} attn_ref_sequence;

static inline attn_ref_sequence attn_ref_sequence_of(const attn_params *p,
                                                     const attn_input_arrays *m, int64_t b) {
    attn_ref_sequence s = {0, 0, p->seq_q, p->seq_k, p->seq_k};
    if (p->varlen) {
        s.q0 = m->cu_seqlens_q[b];
        s.k0 = m->cu_seqlens_k[b];
        s.len_q = m->cu_seqlens_q[b + 1] - s.q0;
        s.len_k = m->cu_seqlens_k[b + 1] - s.k0;
        s.kept_k = s.len_k;
    }
    if (p->key_padding && m->key_lengths[b] < s.kept_k)
        s.kept_k = m->key_lengths[b];
    return s;
}

/* The key query i is aligned with. */
static inline int64_t attn_ref_diagonal(const attn_params *p, const attn_ref_sequence *s,
                                        int64_t i) {
    return p->mask == ATTN_MASK_CAUSAL_TOP_LEFT ? i : i + s->len_k - s->len_q;
}

/* Element offset of row (b, h, r) in a tensor laid out by `st`. */
static inline size_t attn_ref_row(const attn_strides *st, int64_t b, int64_t h, int64_t r) {
    return (size_t)b * (size_t)st->batch + (size_t)h * (size_t)st->head +
           (size_t)r * (size_t)st->seq;
}

#endif
