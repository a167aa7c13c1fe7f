/* Weighted value sum O = P.V for a chunk of heads (last step of the
 * three-kernel path).
 *
 * Work-group: PV_TILE x PV_TILE work-items (dim 0: output dims, dim 1:
 * queries), dim 2: one head of the chunk. One work-item computes one output
 * element O[i][c]; tiles of PV_TILE keys of P and V are staged in local
 * memory. Only keys some row of the block may see are visited (the others
 * hold probability 0); rows past the sequence are not stored. Key indices
 * are long: a tile may end past INT32_MAX.
 */
#ifndef PV_TILE
#define PV_TILE 16
#endif

__kernel __attribute__((reqd_work_group_size(PV_TILE, PV_TILE, 1))) void
pv(__global const float *p, ulong p_off, TENSOR(__global const elem_t, v, v),
   TENSOR(__global elem_t, o, o), int heads_q, int group,
   int head_base, FEATURE_PARAMS) {
    const int lx = get_local_id(0), ly = get_local_id(1);
    const int c0 = get_group_id(0) * PV_TILE, i0 = get_group_id(1) * PV_TILE;
    const int chunk_head = get_group_id(2);
    const int bh = head_base + chunk_head;
    const int b = bh / heads_q, h = bh % heads_q;
    const sequence_info sq = sequence_of(b, FEATURE_SEQUENCES);
    const int i1 = max(min(i0 + PV_TILE, sq.len_q) - 1, i0);
    /* The same for the whole group: keys rows i0..i1 may see. */
    const long key_begin = first_key(i0, sq, win_left) / PV_TILE * PV_TILE;
    const long key_end = i0 < sq.len_q ? last_key(i1, sq, win_right) + 1 : 0;

    const __global float *ph = p + p_off + (long)chunk_head * seq_q * seq_k;
    const __global elem_t *vh = v + AT(v, b, (h / group), sq.k0);
    __local float p_tile[PV_TILE][PV_TILE + 1]; /* [query][key] */
    __local float v_tile[PV_TILE][PV_TILE + 1]; /* [key][dim] */

    const int i = i0 + ly, c = c0 + lx;
    float acc = 0.0f;
    for (long j0 = key_begin; j0 < key_end; j0 += PV_TILE) {
        const long pj = j0 + lx, vj = j0 + ly;
        p_tile[ly][lx] = (i < sq.len_q && pj < sq.len_k) ? ph[(long)i * seq_k + pj] : 0.0f;
        /* Keys past the padding: 0, never their V (which may hold anything). */
        v_tile[ly][lx] = (vj < sq.kept_k && c < HEAD_DIM_V) ? load_elem(vh, vj * v_ss + c) : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        /* A probability of 0 (a masked key) adds nothing, whatever its V. */
        for (int jj = 0; jj < PV_TILE; jj++)
            acc = p_tile[ly][jj] != 0.0f ? fma(p_tile[ly][jj], v_tile[jj][lx], acc) : acc;
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (i < sq.len_q && c < HEAD_DIM_V)
        store_elem(o, AT(o, b, h, sq.q0 + i) + c, acc);
}
