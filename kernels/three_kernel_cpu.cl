/* The three-kernel path shaped for CPU devices (PoCL, CPU runtimes): the same
 * three steps and results as qk_scores.cl, softmax.cl and pv.cl, without
 * work-group tiles in local memory. Every kernel runs work-groups of one
 * work-item (a runtime turns a group's work-items into loops, so more would
 * only add loop overhead) that work on explicit vectors, as flash_cpu.cl
 * does:
 *
 *   three_cpu_pack  K as float tiles of HEAD_DIM x TILE_K (key fastest),
 *                   zero past the sequence: flash_cpu.cl's layout and tile
 *                   bases, so that one head_dim element of a key tile is one
 *                   vector load. Global size (tiles of the longest
 *                   sequence, heads_kv, batch).
 *   qk_scores_cpu   ROWS query rows x every key tile they may see: the
 *                   scores of a tile are ROWS vectors of TILE_K keys, a
 *                   broadcast-multiply-add per head_dim element. Global
 *                   size (ceil(seq_q / ROWS), heads of the chunk).
 *   softmax_rows_cpu  one row per work-item, streamed in vectors of
 *                   TILE_K over the keys it may see (scale, max; exp and
 *                   sum; normalize), with common.cl's masks and modifiers.
 *                   Global size (heads of the chunk * seq_q).
 *   pv_cpu          ROWS query rows x head_dim_v in vectors of VEC_V: a
 *                   broadcast-multiply-add of each probability by its V row,
 *                   V read in place. Global size (ceil(seq_q / ROWS), heads
 *                   of the chunk).
 *
 * The score buffer and what each kernel leaves in it are the gpu shape's
 * (see those files): S is [heads in chunk][seq_q][seq_k]; qk may leave keys
 * no row sees unwritten, softmax writes every key of every row (0 where
 * masked or past the sequence), and P.V skips keys whose probability is 0
 * rather than multiplying their V (NaN, say) by 0.
 *
 * Build-time parameters (beside common.cl's):
 *   ROWS    query rows per work-item of qk and pv, 1..8
 *   TILE_K  keys per tile and score vector width: 4, 8 or 16
 *   VEC_V   accumulator vector width across head_dim_v: 4, 8 or 16
 */
#ifndef ROWS
#define ROWS 6
#endif
#ifndef TILE_K
#define TILE_K 16
#endif
#ifndef VEC_V
#define VEC_V 16
#endif
#if ROWS < 1 || ROWS > 8
#error "ROWS must be 1..8"
#endif
#if TILE_K != 4 && TILE_K != 8 && TILE_K != 16
#error "TILE_K must be 4, 8 or 16"
#endif
#if VEC_V != 4 && VEC_V != 8 && VEC_V != 16
#error "VEC_V must be 4, 8 or 16"
#endif

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define floatK CAT(float, TILE_K)
#define intK CAT(int, TILE_K)
#define vloadK CAT(vload, TILE_K)
#define vstoreK CAT(vstore, TILE_K)
#define floatV CAT(float, VEC_V)
#define vstoreV CAT(vstore, VEC_V)

/* VEC_V consecutive V elements as floats. */
#if DTYPE == 0
#define LOAD_V(p) CAT(vload, VEC_V)(0, (p))
#elif DTYPE == 1
#define LOAD_V(p) CAT(vload_half, VEC_V)(0, (p))
#else
#define LOAD_V(p) CAT(as_float, VEC_V)(CAT(convert_uint, VEC_V)(CAT(vload, VEC_V)(0, (p))) << 16)
#endif

/* The first packed tile of sequence b (flash_cpu.cl's tile_base_of): with
 * varlen cu_k[b] / TILE_K + b, an upper bound of the tiles of the sequences
 * before it; a kv head then has total_k / TILE_K + batch tile slots. */
inline long three_tile_base(int b, int seq_k, sequence_info s) {
#if VARLEN
    return (long)(s.k0 / TILE_K) + b;
#else
    return (long)b * ((seq_k + TILE_K - 1) / TILE_K);
#endif
}

#if !defined(HEAD_DIM) || !defined(HEAD_DIM_V)
#error "HEAD_DIM and HEAD_DIM_V must be defined"
#endif

__kernel __attribute__((reqd_work_group_size(1, 1, 1))) void
three_cpu_pack(TENSOR(__global const elem_t, k, k), __global float *kp, ulong kp_off,
               int total_tiles, FEATURE_PARAMS) {
    const int t = get_global_id(0), hk = get_global_id(1), b = get_global_id(2);
    const sequence_info sq = sequence_of(b, FEATURE_SEQUENCES);
    const int k0 = t * TILE_K;
    if (k0 >= sq.len_k)
        return;
    const int keys = min(TILE_K, sq.len_k - k0);
    const long slot = (long)hk * total_tiles + three_tile_base(b, seq_k, sq) + t;
    const __global elem_t *src = k + AT(k, b, hk, sq.k0 + k0);
    __global float *dst = kp + kp_off + slot * (HEAD_DIM * TILE_K);
    float col[TILE_K];
    for (int d = 0; d < HEAD_DIM; d++) {
        for (int j = 0; j < TILE_K; j++)
            col[j] = j < keys ? load_elem(src, j * k_ss + d) : 0.0f;
        vstoreK(vloadK(0, col), d, dst);
    }
}

__kernel __attribute__((reqd_work_group_size(1, 1, 1))) void
qk_scores_cpu(TENSOR(__global const elem_t, q, q), __global const float *kp, ulong kp_off,
              int total_tiles, __global float *s, ulong s_off, int heads_q, int group,
              int head_base, FEATURE_PARAMS) {
    const int i0 = get_global_id(0) * ROWS, chunk_head = get_global_id(1);
    const int bh = head_base + chunk_head;
    const int b = bh / heads_q, h = bh % heads_q;
    const sequence_info sq = sequence_of(b, FEATURE_SEQUENCES);
    if (i0 >= sq.len_q)
        return;
    const int rows = min(ROWS, sq.len_q - i0);
    /* Keys rows i0 .. i0 + rows - 1 may see, whole tiles. */
    const int first = first_key(i0, sq, win_left), last = last_key(i0 + rows - 1, sq, win_right);
    if (last < first)
        return;

    /* The block's Q as floats; rows past the sequence repeat the last one
     * (computed, never stored). */
    float qb[ROWS][HEAD_DIM];
    const __global elem_t *qh = q + AT(q, b, h, sq.q0);
    for (int r = 0; r < ROWS; r++) {
        const int i = i0 + min(r, rows - 1);
        for (int d = 0; d < HEAD_DIM; d++)
            qb[r][d] = load_elem(qh, i * q_ss + d);
    }
    const __global float *kh =
        kp + kp_off +
        ((long)(h / group) * total_tiles + three_tile_base(b, seq_k, sq)) * (HEAD_DIM * TILE_K);
    __global float *srow = s + s_off + ((long)chunk_head * seq_q + i0) * seq_k;

    for (int t = first / TILE_K; t <= last / TILE_K; t++) {
        const __global float *kt = kh + (long)t * (HEAD_DIM * TILE_K);
        floatK acc[ROWS];
        _Pragma("unroll") for (int r = 0; r < ROWS; r++) acc[r] = (floatK)0.0f;
        for (int d = 0; d < HEAD_DIM; d++) {
            const floatK kv = vloadK(d, kt);
            _Pragma("unroll") for (int r = 0; r < ROWS; r++) acc[r] =
                fma((floatK)qb[r][d], kv, acc[r]);
        }
        const long j0 = (long)t * TILE_K;
        const int keys = (int)min((long)TILE_K, sq.len_k - j0);
        _Pragma("unroll") for (int r = 0; r < ROWS; r++) {
            if (r < rows) {
                __global float *out = srow + (long)r * seq_k + j0;
                if (keys == TILE_K) {
                    vstoreK(acc[r], 0, out);
                } else {
                    float tmp[TILE_K];
                    vstoreK(acc[r], 0, tmp);
                    for (int j = 0; j < keys; j++)
                        out[j] = tmp[j];
                }
            }
        }
    }
}

/* Streams one row: the same arithmetic as softmax.cl's softmax_rows (scaled
 * and modified scores, their maximum m, exp(x - m), the sum, the
 * probabilities, LSE m + log(sum)), keys a row cannot see set to 0 without
 * being read. */
__kernel __attribute__((reqd_work_group_size(1, 1, 1))) void
softmax_rows_cpu(__global float *s, ulong s_off, float scale, int heads_q, int head_base,
                 TENSOR(__global float, lse, lse), FEATURE_PARAMS) {
    const long row = get_global_id(0); /* chunk_head * seq_q + i */
    const int i = (int)(row % seq_q);
    const int bh = head_base + (int)(row / seq_q);
    const int b = bh / heads_q, h = bh % heads_q;
    const sequence_info sq = sequence_of(b, FEATURE_SEQUENCES);
    __global float *r = s + s_off + row * seq_k;

    /* A row past its sequence (varlen) sees no key: all zeros, no LSE. */
    const int in_sequence = i < sq.len_q;
    const long first = first_key(i, sq, win_left);
    const long last = in_sequence ? last_key(i, sq, win_right) : -1;
    const long end = last + 1; /* keys first .. end - 1 are read */

    float m = -INFINITY;
    int nan = 0;
#if HAS_MODIFIERS || HAS_KEEP_MASK
    const float slope = SLOPE(h);
    __global const float *bias_row = 0;
#if HAS_BIAS
    bias_row = BIAS_ROW(b, h, i);
#endif
#if HAS_KEEP_MASK
    __global const uchar *keep_row = KEEP_ROW(b, h, i);
#endif
    for (long j = first; j < end; j++) {
        int visible = 1;
#if HAS_KEEP_MASK
        visible = keep_row[j] != 0;
#endif
        const float x = visible
                            ? modified_score(r[j], scale, softcap, slope, i, (int)j, sq, bias_row)
                            : -INFINITY;
        r[j] = x;
        nan |= isnan(x);
        m = fmax(m, x);
    }
#else
    /* Without modifiers the score is raw * scale (modified_score's first
     * step), in vectors. */
    {
        floatK mv = (floatK)(-INFINITY);
        intK nanv = (intK)0;
        long j = first;
        for (; j + TILE_K <= end; j += TILE_K) {
            const floatK x = vloadK(0, r + j) * scale;
            vstoreK(x, 0, r + j);
            nanv |= isnan(x);
            mv = fmax(mv, x);
        }
        for (; j < end; j++) {
            const float x = r[j] * scale;
            r[j] = x;
            nan |= isnan(x);
            m = fmax(m, x);
        }
        float lanes[TILE_K];
        vstoreK(mv, 0, lanes);
        for (int l = 0; l < TILE_K; l++)
            m = fmax(m, lanes[l]);
        nan |= any(nanv);
    }
#endif

    /* exp(x - m) in place and its sum. sum is 0 exactly when no key is
     * visible (m = -inf). */
    float sum = 0.0f;
    if (m != -INFINITY) {
        floatK sv = (floatK)0.0f;
        long j = first;
        for (; j + TILE_K <= end; j += TILE_K) {
            const floatK e = exp(vloadK(0, r + j) - m);
            vstoreK(e, 0, r + j);
            sv += e;
        }
        float lanes[TILE_K];
        vstoreK(sv, 0, lanes);
        for (int l = 0; l < TILE_K; l++)
            sum += lanes[l];
        for (; j < end; j++) {
            const float e = exp(r[j] - m);
            r[j] = e;
            sum += e;
        }
    }
    if (nan) {
        /* A NaN score makes the whole row NaN (softmax.cl's rows do). */
        sum = NAN;
        for (long j = 0; j < seq_k; j++)
            r[j] = NAN;
    } else {
        const float inv_sum = sum == 0.0f ? 0.0f : 1.0f / sum;
        for (long j = 0; j < first; j++)
            r[j] = 0.0f;
#if DROPOUT
        /* softmax.cl's dropped and scaled weights; a masked key (weight 0)
         * needs no draw. */
        const uint stream = (uint)bh;
        const float kept_scale = inv_sum * dropout_scale;
        for (long j = first; j < end; j++) {
            const float x = sum == 0.0f ? 0.0f : r[j];
            const int kept = x != 0.0f && dropout_keep(dropout_seed, dropout_offset, stream, i,
                                                       (int)j, dropout_threshold);
            r[j] = kept ? x * kept_scale : 0.0f;
        }
#else
        long j = first;
        if (sum == 0.0f) {
            for (; j < end; j++)
                r[j] = 0.0f;
        } else {
            for (; j + TILE_K <= end; j += TILE_K)
                vstoreK(vloadK(0, r + j) * inv_sum, 0, r + j);
            for (; j < end; j++)
                r[j] *= inv_sum;
        }
#endif
        for (long j = max(end, first); j < seq_k; j++)
            r[j] = 0.0f;
    }

#if HAS_LSE
    if (in_sequence)
        lse[AT(lse, b, h, sq.q0 + i)] = sum == 0.0f ? -INFINITY : m + log(sum);
#endif
}

/* head_dim_v = DV_FULL vectors of VEC_V, then DV_TAIL scalars. */
#define DV_FULL (HEAD_DIM_V / VEC_V)
#define DV_TAIL (HEAD_DIM_V % VEC_V)

/* acc[r][c] += p[r][j] * V[j][c] over the tile's keys j < keys where GUARD
 * (of r and j) holds. */
#define PV_TILE(GUARD)                                                                             \
    for (int c = 0; c < DV_FULL; c++) {                                                            \
        floatV a[ROWS];                                                                            \
        _Pragma("unroll") for (int r = 0; r < ROWS; r++) a[r] = acc[r][c];                         \
        for (int j = 0; j < keys; j++) {                                                           \
            const floatV x = LOAD_V(vt + j * v_ss + c * VEC_V);                                    \
            _Pragma("unroll") for (int r = 0; r < ROWS; r++) {                                     \
                if (GUARD)                                                                         \
                    a[r] = fma((floatV)p[r][j], x, a[r]);                                          \
            }                                                                                      \
        }                                                                                          \
        _Pragma("unroll") for (int r = 0; r < ROWS; r++) acc[r][c] = a[r];                         \
    }                                                                                              \
    for (int c = 0; c < DV_TAIL; c++)                                                              \
        for (int j = 0; j < keys; j++) {                                                           \
            const float x = load_elem(vt, j * v_ss + DV_FULL * VEC_V + c);                         \
            _Pragma("unroll") for (int r = 0; r < ROWS; r++) {                                     \
                if (GUARD)                                                                         \
                    tail[r][c] = fma(p[r][j], x, tail[r][c]);                                      \
            }                                                                                      \
        }

__kernel __attribute__((reqd_work_group_size(1, 1, 1))) void
pv_cpu(__global const float *p_all, ulong p_off, TENSOR(__global const elem_t, v, v),
       TENSOR(__global elem_t, o, o), int heads_q, int group, int head_base, FEATURE_PARAMS) {
    const int i0 = get_global_id(0) * ROWS, chunk_head = get_global_id(1);
    const int bh = head_base + chunk_head;
    const int b = bh / heads_q, h = bh % heads_q;
    const sequence_info sq = sequence_of(b, FEATURE_SEQUENCES);
    if (i0 >= sq.len_q)
        return;
    const int rows = min(ROWS, sq.len_q - i0);
    /* Keys some row of the block may see (none past the padding: their V
     * may hold anything); the others hold probability 0. */
    const long key_begin = first_key(i0, sq, win_left);
    const long key_end = (long)last_key(i0 + rows - 1, sq, win_right) + 1;

    /* Rows past the sequence read the last row's probabilities (computed,
     * never stored). */
    const __global float *ph = p_all + p_off + (long)chunk_head * seq_q * seq_k;
    const __global float *prow[ROWS];
    _Pragma("unroll") for (int r = 0; r < ROWS; r++) prow[r] =
        ph + (long)(i0 + min(r, rows - 1)) * seq_k;
    const __global elem_t *vh = v + AT(v, b, (h / group), sq.k0);

    floatV acc[ROWS][DV_FULL > 0 ? DV_FULL : 1];
    float tail[ROWS][DV_TAIL > 0 ? DV_TAIL : 1];
    for (int r = 0; r < ROWS; r++) {
        for (int c = 0; c < DV_FULL; c++)
            acc[r][c] = (floatV)0.0f;
        for (int c = 0; c < DV_TAIL; c++)
            tail[r][c] = 0.0f;
    }

    for (long j0 = key_begin; j0 < key_end; j0 += TILE_K) {
        const int keys = (int)min((long)TILE_K, key_end - j0);
        float p[ROWS][TILE_K];
        int zero = 0;
        _Pragma("unroll") for (int r = 0; r < ROWS; r++) {
            floatK pr;
            if (keys == TILE_K) {
                pr = vloadK(0, prow[r] + j0);
            } else {
                float tmp[TILE_K];
                for (int j = 0; j < TILE_K; j++)
                    tmp[j] = j < keys ? prow[r][j0 + j] : 1.0f; /* not visited */
                pr = vloadK(0, tmp);
            }
            zero |= any(pr == 0.0f);
            vstoreK(pr, 0, p[r]);
        }
        const __global elem_t *vt = vh + j0 * v_ss;
        /* A probability of 0 (a masked or dropped key) adds nothing, whatever
         * its V: tiles holding one take the guarded loop. */
        if (zero) {
            PV_TILE(p[r][j] != 0.0f)
        } else {
            PV_TILE(1)
        }
    }

    for (int r = 0; r < rows; r++) {
        __global elem_t *orow = o + AT(o, b, h, sq.q0 + i0 + r);
        for (int c = 0; c < DV_FULL; c++) {
#if DTYPE == 0
            vstoreV(acc[r][c], c, orow);
#else
            float tmp[VEC_V];
            vstoreV(acc[r][c], 0, tmp);
            for (int z = 0; z < VEC_V; z++)
                store_elem(orow, c * VEC_V + z, tmp[z]);
#endif
        }
        for (int c = 0; c < DV_TAIL; c++)
            store_elem(orow, DV_FULL * VEC_V + c, tail[r][c]);
    }
}
