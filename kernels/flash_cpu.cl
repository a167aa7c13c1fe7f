/* Fused attention forward shaped for CPU devices (PoCL, CPU runtimes).
 *
 * Work-group: one work-item (a runtime turns the work-items of a group into
 * loops, so more would only add loop and spill overhead); global size
 * (ceil(seq_q / ROWS), heads_q, batch). One work-item computes ROWS
 * consecutive query rows of one (sequence, head) over every key they may
 * see, TILE_K keys at a time: the scores of a tile are ROWS vectors of TILE_K
 * floats (keys across lanes), so Q.K^T is a broadcast-multiply-add per
 * head_dim element into registers; the output accumulator holds each row in
 * vectors of VEC_V floats across head_dim_v, and P.V is again a
 * broadcast-multiply-add per key. Both inner loops reuse each loaded vector
 * ROWS times, which is what keeps the FMA units busy.
 *
 * With dropout, flash_cpu_pack also notes per tile whether its V is finite
 * (vf), so that tiles with dropped keys may multiply them by 0 unguarded.
 *
 * K is read from a float copy made by flash_cpu_pack: tile t of a head is
 * HEAD_DIM x TILE_K floats (key fastest), zero past the sequence, so that one
 * head_dim element of a whole tile is one aligned vector load. With 16-bit
 * storage V is packed too (as float rows), so the inner loops are the same
 * for every storage type. Each sequence's tiles start at its tile base
 * (tile_base_of). The packed copies live in the plan's workspace.
 *
 * Softmax is online and in base 2: p = exp2((s - m) * c), as common.cl's
 * EXPONENT_OF computes it. Without score modifiers s is the raw q.k and
 * c = |scale| * log2(e); with them s is the modified score and c = log2(e).
 * A row's running maximum m is raised only when a tile's maximum exceeds it
 * by more than RESCALE_SLACK / c, so the accumulator is rarely rescaled and
 * p stays below 2^RESCALE_SLACK (2^16 where RESCALE_SLACK / c passes
 * FLT_MAX: scores then differ by less than 2 * FLT_MAX). Tiles no row of the block may see
 * (causal, window, padding) are never visited; only the tiles at the edges of
 * the rows' key ranges, or all tiles with a keep-mask, are masked per
 * element. A key whose weight in a row is 0 (masked, a -inf score) adds
 * nothing to that row: tiles holding such a weight take a P.V loop that
 * skips it rather than multiplying its V (NaN, say) by 0. A row that sees no
 * key keeps m = -INFINITY and l = 0 and writes O = 0 and LSE = -INFINITY.
 * The key loop counts in long: a tile may end past INT32_MAX.
 *
 * Build-time parameters (beside common.cl's):
 *   ROWS    query rows per work-item, 1..8
 *   TILE_K  keys per tile and score vector width: 4, 8 or 16
 *   VEC_V   accumulator vector width across head_dim_v: 4, 8 or 16
 *   UNROLL  unroll factor of the head_dim loop of Q.K^T
 *   HAS_ROW_STATS  1: flash_cpu also writes each row's shift m and sum l
 *                  (row_stats), which flash_cpu_probs turns into the
 *                  probabilities (lib/fused_probs.c)
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
#ifndef UNROLL
#define UNROLL 1
#endif
#ifndef HAS_ROW_STATS
#define HAS_ROW_STATS 0
#endif

/* What the vector types and the 8-row correction below rely on. */
#if ROWS < 1 || ROWS > 8
#error "ROWS must be 1..8"
#endif
#if TILE_K != 4 && TILE_K != 8 && TILE_K != 16
#error "TILE_K must be 4, 8 or 16"
#endif
#if VEC_V != 4 && VEC_V != 8 && VEC_V != 16
#error "VEC_V must be 4, 8 or 16"
#endif
#if UNROLL < 1
#error "UNROLL must be at least 1"
#endif

#define RESCALE_SLACK 8.0f

/* Row r (packed rows with varlen) of head h in row_stats: [batch][heads_q]
 * [rows] pairs (m, l). */
#if VARLEN
#define ROW_STATS_AT(b, h, heads_q, r) ((long)(h) * total_q + (r))
#else
#define ROW_STATS_AT(b, h, heads_q, r) (((long)(b) * (heads_q) + (h)) * seq_q + (r))
#endif
#define PACK_V (DTYPE != 0)

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define floatK CAT(float, TILE_K)
#define intK CAT(int, TILE_K)
#define ucharK CAT(uchar, TILE_K)
#define vloadK CAT(vload, TILE_K)
#define vstoreK CAT(vstore, TILE_K)
#define convert_intK CAT(convert_int, TILE_K)
#define convert_floatK CAT(convert_float, TILE_K)
#define floatV CAT(float, VEC_V)
#define vloadV CAT(vload, VEC_V)

/* head_dim_v = DV_FULL vectors of VEC_V, then a tail of 8/4/2/1 pieces. */
#define DV_FULL (HEAD_DIM_V / VEC_V)
#define DV_TAIL (HEAD_DIM_V % VEC_V)
#define DV_OFF8 (DV_FULL * VEC_V)
#define DV_OFF4 (DV_OFF8 + (DV_TAIL & 8))
#define DV_OFF2 (DV_OFF4 + (DV_TAIL & 4))
#define DV_OFF1 (DV_OFF2 + (DV_TAIL & 2))

/* Stores W floats at p (an elem_t row) in the storage type. */
#if DTYPE == 0
#define STORE_VEC(W, x, p) CAT(vstore, W)((x), 0, (p))
#elif DTYPE == 1
#define STORE_VEC(W, x, p) CAT(CAT(vstore_half, W), _rte)((x), 0, (p))
#else
#define STORE_VEC(W, x, p)                                                                         \
    do {                                                                                           \
        float tmp_[W];                                                                             \
        CAT(vstore, W)((x), 0, tmp_);                                                              \
        for (int z_ = 0; z_ < W; z_++)                                                             \
            (p)[z_] = float_to_bfloat(tmp_[z_]);                                                   \
    } while (0)
#endif

__constant int lane_index[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

#if DROPOUT
/* Dropout: common.cl's dropout_keep for the block's keys. One Philox
 * evaluation draws for 8 keys, so a row's tile takes NB of them (a 4-key
 * tile half of one); the block's ROWS * NB evaluations run as the lanes of
 * DROP_W-wide vectors: lane l is row l / NB, block l % NB. */
#define NB (TILE_K >= 8 ? TILE_K / 8 : 1)
#define DROP_LANES (ROWS * NB)
/* Evaluations run DROP_W at a time: 16 where there are more than 8 (one
 * AVX-512 register, half the instructions of two 8-wide chunks; the same
 * work as those on narrower vectors). */
#if DROP_LANES > 8
#define DROP_W 16
#else
#define DROP_W 8
#endif
#define DROP_CHUNKS ((DROP_LANES + DROP_W - 1) / DROP_W)
#define DROP_WORDS (DROP_CHUNKS * DROP_W)
typedef CAT(uint, DROP_W) drop_uint;
__constant uint drop_lane[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/* w[0..3][l]: the words of the block's evaluation l (row l / NB, keys
 * k0 - k0 % (8 * NB) + 8 * (l % NB) ..), for keys k0 .. k0 + TILE_K - 1
 * (k0 a multiple of TILE_K) of rows i0 .. i0 + ROWS - 1 of `stream`. */
inline void dropout_block_words(ulong seed, ulong offset, uint stream, int i0, int k0,
                                uint w[4][DROP_WORDS]) {
    const uint2 key = dropout_key(seed, offset);
    for (int ch = 0; ch < DROP_CHUNKS; ch++) {
        const drop_uint lane = (drop_uint)(ch * DROP_W) + CAT(vload, DROP_W)(0, drop_lane);
        drop_uint c0 = (drop_uint)((uint)k0 >> 3) + lane % NB, c1 = (drop_uint)(uint)i0 + lane / NB;
        drop_uint c2 = (drop_uint)stream, c3 = (drop_uint)(uint)offset;
        PHILOX4X32_10_WIDE(DROP_W, c0, c1, c2, c3, key.s0, key.s1);
        CAT(vstore, DROP_W)(c0, ch, w[0]);
        CAT(vstore, DROP_W)(c1, ch, w[1]);
        CAT(vstore, DROP_W)(c2, ch, w[2]);
        CAT(vstore, DROP_W)(c3, ch, w[3]);
    }
}

/* Row r's keep mask of the tile from its words, as intK lanes (-1 keep, 0
 * drop); each word holds two keys' 16-bit draws, low half first. */
inline intK dropout_row_keep(uint w[4][DROP_WORDS], int r, int k0, uint threshold) {
    return CAT(DROPOUT_DRAWS_, TILE_K)(w, r * NB, k0) >= (CAT(uint, TILE_K))threshold;
}
#endif

/* The first packed tile of sequence b: b * tiles per sequence, or with
 * varlen cu_k[b] / TILE_K + b, an upper bound of the tiles of the sequences
 * before it (each takes at most len / TILE_K + 1) that needs no prefix sum
 * on the host; a head then has total_k / TILE_K + batch tile slots. */
inline long tile_base_of(int b, int seq_k, sequence_info s) {
#if VARLEN
    return (long)(s.k0 / TILE_K) + b;
#else
    return (long)b * ((seq_k + TILE_K - 1) / TILE_K);
#endif
}

/* 8 floats of an elem_t row. */
#if DTYPE == 0
#define LOAD8(p) vload8(0, (p))
#elif DTYPE == 1
#define LOAD8(p) vload_half8(0, (p))
#else
#define LOAD8(p) as_float8(convert_uint8(vload8(0, (p))) << 16)
#endif

/* Writes the 8 x 8 block of rows src, src + stride, ... (8 elements each)
 * as its 8 columns, column i at dst + i * TILE_K: the three rounds of
 * pairwise interleaves an AVX transpose uses, as shuffles that PoCL's LLVM
 * maps onto them. */
inline void transpose_8x8(const __global elem_t *src, long stride, __global float *dst) {
    const uint8 lo = (uint8)(0, 8, 1, 9, 4, 12, 5, 13), hi = (uint8)(2, 10, 3, 11, 6, 14, 7, 15);
    const uint8 lo2 = (uint8)(0, 1, 8, 9, 4, 5, 12, 13), hi2 = (uint8)(2, 3, 10, 11, 6, 7, 14, 15);
    const uint8 lo4 = (uint8)(0, 1, 2, 3, 8, 9, 10, 11), hi4 = (uint8)(4, 5, 6, 7, 12, 13, 14, 15);
    float8 r[8], t[8], u[8];
    _Pragma("unroll") for (int i = 0; i < 8; i++) r[i] = LOAD8(src + i * stride);
    /* t[2m]: rows 2m, 2m+1 interleaved in dims 0,1,4,5; t[2m+1]: 2,3,6,7. */
    _Pragma("unroll") for (int m = 0; m < 4; m++) {
        t[2 * m] = shuffle2(r[2 * m], r[2 * m + 1], lo);
        t[2 * m + 1] = shuffle2(r[2 * m], r[2 * m + 1], hi);
    }
    /* u[q + 4h]: rows 4h..4h+3 of dims q and q + 4. */
    _Pragma("unroll") for (int h = 0; h < 2; h++) {
        u[4 * h + 0] = shuffle2(t[4 * h], t[4 * h + 2], lo2);
        u[4 * h + 1] = shuffle2(t[4 * h], t[4 * h + 2], hi2);
        u[4 * h + 2] = shuffle2(t[4 * h + 1], t[4 * h + 3], lo2);
        u[4 * h + 3] = shuffle2(t[4 * h + 1], t[4 * h + 3], hi2);
    }
    _Pragma("unroll") for (int q = 0; q < 4; q++) {
        vstore8(shuffle2(u[q], u[q + 4], lo4), 0, dst + q * TILE_K);
        vstore8(shuffle2(u[q], u[q + 4], hi4), 0, dst + (q + 4) * TILE_K);
    }
}

/* Packs K (and with 16-bit storage V) of one key tile of one (sequence,
 * kv head) into float: K as HEAD_DIM x TILE_K (key fastest), V as TILE_K
 * rows of HEAD_DIM_V, zero past the sequence. Global size
 * (tiles of the longest sequence, heads_kv, batch). */
__kernel __attribute__((reqd_work_group_size(1, 1, 1))) void
flash_cpu_pack(TENSOR(__global const elem_t, k, k),
               TENSOR(__global const elem_t, v, v),
               __global float *kp, ulong kp_off, __global float *vp, ulong vp_off,
               __global int *vf, ulong vf_off, int total_tiles, FEATURE_PARAMS) {
    const int t = get_global_id(0), hk = get_global_id(1), b = get_global_id(2);
    const sequence_info sq = sequence_of(b, FEATURE_SEQUENCES);
    const int k0 = t * TILE_K;
    if (k0 >= sq.len_k)
        return;
    const int keys = min(TILE_K, sq.len_k - k0);
    const long slot = (long)hk * total_tiles + tile_base_of(b, seq_k, sq) + t;
    const __global elem_t *src = k + AT(k, b, hk, sq.k0 + k0);
    __global float *dst = kp + kp_off + slot * (HEAD_DIM * TILE_K);
    int d_done = 0;
#if TILE_K >= 8
    if (keys == TILE_K) {
        /* A full tile, 8 keys x 8 dims at a time: rows in, columns out. */
        for (int j0 = 0; j0 < TILE_K; j0 += 8)
            for (int d0 = 0; d0 + 8 <= HEAD_DIM; d0 += 8)
                transpose_8x8(src + j0 * k_ss + d0, k_ss, dst + d0 * TILE_K + j0);
        d_done = HEAD_DIM / 8 * 8;
    }
#endif
    float col[TILE_K];
    for (int d = d_done; d < HEAD_DIM; d++) {
        for (int j = 0; j < TILE_K; j++)
            col[j] = j < keys ? load_elem(src, j * k_ss + d) : 0.0f;
        vstoreK(vloadK(0, col), d, dst);
    }
#if DROPOUT
    {
        /* Whether the V rows flash_cpu reads of this tile (before the
         * padding) are finite: 0 * x is NaN exactly for a non-finite x. */
        const int vkeys = min(TILE_K, sq.kept_k - k0);
        const __global elem_t *vrows = v + AT(v, b, hk, sq.k0 + k0);
        float check = 0.0f;
        for (int j = 0; j < vkeys; j++)
            for (int c = 0; c < HEAD_DIM_V; c++)
                check = fma(load_elem(vrows, j * v_ss + c), 0.0f, check);
        vf[vf_off + slot] = !isnan(check);
    }
#endif
#if PACK_V
    const __global elem_t *vsrc = v + AT(v, b, hk, sq.k0 + k0);
    __global float *vdst = vp + vp_off + slot * (TILE_K * HEAD_DIM_V);
    for (int j = 0; j < keys; j++)
        for (int c = 0; c < HEAD_DIM_V; c++)
            vdst[j * HEAD_DIM_V + c] = load_elem(vsrc, j * v_ss + c);
    for (int j = keys; j < TILE_K; j++)
        for (int c = 0; c < HEAD_DIM_V; c++)
            vdst[j * HEAD_DIM_V + c] = 0.0f;
#endif
}

inline float hmaxK(floatK v) {
#if TILE_K == 16
    const float8 a = select(v.hi, v.lo, v.lo > v.hi);
#else
    const floatK a = v;
#endif
#if TILE_K >= 8
    const float4 b = select(a.hi, a.lo, a.lo > a.hi);
#else
    const float4 b = a;
#endif
    const float2 c = select(b.hi, b.lo, b.lo > b.hi);
    return c.x > c.y ? c.x : c.y;
}

inline float hsumK(floatK v) {
#if TILE_K == 16
    const float8 a = v.lo + v.hi;
#else
    const floatK a = v;
#endif
#if TILE_K >= 8
    const float4 b = a.lo + a.hi;
#else
    const float4 b = a;
#endif
    const float2 c = b.lo + b.hi;
    return c.x + c.y;
}

/* acc[r] += p[r][j] * V[j][OFF .. OFF+W) for the tile's keys j < keys
 * where GUARD holds. */
#define PV_PIECE(W, OFF, acc, GUARD)                                                               \
    for (int j = 0; j < keys; j++) {                                                               \
        const CAT(float, W) x = CAT(vload, W)(0, vt + j * v_row + (OFF));                          \
        _Pragma("unroll") for (int r = 0; r < ROWS; r++) {                                         \
            if (GUARD)                                                                             \
                acc[r] = fma((CAT(float, W))p[r][j], x, acc[r]);                                   \
        }                                                                                          \
    }

/* acc[r] += p[r][j] * V[j] for the tile's keys j < keys where GUARD (of r
 * and j) holds. */
#define PV_TILE(GUARD)                                                                             \
    for (int c = 0; c < DV_FULL; c++) {                                                            \
        floatV a[ROWS];                                                                            \
        _Pragma("unroll") for (int r = 0; r < ROWS; r++) a[r] = acc[r][c];                         \
        for (int j = 0; j < keys; j++) {                                                           \
            const floatV x = vloadV(c, vt + j * v_row);                                            \
            _Pragma("unroll") for (int r = 0; r < ROWS; r++) {                                     \
                if (GUARD)                                                                         \
                    a[r] = fma((floatV)p[r][j], x, a[r]);                                          \
            }                                                                                      \
        }                                                                                          \
        _Pragma("unroll") for (int r = 0; r < ROWS; r++) acc[r][c] = a[r];                         \
    }                                                                                              \
    PV_TAIL8(GUARD)                                                                                \
    PV_TAIL4(GUARD)                                                                                \
    PV_TAIL2(GUARD)                                                                                \
    PV_TAIL1(GUARD)

#if DV_TAIL & 8
#define PV_TAIL8(GUARD) PV_PIECE(8, DV_OFF8, acc8, GUARD)
#else
#define PV_TAIL8(GUARD)
#endif
#if DV_TAIL & 4
#define PV_TAIL4(GUARD) PV_PIECE(4, DV_OFF4, acc4, GUARD)
#else
#define PV_TAIL4(GUARD)
#endif
#if DV_TAIL & 2
#define PV_TAIL2(GUARD) PV_PIECE(2, DV_OFF2, acc2, GUARD)
#else
#define PV_TAIL2(GUARD)
#endif
#if DV_TAIL & 1
#define PV_TAIL1(GUARD)                                                                            \
    for (int j = 0; j < keys; j++) {                                                               \
        const float x = vt[j * v_row + DV_OFF1];                                                   \
        _Pragma("unroll") for (int r = 0; r < ROWS; r++) {                                         \
            if (GUARD)                                                                             \
                acc1[r] = fma(p[r][j], x, acc1[r]);                                                \
        }                                                                                          \
    }
#else
#define PV_TAIL1(GUARD)
#endif

#define STORE_PIECE(W, OFF, acc) STORE_VEC(W, acc[r] * inv, orow + (OFF))

/* TILE_K values of a row from `row + k0`, 0 past `valid` of them (the
 * sequence's edge), without reading past it. */
#define LOAD_TILE(T, VT, row, k0, valid, out)                                                      \
    do {                                                                                           \
        if ((valid) >= TILE_K) {                                                                   \
            out = CAT(vload, TILE_K)(0, (row) + (k0));                                             \
        } else {                                                                                   \
            T tmp_[TILE_K];                                                                        \
            for (int z_ = 0; z_ < TILE_K; z_++)                                                    \
                tmp_[z_] = z_ < (valid) ? (row)[(k0) + z_] : (T)0;                                 \
            out = CAT(vload, TILE_K)(0, tmp_);                                                     \
        }                                                                                          \
    } while (0)

__kernel __attribute__((reqd_work_group_size(1, 1, 1))) void
flash_cpu(TENSOR(__global const elem_t, q, q),
          __global const float *kp, ulong kp_off, TENSOR(__global const elem_t, v, v),
          __global const float *vp, ulong vp_off, __global const int *vf, ulong vf_off,
          TENSOR(__global elem_t, o, o),
          TENSOR(__global float, lse, l),
#if HAS_ROW_STATS
          __global float *row_stats, ulong rs_off,
#endif
          int group, int total_tiles, float scale, float exp_hi, float exp_lo, FEATURE_PARAMS) {
    const int i0 = get_global_id(0) * ROWS, h = get_global_id(1), b = get_global_id(2);
    const sequence_info sq = sequence_of(b, FEATURE_SEQUENCES);
    if (i0 >= sq.len_q)
        return;
    const int hk = h / group, last_row = min(i0 + ROWS, sq.len_q) - 1;
#if DROPOUT
    /* The dropout stream b * heads_q + h (global size 1 is heads_q). */
    const uint stream = (uint)b * (uint)get_global_size(1) + (uint)h;
#endif
    const long first_tile = (long)hk * total_tiles + tile_base_of(b, seq_k, sq);
    const __global elem_t *qh = q + AT(q, b, h, sq.q0);
    const __global float *kh = kp + kp_off + first_tile * (HEAD_DIM * TILE_K);
#if PACK_V
    const __global float *vh = vp + vp_off + first_tile * (TILE_K * HEAD_DIM_V);
    const long v_row = HEAD_DIM_V;
#else
    const __global float *vh = v + AT(v, b, hk, sq.k0);
    const long v_row = v_ss;
#endif

#if HAS_MODIFIERS
    /* Scores are the modified scores themselves, in natural units. */
    const float sign = 1.0f, unit = 1.0f;
    const float slope = SLOPE(h);
#else
    /* Scores stay unscaled (a negative scale flips Q's sign, exactly) and
     * the scale enters the exponent's factors: rounding Q * scale would cost
     * about as much accuracy as the whole fp32 dot product. */
    const float sign = scale < 0.0f ? -1.0f : 1.0f, unit = fabs(scale);
#endif
    /* RESCALE_SLACK / c in score units; c = exp_hi * exp_lo / 2. */
    const float slack = fmin((2.0f * RESCALE_SLACK / exp_hi) / exp_lo, FLT_MAX);

    /* Rows past the sequence repeat its last row and are not stored. */
    float qr[ROWS][HEAD_DIM];
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        const long row = (long)min(i0 + r, last_row) * q_ss;
        for (int d = 0; d < HEAD_DIM; d++)
            qr[r][d] = load_elem(qh, row + d) * sign;
    }

    floatV acc[ROWS][DV_FULL > 0 ? DV_FULL : 1];
#if DV_TAIL & 8
    float8 acc8[ROWS];
#endif
#if DV_TAIL & 4
    float4 acc4[ROWS];
#endif
#if DV_TAIL & 2
    float2 acc2[ROWS];
#endif
#if DV_TAIL & 1
    float acc1[ROWS];
#endif
    floatK lsum[ROWS];
    /* m: a row's running maximum of the scores, the shift its probabilities
     * are computed with. */
    float m[8];
#pragma unroll
    for (int r = 0; r < 8; r++)
        m[r] = -INFINITY;
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        lsum[r] = 0.0f;
        for (int c = 0; c < DV_FULL; c++)
            acc[r][c] = 0.0f;
#if DV_TAIL & 8
        acc8[r] = 0.0f;
#endif
#if DV_TAIL & 4
        acc4[r] = 0.0f;
#endif
#if DV_TAIL & 2
        acc2[r] = 0.0f;
#endif
#if DV_TAIL & 1
        acc1[r] = 0.0f;
#endif
    }

    /* Keys [key_begin, key_end) hold every key some row of the block may
     * see; in [plain_begin, plain_end) every row sees every key (but for the
     * keep-mask). */
    const int key_begin = first_key(i0, sq, win_left) / TILE_K * TILE_K;
    const int key_end = last_key(last_row, sq, win_right) + 1;
    const int plain_begin = first_key(last_row, sq, win_left);
    const int plain_end = last_key(i0, sq, win_right) + 1;
    const intK lane = vloadK(0, lane_index);
    float p[ROWS][TILE_K];
    for (long tile_start = key_begin; tile_start < key_end; tile_start += TILE_K) {
        /* k0 + TILE_K - 1 < key_end + TILE_K - 1 fits an int: TILE_K divides
         * k0 and 2^31. */
        const int k0 = (int)tile_start;
        floatK s[ROWS];
#pragma unroll
        for (int r = 0; r < ROWS; r++)
            s[r] = 0.0f;
        const __global float *kt = kh + (long)k0 * HEAD_DIM;
#pragma unroll UNROLL
        for (int d = 0; d < HEAD_DIM; d++) {
            const floatK kv = vloadK(d, kt);
#pragma unroll
            for (int r = 0; r < ROWS; r++)
                s[r] = fma((floatK)qr[r][d], kv, s[r]);
        }
        const intK key = k0 + lane;
        const int valid = sq.len_k - k0; /* keys of the tile inside the sequence */
#if HAS_MODIFIERS
        for (int r = 0; r < ROWS; r++) {
            const int i = min(i0 + r, last_row);
            floatK x = s[r] * scale;
#if SOFTCAP
            x = softcap * tanh(x / softcap);
#endif
#if ALIBI
            x -= slope * convert_floatK(abs(key - diagonal(i, sq)));
#endif
#if HAS_BIAS
            floatK bias_tile;
            LOAD_TILE(float, floatK, BIAS_ROW(b, h, i), k0, valid, bias_tile);
            x += bias_tile;
#endif
            s[r] = x;
        }
#endif
        if (HAS_KEEP_MASK || k0 < plain_begin || tile_start + TILE_K > plain_end) {
#pragma unroll
            for (int r = 0; r < ROWS; r++) {
                const int i = min(i0 + r, last_row);
                intK visible = (key >= (intK)first_key(i, sq, win_left)) &
                               (key <= (intK)last_key(i, sq, win_right));
#if HAS_KEEP_MASK
                ucharK keep;
                LOAD_TILE(uchar, ucharK, KEEP_ROW(b, h, i), k0, valid, keep);
                visible &= convert_intK(keep) != (intK)0;
#endif
                s[r] = select((floatK)(-INFINITY), s[r], visible);
            }
        }
        float m_new[8];
        int grow = 0;
#pragma unroll
        for (int r = 0; r < 8; r++)
            m_new[r] = m[r];
#pragma unroll
        for (int r = 0; r < ROWS; r++) {
            const float tile_max = hmaxK(s[r]);
            if (tile_max > m[r] + slack) {
                m_new[r] = tile_max;
                grow = 1;
            }
        }
        if (grow) {
            /* One vector exp2 for every row's correction; a row that did not
             * grow (or is still at -INFINITY) keeps factor 1, never NaN, and
             * one that saw nothing before gets exp2(-INFINITY) = 0. */
            const float8 mo = vload8(0, m), mn = vload8(0, m_new);
            const float8 corr =
                select(exp2(EXPONENT_OF(mo * 0.5f - mn * 0.5f)), (float8)1.0f, mo == mn);
            float cr[8];
            vstore8(corr, 0, cr);
            vstore8(mn, 0, m);
#pragma unroll
            for (int r = 0; r < ROWS; r++) {
                lsum[r] *= cr[r];
                for (int c = 0; c < DV_FULL; c++)
                    acc[r][c] *= cr[r];
#if DV_TAIL & 8
                acc8[r] *= cr[r];
#endif
#if DV_TAIL & 4
                acc4[r] *= cr[r];
#endif
#if DV_TAIL & 2
                acc2[r] *= cr[r];
#endif
#if DV_TAIL & 1
                acc1[r] *= cr[r];
#endif
            }
        }
        intK zero = (intK)0;
#if DROPOUT
        uint words[4][DROP_WORDS];
        dropout_block_words(dropout_seed, dropout_offset, stream, i0, k0, words);
#endif
#pragma unroll
        for (int r = 0; r < ROWS; r++) {
            /* m == -INFINITY only while every score so far is -INFINITY. */
            const float half_shift = m[r] == -INFINITY ? 0.0f : 0.5f * m[r];
            floatK pr = exp2(EXPONENT_OF(s[r] * 0.5f - (floatK)half_shift));
            lsum[r] += pr;
#if DROPOUT
            /* Dropped keys stay in the sum (the softmax is the un-dropped
             * one) and leave P.V like masked ones. */
            pr = select((floatK)0.0f, pr, dropout_row_keep(words, r, k0, dropout_threshold));
#endif
            zero |= pr == (floatK)0.0f;
            vstoreK(pr, 0, p[r]);
        }

        /* Keys past the padding have probability 0: their V is never read,
         * so padded slots may hold anything (NaN included). */
        const int keys = min(TILE_K, sq.kept_k - k0);
        const __global float *vt = vh + (long)k0 * v_row;
        /* A weight of 0 skips its key (masked, or underflowed), so that a NaN
         * in its V stays out; tiles without one multiply unguarded. */
        if (any(zero)) {
#if DROPOUT
            /* Nearly every tile drops a key. Its weight 0 times its V adds
             * nothing unless V holds a NaN or infinity there, which
             * flash_cpu_pack noted per tile: then the unguarded loop is
             * safe, and the guarded one is not worth it (its branch per row
             * and key costs as much as the rest of the kernel). */
            if (vf[vf_off + first_tile + k0 / TILE_K]) {
                PV_TILE(1)
            } else
#endif
            {
                PV_TILE(p[r][j] != 0.0f)
            }
        } else {
            PV_TILE(1)
        }
    }

    __global elem_t *oh = o + AT(o, b, h, sq.q0);
    for (int r = 0; r < ROWS && i0 + r < sq.len_q; r++) {
        const int i = i0 + r;
        /* l is 0 exactly when the row saw no key; NaN stays NaN. */
        const float l = hsumK(lsum[r]);
#if DROPOUT
        const float inv = l == 0.0f ? 0.0f : dropout_scale / l;
#else
        const float inv = l == 0.0f ? 0.0f : 1.0f / l;
#endif
        __global elem_t *orow = oh + (long)i * o_ss;
        for (int c = 0; c < DV_FULL; c++)
            STORE_VEC(VEC_V, acc[r][c] * inv, orow + c * VEC_V);
#if DV_TAIL & 8
        STORE_PIECE(8, DV_OFF8, acc8);
#endif
#if DV_TAIL & 4
        STORE_PIECE(4, DV_OFF4, acc4);
#endif
#if DV_TAIL & 2
        STORE_PIECE(2, DV_OFF2, acc2);
#endif
#if DV_TAIL & 1
        store_elem(orow, DV_OFF1, acc1[r] * inv);
#endif
#if HAS_LSE
        lse[AT(l, b, h, sq.q0 + i)] =
            l == 0.0f ? -INFINITY : fma(log2(l), M_LN2_F, m[r] * unit);
#endif
#if HAS_ROW_STATS
        vstore2((float2)(m[r], l), ROW_STATS_AT(b, h, get_global_size(1), sq.q0 + i),
                row_stats + rs_off);
#endif
    }
}

#if HAS_ROW_STATS /* only lib/fused_probs.c's programs pay for compiling it */
/* The probabilities of a subset of rows and heads (lib/fused_probs.c), after
 * flash_cpu_pack and flash_cpu (built with HAS_ROW_STATS) ran on the same
 * workspace: P[i][j] = exp2((s_ij - m_i) * c) / l_i, the forward's own
 * weight of key j over its row's sum, i.e. exp(s - lse) without the rounding
 * of lse, so that extreme scores give what the forward gives. The scores
 * are recomputed as flash_cpu computes them, from the packed K.
 *
 * Work-group: one work-item; global size (ceil(rows / ROWS), slices, 1),
 * a slice being one (sequence, head) of the subset: slice_base + dim 1 is
 * b * heads + (h - head0). One work-item writes ROWS rows of the subset
 * over all seq_k keys, TILE_K at a time: keys no row may see without
 * computing them, 0 (or NaN in a NaN row, as the reference); keys and rows
 * past the sequence (varlen, padding) 0. The output is [slices of the
 * chunk][rows][seq_k] floats from out_off. */
__kernel __attribute__((reqd_work_group_size(1, 1, 1))) void
flash_cpu_probs(TENSOR(__global const elem_t, q, q), __global const float *kp, ulong kp_off,
                __global const float *row_stats, ulong rs_off, __global float *pr, ulong pr_off,
                int group, int total_tiles, int heads_q, int head0, int heads, int row0, int rows,
                int slice_base, float scale, float exp_hi, float exp_lo, FEATURE_PARAMS) {
    const int slice = slice_base + get_global_id(1);
    const int b = slice / heads, h = head0 + slice % heads;
    const int r0 = get_global_id(0) * ROWS;
    if (r0 >= rows)
        return;
    const int i0 = row0 + r0, block = min(ROWS, rows - r0);
    const sequence_info sq = sequence_of(b, FEATURE_SEQUENCES);
    __global float *out = pr + pr_off + ((long)get_global_id(1) * rows + r0) * seq_k;
    /* Rows of the block inside the sequence; the others are all 0. */
    const int live = clamp(sq.len_q - i0, 0, block);
    for (int r = live; r < block; r++)
        for (long j = 0; j < seq_k; j++)
            out[r * (long)seq_k + j] = 0.0f;
    if (live == 0)
        return;

    const int hk = h / group, last_row = i0 + live - 1;
    const long first_tile = (long)hk * total_tiles + tile_base_of(b, seq_k, sq);
    const __global elem_t *qh = q + AT(q, b, h, sq.q0);
    const __global float *kh = kp + kp_off + first_tile * (HEAD_DIM * TILE_K);
#if HAS_MODIFIERS
    const float sign = 1.0f;
    const float slope = SLOPE(h);
#else
    const float sign = scale < 0.0f ? -1.0f : 1.0f;
#endif

    /* Rows past the block's live ones repeat its last and are not stored. */
    float qr[ROWS][HEAD_DIM];
    float half_shift[ROWS], inv_l[ROWS], fill[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        const int i = min(i0 + r, last_row);
        const long row = (long)i * q_ss;
        for (int d = 0; d < HEAD_DIM; d++)
            qr[r][d] = load_elem(qh, row + d) * sign;
        const float2 ml = vload2(ROW_STATS_AT(b, h, heads_q, sq.q0 + i), row_stats + rs_off);
        /* l is 0 exactly when the row sees no key (m = -inf): all 0; a NaN
         * l (a NaN score) makes every key of the row NaN. */
        half_shift[r] = ml.y == 0.0f ? 0.0f : 0.5f * ml.x;
        inv_l[r] = ml.y == 0.0f ? 0.0f : 1.0f / ml.y;
        fill[r] = isnan(ml.y) ? NAN : 0.0f;
    }

    const int key_begin = first_key(i0, sq, win_left) / TILE_K * TILE_K;
    const int key_end = last_key(last_row, sq, win_right) + 1;
    const int plain_begin = first_key(last_row, sq, win_left);
    const int plain_end = last_key(i0, sq, win_right) + 1;
    const intK lane = vloadK(0, lane_index);
    for (long tile_start = 0; tile_start < seq_k; tile_start += TILE_K) {
        const int k0 = (int)tile_start;
        const intK key = k0 + lane;
        const int valid = sq.len_k - k0; /* keys of the tile inside the sequence */
        const int stored = min((long)TILE_K, seq_k - tile_start);
        floatK s[ROWS];
        if (k0 + TILE_K <= key_begin || k0 >= key_end) {
#pragma unroll
            for (int r = 0; r < ROWS; r++)
                s[r] = select((floatK)0.0f, (floatK)fill[r], key < (intK)sq.len_k);
        } else {
#pragma unroll
            for (int r = 0; r < ROWS; r++)
                s[r] = 0.0f;
            const __global float *kt = kh + (long)k0 * HEAD_DIM;
#pragma unroll UNROLL
            for (int d = 0; d < HEAD_DIM; d++) {
                const floatK kv = vloadK(d, kt);
#pragma unroll
                for (int r = 0; r < ROWS; r++)
                    s[r] = fma((floatK)qr[r][d], kv, s[r]);
            }
#pragma unroll
            for (int r = 0; r < ROWS; r++) {
                const int i = min(i0 + r, last_row);
#if HAS_MODIFIERS
                floatK x = s[r] * scale;
#if SOFTCAP
                x = softcap * tanh(x / softcap);
#endif
#if ALIBI
                x -= slope * convert_floatK(abs(key - diagonal(i, sq)));
#endif
#if HAS_BIAS
                floatK bias_tile;
                LOAD_TILE(float, floatK, BIAS_ROW(b, h, i), k0, valid, bias_tile);
                x += bias_tile;
#endif
                s[r] = x;
#endif
                floatK p = exp2(EXPONENT_OF(s[r] * 0.5f - (floatK)half_shift[r])) * inv_l[r];
                if (HAS_KEEP_MASK || k0 < plain_begin || tile_start + TILE_K > plain_end) {
                    intK visible = (key >= (intK)first_key(i, sq, win_left)) &
                                   (key <= (intK)last_key(i, sq, win_right));
#if HAS_KEEP_MASK
                    ucharK keep;
                    LOAD_TILE(uchar, ucharK, KEEP_ROW(b, h, i), k0, valid, keep);
                    visible &= convert_intK(keep) != (intK)0;
#endif
                    const floatK hidden =
                        select((floatK)0.0f, (floatK)fill[r], key < (intK)sq.len_k);
                    p = select(hidden, p, visible);
                }
                s[r] = p;
            }
        }
        for (int r = 0; r < live; r++) {
            __global float *o = out + r * (long)seq_k + k0;
#if DROPOUT
            /* The dropped and scaled weights, softmax.cl's rule: a key of
             * probability 0 needs no draw, a NaN row stays NaN. */
            float dropped[TILE_K];
            vstoreK(s[r], 0, dropped);
            for (int z = 0; z < stored; z++) {
                const float x = dropped[z];
                const int kept = x != 0.0f && dropout_keep(dropout_seed, dropout_offset,
                                                           (uint)(b * heads_q + h), i0 + r,
                                                           k0 + z, dropout_threshold);
                o[z] = isnan(x) ? x : kept ? x * dropout_scale : 0.0f;
            }
#else
            if (stored == TILE_K) {
                vstoreK(s[r], 0, o);
            } else {
                float tmp[TILE_K];
                vstoreK(s[r], 0, tmp);
                for (int z = 0; z < stored; z++)
                    o[z] = tmp[z];
            }
#endif
        }
    }
}
#endif
