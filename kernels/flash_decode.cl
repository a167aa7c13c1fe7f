/* Fused attention forward for few query rows over many keys (decoding), on
 * CPU-shaped devices. K and V are read in place: nothing is packed, so a
 * forward reads each K and V row of a kv head once.
 *
 * Work-group: one work-item; global size (splits * blocks, heads_kv, batch).
 * The query rows that read one kv head are the group's query heads times the
 * sequence's rows, numbered n = i * group + g (query row i, head
 * hk * group + g); a work-item takes ROWS consecutive ones (a block) and one
 * of `splits` equal parts of the keys the block may see. Per key it loads the
 * K row once as vectors across head_dim and reduces one dot product per row;
 * per block of TK keys it updates each row's online softmax (running
 * maximum m, sum l) and adds p * V, each V row loaded once for all rows.
 * A block of TK keys that every row sees in full (most of them: all but the
 * edges of the rows' ranges) does the same with the keys as vector lanes
 * (VECTOR_TILE).
 *
 * Softmax in base 2 with the exponent (s - m) * c, as common.cl's
 * EXPONENT_OF computes it: s is the score with Q's sign folded in and
 * c = |scale| * log2(e), or with modifiers the modified score and
 * c = log2(e).
 *
 * With one split the work-item writes O and LSE itself. With more it writes
 * its rows' partials (m, l, unnormalized accumulator) to `part`, and
 * flash_decode_merge combines them in split order (deterministic) and writes
 * O and LSE. A row that sees no key gives O = 0 and LSE = -INFINITY. The V
 * row of a key no row of the block sees is never read.
 *
 * Over a KV cache (KVCACHE, lib/kvcache.c), K and V are the cache: key j
 * of sequence b below its cached length lives in its slot (or, PAGED, in the
 * page its block-table entry names), keys from there on (APPEND) in k_new /
 * v_new, which the command that writes O also copies into the cache (the
 * main kernel's first block with one split, the merge with more). Nothing in
 * the call reads the cache rows it writes, so the copy races with no read.
 *
 * Build-time parameters (beside common.cl's):
 *   ROWS      query rows per work-item, 1..16
 *   PARTIALS  1: write partials (splits > 1), 0: write O and LSE
 *   KVCACHE   1: K and V are a cache (KV_PARAMS); then PAGED, BATCH_IDX
 *             (a slot per sequence from kv_slots) and APPEND, each 0 or 1,
 *             and with PAGED the page size KV_PAGE_SIZE
 *   KV_DTYPE  the cache's storage (common.cl; Q's without KVCACHE). int8
 *             rows are dequantized by folding their scales into the score
 *             ((q.k) * scale_k) and the weight ((p * scale_v) * v).
 */
#ifndef ROWS
#define ROWS 4
#endif
#ifndef PARTIALS
#define PARTIALS 0
#endif
#if ROWS < 1 || ROWS > 16
#error "ROWS must be 1..16"
#endif

#ifndef KVCACHE
#define KVCACHE 0
#endif
#ifndef PAGED
#define PAGED 0
#endif
#ifndef BATCH_IDX
#define BATCH_IDX 0
#endif
#ifndef APPEND
#define APPEND 0
#endif
#if PAGED && (!defined(KV_PAGE_SIZE) || KV_PAGE_SIZE < 1)
#error "a paged cache needs KV_PAGE_SIZE >= 1"
#endif

#define TK 16 /* keys per softmax update */

/* A tile of TK keys that every row of the block sees in full takes the
 * vector path: scores, softmax and P.V with the keys as vector lanes. Tiles
 * at the edges of a row's range, and calls with a keep-mask or score
 * modifiers, take the per-key path (the two give the same results up to
 * summation order). */
#define VECTOR_TILES (!HAS_MODIFIERS && !HAS_KEEP_MASK)

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

/* Vector widths: the largest power of two up to MAX_VEC dividing the row.
 * (MAX_VEC 8 keeps oclgrind's uninitialized-value check usable: it misreads
 * the halves of 16-wide vectors, see tests/oclgrind_check.sh.) */
#ifndef MAX_VEC
#define MAX_VEC 16
#endif
#if MAX_VEC != 4 && MAX_VEC != 8 && MAX_VEC != 16
#error "MAX_VEC must be 4, 8 or 16"
#endif
#if HEAD_DIM % 16 == 0 && MAX_VEC >= 16
#define VD 16
#elif HEAD_DIM % 8 == 0 && MAX_VEC >= 8
#define VD 8
#elif HEAD_DIM % 4 == 0
#define VD 4
#elif HEAD_DIM % 2 == 0
#define VD 2
#else
#define VD 1
#endif
#if HEAD_DIM_V % 16 == 0 && MAX_VEC >= 16
#define VV 16
#elif HEAD_DIM_V % 8 == 0 && MAX_VEC >= 8
#define VV 8
#elif HEAD_DIM_V % 4 == 0
#define VV 4
#elif HEAD_DIM_V % 2 == 0
#define VV 2
#else
#define VV 1
#endif
#define ND (HEAD_DIM / VD)
#define NV (HEAD_DIM_V / VV)

inline float hsum1(float x) {
    return x;
}
inline float hsum2(float2 x) {
    return x.x + x.y;
}
inline float hsum4(float4 x) {
    return hsum2(x.lo + x.hi);
}
inline float hsum8(float8 x) {
    return hsum4(x.lo + x.hi);
}
#if MAX_VEC >= 16
inline float hsum16(float16 x) {
    return hsum8(x.lo + x.hi);
}
#else
/* Lane by lane: see hmax16_nan. */
inline float hsum16(float16 x) {
    float t[16];
    vstore16(x, 0, t);
    float sum = t[0];
    for (int i = 1; i < 16; i++)
        sum += t[i];
    return sum;
}
#endif
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

/* W storage elements from p + c * W as floats (W = 1: a scalar). */
#define VEC1 float
#define VEC2 float2
#define VEC4 float4
#define VEC8 float8
#define VEC16 float16
#define VEC(W) CAT(VEC, W)
/* By storage type T (DTYPE or KV_DTYPE): 0 float, 1 half, 2 bfloat16, 3
 * int8 (undequantized). */
#define LOAD_1_0(c, p) ((p)[c])
#define LOAD_W_0(W, c, p) CAT(vload, W)(c, p)
#define LOAD_1_1(c, p) vload_half(c, p)
#define LOAD_W_1(W, c, p) CAT(vload_half, W)(c, p)
#define LOAD_1_2(c, p) as_float((uint)(p)[c] << 16)
#define LOAD_W_2(W, c, p) CAT(as_float, W)(CAT(convert_uint, W)(CAT(vload, W)(c, p)) << 16)
#define LOAD_1_3(c, p) ((float)(p)[c])
#define LOAD_W_3(W, c, p) CAT(convert_float, W)(CAT(vload, W)(c, p))
#define LOAD_1(T, c, p) CAT(LOAD_1_, T)(c, p)
#define LOAD_W(T, W, c, p) CAT(LOAD_W_, T)(W, c, p)
/* Q's rows (LOAD_D), K's (LOAD_KD) and V's (LOAD_V) as floats. */
#if VD == 1
#define LOAD_D(c, p) LOAD_1(DTYPE, c, p)
#define LOAD_KD(c, p) LOAD_1(KV_DTYPE, c, p)
#else
#define LOAD_D(c, p) LOAD_W(DTYPE, VD, c, p)
#define LOAD_KD(c, p) LOAD_W(KV_DTYPE, VD, c, p)
#endif
#if VV == 1
#define LOAD_V(c, p) LOAD_1(KV_DTYPE, c, p)
#define STORE_ACC(x, c, p) ((p)[c] = (x))
#else
#define LOAD_V(c, p) LOAD_W(KV_DTYPE, VV, c, p)
#define STORE_ACC(x, c, p) CAT(vstore, VV)(x, c, p)
#endif
typedef VEC(VD) floatD;
typedef VEC(VV) floatVV;
#define HSUM_D CAT(hsum, VD)

/* A row's normalized output and its LSE. */
inline void store_row(__global elem_t *orow, const floatVV *acc, float l) {
    /* l is 0 exactly when the row saw no key; NaN stays NaN. */
    const float inv = l == 0.0f ? 0.0f : 1.0f / l;
    float row[HEAD_DIM_V];
    for (int c = 0; c < NV; c++)
        STORE_ACC(acc[c] * inv, c, row);
    for (int d = 0; d < HEAD_DIM_V; d++)
        store_elem(orow, d, row[d]);
}

/* m * unit is the row's largest score in natural units. */
inline float lse_of(float l, float m, float unit) {
    return l == 0.0f ? -INFINITY : fma(log2(l), M_LN2_F, m * unit);
}

/* partial (row slot, split): m, l, then HEAD_DIM_V accumulator floats. */
#define PART_FLOATS (HEAD_DIM_V + 2)

/* ---- KV cache ----------------------------------------------------------------- */

#if KVCACHE
/* The cache is written (appended to); the lengths, slots and block table are
 * clamped into the cache whatever they hold (lib/kvcache.c checks host ones).
 * The new rows kn, vn are in the cache's storage type (kernels/kv_convert.cl
 * converted them when Q's differs); an int8 cache has a scale per row, ks
 * and vs in the cache's layout, kns and vns packed [batch, heads_kv, seq_q]. */
#define KV_MUT
#if KV_DTYPE == 3
#define KV_SCALE_PARAMS                                                                            \
    , TENSOR(__global float, ks, ks), TENSOR(__global float, vs, vs),                              \
        TENSOR(__global const float, kns, kns), TENSOR(__global const float, vns, vns)
#else
#define KV_SCALE_PARAMS
#endif
#define KV_PARAMS                                                                                  \
    , __global const int *kv_lengths, __global const int *kv_slots,                                \
        __global const int *kv_pages, int kv_slot_count, int kv_page_size, int kv_max_pages,       \
        int kv_heads, TENSOR(__global const kv_t, kn, kn),                                         \
        TENSOR(__global const kv_t, vn, vn) KV_SCALE_PARAMS
/* The merge appends too: it gets the cache. */
#define MERGE_KV_PARAMS                                                                            \
    , TENSOR(__global kv_t, k, k), TENSOR(__global kv_t, v, v) KV_PARAMS

/* Keys sequence b holds before this call's rows; with APPEND room is left
 * for them (seq_k is the capacity). */
inline int kv_cached(int b, int seq_q, int capacity, __global const int *kv_lengths) {
    return clamp(kv_lengths[b], 0, capacity - (APPEND ? seq_q : 0));
}

/* The slot or page holding key j of sequence b, and its row there. */
#if PAGED
/* KV_PAGE_SIZE is the plan's page size (kv_page_size), a build-time
 * constant so that the division per key is a multiply and a shift. */
#define KV_BLOCK(b, j)                                                                             \
    clamp(kv_pages[(long)(b) * kv_max_pages + (int)(j) / KV_PAGE_SIZE], 0, kv_slot_count - 1)
#define KV_TOKEN(j) ((int)(j) % KV_PAGE_SIZE)
#elif BATCH_IDX
#define KV_BLOCK(b, j) clamp(kv_slots[b], 0, kv_slot_count - 1)
#define KV_TOKEN(j) (j)
#else
#define KV_BLOCK(b, j) (b)
#define KV_TOKEN(j) (j)
#endif
#define CACHE_ROW(x, p, b, hk, j) ((x) + AT(p, (long)KV_BLOCK(b, j), (long)(hk), KV_TOKEN(j)))

/* The storage bits of one row, converted nowhere. */
inline void kv_copy_row(__global kv_t *dst, __global const kv_t *src, int n) {
    __global kv_bits_t *d = (__global kv_bits_t *)dst;
    __global const kv_bits_t *s = (__global const kv_bits_t *)src;
    for (int x = 0; x < n; x++)
        d[x] = s[x];
}

/* Row i of kv head hk of sequence b, from k_new / v_new into the cache at
 * key `cached + i`. */
#define KV_APPEND_ROW(b, hk, i, cached)                                                            \
    do {                                                                                           \
        const long key_ = (long)(cached) + (i);                                                    \
        kv_copy_row(CACHE_ROW(k, k, b, hk, key_),                                                  \
                    kn + AT(kn, b, hk, i), HEAD_DIM);                                              \
        kv_copy_row(CACHE_ROW(v, v, b, hk, key_),                                                  \
                    vn + AT(vn, b, hk, i),                                                         \
                    HEAD_DIM_V);                                                                   \
        KV_APPEND_SCALES(b, hk, i, key_);                                                          \
    } while (0)
#if KV_DTYPE == 3
/* Key j's scales, from the cache below `cached` and the new rows' after. */
#define KEY_SCALE(j)                                                                               \
    ((j) < cached ? *CACHE_ROW(ks, ks, b, hk, j) : kns[AT(kns, b, hk, (j) - cached)])
#define VAL_SCALE(j)                                                                               \
    ((j) < cached ? *CACHE_ROW(vs, vs, b, hk, j) : vns[AT(vns, b, hk, (j) - cached)])
#define KV_APPEND_SCALES(b, hk, i, key)                                                            \
    do {                                                                                           \
        *CACHE_ROW(ks, ks, b, hk, key) = kns[AT(kns, b, hk, i)];                                   \
        *CACHE_ROW(vs, vs, b, hk, key) = vns[AT(vns, b, hk, i)];                                   \
    } while (0)
#endif
#else
#define KV_MUT const
#define KV_PARAMS
#define MERGE_KV_PARAMS
#endif
#if !KVCACHE || KV_DTYPE != 3
#define KEY_SCALE(j) 1.0f
#define VAL_SCALE(j) 1.0f
#define KV_APPEND_SCALES(b, hk, i, key) ((void)0)
#endif

#if TK != 16
#error "the vector tile path reduces sixteen keys a tile"
#endif

/* Loops over rows, keys and vectors unrolled: their accumulators then live
 * in registers, not in private memory. */
#define UNROLL _Pragma("unroll")

/* A paged cache's rows of one head come in runs of a page, so the hardware
 * prefetcher restarts at every page: the vector path asks for the rows two
 * tiles ahead itself (10-20% at pages of 16 tokens on a 2-core EPYC; the
 * builtin prefetch() is a no-op there). Where the compiler is not the
 * host's (oclgrind, GPUs), nothing. */
#if PAGED && defined(__x86_64__)
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
    sequence_info sq = sequence_of(b, FEATURE_SEQUENCES);
#if KVCACHE
    const int cached = kv_cached(b, seq_q, seq_k, kv_lengths);
    sq.len_k = sq.kept_k = cached + (APPEND ? seq_q : 0);
#endif
    const long n0 = blk * ROWS, n_end = min(n0 + ROWS, (long)sq.len_q * group);
    if (n0 >= n_end)
        return;

    /* Each row's query index, head and key range; rows past the block's end
     * see no key. */
    int ri[ROWS], rh[ROWS], kf[ROWS], kl[ROWS];
    long kb = LONG_MAX, ke = LONG_MIN; /* the keys the block may see: [kb, ke] */
    floatD qv[ROWS][ND];
    for (int r = 0; r < ROWS; r++) {
        const long n = min(n0 + r, n_end - 1);
        ri[r] = (int)(n / group);
        rh[r] = hk * group + (int)(n % group);
        kf[r] = first_key(ri[r], sq, win_left);
        kl[r] = last_key(ri[r], sq, win_right);
        if (n0 + r >= n_end) {
            kf[r] = 1;
            kl[r] = 0;
        }
        if (kf[r] <= kl[r]) {
            kb = min(kb, (long)kf[r]);
            ke = max(ke, (long)kl[r]);
        }
        const __global elem_t *qrow =
            q + AT(q, b, rh[r], sq.q0 + ri[r]);
        for (int c = 0; c < ND; c++)
            qv[r][c] = LOAD_D(c, qrow) * sign;
    }
    /* This split's part of them: [sb, se). */
    long sb = 0, se = 0;
    if (kb <= ke) {
        const long len = ke + 1 - kb;
        sb = kb + len * split / splits;
        se = kb + len * (split + 1) / splits;
    }

    floatVV acc[ROWS][NV];
    float m[ROWS], l[ROWS];
    for (int r = 0; r < ROWS; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
        for (int c = 0; c < NV; c++)
            acc[r][c] = 0.0f;
    }

#if KVCACHE
    /* Keys below `cached` from the cache, the others from k_new / v_new. */
#define KEY_ROW(j)                                                                                 \
    ((j) < cached ? CACHE_ROW(k, k, b, hk, j)                                                      \
                  : kn + AT(kn, b, hk, (j) - cached))
#define VAL_ROW(j)                                                                                 \
    ((j) < cached ? CACHE_ROW(v, v, b, hk, j)                                                      \
                  : vn + AT(vn, b, hk, (j) - cached))
#else
    const __global kv_t *kh = k + AT(k, b, hk, sq.k0);
    const __global kv_t *vh = v + AT(v, b, hk, sq.k0);
#define KEY_ROW(j) (kh + (j) * k_ss)
#define VAL_ROW(j) (vh + (j) * v_ss)
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

/* Combines the splits' partials of one row, in split order, and writes its O
 * and LSE. Global size (seq_q, heads_q, batch). */
__kernel void flash_decode_merge(__global const float *part, ulong part_off,
                                 TENSOR(__global elem_t, o, o), TENSOR(__global float, lse, l),
                                 int heads_q, int splits, float exp_hi, float exp_lo, float unit
                                 MERGE_KV_PARAMS,
                                 FEATURE_PARAMS) {
    const int i = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    const sequence_info sq = sequence_of(b, FEATURE_SEQUENCES);
    if (i >= sq.len_q)
        return;
#if KVCACHE && APPEND
    /* Row i of kv head h, by the first heads_kv of the query heads. */
    if (h < kv_heads)
        KV_APPEND_ROW(b, h, i, kv_cached(b, seq_q, seq_k, kv_lengths));
#endif
    const long slot = ((long)b * heads_q + h) * seq_q + i;
    const __global float *pp = part + part_off + slot * splits * PART_FLOATS;
    float m = -INFINITY;
    for (int t = 0; t < splits; t++) {
        const float mt = pp[t * PART_FLOATS];
        m = isnan(mt) || isnan(m) ? NAN : fmax(m, mt);
    }
    float l = 0.0f;
    floatVV acc[NV];
    for (int c = 0; c < NV; c++)
        acc[c] = 0.0f;
    if (m != -INFINITY) {
        for (int t = 0; t < splits; t++) {
            const __global float *pt = pp + t * PART_FLOATS;
            const float w = exp2(EXPONENT_OF(pt[0] * 0.5f - m * 0.5f));
            if (w == 0.0f)
                continue; /* a split that saw nothing, or negligible */
            l = fma(w, pt[1], l);
            for (int c = 0; c < NV; c++) {
#if VV == 1
                const float x = pt[2 + c];
#else
                const floatVV x = CAT(vload, VV)(c, pt + 2);
#endif
                acc[c] = fma((floatVV)w, x, acc[c]);
            }
        }
    }
    __global elem_t *orow = o + AT(o, b, h, sq.q0 + i);
    store_row(orow, acc, l);
#if HAS_LSE
    lse[AT(l, b, h, sq.q0 + i)] = lse_of(l, m, unit);
#endif
}
