/* Fused attention forward for few query rows over many keys (decoding), on
 * GPU-shaped devices (after kernels/decode_rows.cl: build parameters, loads,
 * the KV cache, the merge, shared with the cpu shape of flash_decode.cl).
 *
 * Work-group: DECODE_WG work-items on one block of ROWS query rows and one
 * split of its keys; global size (splits * blocks * DECODE_WG, heads_kv,
 * batch). The block's Q rows sit in local memory. The split's keys go in
 * tiles of DECODE_WG. A GPU reads memory fast only when neighbouring
 * work-items read neighbouring bytes, so K and V rows are read across
 * work-items, each a few consecutive elements of a row:
 *   1. KEY_LANES work-items share a key, each the dot products of its
 *      chunks of VD elements with every row's Q, into local memory; in
 *      KEY_LANES passes the group covers the tile;
 *   2. work-item t sums key t's partial products (a fixed order), then masks
 *      and modifiers as the cpu shape's per-key path;
 *   3. a tree in local memory finds each row's tile maximum, which every
 *      work-item applies to its running maximum m and its share of the
 *      output (all hold the same m);
 *   4. each work-item turns its key's scores into weights, adds them to its
 *      own part of the row sums l and puts them in local memory;
 *   5. P.V: VAL_LANES work-items share a V row, each VC consecutive
 *      elements; the group's VAL_GROUPS sets of them take every
 *      VAL_GROUPS-th key of the tile, VAL_UNROLL keys' loads in flight at
 *      once. A key every row weighs 0 is not read (its V may hold anything),
 *      nor added to a row that weighs it 0.
 * After the last tile a tree sums each row's l and the sets' accumulators
 * are added in set order. Every sum has a fixed shape, so the results are
 * deterministic. lib/decode.c's gpu_local_bytes mirrors the local memory.
 *
 * Build-time parameters (beside decode_rows.cl's):
 *   DECODE_WG  work-items a group, a power of two 2..1024
 */
#if !defined(DECODE_WG) || DECODE_WG < 2 || DECODE_WG > 1024 || (DECODE_WG & (DECODE_WG - 1))
#error "DECODE_WG must be a power of two, 2..1024"
#endif
#define WG DECODE_WG
#define MIN_(a, b) ((a) < (b) ? (a) : (b))
#define MAX_(a, b) ((a) > (b) ? (a) : (b))
/* The least power of two >= n, at most 16 or 32. */
#define POW2_16(n) ((n) > 8 ? 16 : (n) > 4 ? 8 : (n) > 2 ? 4 : (n) > 1 ? 2 : 1)
#define POW2_32(n) ((n) > 16 ? 32 : POW2_16(n))

/* Scores: work-items a key, keys a pass, VD-chunks a work-item. */
#define KEY_LANES MIN_(POW2_16(ND), WG)
#define KEYS_A_PASS (WG / KEY_LANES)
#define KEY_CHUNKS ((ND + KEY_LANES - 1) / KEY_LANES)
/* P.V: elements a chunk, work-items a V row, sets of them, chunks each. */
#if HEAD_DIM_V % 4 == 0
#define VC 4
#elif HEAD_DIM_V % 2 == 0
#define VC 2
#else
#define VC 1
#endif
#define VAL_CHUNKS_ROW (HEAD_DIM_V / VC)
#define VAL_LANES MIN_(POW2_32(VAL_CHUNKS_ROW), WG)
#define VAL_GROUPS (WG / VAL_LANES)
#define VAL_CHUNKS ((VAL_CHUNKS_ROW + VAL_LANES - 1) / VAL_LANES)
#define VAL_UNROLL 4
#if VC == 1
#define LOAD_VC(c, p) LOAD_1(KV_DTYPE, c, p)
#define STORE_VC(x, c, p) ((p)[c] = (x))
#else
#define LOAD_VC(c, p) LOAD_W(KV_DTYPE, VC, c, p)
#define STORE_VC(x, c, p) CAT(vstore, VC)(x, c, p)
#endif
typedef VEC(VC) floatVC;
/* Local scratch: the tile's partial products [row][key][lane] (a key's
 * lanes padded to an odd count: work-item t reads key t's without bank
 * conflicts), later the sets' accumulators [set][row][dim]. */
#define PARTS_STRIDE (KEY_LANES + 1)
#define SCRATCH_FLOATS MAX_(ROWS * WG * PARTS_STRIDE, VAL_GROUPS * ROWS * HEAD_DIM_V)

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
    __local float scratch[SCRATCH_FLOATS];
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
    /* This work-item's key lane and key of a pass; its V set and lane. */
    const int key_lane = lid % KEY_LANES, pass_key = lid / KEY_LANES;
    const int val_lane = lid % VAL_LANES, val_set = lid / VAL_LANES;
    float m[ROWS], l[ROWS]; /* l: this work-item's keys' share */
    floatVC acc[ROWS][VAL_CHUNKS]; /* its set's sums for its chunks */
    for (int r = 0; r < ROWS; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
        for (int c = 0; c < VAL_CHUNKS; c++)
            acc[r][c] = 0.0f;
    }
    for (long k0 = sb; k0 < se; k0 += WG) {
        const int nk = (int)min((long)WG, se - k0);
        /* 1. Partial products: in pass p, key p * KEYS_A_PASS + pass_key,
         * chunks key_lane, key_lane + KEY_LANES, ... */
        for (int pass = 0; pass < KEY_LANES; pass++) {
            const int t = pass * KEYS_A_PASS + pass_key;
            float a[ROWS];
            for (int r = 0; r < ROWS; r++)
                a[r] = 0.0f;
            if (t < nk) {
                const long key = k0 + t;
                const __global kv_t *krow = KEY_ROW(key);
                for (int i = 0; i < KEY_CHUNKS; i++) {
                    const int c = key_lane + i * KEY_LANES;
                    if (KEY_CHUNKS * KEY_LANES != ND && c >= ND)
                        break;
                    const floatD kv = LOAD_KD(c, krow);
                    for (int r = 0; r < ROWS; r++)
#if VD == 1
                        a[r] = fma(q_l[r * HEAD_DIM + c], kv, a[r]);
#else
                        a[r] += HSUM_D(CAT(vload, VD)(c, q_l + r * HEAD_DIM) * kv);
#endif
                }
            }
            for (int r = 0; r < ROWS; r++)
                scratch[(r * WG + t) * PARTS_STRIDE + key_lane] = a[r];
        }
        barrier(CLK_LOCAL_MEM_FENCE);

        /* 2. Key lid's scores. */
        const long key = k0 + lid;
        const int mine = lid < nk;
        float s[ROWS];
        for (int r = 0; r < ROWS; r++)
            s[r] = -INFINITY;
        if (mine) {
            const float kscale = KEY_SCALE(key); /* int8: (q.k) * scale */
            for (int r = 0; r < ROWS; r++) {
                const __local float *parts = scratch + (r * WG + lid) * PARTS_STRIDE;
                float dot = parts[0];
                for (int j = 1; j < KEY_LANES; j++)
                    dot += parts[j];
                int visible = key >= kf[r] && key <= kl[r];
#if HAS_KEEP_MASK
                visible = visible && KEEP_ROW(b, rh[r], ri[r])[key] != 0;
#endif
                float x = dot * kscale;
#if HAS_MODIFIERS
                x = modified_score(x, scale, softcap, SLOPE(rh[r]), ri[r], (int)key, sq,
                                   BIAS_ROW(b, rh[r], ri[r]));
#endif
                s[r] = visible ? x : -INFINITY;
            }
        }
        /* 3. The tile's maxima (the tree's barriers also end step 2's reads
         * of scratch before the next tile's step 1 writes it). */
        for (int r = 0; r < ROWS; r++)
            red[r * WG + lid] = s[r];
        barrier(CLK_LOCAL_MEM_FENCE);
        tree_max(red, lid);
        /* 4. Weights. */
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
                    for (int c = 0; c < VAL_CHUNKS; c++)
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

        /* 5. P.V: this set's keys t = val_set, val_set + VAL_GROUPS, ...,
         * VAL_UNROLL at a time, their loads before their sums. (Every
         * work-item makes the same trips: PoCL 3.1 skipped a trip that
         * only some work-items of the group made.) */
        for (int t0 = 0; t0 < nk; t0 += VAL_UNROLL * VAL_GROUPS) {
            float w[VAL_UNROLL][ROWS];
            floatVC vv[VAL_UNROLL][VAL_CHUNKS];
            for (int u = 0; u < VAL_UNROLL; u++) {
                const int t = t0 + u * VAL_GROUPS + val_set;
                int any = 0;
                for (int r = 0; r < ROWS; r++) {
                    w[u][r] = t < nk ? w_l[r * WG + t] : 0.0f;
                    any |= w[u][r] != 0.0f;
                }
                /* No row weighs it (or past the tile): its V is not read. */
                const __global kv_t *vrow = any ? VAL_ROW(k0 + t) : 0;
                for (int c = 0; c < VAL_CHUNKS; c++) {
                    const int x = val_lane + c * VAL_LANES;
#if VAL_CHUNKS * VAL_LANES != VAL_CHUNKS_ROW
                    const int read = any && x < VAL_CHUNKS_ROW;
#else
                    const int read = any;
#endif
                    vv[u][c] = read ? LOAD_VC(x, vrow) : 0.0f;
                }
            }
            for (int u = 0; u < VAL_UNROLL; u++)
                for (int r = 0; r < ROWS; r++)
                    if (w[u][r] != 0.0f) /* hidden from this row (or underflowed) */
                        for (int c = 0; c < VAL_CHUNKS; c++)
                            acc[r][c] = fma((floatVC)w[u][r], vv[u][c], acc[r][c]);
        }
    }
    for (int r = 0; r < ROWS; r++)
        red[r * WG + lid] = l[r];
    barrier(CLK_LOCAL_MEM_FENCE);
    tree_sum(red, lid);
    /* The sets' accumulators, [set][row][dim], added below in set order
     * (the last tile's reads of scratch ended at its tree's barriers). */
    for (int r = 0; r < ROWS; r++)
        for (int c = 0; c < VAL_CHUNKS; c++) {
            const int x = val_lane + c * VAL_LANES;
            if (VAL_CHUNKS * VAL_LANES != VAL_CHUNKS_ROW && x >= VAL_CHUNKS_ROW)
                break;
            STORE_VC(acc[r][c], x, scratch + (val_set * ROWS + r) * HEAD_DIM_V);
        }
    barrier(CLK_LOCAL_MEM_FENCE);

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
#else
        /* row_l is 0 exactly when the row saw no key; NaN stays NaN. */
        const float inv = row_l == 0.0f ? 0.0f : 1.0f / row_l;
        __global elem_t *orow = o + AT(o, b, h, sq.q0 + i);
#endif
        for (int d = lid; d < HEAD_DIM_V; d += WG) {
            float sum = scratch[r * HEAD_DIM_V + d];
            for (int g = 1; g < VAL_GROUPS; g++)
                sum += scratch[(g * ROWS + r) * HEAD_DIM_V + d];
#if PARTIALS
            pp[2 + d] = sum;
#else
            store_elem(orow, d, sum * inv);
#endif
        }
#if !PARTIALS && HAS_LSE
        if (lid == 0)
            lse[AT(l, b, h, sq.q0 + i)] =
                lse_of(row_l, m[r], HAS_MODIFIERS ? 1.0f : fabs(scale));
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
