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
 * 1 - tanh^2). Work-groups are of one work-item (any local size works: no
 * work-item shares anything). The masks and modifiers are common.cl's, so
 * they mean here what they mean in the forward. Accumulation is fp32. */

#if !defined(HEAD_DIM) || !defined(HEAD_DIM_V)
#error "HEAD_DIM and HEAD_DIM_V must be defined"
#endif
#if !defined(GROUP) || GROUP < 1
#error "GROUP (heads_q / heads_kv) must be defined and >= 1"
#endif
#if !defined(BLOCK) || BLOCK < 1 || BLOCK > 32
#error "BLOCK (rows a work-item of attn_bwd_dkdv / attn_bwd_dq holds) must be 1..32"
#endif

/* Whether query i (of head h, batch b) sees key j: common.cl's key range
 * and the keep-mask. */
inline bool sees(int i, int j, sequence_info s, int win_left, int win_right,
                 __global const uchar *keep_row) {
    if (j < first_key(i, s, win_left) || j > last_key(i, s, win_right))
        return false;
#if HAS_KEEP_MASK
    if (keep_row[j] == 0)
        return false;
#endif
    return true;
}

/* ds/d(scale * q.k) of the modified score: softcap's tanh' (ALiBi and the
 * bias add constants). */
inline float modifier_slope(float raw, float scale, float softcap) {
#if SOFTCAP
    const float t = tanh(raw * scale / softcap);
    return 1.0f - t * t;
#else
    return 1.0f;
#endif
}

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
    if (lse[AT(lse, bt, h, r)] != -INFINITY)
        for (int d = 0; d < HEAD_DIM_V; d++)
            sum += load_elem(orow, d) * load_elem(drow, d);
    delta[delta_off + (bt * heads_q + h) * rows + r] = sum;
}

/* ---- dK, dV ------------------------------------------------------------------ */

/* global (ceil(seq_k / BLOCK), heads_kv, batch): BLOCK consecutive key rows
 * of one kv head a work-item, their K and V held transposed (key fastest)
 * so that the scores and dP of one query row against the block are
 * broadcast-multiply-adds over independent lanes, and each query row is
 * read once for BLOCK keys. Key rows past a sequence's keys (varlen) are not
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
    float kt[HEAD_DIM][BLOCK], vt[HEAD_DIM_V][BLOCK];
    float acc_k[BLOCK][HEAD_DIM], acc_v[BLOCK][HEAD_DIM_V];
    for (int kk = 0; kk < BLOCK; kk++) {
        __global const elem_t *krow = k + AT(k, bt, g, s.k0 + j0 + min(kk, nk - 1));
        __global const elem_t *vrow = v + AT(v, bt, g, s.k0 + j0 + min(kk, nk - 1));
        for (int d = 0; d < HEAD_DIM; d++) {
            kt[d][kk] = kk < nk ? load_elem(krow, d) : 0.0f;
            acc_k[kk][d] = 0.0f;
        }
        for (int d = 0; d < HEAD_DIM_V; d++) {
            vt[d][kk] = kk < nk ? load_elem(vrow, d) : 0.0f;
            acc_v[kk][d] = 0.0f;
        }
    }
    float qi[HEAD_DIM], di[HEAD_DIM_V], sc[BLOCK], dp[BLOCK], pr[BLOCK], dx[BLOCK];
    for (int m = 0; m < GROUP; m++) {
        const int h = g * GROUP + m;
        for (int i = 0; i < s.len_q; i++) {
            /* Key ranges grow with i: skip rows that see none of the block. */
            if (last_key(i, s, win_right) < j0 || first_key(i, s, win_left) > j_last)
                continue;
            const int r = s.q0 + i;
            const float row_lse = lse[AT(lse, bt, h, r)];
            if (row_lse == -INFINITY)
                continue;
            const float row_delta = delta[delta_off + (bt * heads_q + h) * rows + r];
            __global const elem_t *qrow = q + AT(q, bt, h, r);
            __global const elem_t *drow = dout + AT(dout, bt, h, r);
            for (int d = 0; d < HEAD_DIM; d++)
                qi[d] = load_elem(qrow, d);
            for (int d = 0; d < HEAD_DIM_V; d++)
                di[d] = load_elem(drow, d);
            for (int kk = 0; kk < BLOCK; kk++)
                sc[kk] = dp[kk] = 0.0f;
            for (int d = 0; d < HEAD_DIM; d++)
                for (int kk = 0; kk < BLOCK; kk++)
                    sc[kk] += qi[d] * kt[d][kk];
            for (int d = 0; d < HEAD_DIM_V; d++)
                for (int kk = 0; kk < BLOCK; kk++)
                    dp[kk] += di[d] * vt[d][kk];
            __global const uchar *keep_row = KEEP_ROW(b, h, i);
            __global const float *bias_row = BIAS_ROW(b, h, i);
            for (int kk = 0; kk < BLOCK; kk++) {
                pr[kk] = 0.0f;
                dx[kk] = 0.0f;
                if (kk >= nk || !sees(i, j0 + kk, s, win_left, win_right, keep_row))
                    continue;
                const float x =
                    modified_score(sc[kk], scale, softcap, SLOPE(h), i, j0 + kk, s, bias_row);
                pr[kk] = exp(x - row_lse);
                dx[kk] =
                    pr[kk] * (dp[kk] - row_delta) * modifier_slope(sc[kk], scale, softcap) * scale;
            }
            /* A key of weight 0 adds nothing (not 0 times a NaN). */
            for (int kk = 0; kk < BLOCK; kk++) {
                if (pr[kk] == 0.0f)
                    continue;
                for (int d = 0; d < HEAD_DIM_V; d++)
                    acc_v[kk][d] += pr[kk] * di[d];
                for (int d = 0; d < HEAD_DIM; d++)
                    acc_k[kk][d] += dx[kk] * qi[d];
            }
        }
    }
    for (int kk = 0; kk < nk; kk++) {
        __global elem_t *dkrow = dk + AT(dk, bt, g, s.k0 + j0 + kk);
        __global elem_t *dvrow = dv + AT(dv, bt, g, s.k0 + j0 + kk);
        for (int d = 0; d < HEAD_DIM; d++)
            store_elem(dkrow, d, acc_k[kk][d]);
        for (int d = 0; d < HEAD_DIM_V; d++)
            store_elem(dvrow, d, acc_v[kk][d]);
    }
}

/* ---- dQ -------------------------------------------------------------------- */

/* global (ceil(seq_q / BLOCK), heads_q, batch): BLOCK consecutive query rows
 * of one head a work-item, Q and dO held transposed (row fastest), over the
 * keys any of them sees, each key row read once for BLOCK rows. */
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
    float qt[HEAD_DIM][BLOCK], dt[HEAD_DIM_V][BLOCK], acc[BLOCK][HEAD_DIM];
    float row_lse[BLOCK], row_delta[BLOCK];
    for (int rr = 0; rr < BLOCK; rr++) {
        const int r = s.q0 + i0 + min(rr, nq - 1);
        __global const elem_t *qrow = q + AT(q, bt, h, r);
        __global const elem_t *drow = dout + AT(dout, bt, h, r);
        for (int d = 0; d < HEAD_DIM; d++) {
            qt[d][rr] = rr < nq ? load_elem(qrow, d) : 0.0f;
            acc[rr][d] = 0.0f;
        }
        for (int d = 0; d < HEAD_DIM_V; d++)
            dt[d][rr] = rr < nq ? load_elem(drow, d) : 0.0f;
        row_lse[rr] = rr < nq ? lse[AT(lse, bt, h, r)] : -INFINITY;
        row_delta[rr] = delta[delta_off + (bt * heads_q + h) * rows + r];
    }
    /* The rows' key ranges grow with i: the block needs first(i0) .. last(i_last). */
    const int first = first_key(i0, s, win_left), last = last_key(i0 + nq - 1, s, win_right);
    float kj[HEAD_DIM], vj[HEAD_DIM_V], sc[BLOCK], dp[BLOCK], pr[BLOCK], dx[BLOCK];
    for (int j = first; j <= last; j++) {
        __global const elem_t *krow = k + AT(k, bt, g, s.k0 + j);
        __global const elem_t *vrow = v + AT(v, bt, g, s.k0 + j);
        for (int d = 0; d < HEAD_DIM; d++)
            kj[d] = load_elem(krow, d);
        for (int d = 0; d < HEAD_DIM_V; d++)
            vj[d] = load_elem(vrow, d);
        for (int rr = 0; rr < BLOCK; rr++)
            sc[rr] = dp[rr] = 0.0f;
        for (int d = 0; d < HEAD_DIM; d++)
            for (int rr = 0; rr < BLOCK; rr++)
                sc[rr] += qt[d][rr] * kj[d];
        for (int d = 0; d < HEAD_DIM_V; d++)
            for (int rr = 0; rr < BLOCK; rr++)
                dp[rr] += dt[d][rr] * vj[d];
        for (int rr = 0; rr < BLOCK; rr++) {
            const int i = i0 + rr;
            pr[rr] = 0.0f;
            dx[rr] = 0.0f;
            if (rr >= nq || row_lse[rr] == -INFINITY ||
                !sees(i, j, s, win_left, win_right, KEEP_ROW(b, h, i)))
                continue;
            const float x =
                modified_score(sc[rr], scale, softcap, SLOPE(h), i, j, s, BIAS_ROW(b, h, i));
            pr[rr] = exp(x - row_lse[rr]);
            dx[rr] =
                pr[rr] * (dp[rr] - row_delta[rr]) * modifier_slope(sc[rr], scale, softcap) * scale;
        }
        for (int rr = 0; rr < BLOCK; rr++) {
            if (pr[rr] == 0.0f)
                continue;
            for (int d = 0; d < HEAD_DIM; d++)
                acc[rr][d] += dx[rr] * kj[d];
        }
    }
    for (int rr = 0; rr < nq; rr++) {
        __global elem_t *dqrow = dq + AT(dq, bt, h, s.q0 + i0 + rr);
        for (int d = 0; d < HEAD_DIM; d++)
            store_elem(dqrow, d, acc[rr][d]);
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
            const float row_lse = lse[AT(lse, bt, h, r)];
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
            const float x =
                modified_score(raw, scale, softcap, SLOPE(h), i, j, s, BIAS_ROW(b, h, i));
            const float p = exp(x - row_lse);
            sum += p * (dp - delta[delta_off + (bt * heads_q + h) * rows + r]);
        }
    }
    dbias[AT(dbias, bb, hb, i) + j] = sum;
}
