/* Fused attention forward shaped for GPUs.
 *
 * Work-group: BLOCK_M * TPR work-items, dim 0; global size
 * (ceil(seq_q / BLOCK_M) * BLOCK_M * TPR, heads_q, batch). A work-group
 * computes BLOCK_M consecutive query rows of one (batch, head); TPR
 * work-items share each row: work-item (row = lid / TPR, sub = lid % TPR)
 * computes the scores of keys sub, sub + TPR, ... of each BLOCK_N-key tile
 * and accumulates output columns sub, sub + TPR, ... of its row.
 *
 * Per key tile: the group loads the K tile into local memory (coalesced:
 * consecutive work-items read consecutive head_dim elements), computes
 * scores against the Q block (also in local memory), shares per-row maxima
 * through local memory, writes the probabilities to a local P tile, reuses
 * the K tile's local memory for the V tile and accumulates P.V. Local rows
 * are padded by one float so that the work-items of a row (reading
 * different keys at one head_dim element) hit different banks. Every
 * barrier is reached by every work-item: the tile loop's bounds are the same
 * for the whole group, and edge tiles load zeros instead of branching around
 * the barriers.
 *
 * Softmax is online and in base 2 with an exact running maximum m of the
 * scores: p = exp2((s - m) * c), as common.cl's EXPONENT_OF computes it.
 * Without score modifiers s is the raw q.k and c = |scale| * log2(e)
 * (rounding Q * scale would cost as much accuracy as the dot product); with
 * them s is the modified score and c = log2(e). Key tiles no row of the
 * block may see (causal, window, padding) are never loaded; scores a row does
 * not see are -INFINITY, and a key whose weight in a row is 0 adds nothing to
 * that row (its V is selected away, never multiplied by 0, so a NaN there
 * stays out). A row that sees no key writes O = 0 and LSE = -INFINITY.
 * Varlen blocks past their sequence return before any barrier (the whole
 * group does). Key indices are long: a tile may end past INT32_MAX.
 *
 * Build-time parameters (beside common.cl's):
 *   BLOCK_M  query rows per work-group
 *   BLOCK_N  keys per tile, a multiple of TPR
 *   TPR      work-items per query row
 */
#ifndef BLOCK_M
#define BLOCK_M 16
#endif
#ifndef BLOCK_N
#define BLOCK_N 32
#endif
#ifndef TPR
#define TPR 8
#endif

#define WG_SIZE (BLOCK_M * TPR)
#define KEYS_PER_ITEM (BLOCK_N / TPR)
#define COLS_PER_ITEM ((HEAD_DIM_V + TPR - 1) / TPR)
#define KV_WIDTH (HEAD_DIM > HEAD_DIM_V ? HEAD_DIM : HEAD_DIM_V)
#define Q_STRIDE (HEAD_DIM + 1)
#define KV_STRIDE (KV_WIDTH + 1)
#define P_STRIDE (BLOCK_N + 1)

#if BLOCK_N % TPR != 0
#error "BLOCK_N must be a multiple of TPR"
#endif

__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void
flash_gpu(TENSOR(__global const elem_t, q, q),
          TENSOR(__global const elem_t, k, k),
          TENSOR(__global const elem_t, v, v),
          TENSOR(__global elem_t, o, o), TENSOR(__global float, lse, l), int group, float scale,
          float exp_hi, float exp_lo,
          FEATURE_PARAMS) {
    __local float q_tile[BLOCK_M * Q_STRIDE];
    __local float kv_tile[BLOCK_N * KV_STRIDE];
    __local float p_tile[BLOCK_M * P_STRIDE];
    __local float row_part[BLOCK_M * TPR];

    const int lid = get_local_id(0);
    const int row = lid / TPR, sub = lid % TPR;
    const int i0 = get_group_id(0) * BLOCK_M, h = get_group_id(1), b = get_group_id(2);
    const sequence_info sq = sequence_of(b, FEATURE_SEQUENCES);
    /* From group ids only, so visibly uniform across the group: no barrier
     * is skipped by some work-items only. */
    if (i0 >= sq.len_q)
        return;
    const int hk = h / group;
#if DROPOUT
    /* The dropout stream b * heads_q + h (there are heads_q groups in dim 1). */
    const uint stream = (uint)b * (uint)get_num_groups(1) + (uint)h;
#endif
    /* Rows past the sequence compute with its last row and store nothing. */
    const int last_row = min(i0 + BLOCK_M, sq.len_q) - 1;
    const int i = min(i0 + row, last_row);
#if HAS_MODIFIERS
    /* Scores are the modified scores themselves, in natural units. */
    const float sign = 1.0f, unit = 1.0f;
    const float slope = SLOPE(h);
    __global const float *bias_row = 0;
#if HAS_BIAS
    bias_row = BIAS_ROW(b, h, i);
#endif
#else
    /* A negative scale flips Q's sign (exactly); a score unit is worth its
     * magnitude. */
    const float sign = scale < 0.0f ? -1.0f : 1.0f, unit = fabs(scale);
#endif
#if HAS_KEEP_MASK
    __global const uchar *keep_row = KEEP_ROW(b, h, i);
#endif
    const __global elem_t *qh = q + AT(q, b, h, sq.q0);
    const __global elem_t *kh = k + AT(k, b, hk, sq.k0);
    const __global elem_t *vh = v + AT(v, b, hk, sq.k0);

    for (int e = lid; e < BLOCK_M * HEAD_DIM; e += WG_SIZE) {
        const int r = e / HEAD_DIM, d = e % HEAD_DIM;
        q_tile[r * Q_STRIDE + d] = load_elem(qh, (long)min(i0 + r, last_row) * q_ss + d) * sign;
    }

    float acc[COLS_PER_ITEM];
    for (int u = 0; u < COLS_PER_ITEM; u++)
        acc[u] = 0.0f;
    /* m: the row's running maximum (-INFINITY until the row sees a key). */
    float m = -INFINITY, l_part = 0.0f;
    const int first = first_key(i, sq, win_left), last = last_key(i, sq, win_right);
    /* The same for every work-item of the group: the block's key range. */
    const long key_begin = first_key(i0, sq, win_left) / BLOCK_N * BLOCK_N;
    const long key_end = last_key(last_row, sq, win_right) + 1;

    for (long k0 = key_begin; k0 < key_end; k0 += BLOCK_N) {
        /* The previous tile's readers of kv_tile, p_tile and row_part are done
         * (barrier at the end of the loop), as are the Q block's writers. */
        for (int e = lid; e < BLOCK_N * HEAD_DIM; e += WG_SIZE) {
            const int j = e / HEAD_DIM, d = e % HEAD_DIM;
            kv_tile[j * KV_STRIDE + d] =
                k0 + j < sq.len_k ? load_elem(kh, (k0 + j) * k_ss + d) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);

        float s[KEYS_PER_ITEM];
        for (int t = 0; t < KEYS_PER_ITEM; t++)
            s[t] = 0.0f;
        for (int d = 0; d < HEAD_DIM; d++) {
            const float qd = q_tile[row * Q_STRIDE + d];
            for (int t = 0; t < KEYS_PER_ITEM; t++)
                s[t] = fma(qd, kv_tile[(sub + t * TPR) * KV_STRIDE + d], s[t]);
        }
        float tile_max = -INFINITY;
        for (int t = 0; t < KEYS_PER_ITEM; t++) {
            const long j = k0 + sub + t * TPR;
            int visible = j >= first && j <= last;
#if HAS_KEEP_MASK
            visible = visible && keep_row[j] != 0;
#endif
#if HAS_MODIFIERS
            /* A visible j is at most `last`, an int. */
            s[t] = visible ? modified_score(s[t], scale, softcap, slope, i, (int)j, sq, bias_row)
                           : -INFINITY;
#else
            s[t] = visible ? s[t] : -INFINITY;
#endif
            tile_max = fmax(tile_max, s[t]);
        }
        row_part[row * TPR + sub] = tile_max;
        barrier(CLK_LOCAL_MEM_FENCE);

        /* Every score of the tile is read: kv_tile may take the V tile. Keys
         * past the padding load 0, never their V (which may hold anything). */
        for (int e = lid; e < BLOCK_N * HEAD_DIM_V; e += WG_SIZE) {
            const int j = e / HEAD_DIM_V, c = e % HEAD_DIM_V;
            kv_tile[j * KV_STRIDE + c] =
                k0 + j < sq.kept_k ? load_elem(vh, (k0 + j) * v_ss + c) : 0.0f;
        }
        for (int t = 0; t < TPR; t++)
            tile_max = fmax(tile_max, row_part[row * TPR + t]);
        const float m_new = fmax(m, tile_max);
        /* A row that did not grow keeps factor 1 (one that saw nothing before
         * gets exp2(-INFINITY) = 0); one still at -INFINITY shifts by 0, so
         * that its p = exp2(-INFINITY) = 0, never NaN. */
        const float half_shift = m_new == -INFINITY ? 0.0f : 0.5f * m_new;
        const float corr = m_new == m ? 1.0f : exp2(EXPONENT_OF(0.5f * m - half_shift));
        m = m_new;
        float tile_sum = 0.0f;
        for (int t = 0; t < KEYS_PER_ITEM; t++) {
            float p = exp2(EXPONENT_OF(s[t] * 0.5f - half_shift));
            tile_sum += p;
#if DROPOUT
            /* Dropped keys stay in the sum (the softmax is the un-dropped
             * one) and leave P.V like masked ones; a key with p = 0 (masked,
             * possibly past INT32_MAX) needs no draw. */
            if (p != 0.0f && !dropout_keep(dropout_seed, dropout_offset, stream, i,
                                           (int)(k0 + sub + t * TPR), dropout_threshold))
                p = 0.0f;
#endif
            p_tile[row * P_STRIDE + sub + t * TPR] = p;
        }
        l_part = l_part * corr + tile_sum;
        for (int u = 0; u < COLS_PER_ITEM; u++)
            acc[u] *= corr;
        barrier(CLK_LOCAL_MEM_FENCE);

        for (int j = 0; j < BLOCK_N; j++) {
            const float p = p_tile[row * P_STRIDE + j];
            for (int u = 0; u < COLS_PER_ITEM; u++) {
                const int c = sub + u * TPR;
                /* p = 0: the key adds nothing, whatever its V holds. */
                if ((COLS_PER_ITEM * TPR == HEAD_DIM_V || c < HEAD_DIM_V) && p != 0.0f)
                    acc[u] = fma(p, kv_tile[j * KV_STRIDE + c], acc[u]);
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    row_part[row * TPR + sub] = l_part;
    barrier(CLK_LOCAL_MEM_FENCE);
    float l = 0.0f;
    for (int t = 0; t < TPR; t++)
        l += row_part[row * TPR + t];
    if (i0 + row <= last_row) {
        /* l is 0 exactly when the row saw no key; NaN stays NaN. */
#if DROPOUT
        const float inv = l == 0.0f ? 0.0f : dropout_scale / l;
#else
        const float inv = l == 0.0f ? 0.0f : 1.0f / l;
#endif
        __global elem_t *orow = o + AT(o, b, h, sq.q0 + i);
        for (int u = 0; u < COLS_PER_ITEM; u++) {
            const int c = sub + u * TPR;
            if (c < HEAD_DIM_V)
                store_elem(orow, c, acc[u] * inv);
        }
#if HAS_LSE
        if (sub == 0)
            lse[AT(l, b, h, sq.q0 + i)] =
                l == 0.0f ? -INFINITY : fma(log2(l), M_LN2_F, m * unit);
#endif
    }
}
