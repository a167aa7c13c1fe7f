/* Shared by every libattn_cl program; prepended to each kernel file.
 *
 * Build-time parameters (-D), set by the host for each plan:
 *   HEAD_DIM, HEAD_DIM_V  sizes of the Q/K and V/O rows
 *   MASK_MODE             0 none, 1 causal top-left, 2 causal bottom-right
 *   HAS_LSE               1 when the log-sum-exp output is wanted
 */
#ifndef MASK_MODE
#define MASK_MODE 0
#endif
#ifndef HAS_LSE
#define HAS_LSE 0
#endif

#define MASK_NONE 0
#define MASK_CAUSAL_TOP_LEFT 1
#define MASK_CAUSAL_BOTTOM_RIGHT 2

/* The last key query `i` may see (-1: none). Top-left aligns query 0 with
 * key 0; bottom-right aligns the last query with the last key. */
inline int last_visible_key(int i, int seq_q, int seq_k) {
#if MASK_MODE == MASK_CAUSAL_TOP_LEFT
    return min(i, seq_k - 1);
#elif MASK_MODE == MASK_CAUSAL_BOTTOM_RIGHT
    return min(i + seq_k - seq_q, seq_k - 1);
#else
    (void)i;
    (void)seq_q;
    return seq_k - 1;
#endif
}

/* How many keys (a prefix 0..n-1 of the row) query `i` sees. */
inline int visible_keys(int i, int seq_q, int seq_k) {
    return max(last_visible_key(i, seq_q, seq_k) + 1, 0);
}
