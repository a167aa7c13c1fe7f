/* The backward pass, FlashAttention-2's structure in O(n) memory: no
 * seq_q x seq_k buffer, the probabilities recomputed from Q, K and the
 * forward's LSE, and no atomics: every sum has one owner that adds in a
 * fixed order, so the same inputs give the same bits.
 *
 *   attn_bwd_dot    one work-item per query row: D = dO . O (0 for a row
 *                   whose keys are all masked), into the workspace
 *   attn_bwd_dkdv   one work-item per split of a kv head's keys, BLOCK
 *                   keys at a time: over the group's query heads in order
 *                   and their queries in order, dV += P dO, dK += dS' Q,
 *                   and the split's partial dQ += dS' K
 *   attn_bwd_dq_sum one work-item per query row: dQ, its splits' partial
 *                   rows added in order
 *   attn_bwd_dbias  one work-item per bias element (i, j) of a bias batch
 *                   and head: dS summed over the batches and heads the bias
 *                   broadcasts to, in order
 *
 * with P = exp(s - LSE), dP = dO . V, dS = P (dP - D) the gradient of the
 * modified score s, and dS' = scale * dS * ds/d(scale q.k) (softcap's
 * 1 - tanh^2). With dropout, dP = Z (dO . V) / (1 - p) and dV's weights are
 * Z P / (1 - p), Z the forward's mask redrawn by common.cl's Philox; D is
 * dO . O of the dropped O and dS keeps the un-dropped P. Work-groups are of
 * one work-item (any local size works: no work-item shares anything). The
 * masks and modifiers are common.cl's, so they mean here what they mean in
 * the forward. Accumulation is fp32. */

#if !defined(HEAD_DIM) || !defined(HEAD_DIM_V)
#error "HEAD_DIM and HEAD_DIM_V must be defined"
#endif
#if !defined(GROUP) || GROUP < 1
#error "GROUP (heads_q / heads_kv) must be defined and >= 1"
#endif
#if !defined(BLOCK) || (BLOCK != 4 && BLOCK != 8 && BLOCK != 16)
#error                                                                                             \
    "BLOCK (keys a block of attn_bwd_dkdv holds, vector lanes) must be 4, 8 or 16"
#endif
#if !defined(TILE) || TILE < 1 || TILE > 8
#error "TILE (query rows a step of attn_bwd_dkdv takes) must be 1..8"
#endif

/* ---- D = rowsum(dO * O) -------------------------------------------------- */

/* global (seq_q, heads_q, batch). delta[(b * heads_q + h) * rows + r],
 * rows = total_q with varlen (b then 0), seq_q otherwise. */
__kernel void attn_bwd_dot(TENSOR(__global const elem_t, o, o),
                           TENSOR(__global const elem_t, dout, dout),
                           TENSOR(__global const float, lse, lse), __global float *delta,
                           ulong delta_off, int heads_q, FEATURE_PARAMS) {
    const int i = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    const sequence_info s = sequence_of(b, FEATURE_SEQUENCES);
    if (i >= s.len_q)
        return;
    const int r = s.q0 + i;
    const long rows = VARLEN ? total_q : seq_q;
    const long bt = VARLEN ? 0 : b;
    __global const elem_t *orow = o + AT(o, bt, h, r);
    __global const elem_t *drow = dout + AT(dout, bt, h, r);
    float sum = 0.0f;
    if (backward_row_lse(lse[AT(lse, bt, h, r)]) != -INFINITY)
        for (int d = 0; d < HEAD_DIM_V; d++)
            sum += load_elem(orow, d) * load_elem(drow, d);
    delta[delta_off + (bt * heads_q + h) * rows + r] = sum;
}

/* ---- Vectors of BLOCK lanes --------------------------------------------- */

/* One lane per key of a work-item's block: every product over the head
 * dims is a lane-wise multiply-add of a vector by a broadcast scalar, which
 * needs no reassociation to vectorize. */
#define VCAT_(a, b) a##b
#define VCAT(a, b) VCAT_(a, b)
typedef VCAT(float, BLOCK) lanes_t;
#define LOAD_LANES(p) VCAT(vload, BLOCK)(0, (p))
#define STORE_LANES(x, p) VCAT(vstore, BLOCK)((x), 0, (p))
#define LANE(vec, l) (((float *)&(vec))[l])

typedef VCAT(int, BLOCK) mask_t;

/* The softmax step of a block, lane-wise: from the raw scores `sc` and dP
 * `dp`, the weights pv = exp(s - LSE) and dS' = scale * P (dP - D) * tanh'
 * (dxv) of the lanes in `live`, 0 in the others (whatever their scores:
 * NaN or infinity from a key or row they do not see stays out). With score
 * modifiers the modified score of each live lane is common.cl's
 * modified_score, computed lane by lane; `lane_i` and `lane_j` name lane
 * l's query and key. */
inline lanes_t modified_lanes(lanes_t sc, mask_t live, float scale, float softcap, float slope,
                              int i_base, int i_step, int j_base, int j_step, sequence_info s,
                              __global const float *bias, ulong bias_off, long bias_sb,
                              long bias_sh, long bias_ss, int b, int h) {
#if HAS_MODIFIERS
    float sc_[BLOCK], x_[BLOCK];
    int live_[BLOCK];
    STORE_LANES(sc, sc_);
    VCAT(vstore, BLOCK)(live, 0, live_);
    for (int l = 0; l < BLOCK; l++) {
        const int i = i_base + i_step * l, j = j_base + j_step * l;
        x_[l] = live_[l] ? modified_score(sc_[l], scale, softcap, slope, i, j, s,
                                          bias + AT(bias, b, h, i))
                         : 0.0f;
    }
    return LOAD_LANES(x_);
#else
    return sc * scale;
#endif
}

#define LANE_STEP(lse_v, delta_v, i_base, i_step, j_base, j_step)                                  \
    do {                                                                                           \
        const lanes_t x_ =                                                                         \
            modified_lanes(sc, live, scale, softcap, SLOPE(h), (i_base), (i_step), (j_base),       \
                           (j_step), s, bias, bias_off, bias_sb, bias_sh, bias_ss, b, h);          \
        pv = select((lanes_t)(0.0f), exp(x_ - (lse_v)), live);                                     \
        lanes_t slope_ = 1.0f;                                                                     \
        if (SOFTCAP) {                                                                             \
            const lanes_t t_ = tanh(sc * scale / softcap);                                         \
            slope_ = 1.0f - t_ * t_;                                                               \
        }                                                                                          \
        dxv = select((lanes_t)(0.0f), pv * (dp - (delta_v)) * slope_ * scale, live);               \
        zero = pv == (lanes_t)(0.0f);                                                              \
    } while (0)

/* Lane l's index l. */
inline mask_t lane_index(void) {
    int idx[BLOCK];
    for (int l = 0; l < BLOCK; l++)
        idx[l] = l;
    return VCAT(vload, BLOCK)(0, idx);
}

#if DROPOUT
/* The keep masks of a tile's TILE rows over the block's keys
 * j0 .. j0 + BLOCK - 1 (j0 a multiple of BLOCK), drawn as the forward draws
 * them (common.cl: stream b * heads_q + h, a Philox evaluation per 8 keys of
 * a row). The tile's TILE * NBK evaluations run as the lanes of one vector
 * (lane l: row l / NBK, the block's l % NBK-th 8 keys), then each row's
 * 16-bit draws are shuffled out of its evaluations' words. */
#define NBK (BLOCK >= 8 ? BLOCK / 8 : 1)
#if TILE * NBK <= 4
#define DW 4
#elif TILE * NBK <= 8
#define DW 8
#else
#define DW 16
#endif
typedef VCAT(uint, DW) tile_words_t;
__constant uint drop_lane[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

inline void dropout_tile_words(ulong seed, ulong offset, uint stream, int i0, int j0,
                               uint w[4][DW]) {
    const uint2 key = dropout_key(seed, offset);
    const tile_words_t lane = VCAT(vload, DW)(0, drop_lane);
    tile_words_t c0 = (tile_words_t)((uint)j0 >> 3) + lane % NBK,
                 c1 = (tile_words_t)((uint)i0) + lane / NBK, c2 = (tile_words_t)(stream),
                 c3 = (tile_words_t)((uint)offset);
    PHILOX4X32_10_WIDE(DW, c0, c1, c2, c3, key.s0, key.s1);
    VCAT(vstore, DW)(c0, 0, w[0]);
    VCAT(vstore, DW)(c1, 0, w[1]);
    VCAT(vstore, DW)(c2, 0, w[2]);
    VCAT(vstore, DW)(c3, 0, w[3]);
}

/* Row t's keep lanes (-1 keep, 0 drop) from the tile's words; each word
 * holds two keys' draws, low half first. */
inline mask_t dropout_tile_keep(uint w[4][DW], int t, int j0, uint threshold) {
    return VCAT(DROPOUT_DRAWS_, BLOCK)(w, t * NBK, j0) >= (VCAT(uint, BLOCK))(threshold);
}
#endif

/* Lanes where `sees` holds for lane l's query i_base + i_step * l and key
 * j_base + j_step * l, among `candidates`. */
inline mask_t seeing_lanes(mask_t candidates, int i_base, int i_step, int j_base, int j_step,
                           sequence_info s, int win_left, int win_right,
                           __global const uchar *keep_mask, ulong keep_off, long keep_sb,
                           long keep_sh, long keep_ss, int b, int h) {
    int c_[BLOCK];
    VCAT(vstore, BLOCK)(candidates, 0, c_);
    for (int l = 0; l < BLOCK; l++) {
        const int i = i_base + i_step * l, j = j_base + j_step * l;
        c_[l] = c_[l] && sees(i, j, s, win_left, win_right, keep_mask + AT(keep, b, h, i)) ? -1 : 0;
    }
    return VCAT(vload, BLOCK)(0, c_);
}

/* ---- dK, dV and dQ's partial sums ---------------------------------------------- */

/* global (splits, heads_kv, batch): the key blocks sp, sp + splits, sp +
 * 2 * splits, ... of one kv head a work-item (BLOCK consecutive keys a
 * block; interleaved, so that a causal mask's work spreads evenly). Each
 * block's K, V and dK, dV accumulators are held transposed (a vector of the
 * block's keys per head dim), so that each query row is read once for
 * BLOCK keys. Query rows come TILE at a time: each K, V and accumulator
 * vector is loaded once for TILE rows' products (the private arrays live in
 * memory, the TILE rows' scores in registers). Rows are added in order, one
 * after the other, so tiling does not change the order of any sum. Key rows
 * past a sequence's keys (varlen) are not written; keys no query sees get 0.
 *
 * The same dS' gives dQ: each tile adds its rows' dS' K over the block's
 * keys, in key order, into the split's partial dQ (fp32, dq_part), which
 * only this work-item writes (it zeroes its rows first). dQ so costs one
 * product more here instead of a second pass that computes P and dP again
 * (7 products to 5); attn_bwd_dq_sum adds the splits in order. dq_part
 * holds [splits, batch, heads_q, rows, HEAD_DIM] floats (batch 1 and rows
 * total_q with varlen). */
__kernel void
attn_bwd_dkdv(TENSOR(__global const elem_t, q, q), TENSOR(__global const elem_t, k, k),
              TENSOR(__global const elem_t, v, v), TENSOR(__global const elem_t, dout, dout),
              TENSOR(__global const float, lse, lse), __global const float *delta, ulong delta_off,
              TENSOR(__global elem_t, dk, dk), TENSOR(__global elem_t, dv, dv),
              __global float *dq_part, ulong dq_part_off, int splits, int heads_q, float scale,
              FEATURE_PARAMS) {
    const int sp = get_global_id(0), g = get_global_id(1), b = get_global_id(2);
    const sequence_info s = sequence_of(b, FEATURE_SEQUENCES);
    const long bt = VARLEN ? 0 : b;
    const long rows = VARLEN ? total_q : seq_q;
    const long batches = VARLEN ? 1 : (long)get_global_size(2);
    /* The group's partial dQ rows in this split, from the sequence's first
     * row; head m's are m * rows * HEAD_DIM floats on. */
    __global float *part =
        dq_part + dq_part_off +
        (((long)sp * batches + bt) * heads_q + (long)g * GROUP) * rows * HEAD_DIM +
        (long)s.q0 * HEAD_DIM;
    for (int m = 0; m < GROUP; m++)
        for (long e = 0; e < (long)s.len_q * HEAD_DIM; e++)
            part[m * rows * HEAD_DIM + e] = 0.0f;
    for (int j0 = sp * BLOCK; j0 < s.len_k; j0 += splits * BLOCK) {
        const int nk = min(BLOCK, s.len_k - j0), j_last = j0 + nk - 1;
        lanes_t kt[HEAD_DIM], vt[HEAD_DIM_V], acc_k[HEAD_DIM], acc_v[HEAD_DIM_V];
        float kr[BLOCK][HEAD_DIM]; /* the block's K rows again, for dQ */
        bool k_finite = true;
        for (int d = 0; d < HEAD_DIM; d++)
            acc_k[d] = kt[d] = 0.0f;
        for (int d = 0; d < HEAD_DIM_V; d++)
            acc_v[d] = vt[d] = 0.0f;
        for (int kk = 0; kk < nk; kk++) {
            __global const elem_t *krow = k + AT(k, bt, g, s.k0 + j0 + kk);
            __global const elem_t *vrow = v + AT(v, bt, g, s.k0 + j0 + kk);
            for (int d = 0; d < HEAD_DIM; d++) {
                LANE(kt[d], kk) = kr[kk][d] = load_elem(krow, d);
                k_finite &= isfinite(kr[kk][d]);
            }
            for (int d = 0; d < HEAD_DIM_V; d++)
                LANE(vt[d], kk) = load_elem(vrow, d);
        }
        const mask_t keys_live = lane_index() < (mask_t)(nk);
        /* Row t of the tile: its Q and dO rows (0 for a row out of the tile's
         * use: past the rows, seeing none of the block, or fully masked). */
        float qi[TILE][HEAD_DIM], di[TILE][HEAD_DIM_V];
        for (int m = 0; m < GROUP; m++) {
            const int h = g * GROUP + m;
            for (int i0 = 0; i0 < s.len_q; i0 += TILE) {
                /* Key ranges grow with i: skip tiles that see none of the block. */
                if (last_key(min(i0 + TILE, s.len_q) - 1, s, win_right) < j0 ||
                    first_key(i0, s, win_left) > j_last)
                    continue;
                float row_lse[TILE], row_delta[TILE];
                bool row_on[TILE], finite = true, any_on = false;
    #pragma unroll
                for (int t = 0; t < TILE; t++) {
                    const int i = i0 + t, r = s.q0 + i;
                    row_on[t] = i < s.len_q && last_key(i, s, win_right) >= j0 &&
                                first_key(i, s, win_left) <= j_last;
                    row_lse[t] = row_on[t] ? backward_row_lse(lse[AT(lse, bt, h, r)]) : -INFINITY;
                    row_on[t] = row_on[t] && row_lse[t] != -INFINITY;
                    any_on |= row_on[t];
                    row_delta[t] =
                        row_on[t] ? delta[delta_off + (bt * heads_q + h) * rows + r] : 0.0f;
                    __global const elem_t *qrow = q + AT(q, bt, h, r);
                    __global const elem_t *drow = dout + AT(dout, bt, h, r);
                    for (int d = 0; d < HEAD_DIM; d++) {
                        qi[t][d] = row_on[t] ? load_elem(qrow, d) : 0.0f;
                        finite &= isfinite(qi[t][d]);
                    }
                    for (int d = 0; d < HEAD_DIM_V; d++) {
                        di[t][d] = row_on[t] ? load_elem(drow, d) : 0.0f;
                        finite &= isfinite(di[t][d]);
                    }
                }
                if (!any_on)
                    continue;
    #if DROPOUT
                uint words[4][DW];
                dropout_tile_words(dropout_seed, dropout_offset, (uint)(b * heads_q + h), i0, j0,
                                   words);
    #endif
                lanes_t sc_t[TILE], dp_t[TILE], pv_t[TILE], dxv_t[TILE];
                mask_t zero_t[TILE], zero_v_t[TILE];
    #pragma unroll
                for (int t = 0; t < TILE; t++)
                    sc_t[t] = dp_t[t] = 0.0f;
                for (int d = 0; d < HEAD_DIM; d++) {
                    const lanes_t kd = kt[d];
    #pragma unroll
                    for (int t = 0; t < TILE; t++)
                        sc_t[t] += qi[t][d] * kd;
                }
                for (int d = 0; d < HEAD_DIM_V; d++) {
                    const lanes_t vd = vt[d];
    #pragma unroll
                    for (int t = 0; t < TILE; t++)
                        dp_t[t] += di[t][d] * vd;
                }
                bool any_live = false;
    #pragma unroll
                for (int t = 0; t < TILE; t++) {
                    const int i = i0 + t;
                    const lanes_t sc = sc_t[t];
                    lanes_t dp = dp_t[t];
                    lanes_t pv, dxv;
                    mask_t zero;
                    /* Row i sees the whole block unless it sits at the edge of
                     * its key range or a keep-mask hides keys. */
                    mask_t live = row_on[t] ? keys_live : (mask_t)(0);
                    if (row_on[t] && (HAS_KEEP_MASK || first_key(i, s, win_left) > j0 ||
                                      last_key(i, s, win_right) < j_last))
                        live = seeing_lanes(keys_live, i, 0, j0, 1, s, win_left, win_right,
                                            keep_mask, keep_off, keep_sb, keep_sh, keep_ss, b, h);
                    any_live |= any(live);
    #if DROPOUT
                    /* dP of a dropped key is 0 (not 0 times a NaN V), a kept
                     * one's scaled as its weight in O. */
                    const mask_t keep = dropout_tile_keep(words, t, j0, dropout_threshold);
                    dp = select((lanes_t)(0.0f), dp * dropout_scale, keep);
    #endif
                    LANE_STEP(row_lse[t], row_delta[t], i, 0, j0, 1);
    #if DROPOUT
                    /* dV's weights are O's: the dropped, scaled P; dK's dS
                     * keeps the un-dropped P (the softmax is the un-dropped one). */
                    pv = select((lanes_t)(0.0f), pv * dropout_scale, keep);
                    zero_v_t[t] = pv == (lanes_t)(0.0f);
    #else
                    zero_v_t[t] = zero;
    #endif
                    pv_t[t] = pv;
                    dxv_t[t] = dxv;
                    zero_t[t] = zero;
                }
                if (!any_live)
                    continue;
                /* dQ's partial rows += dS' K over the block's keys, in key
                 * order; a key of weight 0 adds nothing (not 0 times a NaN
                 * K). Rows out of the tile's use are neither read nor
                 * written (a varlen sequence's next rows are another's). */
                __global float *part_tile = part + m * rows * HEAD_DIM + (long)i0 * HEAD_DIM;
                float w[TILE][BLOCK];
#pragma unroll
                for (int t = 0; t < TILE; t++)
                    STORE_LANES(select(dxv_t[t], (lanes_t)(0.0f), zero_t[t]), w[t]);
                if (k_finite) {
                    /* 8 head dims of the TILE rows at a time in registers,
                     * each K load serving the TILE rows. */
                    for (int d0 = 0; d0 + 8 <= HEAD_DIM; d0 += 8) {
                        float8 a[TILE];
#pragma unroll
                        for (int t = 0; t < TILE; t++)
                            a[t] = row_on[t] ? vload8(0, part_tile + t * HEAD_DIM + d0) : 0.0f;
                        for (int kk = 0; kk < nk; kk++) {
                            const float8 kv = vload8(0, &kr[kk][d0]);
#pragma unroll
                            for (int t = 0; t < TILE; t++)
                                a[t] += w[t][kk] * kv;
                        }
#pragma unroll
                        for (int t = 0; t < TILE; t++)
                            if (row_on[t])
                                vstore8(a[t], 0, part_tile + t * HEAD_DIM + d0);
                    }
                }
                for (int t = 0; t < TILE; t++) {
                    if (!row_on[t])
                        continue;
                    /* The head dims past the last 8 (all of them with a
                     * non-finite K), key by key. */
                    for (int d = k_finite ? HEAD_DIM / 8 * 8 : 0; d < HEAD_DIM; d++) {
                        float a = part_tile[t * HEAD_DIM + d];
                        for (int kk = 0; kk < nk; kk++)
                            if (w[t][kk] != 0.0f)
                                a += w[t][kk] * kr[kk][d];
                        part_tile[t * HEAD_DIM + d] = a;
                    }
                }
                if (finite) {
                    /* 0 * a finite value adds +0: the lanes of weight 0 keep their sums. */
                    for (int d = 0; d < HEAD_DIM_V; d++) {
                        lanes_t a = acc_v[d];
    #pragma unroll
                        for (int t = 0; t < TILE; t++)
                            a += pv_t[t] * di[t][d];
                        acc_v[d] = a;
                    }
                    for (int d = 0; d < HEAD_DIM; d++) {
                        lanes_t a = acc_k[d];
    #pragma unroll
                        for (int t = 0; t < TILE; t++)
                            a += dxv_t[t] * qi[t][d];
                        acc_k[d] = a;
                    }
                } else {
                    /* A key of weight 0 adds nothing, not 0 times a NaN. */
                    for (int d = 0; d < HEAD_DIM_V; d++)
                        for (int t = 0; t < TILE; t++)
                            acc_v[d] = select(acc_v[d] + pv_t[t] * di[t][d], acc_v[d], zero_v_t[t]);
                    for (int d = 0; d < HEAD_DIM; d++)
                        for (int t = 0; t < TILE; t++)
                            acc_k[d] = select(acc_k[d] + dxv_t[t] * qi[t][d], acc_k[d], zero_t[t]);
                }
            }
        }
        for (int kk = 0; kk < nk; kk++) {
            __global elem_t *dkrow = dk + AT(dk, bt, g, s.k0 + j0 + kk);
            __global elem_t *dvrow = dv + AT(dv, bt, g, s.k0 + j0 + kk);
            for (int d = 0; d < HEAD_DIM; d++)
                store_elem(dkrow, d, LANE(acc_k[d], kk));
            for (int d = 0; d < HEAD_DIM_V; d++)
                store_elem(dvrow, d, LANE(acc_v[d], kk));
        }
    }
}

/* ---- dQ -------------------------------------------------------------------- */

/* global (seq_q, heads_q, batch): a dQ row, the sum of its splits' partial
 * rows (attn_bwd_dkdv's dq_part) in split order. */
__kernel void attn_bwd_dq_sum(__global const float *dq_part, ulong dq_part_off, int splits,
                              TENSOR(__global elem_t, dq, dq), int heads_q, FEATURE_PARAMS) {
    const int i = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    const sequence_info s = sequence_of(b, FEATURE_SEQUENCES);
    if (i >= s.len_q)
        return;
    const int r = s.q0 + i;
    const long bt = VARLEN ? 0 : b;
    const long rows = VARLEN ? total_q : seq_q;
    const long batches = VARLEN ? 1 : (long)get_global_size(2);
    const long split_step = batches * heads_q * rows * HEAD_DIM;
    __global const float *part = dq_part + dq_part_off + ((bt * heads_q + h) * rows + r) * HEAD_DIM;
    __global elem_t *dq_row = dq + AT(dq, bt, h, r);
    for (int d = 0; d < HEAD_DIM; d++) {
        float sum = part[d];
        for (int sp = 1; sp < splits; sp++)
            sum += part[sp * split_step + d];
        store_elem(dq_row, d, sum);
    }
}

/* ---- dBias ------------------------------------------------------------------- */

/* global (seq_k, seq_q, bias_batch * bias_heads). Elements past every
 * sequence's lengths (varlen) and keys no query sees get 0. */
__kernel void
attn_bwd_dbias(TENSOR(__global const elem_t, q, q), TENSOR(__global const elem_t, k, k),
               TENSOR(__global const elem_t, v, v), TENSOR(__global const elem_t, dout, dout),
               TENSOR(__global const float, lse, lse), __global const float *delta, ulong delta_off,
               TENSOR(__global float, dbias, dbias), int batch, int heads_q, int bias_batch,
               int bias_heads, float scale, FEATURE_PARAMS) {
    const int j = get_global_id(0), i = get_global_id(1), bh = get_global_id(2);
    const int bb = bh / bias_heads, hb = bh % bias_heads;
    const long rows = VARLEN ? total_q : seq_q;
    const int b_first = bias_batch == 1 ? 0 : bb, b_end = bias_batch == 1 ? batch : bb + 1;
    const int h_first = bias_heads == 1 ? 0 : hb, h_end = bias_heads == 1 ? heads_q : hb + 1;
    float sum = 0.0f;
    for (int b = b_first; b < b_end; b++) {
        const sequence_info s = sequence_of(b, FEATURE_SEQUENCES);
        if (i >= s.len_q || j >= s.len_k)
            continue;
        const long bt = VARLEN ? 0 : b;
        const int r = s.q0 + i;
        for (int h = h_first; h < h_end; h++) {
            if (!sees(i, j, s, win_left, win_right, KEEP_ROW(b, h, i)))
                continue;
            const float row_lse = backward_row_lse(lse[AT(lse, bt, h, r)]);
            if (row_lse == -INFINITY)
                continue;
            const int g = h / GROUP;
            __global const elem_t *qrow = q + AT(q, bt, h, r);
            __global const elem_t *drow = dout + AT(dout, bt, h, r);
            __global const elem_t *krow = k + AT(k, bt, g, s.k0 + j);
            __global const elem_t *vrow = v + AT(v, bt, g, s.k0 + j);
            float raw = 0.0f, dp = 0.0f;
            for (int d = 0; d < HEAD_DIM; d++)
                raw += load_elem(qrow, d) * load_elem(krow, d);
            for (int d = 0; d < HEAD_DIM_V; d++)
                dp += load_elem(drow, d) * load_elem(vrow, d);
#if DROPOUT
            dp = dropout_keep(dropout_seed, dropout_offset, (uint)(b * heads_q + h), i, j,
                              dropout_threshold)
                     ? dp * dropout_scale
                     : 0.0f;
#endif
            const float x =
                modified_score(raw, scale, softcap, SLOPE(h), i, j, s, BIAS_ROW(b, h, i));
            const float p = exp(x - row_lse);
            sum += p * (dp - delta[delta_off + (bt * heads_q + h) * rows + r]);
        }
    }
    dbias[AT(dbias, bb, hb, i) + j] = sum;
}
