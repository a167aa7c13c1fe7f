/* The backward pass, FlashAttention-2's structure in O(n) memory: no
 * seq_q x seq_k buffer, the probabilities recomputed from Q, K and the
 * forward's LSE, and no atomics: every sum has one owner that adds in a
 * fixed order, so the same inputs give the same bits.
 *
 *   attn_bwd_dot    one work-item per query row: D = dO . O (0 for a row
 *                   whose keys are all masked), into the workspace
 *   attn_bwd_dkdv   one work-item per BLOCK key rows of a kv head: over
 *                   the group's query heads in order and their queries in
 *                   order, dV += P dO and dK += dS' Q
 *   attn_bwd_dq     one work-item per BLOCK query rows: over their keys in
 *                   order, dQ += dS' K
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
    "BLOCK (rows a work-item of attn_bwd_dkdv / attn_bwd_dq holds, vector lanes) must be 4, 8 or 16"
#endif
#if !defined(TILE) || TILE < 1 || TILE > 8
#error "TILE (query rows / keys a step of attn_bwd_dkdv / attn_bwd_dq takes) must be 1..8"
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

/* One lane per key (dK/dV) or per query row (dQ) of a work-item's block:
 * every product over the head dims is a lane-wise multiply-add of a vector
 * by a broadcast scalar, which needs no reassociation to vectorize. */
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
/* dK/dV: the keep masks of a tile's TILE rows over the block's keys
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

typedef VCAT(uint, BLOCK) words_t;

/* dQ: the words of keys 8 * jb .. 8 * jb + 7 for rows i0 .. i0 + BLOCK - 1,
 * one Philox evaluation a lane. */
inline void dropout_row_words(ulong seed, ulong offset, uint stream, int i0, int jb, words_t w[4]) {
    const uint2 key = dropout_key(seed, offset);
    words_t c0 = (words_t)((uint)jb),
            c1 = (words_t)((uint)i0) + VCAT(convert_uint, BLOCK)(lane_index()),
            c2 = (words_t)(stream), c3 = (words_t)((uint)offset);
    PHILOX4X32_10_WIDE(BLOCK, c0, c1, c2, c3, key.s0, key.s1);
    w[0] = c0;
    w[1] = c1;
    w[2] = c2;
    w[3] = c3;
}

/* Key j's keep lanes from its rows' words. */
inline mask_t dropout_row_lanes(const words_t w[4], int j, uint threshold) {
    const int m = (j & 7) >> 1;
    const words_t word = m == 0 ? w[0] : m == 1 ? w[1] : m == 2 ? w[2] : w[3];
    return ((word >> (words_t)(16u * (uint)(j & 1))) & (words_t)(0xFFFFu)) >= (words_t)(threshold);
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

/* ---- dK, dV ------------------------------------------------------------------ */

/* global (ceil(seq_k / BLOCK), heads_kv, batch): BLOCK consecutive key rows
 * of one kv head a work-item, K, V and the dK, dV accumulators held
 * transposed (a vector of the block's keys per head dim), so that each
 * query row is read once for BLOCK keys. Query rows come TILE at a time:
 * each K, V and accumulator vector is loaded once for TILE rows' products
 * (the private arrays live in memory, the TILE rows' scores in registers).
 * Rows are added in order, one after the other, so tiling does not change
 * the order of any sum. Key rows past a sequence's keys (varlen) are not
 * written; keys no query sees get 0. */
__kernel void
attn_bwd_dkdv(TENSOR(__global const elem_t, q, q), TENSOR(__global const elem_t, k, k),
              TENSOR(__global const elem_t, v, v), TENSOR(__global const elem_t, dout, dout),
              TENSOR(__global const float, lse, lse), __global const float *delta, ulong delta_off,
              TENSOR(__global elem_t, dk, dk), TENSOR(__global elem_t, dv, dv), int heads_q,
              float scale, FEATURE_PARAMS) {
    const int g = get_global_id(1), b = get_global_id(2);
    const sequence_info s = sequence_of(b, FEATURE_SEQUENCES);
    const int j0 = get_global_id(0) * BLOCK;
    if (j0 >= s.len_k)
        return;
    const int nk = min(BLOCK, s.len_k - j0), j_last = j0 + nk - 1;
    const long bt = VARLEN ? 0 : b;
    const long rows = VARLEN ? total_q : seq_q;
    lanes_t kt[HEAD_DIM], vt[HEAD_DIM_V], acc_k[HEAD_DIM], acc_v[HEAD_DIM_V];
    for (int d = 0; d < HEAD_DIM; d++)
        acc_k[d] = kt[d] = 0.0f;
    for (int d = 0; d < HEAD_DIM_V; d++)
        acc_v[d] = vt[d] = 0.0f;
    for (int kk = 0; kk < nk; kk++) {
        __global const elem_t *krow = k + AT(k, bt, g, s.k0 + j0 + kk);
        __global const elem_t *vrow = v + AT(v, bt, g, s.k0 + j0 + kk);
        for (int d = 0; d < HEAD_DIM; d++)
            LANE(kt[d], kk) = load_elem(krow, d);
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
                row_delta[t] = row_on[t] ? delta[delta_off + (bt * heads_q + h) * rows + r] : 0.0f;
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
                    live = seeing_lanes(keys_live, i, 0, j0, 1, s, win_left, win_right, keep_mask,
                                        keep_off, keep_sb, keep_sh, keep_ss, b, h);
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

/* ---- dQ -------------------------------------------------------------------- */

/* global (ceil(seq_q / BLOCK), heads_q, batch): BLOCK consecutive query rows
 * of one head a work-item, Q, dO and the dQ accumulator held transposed (a
 * vector of the block's rows per head dim), over the keys any of them sees,
 * each key row read once for BLOCK rows, TILE keys at a time (as dK/dV's
 * rows: each Q, dO and accumulator vector loaded once for TILE keys; keys
 * added in order). */
__kernel void attn_bwd_dq(TENSOR(__global const elem_t, q, q), TENSOR(__global const elem_t, k, k),
                          TENSOR(__global const elem_t, v, v),
                          TENSOR(__global const elem_t, dout, dout),
                          TENSOR(__global const float, lse, lse), __global const float *delta,
                          ulong delta_off, TENSOR(__global elem_t, dq, dq), int heads_q,
                          float scale, FEATURE_PARAMS) {
    const int h = get_global_id(1), b = get_global_id(2);
    const sequence_info s = sequence_of(b, FEATURE_SEQUENCES);
    const int i0 = get_global_id(0) * BLOCK;
    if (i0 >= s.len_q)
        return;
    const int nq = min(BLOCK, s.len_q - i0);
    const long bt = VARLEN ? 0 : b;
    const long rows = VARLEN ? total_q : seq_q;
    const int g = h / GROUP;
    lanes_t qt[HEAD_DIM], dt[HEAD_DIM_V], acc[HEAD_DIM];
    float row_lse[BLOCK], row_delta[BLOCK];
    for (int d = 0; d < HEAD_DIM; d++)
        acc[d] = qt[d] = 0.0f;
    for (int d = 0; d < HEAD_DIM_V; d++)
        dt[d] = 0.0f;
    for (int rr = 0; rr < BLOCK; rr++) {
        row_lse[rr] = -INFINITY;
        row_delta[rr] = 0.0f;
        if (rr >= nq)
            continue;
        const int r = s.q0 + i0 + rr;
        __global const elem_t *qrow = q + AT(q, bt, h, r);
        __global const elem_t *drow = dout + AT(dout, bt, h, r);
        for (int d = 0; d < HEAD_DIM; d++)
            LANE(qt[d], rr) = load_elem(qrow, d);
        for (int d = 0; d < HEAD_DIM_V; d++)
            LANE(dt[d], rr) = load_elem(drow, d);
        row_lse[rr] = backward_row_lse(lse[AT(lse, bt, h, r)]);
        row_delta[rr] = delta[delta_off + (bt * heads_q + h) * rows + r];
    }
    /* The rows' key ranges grow with i: the block needs first(i0) ..
     * last(i_last), and every row sees first(i_last) .. last(i0). */
    const int first = first_key(i0, s, win_left), last = last_key(i0 + nq - 1, s, win_right);
    const int full_first = first_key(i0 + nq - 1, s, win_left),
              full_last = last_key(i0, s, win_right);
    const lanes_t lse_v = LOAD_LANES(row_lse), delta_v = LOAD_LANES(row_delta);
    const mask_t rows_live = lane_index() < (mask_t)(nq) && lse_v != (lanes_t)(-INFINITY);
    /* Key t of the tile: its K and V rows (0 past the last key). */
    float kj[TILE][HEAD_DIM], vj[TILE][HEAD_DIM_V];
#if DROPOUT
    words_t words[4];
#endif
    for (int j0 = first; j0 <= last; j0 += TILE) {
        bool key_on[TILE], finite = true;
#pragma unroll
        for (int t = 0; t < TILE; t++) {
            const int j = j0 + t;
            key_on[t] = j <= last;
            __global const elem_t *krow = k + AT(k, bt, g, s.k0 + j);
            __global const elem_t *vrow = v + AT(v, bt, g, s.k0 + j);
            for (int d = 0; d < HEAD_DIM; d++) {
                kj[t][d] = key_on[t] ? load_elem(krow, d) : 0.0f;
                finite &= isfinite(kj[t][d]);
            }
            for (int d = 0; d < HEAD_DIM_V; d++)
                vj[t][d] = key_on[t] ? load_elem(vrow, d) : 0.0f;
        }
        lanes_t sc_t[TILE], dp_t[TILE], dxv_t[TILE];
        mask_t zero_t[TILE];
#pragma unroll
        for (int t = 0; t < TILE; t++)
            sc_t[t] = dp_t[t] = 0.0f;
        for (int d = 0; d < HEAD_DIM; d++) {
            const lanes_t qd = qt[d];
#pragma unroll
            for (int t = 0; t < TILE; t++)
                sc_t[t] += qd * kj[t][d];
        }
        for (int d = 0; d < HEAD_DIM_V; d++) {
            const lanes_t dd = dt[d];
#pragma unroll
            for (int t = 0; t < TILE; t++)
                dp_t[t] += dd * vj[t][d];
        }
        bool any_live = false;
#pragma unroll
        for (int t = 0; t < TILE; t++) {
            const int j = j0 + t;
            const lanes_t sc = sc_t[t];
            lanes_t dp = dp_t[t];
            lanes_t pv, dxv;
            mask_t zero;
            /* Every row of the block sees key j unless j is at the edge of
             * their ranges or a keep-mask hides it. */
            mask_t live = key_on[t] ? rows_live : (mask_t)(0);
            if (key_on[t] && (HAS_KEEP_MASK || j < full_first || j > full_last))
                live = seeing_lanes(rows_live, i0, 1, j, 0, s, win_left, win_right, keep_mask,
                                    keep_off, keep_sb, keep_sh, keep_ss, b, h);
            any_live |= any(live);
#if DROPOUT
            /* The rows' draws of keys 8 * (j / 8) .. + 7, one evaluation a
             * row, redrawn as the keys (in order) reach a new 8. */
            if (j == first || (j & 7) == 0)
                dropout_row_words(dropout_seed, dropout_offset, (uint)(b * heads_q + h), i0,
                                  j >> 3, words);
            dp = select((lanes_t)(0.0f), dp * dropout_scale,
                        dropout_row_lanes(words, j, dropout_threshold));
#endif
            LANE_STEP(lse_v, delta_v, i0, 1, j, 0);
            dxv_t[t] = dxv;
            zero_t[t] = zero;
        }
        if (!any_live)
            continue;
        if (finite) {
            for (int d = 0; d < HEAD_DIM; d++) {
                lanes_t a = acc[d];
#pragma unroll
                for (int t = 0; t < TILE; t++)
                    a += dxv_t[t] * kj[t][d];
                acc[d] = a;
            }
        } else {
            for (int d = 0; d < HEAD_DIM; d++)
                for (int t = 0; t < TILE; t++)
                    acc[d] = select(acc[d] + dxv_t[t] * kj[t][d], acc[d], zero_t[t]);
        }
    }
    for (int rr = 0; rr < nq; rr++) {
        __global elem_t *dqrow = dq + AT(dq, bt, h, s.q0 + i0 + rr);
        for (int d = 0; d < HEAD_DIM; d++)
            store_elem(dqrow, d, LANE(acc[d], rr));
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
