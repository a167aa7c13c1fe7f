/* Fused attention forward for few query rows over many keys (decoding), on
 * CPU-shaped devices (after kernels/decode_rows.cl, which holds what the
 * gpu shape shares: build parameters, loads, the KV cache, the merge). K
 * and V are read in place: nothing is packed, so a forward reads each K and
 * V row of a kv head once.
 *
 * Work-group: one work-item; global size (splits * blocks, heads_kv, batch).
 * A work-item takes a block of ROWS query rows and one split of the keys.
 * Per key it loads the K row once as vectors across head_dim and reduces
 * one dot product per row; per block of TK keys it updates each row's
 * online softmax (running maximum m, sum l) and adds p * V, each V row
 * loaded once for all rows. A block of TK keys that every row sees in full
 * (most of them: all but the edges of the rows' ranges) does the same with
 * the keys as vector lanes (VECTOR_TILE).
 */
#define TK 16 /* keys per softmax update */

/* A tile of TK keys that every row of the block sees in full takes the
 * vector path: scores, softmax and P.V with the keys as vector lanes. Tiles
 * at the edges of a row's range, and calls with a keep-mask or score
 * modifiers, take the per-key path (the two give the same results up to
 * summation order). */
#define VECTOR_TILES (!HAS_MODIFIERS && !HAS_KEEP_MASK)

/* The largest lane, NaN if any lane is NaN (in vector selects: any() costs
 * a branch a lane on some compilers), and the smallest (NaN lanes ignored).
 * With MAX_VEC < 16 (oclgrind, which misreads the halves of 16-wide vectors)
 * lane by lane. */
#if MAX_VEC >= 16
#define MAX_OR_NAN(a, b) select(b, a, isgreater(a, b) | isnan(a))
inline float hmax16_nan(float16 x) {
    const float8 a = MAX_OR_NAN(x.lo, x.hi);
    const float4 b = MAX_OR_NAN(a.lo, a.hi);
    const float2 c = MAX_OR_NAN(b.lo, b.hi);
    return c.x > c.y || isnan(c.x) ? c.x : c.y;
}
inline float hmin16(float16 x) {
    const float8 a = fmin(x.lo, x.hi);
    const float4 b = fmin(a.lo, a.hi);
    const float2 c = fmin(b.lo, b.hi);
    return fmin(c.x, c.y);
}
#else
inline float hmax16_nan(float16 x) {
    float t[16];
    vstore16(x, 0, t);
    float m = t[0];
    for (int i = 1; i < 16; i++)
        m = t[i] > m || isnan(t[i]) ? t[i] : m;
    return m;
}
inline float hmin16(float16 x) {
    float t[16];
    vstore16(x, 0, t);
    float m = t[0];
    for (int i = 1; i < 16; i++)
        m = fmin(m, t[i]);
    return m;
}
#endif

/* Lane i of the result: x's lanes 2i and 2i + 1 summed (i < 8), then y's.
 * Four rounds of it turn sixteen keys' partial dot products (a vector across
 * head_dim each) into one vector of the sixteen scores, in key order. */
inline float16 pair_sums(float16 x, float16 y) {
    const uint16 even = (uint16)(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return shuffle2(x, y, even) + shuffle2(x, y, even + 1u);
}

#if TK != 16
#error "the vector tile path reduces sixteen keys a tile"
#endif

/* Loops over rows, keys and vectors unrolled: their accumulators then live
 * in registers, not in private memory. */
#define UNROLL _Pragma("unroll")

/* The vector path asks for the rows two tiles ahead itself (the builtin
 * prefetch() is a no-op on PoCL). A paged cache's rows come in runs of a
 * page, where the hardware prefetcher restarts (10-20% at pages of 16 on
 * a 2-core EPYC); on a 2-core Xeon it helps contiguous rows as much
 * (f16, 16k keys: 7.0-8.2 -> 3.5-5.2 ms). Where the compiler is not the
 * host's (oclgrind, GPUs), nothing. */
#if defined(__x86_64__)
#define PREFETCH_KEYS (2 * TK)
#define PREFETCH_ROW(row, n)                                                                       \
    do {                                                                                           \
        const __global char *bytes_ = (const __global char *)(row);                                \
        for (int x_ = 0; x_ < (n) * (int)sizeof(kv_t); x_ += 64)                                   \
            __builtin_prefetch(bytes_ + x_);                                                       \
    } while (0)
#else
#define PREFETCH_KEYS (LONG_MAX / 2)
#define PREFETCH_ROW(row, n) ((void)0)
#endif

/* P.V's vectors of head_dim_v a pass over the tile's keys: ROWS x PV_CHUNK
 * accumulators, at most 16, stay in registers while each key's weights are
 * broadcast once. */
#if ROWS <= 4 && NV % 4 == 0
#define PV_CHUNK 4
#elif ROWS <= 8 && NV % 2 == 0
#define PV_CHUNK 2
#else
#define PV_CHUNK 1
#endif

/* The scores of the tile's keys k0 .. k0 + 15 for every row, one vector a
 * row: sv[r] (int8: times the keys' scales). */
#if VD == 16
/* Two keys at a time, each K vector loaded once for QK_ROWS rows (two
 * accumulators a row: at most 16 registers); their per-lane partial sums
 * meet in pair_sums. */
#define QK_ROWS (ROWS < 8 ? ROWS : 8)
#define TILE_SCORES()                                                                              \
    float16 pairs[ROWS][TK / 2];                                                                   \
    for (int jp = 0; jp < TK / 2; jp++) {                                                          \
        const __global kv_t *ka = krow[2 * jp], *kz = krow[2 * jp + 1];                            \
        UNROLL for (int r0 = 0; r0 < ROWS; r0 += QK_ROWS) {                                        \
            float16 a0[QK_ROWS], a1[QK_ROWS];                                                      \
            UNROLL for (int r = 0; r < QK_ROWS; r++)                                               \
                a0[r] = a1[r] = 0.0f;                                                              \
            UNROLL for (int c = 0; c < ND; c++) {                                                  \
                const float16 x = LOAD_KD(c, ka), y = LOAD_KD(c, kz);                              \
                UNROLL for (int r = 0; r < QK_ROWS && r0 + r < ROWS; r++) {                        \
                    a0[r] = fma(qv[r0 + r][c], x, a0[r]);                                          \
                    a1[r] = fma(qv[r0 + r][c], y, a1[r]);                                          \
                }                                                                                  \
            }                                                                                      \
            UNROLL for (int r = 0; r < QK_ROWS && r0 + r < ROWS; r++)                              \
                pairs[r0 + r][jp] = pair_sums(a0[r], a1[r]);                                       \
        }                                                                                          \
    }                                                                                              \
    for (int r = 0; r < ROWS; r++) {                                                               \
        float16 quads[4];                                                                          \
        for (int i = 0; i < 4; i++)                                                                \
            quads[i] = pair_sums(pairs[r][2 * i], pairs[r][2 * i + 1]);                            \
        sv[r] = pair_sums(pair_sums(quads[0], quads[1]), pair_sums(quads[2], quads[3])) * kscale;  \
    }
#else
#define TILE_SCORES()                                                                              \
    float st[ROWS][TK];                                                                            \
    for (int j = 0; j < TK; j++) {                                                                 \
        floatD kv[ND];                                                                             \
        for (int c = 0; c < ND; c++)                                                               \
            kv[c] = LOAD_KD(c, krow[j]);                                                           \
        for (int r = 0; r < ROWS; r++) {                                                           \
            floatD a = qv[r][0] * kv[0];                                                           \
            for (int c = 1; c < ND; c++)                                                           \
                a = fma(qv[r][c], kv[c], a);                                                       \
            st[r][j] = HSUM_D(a);                                                                  \
        }                                                                                          \
    }                                                                                              \
    for (int r = 0; r < ROWS; r++)                                                                 \
        sv[r] = vload16(0, st[r]) * kscale;
#endif

/* One tile of TK keys every row sees (the kernel's names in scope): the
 * scores, each row's online-softmax update with its TK exponentials as one
 * vector, then P.V. P.V runs over head_dim_v's vectors outermost, so a row's
 * accumulator vector stays in a register across the tile's keys and each V
 * vector is loaded once. A tile where some row's weight is 0 (nothing seen
 * yet, or an underflow) adds key by key, skipping the zeros, so that a V
 * holding inf or NaN there contributes nothing, as on the per-key path. */
#define VECTOR_TILE()                                                                              \
    do {                                                                                           \
        const __global kv_t *krow[TK], *vrow[TK];                                                  \
        float key_scales[TK], val_scales[TK];                                                      \
        for (int j = 0; j < TK; j++) {                                                             \
            krow[j] = KEY_ROW(k0 + j);                                                             \
            vrow[j] = VAL_ROW(k0 + j);                                                             \
            key_scales[j] = KEY_SCALE(k0 + j);                                                     \
            val_scales[j] = VAL_SCALE(k0 + j);                                                     \
            if (k0 + j + PREFETCH_KEYS < se) {                                                     \
                PREFETCH_ROW(KEY_ROW(k0 + j + PREFETCH_KEYS), HEAD_DIM);                           \
                PREFETCH_ROW(VAL_ROW(k0 + j + PREFETCH_KEYS), HEAD_DIM_V);                         \
            }                                                                                      \
        }                                                                                          \
        const float16 kscale = vload16(0, key_scales);                                             \
        const float16 vscale = vload16(0, val_scales);                                             \
        float16 sv[ROWS];                                                                          \
        TILE_SCORES()                                                                              \
        float w[ROWS][TK]; /* p * (int8: the value scale) */                                       \
        int skips = 0;                                                                             \
        for (int r = 0; r < ROWS; r++) {                                                           \
            /* A NaN score makes the row NaN, as in the reference. */                              \
            const float tile_max = hmax16_nan(sv[r]);                                               \
            const float m_new = isnan(tile_max) ? tile_max : fmax(m[r], tile_max);                 \
            if (m_new == -INFINITY) {                                                              \
                vstore16((float16)0.0f, 0, w[r]); /* every score -inf: p = 0 */                   \
                skips = 1;                                                                         \
                continue;                                                                          \
            }                                                                                      \
            if (m_new != m[r]) {                                                                   \
                const float corr = exp2(EXPONENT_OF(m[r] * 0.5f - m_new * 0.5f));                  \
                l[r] *= corr;                                                                      \
                for (int c = 0; c < NV; c++)                                                       \
                    acc[r][c] *= corr;                                                             \
                m[r] = m_new;                                                                      \
            }                                                                                      \
            const float16 p = exp2(EXPONENT_OF(sv[r] * 0.5f - m_new * 0.5f));                      \
            l[r] += hsum16(p);                                                                     \
            skips |= hmin16(p) == 0.0f;                                                            \
            vstore16(p * vscale, 0, w[r]);                                                         \
        }                                                                                          \
        if (!skips) {                                                                              \
            for (int c0 = 0; c0 < NV; c0 += PV_CHUNK) {                                            \
                floatVV a[ROWS][PV_CHUNK];                                                         \
                UNROLL for (int r = 0; r < ROWS; r++)                                              \
                    UNROLL for (int c = 0; c < PV_CHUNK; c++)                                      \
                        a[r][c] = acc[r][c0 + c];                                                  \
                for (int j = 0; j < TK; j++) {                                                     \
                    floatVV wj[ROWS];                                                              \
                    UNROLL for (int r = 0; r < ROWS; r++)                                          \
                        wj[r] = (floatVV)w[r][j];                                                  \
                    UNROLL for (int c = 0; c < PV_CHUNK; c++) {                                    \
                        const floatVV vv = LOAD_V(c0 + c, vrow[j]);                                \
                        UNROLL for (int r = 0; r < ROWS; r++)                                      \
                            a[r][c] = fma(wj[r], vv, a[r][c]);                                     \
                    }                                                                              \
                }                                                                                  \
                UNROLL for (int r = 0; r < ROWS; r++)                                              \
                    UNROLL for (int c = 0; c < PV_CHUNK; c++)                                      \
                        acc[r][c0 + c] = a[r][c];                                                  \
            }                                                                                      \
        } else {                                                                                   \
            for (int j = 0; j < TK; j++) {                                                         \
                floatVV vv[NV];                                                                    \
                for (int c = 0; c < NV; c++)                                                       \
                    vv[c] = LOAD_V(c, vrow[j]);                                                    \
                for (int r = 0; r < ROWS; r++) {                                                   \
                    if (w[r][j] == 0.0f)                                                           \
                        continue;                                                                  \
                    for (int c = 0; c < NV; c++)                                                   \
                        acc[r][c] = fma((floatVV)w[r][j], vv[c], acc[r][c]);                       \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    } while (0)

__kernel __attribute__((reqd_work_group_size(1, 1, 1))) void
flash_decode(TENSOR(__global const elem_t, q, q),
             TENSOR(__global KV_MUT kv_t, k, k),
             TENSOR(__global KV_MUT kv_t, v, v),
             TENSOR(__global elem_t, o, o),
             TENSOR(__global float, lse, l),
             __global float *part, ulong part_off, int group, int heads_q, int splits,
             float scale, float exp_hi, float exp_lo, float sign KV_PARAMS, FEATURE_PARAMS) {
    const int split = get_global_id(0) % splits;
    const long blk = get_global_id(0) / splits;
    const int hk = get_global_id(1), b = get_global_id(2);
    DECODE_SEQUENCE_AND_BLOCK();
    if (n0 >= n_end)
        return;

    int ri[ROWS], rh[ROWS], kf[ROWS], kl[ROWS];
    long sb, se;
    block_rows(n0, n_end, group, hk, sq, win_left, win_right, split, splits, ri, rh, kf, kl, &sb,
               &se);
    floatD qv[ROWS][ND];
    for (int r = 0; r < ROWS; r++) {
        const __global elem_t *qrow = q + AT(q, b, rh[r], sq.q0 + ri[r]);
        for (int c = 0; c < ND; c++)
            qv[r][c] = LOAD_D(c, qrow) * sign;
    }

    floatVV acc[ROWS][NV];
    float m[ROWS], l[ROWS];
    for (int r = 0; r < ROWS; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
        for (int c = 0; c < NV; c++)
            acc[r][c] = 0.0f;
    }

#if !KVCACHE
    const __global kv_t *kh = k + AT(k, b, hk, sq.k0);
    const __global kv_t *vh = v + AT(v, b, hk, sq.k0);
#endif
    float s[ROWS][TK];
    int seen[TK];
    for (long k0 = sb; k0 < se; k0 += TK) {
        const int nk = (int)min((long)TK, se - k0);
#if VECTOR_TILES
        int full = nk == TK;
        for (int r = 0; r < ROWS; r++)
            full = full && (n0 + r >= n_end || (k0 >= kf[r] && k0 + TK - 1 <= kl[r]));
        if (full) {
            VECTOR_TILE();
            continue;
        }
#endif
        for (int j = 0; j < nk; j++) {
            const __global kv_t *krow = KEY_ROW(k0 + j);
            floatD kv[ND];
            for (int c = 0; c < ND; c++)
                kv[c] = LOAD_KD(c, krow);
            /* int8: q.(k * scale) as (q.k) * scale, one multiply a key. */
            const float kscale = KEY_SCALE(k0 + j);
            for (int r = 0; r < ROWS; r++) {
                floatD a = qv[r][0] * kv[0];
                for (int c = 1; c < ND; c++)
                    a = fma(qv[r][c], kv[c], a);
                s[r][j] = HSUM_D(a) * kscale;
            }
        }
        for (int j = 0; j < nk; j++)
            seen[j] = 0;
        for (int r = 0; r < ROWS; r++) {
            float tile_max = -INFINITY;
            for (int j = 0; j < nk; j++) {
                const int key = (int)(k0 + j);
                int visible = key >= kf[r] && key <= kl[r];
#if HAS_KEEP_MASK
                visible = visible && KEEP_ROW(b, rh[r], ri[r])[key] != 0;
#endif
                float x = s[r][j];
#if HAS_MODIFIERS
                x = modified_score(x, scale, softcap, SLOPE(rh[r]), ri[r], key, sq,
                                   BIAS_ROW(b, rh[r], ri[r]));
#endif
                x = visible ? x : -INFINITY;
                seen[j] |= visible;
                s[r][j] = x;
                /* A NaN score makes the row NaN, as in the reference. */
                tile_max = x > tile_max || isnan(x) ? x : tile_max;
            }
            const float m_new = isnan(tile_max) ? tile_max : fmax(m[r], tile_max);
            if (m_new == -INFINITY) {
                for (int j = 0; j < nk; j++)
                    s[r][j] = 0.0f; /* nothing seen yet: p = 0 */
                continue;
            }
            if (m_new != m[r]) {
                /* exp2(-inf) = 0 when the row had seen nothing. */
                const float corr = exp2(EXPONENT_OF(m[r] * 0.5f - m_new * 0.5f));
                l[r] *= corr;
                for (int c = 0; c < NV; c++)
                    acc[r][c] *= corr;
                m[r] = m_new;
            }
            float sum = 0.0f;
            const float half_max = m_new * 0.5f;
            for (int j = 0; j < nk; j++) {
                const float p = exp2(EXPONENT_OF(s[r][j] * 0.5f - half_max));
                s[r][j] = p;
                sum += p;
            }
            l[r] += sum;
        }
        for (int j = 0; j < nk; j++) {
            if (!seen[j])
                continue; /* its V may hold anything, NaN included */
            const __global kv_t *vrow = VAL_ROW(k0 + j);
            floatVV vv[NV];
            for (int c = 0; c < NV; c++)
                vv[c] = LOAD_V(c, vrow);
            const float vscale = VAL_SCALE(k0 + j); /* int8: p * (v * scale) as (p * scale) * v */
            for (int r = 0; r < ROWS; r++) {
                const float p = s[r][j];
                if (p == 0.0f)
                    continue; /* hidden from this row (or underflowed) */
                const float pv = p * vscale;
                for (int c = 0; c < NV; c++)
                    acc[r][c] = fma((floatVV)pv, vv[c], acc[r][c]);
            }
        }
    }

    for (int r = 0; r < ROWS && n0 + r < n_end; r++) {
        const int i = ri[r], h = rh[r];
#if PARTIALS
        const long slot = ((long)b * heads_q + h) * seq_q + i;
        __global float *pp = part + part_off + (slot * splits + split) * PART_FLOATS;
        pp[0] = m[r];
        pp[1] = l[r];
        for (int c = 0; c < NV; c++)
            STORE_ACC(acc[r][c], c, pp + 2);
#else
        __global elem_t *orow = o + AT(o, b, h, sq.q0 + i);
        store_row(orow, acc[r], l[r]);
#if HAS_LSE
        lse[AT(l, b, h, sq.q0 + i)] = lse_of(l[r], m[r], HAS_MODIFIERS ? 1.0f : fabs(scale));
#endif
#endif
    }
#if KVCACHE && APPEND && !PARTIALS
    /* One work-item a kv head appends its new rows: the block table's
     * pages are read by no other work-item at these keys. */
    if (blk == 0)
        for (int i = 0; i < seq_q; i++)
            KV_APPEND_ROW(b, hk, i, cached);
#endif
}

