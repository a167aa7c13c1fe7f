/* Fused attention forward for few query rows over many keys (decoding), on
 * GPU-shaped devices (after kernels/decode_rows.cl: build parameters, loads,
 * the KV cache, the merge, shared with the cpu shape of flash_decode.cl).
 *
 * Work-group: DECODE_WG work-items on one block of ROWS query rows and one
 * split of its keys; global size (splits * blocks * DECODE_WG, heads_kv,
 * batch). The block's Q rows sit in local memory. The split's keys go in
 * tiles of DECODE_WG, one key a work-item:
 *   1. each work-item computes its key's score for every row (its K row
 *      read once), masks and modifiers as the cpu shape's per-key path;
 *   2. a tree in local memory finds each row's tile maximum, which every
 *      work-item applies to its running maximum m and its share of the
 *      output (all hold the same m);
 *   3. each work-item turns its key's scores into weights, adds them to its
 *      own part of the row sums l and puts them in local memory;
 *   4. P.V with head_dim_v across the work-items (work-item t owns dims t,
 *      t + DECODE_WG, ...): every V row is read once, each work-item a
 *      coalesced element of it; a key every row weighs 0 is not read (its
 *      V may hold anything), nor added to a row that weighs it 0.
 * After the last tile a second tree sums each row's l. Both trees have a
 * fixed shape, so the results are deterministic.
 *
 * Build-time parameters (beside decode_rows.cl's):
 *   DECODE_WG  work-items a group, a power of two 2..1024
 */
#if !defined(DECODE_WG) || DECODE_WG < 2 || DECODE_WG > 1024 || (DECODE_WG & (DECODE_WG - 1))
#error "DECODE_WG must be a power of two, 2..1024"
#endif
#define WG DECODE_WG
/* Output dims a work-item owns. */
#define NVL ((HEAD_DIM_V + WG - 1) / WG)

/* Each row's slot of `red` folded by a tree, largest (NaN if any is NaN)
 * or sum, into red[r * WG]. Every work-item calls it; it ends on a barrier. */
inline void tree_max(__local float *red, int lid) {
    for (int width = WG / 2; width > 0; width >>= 1) {
        if (lid < width)
            for (int r = 0; r < ROWS; r++) {
                const float a = red[r * WG + lid], c = red[r * WG + lid + width];
                red[r * WG + lid] = c > a || isnan(c) ? c : a;
            }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}
inline void tree_sum(__local float *red, int lid) {
    for (int width = WG / 2; width > 0; width >>= 1) {
        if (lid < width)
            for (int r = 0; r < ROWS; r++)
                red[r * WG + lid] += red[r * WG + lid + width];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

__kernel __attribute__((reqd_work_group_size(WG, 1, 1))) void
flash_decode_gpu(TENSOR(__global const elem_t, q, q),
                 TENSOR(__global KV_MUT kv_t, k, k),
                 TENSOR(__global KV_MUT kv_t, v, v),
                 TENSOR(__global elem_t, o, o),
                 TENSOR(__global float, lse, l),
                 __global float *part, ulong part_off, int group, int heads_q, int splits,
                 float scale, float exp_hi, float exp_lo, float sign KV_PARAMS, FEATURE_PARAMS) {
    __local float q_l[ROWS * HEAD_DIM]; /* the block's Q rows, sign folded in */
    __local float w_l[ROWS * WG];       /* the tile's weights, [row][key] */
    __local float red[ROWS * WG];       /* the trees' scratch */
    const int lid = get_local_id(0);
    const int split = get_group_id(0) % splits;
    const long blk = get_group_id(0) / splits;
    const int hk = get_global_id(1), b = get_global_id(2);
    DECODE_SEQUENCE_AND_BLOCK();
    if (n0 >= n_end)
        return; /* the whole group: no barrier is left waiting */

    int ri[ROWS], rh[ROWS], kf[ROWS], kl[ROWS];
    long sb, se;
    block_rows(n0, n_end, group, hk, sq, win_left, win_right, split, splits, ri, rh, kf, kl, &sb,
               &se);
    for (int x = lid; x < ROWS * HEAD_DIM; x += WG) {
        const int r = x / HEAD_DIM, d = x % HEAD_DIM;
        const __global elem_t *qrow = q + AT(q, b, rh[r], sq.q0 + ri[r]);
        q_l[x] = LOAD_1(DTYPE, d, qrow) * sign;
    }
    barrier(CLK_LOCAL_MEM_FENCE);

#if !KVCACHE
    const __global kv_t *kh = k + AT(k, b, hk, sq.k0);
    const __global kv_t *vh = v + AT(v, b, hk, sq.k0);
#endif
    float m[ROWS], l[ROWS]; /* l: this work-item's keys' share */
    float acc[ROWS][NVL];
    for (int r = 0; r < ROWS; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
        for (int c = 0; c < NVL; c++)
            acc[r][c] = 0.0f;
    }
    for (long k0 = sb; k0 < se; k0 += WG) {
        const long key = k0 + lid;
        const int mine = key < se;
        float s[ROWS];
        for (int r = 0; r < ROWS; r++)
            s[r] = -INFINITY;
        if (mine) {
            const __global kv_t *krow = KEY_ROW(key);
            floatD a[ROWS];
            for (int r = 0; r < ROWS; r++)
                a[r] = 0.0f;
            for (int c = 0; c < ND; c++) {
                const floatD kv = LOAD_KD(c, krow);
                for (int r = 0; r < ROWS; r++)
#if VD == 1
                    a[r] = fma(q_l[r * HEAD_DIM + c], kv, a[r]);
#else
                    a[r] = fma(CAT(vload, VD)(c, q_l + r * HEAD_DIM), kv, a[r]);
#endif
            }
            const float kscale = KEY_SCALE(key); /* int8: (q.k) * scale */
            for (int r = 0; r < ROWS; r++) {
                int visible = key >= kf[r] && key <= kl[r];
#if HAS_KEEP_MASK
                visible = visible && KEEP_ROW(b, rh[r], ri[r])[key] != 0;
#endif
                float x = HSUM_D(a[r]) * kscale;
#if HAS_MODIFIERS
                x = modified_score(x, scale, softcap, SLOPE(rh[r]), ri[r], (int)key, sq,
                                   BIAS_ROW(b, rh[r], ri[r]));
#endif
                s[r] = visible ? x : -INFINITY;
            }
        }
        for (int r = 0; r < ROWS; r++)
            red[r * WG + lid] = s[r];
        barrier(CLK_LOCAL_MEM_FENCE);
        tree_max(red, lid);
        const float vscale = mine ? VAL_SCALE(key) : 0.0f; /* int8: (p * scale) * v */
        for (int r = 0; r < ROWS; r++) {
            const float tile_max = red[r * WG];
            /* A NaN score makes the row NaN, as in the reference. */
            const float m_new = isnan(tile_max) ? tile_max : fmax(m[r], tile_max);
            float p = 0.0f; /* every score so far -inf: nothing seen */
            if (m_new != -INFINITY) {
                if (m_new != m[r]) {
                    /* exp2(-inf) = 0 when the row had seen nothing. */
                    const float corr = exp2(EXPONENT_OF(m[r] * 0.5f - m_new * 0.5f));
                    l[r] *= corr;
                    for (int c = 0; c < NVL; c++)
                        acc[r][c] *= corr;
                    m[r] = m_new;
                }
                p = exp2(EXPONENT_OF(s[r] * 0.5f - m_new * 0.5f));
            }
            l[r] += p;
            w_l[r * WG + lid] = p * vscale;
        }
        /* The weights are in and red's maxima read; the next tile writes
         * w_l only after its tree's barriers. */
        barrier(CLK_LOCAL_MEM_FENCE);

        const int nk = (int)min((long)WG, se - k0);
        for (int j = 0; j < nk; j++) {
            int any = 0;
            for (int r = 0; r < ROWS; r++)
                any |= w_l[r * WG + j] != 0.0f;
            if (!any)
                continue; /* no row weighs it: its V may hold anything */
            const __global kv_t *vrow = VAL_ROW(k0 + j);
            for (int c = 0; c < NVL; c++) {
                const int d = lid + c * WG;
                if (NVL * WG != HEAD_DIM_V && d >= HEAD_DIM_V)
                    break;
                const float vv = LOAD_1(KV_DTYPE, d, vrow);
                for (int r = 0; r < ROWS; r++) {
                    const float w = w_l[r * WG + j];
                    if (w != 0.0f) /* hidden from this row (or underflowed) */
                        acc[r][c] = fma(w, vv, acc[r][c]);
                }
            }
        }
    }
    for (int r = 0; r < ROWS; r++)
        red[r * WG + lid] = l[r];
    barrier(CLK_LOCAL_MEM_FENCE);
    tree_sum(red, lid);

    for (int r = 0; r < ROWS && n0 + r < n_end; r++) {
        const int i = ri[r], h = rh[r];
        const float row_l = red[r * WG];
#if PARTIALS
        const long slot = ((long)b * heads_q + h) * seq_q + i;
        __global float *pp = part + part_off + (slot * splits + split) * PART_FLOATS;
        if (lid == 0) {
            pp[0] = m[r];
            pp[1] = row_l;
        }
        for (int c = 0; c < NVL; c++)
            if (lid + c * WG < HEAD_DIM_V)
                pp[2 + lid + c * WG] = acc[r][c];
#else
        /* row_l is 0 exactly when the row saw no key; NaN stays NaN. */
        const float inv = row_l == 0.0f ? 0.0f : 1.0f / row_l;
        __global elem_t *orow = o + AT(o, b, h, sq.q0 + i);
        for (int c = 0; c < NVL; c++)
            if (lid + c * WG < HEAD_DIM_V)
                store_elem(orow, lid + c * WG, acc[r][c] * inv);
#if HAS_LSE
        if (lid == 0)
            lse[AT(l, b, h, sq.q0 + i)] =
                lse_of(row_l, m[r], HAS_MODIFIERS ? 1.0f : fabs(scale));
#endif
#endif
    }
#if KVCACHE && APPEND && !PARTIALS
    /* The first block's group appends the new rows: the block table's pages
     * are read by no work-item at these keys. */
    if (blk == 0)
        for (int i = 0; i < seq_q; i++)
            KV_APPEND_ROW_LANES(b, hk, i, cached, lid, WG);
#endif
}
