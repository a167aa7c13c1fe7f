/* What both decode kernels share (lib/decode.c builds common.cl, this file,
 * then kernels/flash_decode.cl for the cpu shape or flash_decode_gpu.cl for
 * the gpu shape): their build parameters, the loads of Q, K and V rows as
 * floats, the KV cache's addressing and append, a block's rows and keys,
 * and the merge of split partials.
 *
 * The query rows that read one kv head are the group's query heads times the
 * sequence's rows, numbered n = i * group + g (query row i, head
 * hk * group + g); a block is ROWS consecutive ones, and a split one of
 * `splits` equal parts of the keys the block may see.
 *
 * Softmax in base 2 with the exponent (s - m) * c, as common.cl's
 * EXPONENT_OF computes it: s is the score with Q's sign folded in and
 * c = |scale| * log2(e), or with modifiers the modified score and
 * c = log2(e).
 *
 * With one split the kernel writes O and LSE itself. With more it writes
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
 *   ROWS      query rows per block, 1..16
 *   PARTIALS  1: write partials (splits > 1), 0: write O and LSE
 *   KVCACHE   1: K and V are a cache (KV_PARAMS); then PAGED, BATCH_IDX
 *             (a slot per sequence from kv_slots) and APPEND, each 0 or 1,
 *             and with PAGED the page size KV_PAGE_SIZE
 *   KV_DTYPE  the cache's storage (common.cl; Q's without KVCACHE). int8
 *             rows are dequantized by folding their scales into the score
 *             ((q.k) * scale_k) and the weight ((p * scale_v) * v).
 *   MAX_VEC   the widest vector across head_dim, 4, 8 or 16
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

/* The storage bits of one row, converted nowhere: elements lane,
 * lane + lanes, ... (the cpu shape copies a row with one work-item, the gpu
 * shape with a work-group's). */
inline void kv_copy_row(__global kv_t *dst, __global const kv_t *src, int n, int lane,
                        int lanes) {
    __global kv_bits_t *d = (__global kv_bits_t *)dst;
    __global const kv_bits_t *s = (__global const kv_bits_t *)src;
    for (int x = lane; x < n; x += lanes)
        d[x] = s[x];
}

/* Row i of kv head hk of sequence b, from k_new / v_new into the cache at
 * key `cached + i`, by work-items lane of lanes (the scales by lane 0). */
#define KV_APPEND_ROW_LANES(b, hk, i, cached, lane, lanes)                                         \
    do {                                                                                           \
        const long key_ = (long)(cached) + (i);                                                    \
        kv_copy_row(CACHE_ROW(k, k, b, hk, key_), kn + AT(kn, b, hk, i), HEAD_DIM, lane, lanes);   \
        kv_copy_row(CACHE_ROW(v, v, b, hk, key_), vn + AT(vn, b, hk, i), HEAD_DIM_V, lane,         \
                    lanes);                                                                        \
        if ((lane) == 0)                                                                           \
            KV_APPEND_SCALES(b, hk, i, key_);                                                      \
    } while (0)
#define KV_APPEND_ROW(b, hk, i, cached) KV_APPEND_ROW_LANES(b, hk, i, cached, 0, 1)
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

/* K's and V's row of key j (the kernels' names in scope: b, hk and, over a
 * cache, cached; otherwise kh and vh, the kv head's first rows). Keys below
 * `cached` come from the cache, the others from k_new / v_new. */
#if KVCACHE
#define KEY_ROW(j)                                                                                 \
    ((j) < cached ? CACHE_ROW(k, k, b, hk, j)                                                      \
                  : kn + AT(kn, b, hk, (j) - cached))
#define VAL_ROW(j)                                                                                 \
    ((j) < cached ? CACHE_ROW(v, v, b, hk, j)                                                      \
                  : vn + AT(vn, b, hk, (j) - cached))
#else
#define KEY_ROW(j) (kh + (j) * k_ss)
#define VAL_ROW(j) (vh + (j) * v_ss)
#endif

/* Sequence b's view (over a cache its keys are the cached ones, then the
 * new rows) and the rows n0 .. n_end - 1 of block `blk` (the kernels'
 * names in scope: b, blk, group, seq_q, seq_k, kv_lengths). */
#if KVCACHE
#define DECODE_SEQUENCE_AND_BLOCK()                                                                \
    sequence_info sq = sequence_of(b, FEATURE_SEQUENCES);                                          \
    const int cached = kv_cached(b, seq_q, seq_k, kv_lengths);                                     \
    sq.len_k = sq.kept_k = cached + (APPEND ? seq_q : 0);                                          \
    const long n0 = blk * ROWS, n_end = min(n0 + ROWS, (long)sq.len_q * group)
#else
#define DECODE_SEQUENCE_AND_BLOCK()                                                                \
    const sequence_info sq = sequence_of(b, FEATURE_SEQUENCES);                                    \
    const long n0 = blk * ROWS, n_end = min(n0 + ROWS, (long)sq.len_q * group)
#endif

/* The rows of block `blk` of kv head hk (n0 .. n_end - 1 of the head's
 * rows): each row's query index ri, head rh and visible keys kf .. kl (rows
 * past n_end see none), and the keys [*sb, *se) of this split. */
inline void block_rows(long n0, long n_end, int group, int hk, sequence_info sq, int win_left,
                       int win_right, int split, int splits, int *ri, int *rh, int *kf, int *kl,
                       long *sb, long *se) {
    long kb = LONG_MAX, ke = LONG_MIN; /* the keys the block may see: [kb, ke] */
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
    }
    *sb = *se = 0;
    if (kb <= ke) {
        const long len = ke + 1 - kb;
        *sb = kb + len * split / splits;
        *se = kb + len * (split + 1) / splits;
    }
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
