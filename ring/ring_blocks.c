/* One block of queries attending to one block of keys, written as a request
 * the library serves. The global mask (causal and/or a window, in natural
 * positions) restricted to a block is a band whose diagonal is shifted from
 * the block's own; the library's masks are all anchored at the block's
 * bottom-right diagonal, so the block's key range is cut to end where the
 * band lets the last query reach, which moves that diagonal onto the band's,
 * and query rows that see none of the keys are left out. */
#include "ring_internal.h"

ring_reach ring_reach_of(const attn_params *p) {
    ring_reach r;
    const int window = p->window.enabled != 0;
    r.left = window && p->window.left >= 0 ? p->window.left : -1;
    /* seq_q == seq_k: both causal alignments put query i on key i. */
    if (p->mask != ATTN_MASK_NONE)
        r.right = 0;
    else
        r.right = window && p->window.right >= 0 ? p->window.right : -1;
    return r;
}

static int64_t min64(int64_t a, int64_t b) {
    return a < b ? a : b;
}

static int64_t max64(int64_t a, int64_t b) {
    return a > b ? a : b;
}

int ring_block_plan(ring_reach reach, int64_t qa, int64_t qb, int64_t ka, int64_t kb,
                    ring_block *out) {
    const int64_t left = reach.left, right = reach.right; /* -1: unbounded */
    if (qa >= qb || ka >= kb)
        return 0;
    /* Nothing visible: the first key lies beyond the last query's reach, or
     * the last key before the first query's. */
    if ((right >= 0 && ka > qb - 1 + right) || (left >= 0 && kb - 1 < qa - left))
        return 0;
    out->window = (attn_window){0, -1, -1};
    /* Every query sees every key. */
    if ((left < 0 || qb - 1 - left <= ka) && (right < 0 || kb - 1 <= qa + right)) {
        *out = (ring_block){qa, qb - qa, ka, kb - ka, ATTN_MASK_NONE, {0, -1, -1}};
        return 1;
    }
    /* Queries that see none of the keys: above the block (i + right < ka)
     * and below it (i - left > kb - 1). */
    const int64_t q0 = right >= 0 ? max64(qa, ka - right) : qa;
    const int64_t q1 = left >= 0 ? min64(qb, kb + left) : qb;
    /* Keys no remaining query sees, at either end. */
    const int64_t k0 = left >= 0 ? max64(ka, q0 - left) : ka;
    const int64_t k1 = right >= 0 ? min64(kb, q1 + right) : kb;
    /* The block's bottom-right diagonal sits `shift` keys from the band's
     * (query i, natural key i): the window's extents move by it. Both stay
     * >= 0 by the cuts above. */
    const int64_t shift = k1 - q1;
    const int64_t new_left = left >= 0 ? left + shift : -1;
    const int64_t new_right = right >= 0 ? right - shift : -1;
    out->q_start = q0;
    out->q_rows = q1 - q0;
    out->k_start = k0;
    out->k_rows = k1 - k0;
    if (new_left < 0 && new_right == 0) {
        out->mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
        out->window = (attn_window){0, -1, -1};
    } else {
        out->mask = ATTN_MASK_NONE;
        out->window = (attn_window){1, (int32_t)new_left, (int32_t)new_right};
    }
    return 1;
}
