#include "bench_work.h"

/* Keys visible to query i under the mask, from 0 to seq_k. */
static int64_t visible_keys(int64_t i, int64_t seq_q, int64_t seq_k, attn_mask mask) {
    int64_t last; /* the last visible key index */
    switch (mask) {
    case ATTN_MASK_CAUSAL_TOP_LEFT:
        last = i;
        break;
    case ATTN_MASK_CAUSAL_BOTTOM_RIGHT:
        last = i + seq_k - seq_q;
        break;
    default:
        return seq_k;
    }
    if (last < 0) {
        return 0;
    }
    return last + 1 < seq_k ? last + 1 : seq_k;
}

uint64_t bench_visible_pairs(int32_t seq_q, int32_t seq_k, attn_mask mask) {
    /* A loop rather than a closed form: the clamps at both ends are where
     * closed forms go wrong, and seq_q steps are cheap. */
    uint64_t pairs = 0;
    for (int64_t i = 0; i < seq_q; i++) {
        pairs += (uint64_t)visible_keys(i, seq_q, seq_k, mask);
    }
    return pairs;
}

uint64_t bench_sequence_pairs(const attn_params *p, const bench_lengths *lengths, int32_t b) {
    int64_t len_q = p->seq_q, len_k = p->seq_k;
    if (p->varlen) {
        len_q = lengths->cu_seqlens_q[b + 1] - lengths->cu_seqlens_q[b];
        len_k = lengths->cu_seqlens_k[b + 1] - lengths->cu_seqlens_k[b];
    }
    int64_t kept = len_k;
    if (p->key_padding && lengths->key_lengths[b] < kept) {
        kept = lengths->key_lengths[b];
    }
    const int windowed = p->window.enabled;
    uint64_t pairs = 0;
    for (int64_t i = 0; i < len_q; i++) {
        const int64_t diag = p->mask == ATTN_MASK_CAUSAL_TOP_LEFT ? i : i + len_k - len_q;
        int64_t first = 0, last = kept - 1;
        if (p->mask != ATTN_MASK_NONE && diag < last) {
            last = diag;
        }
        if (windowed && p->window.right >= 0 && diag + p->window.right < last) {
            last = diag + p->window.right;
        }
        if (windowed && p->window.left >= 0 && diag - p->window.left > first) {
            first = diag - p->window.left;
        }
        pairs += last >= first ? (uint64_t)(last - first + 1) : 0;
    }
    return pairs;
}

double bench_flops(const attn_params *params, const bench_lengths *lengths) {
    const bench_lengths none = {0};
    lengths = lengths ? lengths : &none;
    double pairs = 0.0;
    for (int32_t b = 0; b < params->batch; b++) {
        pairs += (double)bench_sequence_pairs(params, lengths, b);
    }
    return 2.0 * (double)params->heads_q * pairs *
           ((double)params->head_dim + (double)params->head_dim_v);
}
