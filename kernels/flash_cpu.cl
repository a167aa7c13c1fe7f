/* Fused attention forward shaped for CPU devices (PoCL, CPU runtimes).
 *
 * Work-group: one work-item (a runtime turns the work-items of a group into
 * loops, so more would only add loop and spill overhead); global size
 * (ceil(seq_q / ROWS), heads_q, batch). One work-item computes ROWS
 * consecutive query rows of one (batch, head) over every key they see,
 * TILE_K keys at a time: the scores of a tile are ROWS vectors of TILE_K
 * floats (keys across lanes), so Q.K^T is a broadcast-multiply-add per
 * head_dim element into registers; the output accumulator holds each row in
 * vectors of VEC_V floats across head_dim_v, and P.V is again a
 * broadcast-multiply-add per key. Both inner loops reuse each loaded vector
 * ROWS times, which is what keeps the FMA units busy.
 *
 * K is read from a packed copy made by flash_cpu_pack_k: tile t of a head is
 * HEAD_DIM x TILE_K floats (key fastest), zero past seq_k, so that one
 * head_dim element of a whole tile is one aligned vector load.
 *
 * Softmax is online and in base 2: p = exp2(s * c - m * c) with
 * c = scale * log2(e) applied inside one fma; a row's running maximum m is
 * raised only when a tile's maximum exceeds it by more than
 * RESCALE_SLACK / c, so the accumulator is rarely rescaled and p stays below
 * 2^RESCALE_SLACK. Keys above the causal diagonal are
 * never visited; only edge and diagonal tiles are masked per element. A row
 * that sees no key keeps m = -INFINITY and l = 0 and writes O = 0 and
 * LSE = -INFINITY.
 *
 * Build-time parameters (beside common.cl's):
 *   ROWS    query rows per work-item, 1..8
 *   TILE_K  keys per tile and score vector width: 4, 8 or 16
 *   VEC_V   accumulator vector width across head_dim_v: 4, 8 or 16
 *   UNROLL  unroll factor of the head_dim loop of Q.K^T
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

#define RESCALE_SLACK 8.0f

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define floatK CAT(float, TILE_K)
#define intK CAT(int, TILE_K)
#define vloadK CAT(vload, TILE_K)
#define vstoreK CAT(vstore, TILE_K)
#define floatV CAT(float, VEC_V)
#define vloadV CAT(vload, VEC_V)
#define vstoreV CAT(vstore, VEC_V)

/* head_dim_v = DV_FULL vectors of VEC_V, then a tail of 8/4/2/1 pieces. */
#define DV_FULL (HEAD_DIM_V / VEC_V)
#define DV_TAIL (HEAD_DIM_V % VEC_V)
#define DV_OFF8 (DV_FULL * VEC_V)
#define DV_OFF4 (DV_OFF8 + (DV_TAIL & 8))
#define DV_OFF2 (DV_OFF4 + (DV_TAIL & 4))
#define DV_OFF1 (DV_OFF2 + (DV_TAIL & 2))

__constant int lane_index[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/* Packs K [batch, heads_kv, seq_k, HEAD_DIM] (strided) into tiles of
 * HEAD_DIM x TILE_K (key fastest), zero past seq_k. Global size
 * (tiles, heads_kv, batch), one work-item per tile. */
__kernel __attribute__((reqd_work_group_size(1, 1, 1))) void
flash_cpu_pack_k(__global const float *k, ulong k_off, long k_sb, long k_sh, long k_ss,
                 __global float *kp, int seq_k, int heads_kv) {
    const int t = get_global_id(0), hk = get_global_id(1), b = get_global_id(2);
    const long tiles = get_global_size(0);
    const __global float *src = k + k_off + b * k_sb + hk * k_sh + (long)t * TILE_K * k_ss;
    __global float *dst = kp + ((long)(b * heads_kv + hk) * tiles + t) * (HEAD_DIM * TILE_K);
    const int keys = min(TILE_K, seq_k - t * TILE_K);
    float col[TILE_K];
    if (keys == TILE_K) {
        for (int d = 0; d < HEAD_DIM; d++) {
            for (int j = 0; j < TILE_K; j++)
                col[j] = src[j * k_ss + d];
            vstoreK(vloadK(0, col), d, dst);
        }
    } else {
        for (int d = 0; d < HEAD_DIM; d++) {
            for (int j = 0; j < TILE_K; j++)
                col[j] = j < keys ? src[j * k_ss + d] : 0.0f;
            vstoreK(vloadK(0, col), d, dst);
        }
    }
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

/* acc[r] += p[r][j] * V[j][OFF .. OFF+W) for the tile's keys j < keys. */
#define PV_PIECE(W, OFF, acc)                                                                      \
    for (int j = 0; j < keys; j++) {                                                               \
        const CAT(float, W) x = CAT(vload, W)(0, vt + j * v_ss + (OFF));                           \
        _Pragma("unroll") for (int r = 0; r < ROWS; r++) {                                         \
            acc[r] = fma((CAT(float, W))p[r][j], x, acc[r]);                                       \
        }                                                                                          \
    }

#define STORE_PIECE(W, OFF, acc) CAT(vstore, W)(acc[r] * inv, 0, orow + (OFF))

__kernel __attribute__((reqd_work_group_size(1, 1, 1))) void
flash_cpu(__global const float *q, ulong q_off, long q_sb, long q_sh, long q_ss,
          __global const float *kp, __global const float *v, ulong v_off, long v_sb, long v_sh,
          long v_ss, __global float *o, ulong o_off, long o_sb, long o_sh, long o_ss,
          __global float *lse, ulong l_off, long l_sb, long l_sh, long l_ss, int seq_q, int seq_k,
          int group, float scale_log2) {
    const int i0 = get_global_id(0) * ROWS, h = get_global_id(1), b = get_global_id(2);
    const int hk = h / group, heads_kv = (int)get_global_size(1) / group;
    const int k_tiles = (seq_k + TILE_K - 1) / TILE_K;
    const __global float *qh = q + q_off + b * q_sb + h * q_sh;
    const __global float *kh = kp + (long)(b * heads_kv + hk) * k_tiles * (HEAD_DIM * TILE_K);
    const __global float *vh = v + v_off + b * v_sb + hk * v_sh;

    /* Scores stay unscaled (a negative scale flips Q's sign, exactly) and
     * enter exp2 as fma(s, sc, -m * sc): rounding Q * scale would cost about
     * as much accuracy as the whole fp32 dot product. */
    const float sign = scale_log2 < 0.0f ? -1.0f : 1.0f, sc = fabs(scale_log2);
    const float slack = fmin(RESCALE_SLACK / sc, FLT_MAX);

    /* Rows past seq_q repeat the last row and are not stored. */
    float qr[ROWS][HEAD_DIM];
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        const __global float *src = qh + min(i0 + r, seq_q - 1) * q_ss;
        for (int d = 0; d < HEAD_DIM; d++)
            qr[r][d] = src[d] * sign;
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
    /* m: a row's running maximum of the unscaled scores; mc = m * sc, the
     * shift its probabilities were computed with. */
    float m[8], mc[8];
#pragma unroll
    for (int r = 0; r < 8; r++) {
        m[r] = -INFINITY;
        mc[r] = -INFINITY;
    }
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

    /* Keys [0, key_end) hold every key some row of the block sees. */
    const int key_end = last_visible_key(i0 + ROWS - 1, seq_q, seq_k) + 1;
    const intK lane = vloadK(0, lane_index);
    float p[ROWS][TILE_K];
    for (int k0 = 0; k0 < key_end; k0 += TILE_K) {
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
        /* A tile past the first row's last key: the edge (keys past seq_k)
         * or the causal diagonal. */
        if (k0 + TILE_K - 1 > last_visible_key(i0, seq_q, seq_k)) {
            const intK key = k0 + lane;
#pragma unroll
            for (int r = 0; r < ROWS; r++)
                s[r] = select(s[r], (floatK)(-INFINITY),
                              key > (intK)last_visible_key(i0 + r, seq_q, seq_k));
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
            /* One vector exp2 for every row's correction, from the same
             * rounded shifts the probabilities use; a row that did not grow
             * (or is still at -INFINITY) keeps factor 1, never NaN. */
            const float8 mo = vload8(0, m), mn = vload8(0, m_new);
            const float8 mco = vload8(0, mc), mcn = mn * sc;
            const float8 corr = select(exp2(mco - mcn), (float8)1.0f, mo == mn);
            float cr[8];
            vstore8(corr, 0, cr);
            vstore8(mn, 0, m);
            vstore8(mcn, 0, mc);
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
#pragma unroll
        for (int r = 0; r < ROWS; r++) {
            /* mc == -INFINITY only while every score so far is -INFINITY. */
            const float shift = mc[r] == -INFINITY ? 0.0f : mc[r];
            const floatK pr = exp2(fma(s[r], (floatK)sc, (floatK)(-shift)));
            lsum[r] += pr;
            vstoreK(pr, 0, p[r]);
        }

        const int keys = min(TILE_K, seq_k - k0);
        const __global float *vt = vh + (long)k0 * v_ss;
        for (int c = 0; c < DV_FULL; c++) {
            floatV a[ROWS];
#pragma unroll
            for (int r = 0; r < ROWS; r++)
                a[r] = acc[r][c];
            for (int j = 0; j < keys; j++) {
                const floatV x = vloadV(c, vt + j * v_ss);
#pragma unroll
                for (int r = 0; r < ROWS; r++)
                    a[r] = fma((floatV)p[r][j], x, a[r]);
            }
#pragma unroll
            for (int r = 0; r < ROWS; r++)
                acc[r][c] = a[r];
        }
#if DV_TAIL & 8
        PV_PIECE(8, DV_OFF8, acc8)
#endif
#if DV_TAIL & 4
        PV_PIECE(4, DV_OFF4, acc4)
#endif
#if DV_TAIL & 2
        PV_PIECE(2, DV_OFF2, acc2)
#endif
#if DV_TAIL & 1
        for (int j = 0; j < keys; j++) {
            const float x = vt[j * v_ss + DV_OFF1];
#pragma unroll
            for (int r = 0; r < ROWS; r++)
                acc1[r] = fma(p[r][j], x, acc1[r]);
        }
#endif
    }

    __global float *oh = o + o_off + b * o_sb + h * o_sh;
    for (int r = 0; r < ROWS && i0 + r < seq_q; r++) {
        const int i = i0 + r;
        const float l = hsumK(lsum[r]);
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        __global float *orow = oh + i * o_ss;
        for (int c = 0; c < DV_FULL; c++)
            vstoreV(acc[r][c] * inv, c, orow);
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
        orow[DV_OFF1] = acc1[r] * inv;
#endif
#if HAS_LSE
        lse[l_off + b * l_sb + h * l_sh + i * l_ss] =
            l > 0.0f ? (mc[r] + log2(l)) * M_LN2_F : -INFINITY;
#endif
    }
}
