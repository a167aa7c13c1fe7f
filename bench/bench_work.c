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

double bench_flops(const attn_params *params) {
    return 2.0 * (double)params->batch * (double)params->heads_q *
           (double)bench_visible_pairs(params->seq_q, params->seq_k, params->mask) *
           ((double)params->head_dim + (double)params->head_dim_v);
}
