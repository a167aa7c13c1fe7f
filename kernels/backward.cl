/* The backward pass, FlashAttention-2's structure in O(n) memory: no
 * seq_q x seq_k buffer, the probabilities recomputed from Q, K and the
 * forward's LSE, and no atomics: every sum has one owner that adds in a
 * fixed order, so the same inputs give the same bits.
 *
 *   attn_bwd_dot    one work-item per query row: D = dO . O (0 for a row
 *                   whose keys are all masked), into the workspace
 *   attn_bwd_dkdv   one work-item per key row of a kv head: over the
 *                   group's query heads in order and their queries in
 *                   order, dV += P dO and dK += dS' Q
 *   attn_bwd_dq     one work-item per query row: over its keys in order,
 *                   dQ += dS' K
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

/* global (seq_k, heads_kv, batch). Key rows past a sequence's keys (varlen)
 * are not written; keys no query sees get 0. */
__kernel void
attn_bwd_dkdv(TENSOR(__global const elem_t, q, q), TENSOR(__global const elem_t, k, k),
              TENSOR(__global const elem_t, v, v), TENSOR(__global const elem_t, dout, dout),
              TENSOR(__global const float, lse, lse), __global const float *delta, ulong delta_off,
              TENSOR(__global elem_t, dk, dk), TENSOR(__global elem_t, dv, dv), int heads_q,
              float scale, FEATURE_PARAMS) {
    const int j = get_global_id(0), g = get_global_id(1), b = get_global_id(2);
    const sequence_info s = sequence_of(b, FEATURE_SEQUENCES);
    if (j >= s.len_k)
        return;
    const long bt = VARLEN ? 0 : b;
    const long rows = VARLEN ? total_q : seq_q;
    const int kr = s.k0 + j;
    float kj[HEAD_DIM], vj[HEAD_DIM_V], acc_k[HEAD_DIM], acc_v[HEAD_DIM_V];
    __global const elem_t *krow = k + AT(k, bt, g, kr);
    __global const elem_t *vrow = v + AT(v, bt, g, kr);
    for (int d = 0; d < HEAD_DIM; d++) {
        kj[d] = load_elem(krow, d);
        acc_k[d] = 0.0f;
    }
    for (int d = 0; d < HEAD_DIM_V; d++) {
        vj[d] = load_elem(vrow, d);
        acc_v[d] = 0.0f;
    }
    if (j < s.kept_k) {
        for (int m = 0; m < GROUP; m++) {
            const int h = g * GROUP + m;
            for (int i = 0; i < s.len_q; i++) {
                if (!sees(i, j, s, win_left, win_right, KEEP_ROW(b, h, i)))
                    continue;
                const int r = s.q0 + i;
                const float row_lse = lse[AT(lse, bt, h, r)];
                if (row_lse == -INFINITY)
                    continue;
                __global const elem_t *qrow = q + AT(q, bt, h, r);
                __global const elem_t *drow = dout + AT(dout, bt, h, r);
                float raw = 0.0f, dp = 0.0f;
                for (int d = 0; d < HEAD_DIM; d++)
                    raw += load_elem(qrow, d) * kj[d];
                for (int d = 0; d < HEAD_DIM_V; d++)
                    dp += load_elem(drow, d) * vj[d];
                const float x =
                    modified_score(raw, scale, softcap, SLOPE(h), i, j, s, BIAS_ROW(b, h, i));
                const float p = exp(x - row_lse);
                const float ds = p * (dp - delta[delta_off + (bt * heads_q + h) * rows + r]);
                const float dx = ds * modifier_slope(raw, scale, softcap) * scale;
                for (int d = 0; d < HEAD_DIM_V; d++)
                    acc_v[d] += p * load_elem(drow, d);
                for (int d = 0; d < HEAD_DIM; d++)
                    acc_k[d] += dx * load_elem(qrow, d);
            }
        }
    }
    __global elem_t *dkrow = dk + AT(dk, bt, g, kr);
    __global elem_t *dvrow = dv + AT(dv, bt, g, kr);
    for (int d = 0; d < HEAD_DIM; d++)
        store_elem(dkrow, d, acc_k[d]);
    for (int d = 0; d < HEAD_DIM_V; d++)
        store_elem(dvrow, d, acc_v[d]);
}

/* ---- dQ -------------------------------------------------------------------- */

/* global (seq_q, heads_q, batch). */
__kernel void attn_bwd_dq(TENSOR(__global const elem_t, q, q), TENSOR(__global const elem_t, k, k),
                          TENSOR(__global const elem_t, v, v),
                          TENSOR(__global const elem_t, dout, dout),
                          TENSOR(__global const float, lse, lse), __global const float *delta,
                          ulong delta_off, TENSOR(__global elem_t, dq, dq), int heads_q,
                          float scale, FEATURE_PARAMS) {
    const int i = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    const sequence_info s = sequence_of(b, FEATURE_SEQUENCES);
    if (i >= s.len_q)
        return;
    const long bt = VARLEN ? 0 : b;
    const long rows = VARLEN ? total_q : seq_q;
    const int g = h / GROUP;
    const int r = s.q0 + i;
    float qi[HEAD_DIM], di[HEAD_DIM_V], acc[HEAD_DIM];
    __global const elem_t *qrow = q + AT(q, bt, h, r);
    __global const elem_t *drow = dout + AT(dout, bt, h, r);
    for (int d = 0; d < HEAD_DIM; d++) {
        qi[d] = load_elem(qrow, d);
        acc[d] = 0.0f;
    }
    for (int d = 0; d < HEAD_DIM_V; d++)
        di[d] = load_elem(drow, d);
    const float row_lse = lse[AT(lse, bt, h, r)];
    const float row_delta = delta[delta_off + (bt * heads_q + h) * rows + r];
    if (row_lse != -INFINITY) {
        const int first = first_key(i, s, win_left), last = last_key(i, s, win_right);
        __global const uchar *keep_row = KEEP_ROW(b, h, i);
        for (int j = first; j <= last; j++) {
#if HAS_KEEP_MASK
            if (keep_row[j] == 0)
                continue;
#endif
            __global const elem_t *krow = k + AT(k, bt, g, s.k0 + j);
            __global const elem_t *vrow = v + AT(v, bt, g, s.k0 + j);
            float raw = 0.0f, dp = 0.0f;
            for (int d = 0; d < HEAD_DIM; d++)
                raw += qi[d] * load_elem(krow, d);
            for (int d = 0; d < HEAD_DIM_V; d++)
                dp += di[d] * load_elem(vrow, d);
            const float x =
                modified_score(raw, scale, softcap, SLOPE(h), i, j, s, BIAS_ROW(b, h, i));
            const float p = exp(x - row_lse);
            const float dx = p * (dp - row_delta) * modifier_slope(raw, scale, softcap) * scale;
            for (int d = 0; d < HEAD_DIM; d++)
                acc[d] += dx * load_elem(krow, d);
        }
    }
    __global elem_t *dqrow = dq + AT(dq, bt, h, r);
    for (int d = 0; d < HEAD_DIM; d++)
        store_elem(dqrow, d, acc[d]);
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
