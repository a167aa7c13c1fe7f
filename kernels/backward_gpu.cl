/* The backward's dK/dV and dQ kernels shaped for GPUs: the same kernels,
 * arguments and results contract as backward.cl's (which keeps attn_bwd_dot
 * and attn_bwd_dbias for both shapes), with work-groups sharing tiles in
 * local memory instead of one work-item holding a block in private memory.
 *
 *   attn_bwd_dkdv   a work-group per OWN keys of a kv head, TPO work-items
 *                   a key (work-item (own = lid / TPO, sub = lid % TPO)
 *                   accumulates dK and dV columns sub, sub + TPO, ...); over
 *                   the group's query heads in order and their query rows in
 *                   tiles of PER_TILE rows in order
 *   attn_bwd_dq     a work-group per OWN query rows of a head, TPO
 *                   work-items a row (dQ columns as above); over their keys
 *                   in tiles of PER_TILE keys in order
 *
 * Per tile the group loads the other side's rows (Q and dO, or K and V) into
 * local memory, computes every pair's P, dropped weight and dS' into local
 * tiles (one pair a work-item at a time), then each work-item adds its
 * column slice over the tile's pairs in order. Each accumulator has one
 * owner adding in a fixed order: no atomics, the same bits every run.
 * Local rows are padded by one float against bank conflicts. Every barrier
 * is reached by the whole group: the loops' bounds and skips come from group
 * ids only, and edge tiles load zeros.
 *
 * Build-time parameters (beside common.cl's and backward.cl's HEAD_DIM,
 * HEAD_DIM_V, GROUP):
 *   OWN   rows a work-group owns (keys for dK/dV, query rows for dQ)
 *   PER_TILE  rows of the other side per tile (STEP is common.cl's)
 *   TPO   work-items per owned row
 */

#if !defined(HEAD_DIM) || !defined(HEAD_DIM_V)
#error "HEAD_DIM and HEAD_DIM_V must be defined"
#endif
#if !defined(GROUP) || GROUP < 1
#error "GROUP (heads_q / heads_kv) must be defined and >= 1"
#endif
#if !defined(OWN) || !defined(PER_TILE) || !defined(TPO) || OWN < 1 || PER_TILE < 1 || TPO < 1
#error "OWN, PER_TILE and TPO must be defined and >= 1"
#endif

#define WG_SIZE (OWN * TPO)
#define QK_STRIDE (HEAD_DIM + 1)
#define V_STRIDE (HEAD_DIM_V + 1)
#define K_COLS ((HEAD_DIM + TPO - 1) / TPO)
#define V_COLS ((HEAD_DIM_V + TPO - 1) / TPO)

/* One (query i, key j) pair's gradient terms from its rows in the local
 * tiles (Q, K, dO, V): its raw score sc = q.k and dp = dO.v give P = exp(s - LSE) of the modified
 * score s, the weight its V got in the forward (P, or with dropout P / (1 - p) where the mask keeps
 * the key and 0 where it drops it), and dS' = scale * P * (dP' - D) * ds/dx
 * with dP' dp scaled and masked like the weight (softcap's tanh' as ds/dx).
 * Returns (P, weight, dS'); a pair the caller found hidden is (0, 0, 0). */
inline float3 pair_terms(__local const float *qrow, __local const float *krow,
                         __local const float *drow, __local const float *vrow, float row_lse,
                         float row_delta, int i, int j, sequence_info s, float scale, float softcap,
                         float slope, __global const float *bias_row, ulong dropout_seed,
                         ulong dropout_offset, uint stream, uint dropout_threshold,
                         float dropout_scale) {
    float sc = 0.0f, dp = 0.0f;
    for (int d = 0; d < HEAD_DIM; d++)
        sc += qrow[d] * krow[d];
    for (int d = 0; d < HEAD_DIM_V; d++)
        dp += drow[d] * vrow[d];
#if HAS_MODIFIERS
    const float x = modified_score(sc, scale, softcap, slope, i, j, s, bias_row);
#else
    const float x = sc * scale;
#endif
    const float p = exp(x - row_lse);
    float weight = p, dpw = dp;
#if DROPOUT
    if (p != 0.0f && !dropout_keep(dropout_seed, dropout_offset, stream, i, j, dropout_threshold)) {
        weight = 0.0f;
        dpw = 0.0f;
    } else {
        weight = p * dropout_scale;
        dpw = dp * dropout_scale;
    }
#endif
    float tanh_slope = 1.0f;
#if SOFTCAP
    const float t = tanh(sc * scale / softcap);
    tanh_slope = 1.0f - t * t;
#endif
    return (float3)(p, weight, p * (dpw - row_delta) * tanh_slope * scale);
}

/* Rows r0 .. r0 + n - 1 of kv or query head `head` of tensor x into a local
 * tile of `rows` rows (zeros past n), `width` elements each, row stride
 * `stride`. Consecutive work-items read consecutive elements. */
#define LOAD_TILE(tile, rows, width, stride, x, bt, head, r0, n)                                   \
    for (int e_ = get_local_id(0); e_ < (rows) * (width); e_ += WG_SIZE) {                         \
        const int r_ = e_ / (width), d_ = e_ % (width);                                            \
        (tile)[r_ * (stride) + d_] =                                                               \
            r_ < (n) ? load_elem(x + AT(x, (bt), (head), (r0) + r_), d_) : 0.0f;                   \
    }

/* global (ceil(seq_k / OWN) * WG_SIZE, heads_kv, batch), local WG_SIZE. */
__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void
attn_bwd_dkdv(TENSOR(__global const elem_t, q, q), TENSOR(__global const elem_t, k, k),
              TENSOR(__global const elem_t, v, v), TENSOR(__global const elem_t, dout, dout),
              TENSOR(__global const float, lse, lse), __global const float *delta, ulong delta_off,
              TENSOR(__global elem_t, dk, dk), TENSOR(__global elem_t, dv, dv), int heads_q,
              float scale, FEATURE_PARAMS) {
    __local float k_tile[OWN * QK_STRIDE], v_tile[OWN * V_STRIDE];
    __local float q_tile[PER_TILE * QK_STRIDE], d_tile[PER_TILE * V_STRIDE];
    __local float p_tile[PER_TILE * (OWN + 1)], w_tile[PER_TILE * (OWN + 1)],
        s_tile[PER_TILE * (OWN + 1)];
    __local float tile_lse[PER_TILE], tile_delta[PER_TILE];

    const int lid = get_local_id(0), own = lid / TPO, sub = lid % TPO;
    const int g = get_group_id(1), b = get_group_id(2);
    const sequence_info s = sequence_of(b, FEATURE_SEQUENCES);
    const int j0 = get_group_id(0) * OWN;
    if (j0 >= s.len_k)
        return; /* the whole group */
    const int nk = min(OWN, s.len_k - j0), j_last = j0 + nk - 1;
    const long bt = VARLEN ? 0 : b;
    const long rows = VARLEN ? total_q : seq_q;
    LOAD_TILE(k_tile, OWN, HEAD_DIM, QK_STRIDE, k, bt, g, s.k0 + j0, nk)
    LOAD_TILE(v_tile, OWN, HEAD_DIM_V, V_STRIDE, v, bt, g, s.k0 + j0, nk)
    float acc_k[K_COLS], acc_v[V_COLS];
    for (int c = 0; c < K_COLS; c++)
        acc_k[c] = 0.0f;
    for (int c = 0; c < V_COLS; c++)
        acc_v[c] = 0.0f;

    for (int m = 0; m < GROUP; m++) {
        const int h = g * GROUP + m;
        const uint stream = (uint)(b * heads_q + h);
        for (int i0 = 0; i0 < s.len_q; i0 += PER_TILE) {
            const int nq = min(PER_TILE, s.len_q - i0);
            /* Key ranges grow with i: skip tiles that see none of the block. */
            if (last_key(i0 + nq - 1, s, win_right) < j0 || first_key(i0, s, win_left) > j_last)
                continue;
            barrier(CLK_LOCAL_MEM_FENCE); /* the last tile's readers are done */
            LOAD_TILE(q_tile, PER_TILE, HEAD_DIM, QK_STRIDE, q, bt, h, s.q0 + i0, nq)
            LOAD_TILE(d_tile, PER_TILE, HEAD_DIM_V, V_STRIDE, dout, bt, h, s.q0 + i0, nq)
            for (int t = lid; t < PER_TILE; t += WG_SIZE) {
                const long r = s.q0 + i0 + t;
                tile_lse[t] = t < nq ? backward_row_lse(lse[AT(lse, bt, h, r)]) : -INFINITY;
                tile_delta[t] = t < nq ? delta[delta_off + (bt * heads_q + h) * rows + r] : 0.0f;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            for (int e = lid; e < PER_TILE * OWN; e += WG_SIZE) {
                const int t = e / OWN, kk = e % OWN, i = i0 + t, j = j0 + kk;
                float3 terms = (float3)(0.0f);
                if (t < nq && kk < nk && tile_lse[t] != -INFINITY &&
                    sees(i, j, s, win_left, win_right, KEEP_ROW(b, h, i))) {
                    terms = pair_terms(q_tile + t * QK_STRIDE, k_tile + kk * QK_STRIDE,
                                       d_tile + t * V_STRIDE, v_tile + kk * V_STRIDE, tile_lse[t],
                                       tile_delta[t], i, j, s, scale, softcap, SLOPE(h),
                                       BIAS_ROW(b, h, i), dropout_seed, dropout_offset, stream,
                                       dropout_threshold, dropout_scale);
                }
                p_tile[t * (OWN + 1) + kk] = terms.s0;
                w_tile[t * (OWN + 1) + kk] = terms.s1;
                s_tile[t * (OWN + 1) + kk] = terms.s2;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            /* A pair of P 0 adds nothing (not 0 times a NaN); a dropped
             * one adds to dK only. */
            for (int t = 0; t < nq; t++) {
                if (p_tile[t * (OWN + 1) + own] == 0.0f)
                    continue;
                const float w = w_tile[t * (OWN + 1) + own], ds = s_tile[t * (OWN + 1) + own];
                if (w != 0.0f)
                    for (int c = 0; c < V_COLS; c++) {
                        const int d = sub + c * TPO;
                        if (d < HEAD_DIM_V)
                            acc_v[c] += w * d_tile[t * V_STRIDE + d];
                    }
                for (int c = 0; c < K_COLS; c++) {
                    const int d = sub + c * TPO;
                    if (d < HEAD_DIM)
                        acc_k[c] += ds * q_tile[t * QK_STRIDE + d];
                }
            }
        }
    }
    if (own < nk) {
        __global elem_t *dkrow = dk + AT(dk, bt, g, s.k0 + j0 + own);
        __global elem_t *dvrow = dv + AT(dv, bt, g, s.k0 + j0 + own);
        for (int c = 0; c < K_COLS; c++)
            if (sub + c * TPO < HEAD_DIM)
                store_elem(dkrow, sub + c * TPO, acc_k[c]);
        for (int c = 0; c < V_COLS; c++)
            if (sub + c * TPO < HEAD_DIM_V)
                store_elem(dvrow, sub + c * TPO, acc_v[c]);
    }
}

/* global (ceil(seq_q / OWN) * WG_SIZE, heads_q, batch), local WG_SIZE. */
__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void
attn_bwd_dq(TENSOR(__global const elem_t, q, q), TENSOR(__global const elem_t, k, k),
            TENSOR(__global const elem_t, v, v), TENSOR(__global const elem_t, dout, dout),
            TENSOR(__global const float, lse, lse), __global const float *delta, ulong delta_off,
            TENSOR(__global elem_t, dq, dq), int heads_q, float scale, FEATURE_PARAMS) {
    __local float q_tile[OWN * QK_STRIDE], d_tile[OWN * V_STRIDE];
    __local float k_tile[PER_TILE * QK_STRIDE], v_tile[PER_TILE * V_STRIDE];
    __local float p_tile[OWN * (PER_TILE + 1)], s_tile[OWN * (PER_TILE + 1)];
    __local float own_lse[OWN], own_delta[OWN];

    const int lid = get_local_id(0), own = lid / TPO, sub = lid % TPO;
    const int h = get_group_id(1), b = get_group_id(2);
    const sequence_info s = sequence_of(b, FEATURE_SEQUENCES);
    const int i0 = get_group_id(0) * OWN;
    if (i0 >= s.len_q)
        return; /* the whole group */
    const int nq = min(OWN, s.len_q - i0);
    const long bt = VARLEN ? 0 : b;
    const long rows = VARLEN ? total_q : seq_q;
    const int g = h / GROUP;
    const uint stream = (uint)(b * heads_q + h);
    LOAD_TILE(q_tile, OWN, HEAD_DIM, QK_STRIDE, q, bt, h, s.q0 + i0, nq)
    LOAD_TILE(d_tile, OWN, HEAD_DIM_V, V_STRIDE, dout, bt, h, s.q0 + i0, nq)
    for (int t = lid; t < OWN; t += WG_SIZE) {
        const long r = s.q0 + i0 + t;
        own_lse[t] = t < nq ? backward_row_lse(lse[AT(lse, bt, h, r)]) : -INFINITY;
        own_delta[t] = t < nq ? delta[delta_off + (bt * heads_q + h) * rows + r] : 0.0f;
    }
    float acc[K_COLS];
    for (int c = 0; c < K_COLS; c++)
        acc[c] = 0.0f;
    /* The rows' key ranges grow with i: the block needs first(i0) .. last(i_last). */
    const int first = first_key(i0, s, win_left), last = last_key(i0 + nq - 1, s, win_right);
    for (int j0 = first; j0 <= last; j0 += PER_TILE) {
        const int nk = min(PER_TILE, last + 1 - j0);
        barrier(CLK_LOCAL_MEM_FENCE); /* the last tile's readers are done */
        LOAD_TILE(k_tile, PER_TILE, HEAD_DIM, QK_STRIDE, k, bt, g, s.k0 + j0, nk)
        LOAD_TILE(v_tile, PER_TILE, HEAD_DIM_V, V_STRIDE, v, bt, g, s.k0 + j0, nk)
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int e = lid; e < OWN * PER_TILE; e += WG_SIZE) {
            const int r = e / PER_TILE, t = e % PER_TILE, i = i0 + r, j = j0 + t;
            float3 terms = (float3)(0.0f);
            if (r < nq && t < nk && own_lse[r] != -INFINITY &&
                sees(i, j, s, win_left, win_right, KEEP_ROW(b, h, i))) {
                terms = pair_terms(q_tile + r * QK_STRIDE, k_tile + t * QK_STRIDE,
                                   d_tile + r * V_STRIDE, v_tile + t * V_STRIDE, own_lse[r],
                                   own_delta[r], i, j, s, scale, softcap, SLOPE(h),
                                   BIAS_ROW(b, h, i), dropout_seed, dropout_offset, stream,
                                   dropout_threshold, dropout_scale);
            }
            p_tile[r * (PER_TILE + 1) + t] = terms.s0;
            s_tile[r * (PER_TILE + 1) + t] = terms.s2;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int t = 0; t < nk; t++) {
            if (p_tile[own * (PER_TILE + 1) + t] == 0.0f)
                continue; /* P 0 adds nothing, not 0 times a NaN */
            const float ds = s_tile[own * (PER_TILE + 1) + t];
            for (int c = 0; c < K_COLS; c++) {
                const int d = sub + c * TPO;
                if (d < HEAD_DIM)
                    acc[c] += ds * k_tile[t * QK_STRIDE + d];
            }
        }
    }
    if (own < nq) {
        __global elem_t *dqrow = dq + AT(dq, bt, h, s.q0 + i0 + own);
        for (int c = 0; c < K_COLS; c++)
            if (sub + c * TPO < HEAD_DIM)
                store_elem(dqrow, sub + c * TPO, acc[c]);
    }
}
