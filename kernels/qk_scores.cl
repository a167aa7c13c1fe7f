/* Raw scores S = Q.K^T for a chunk of heads (first step of the three-kernel
 * path; scale, modifiers and masks come in softmax.cl).
 *
 * Work-group: QK_TILE x QK_TILE work-items (dim 0: keys, dim 1: queries),
 * dim 2: one head of the chunk. One work-item computes one score
 * S[head][i][j]; tiles of QK_TILE rows x QK_TILE dims of Q and K are staged
 * in local memory, K transposed so that consecutive work-items read
 * consecutive addresses. Tiles no row of the block may see (causal, window,
 * padding, past the sequence) are skipped: softmax never reads them.
 *
 * S is [heads in chunk][seq_q][seq_k], contiguous; i and j are within the
 * sequence (varlen: offsets cu_q[b], cu_k[b] into the tensors).
 */
#ifndef QK_TILE
#define QK_TILE 16
#endif

__kernel __attribute__((reqd_work_group_size(QK_TILE, QK_TILE, 1))) void
qk_scores(TENSOR(__global const elem_t, q, q),
          TENSOR(__global const elem_t, k, k),
          __global float *s, ulong s_off, int heads_q, int group, int head_base, FEATURE_PARAMS) {
    const int lx = get_local_id(0), ly = get_local_id(1);
    const int j0 = get_group_id(0) * QK_TILE, i0 = get_group_id(1) * QK_TILE;
    const int chunk_head = get_group_id(2);
    const int bh = head_base + chunk_head;
    const int b = bh / heads_q, h = bh % heads_q;
    const sequence_info sq = sequence_of(b, FEATURE_SEQUENCES);

    /* From group ids only, so visibly uniform across the work-group: returning
     * before the barriers is safe. */
    const int i1 = min(i0 + QK_TILE, sq.len_q) - 1;
    if (i0 >= sq.len_q || j0 > last_key(i1, sq, win_right) ||
        j0 + QK_TILE - 1 < first_key(i0, sq, win_left))
        return;

    const __global elem_t *qh = q + AT(q, b, h, sq.q0);
    const __global elem_t *kh = k + AT(k, b, (h / group), sq.k0);
    __local float q_tile[QK_TILE][QK_TILE + 1]; /* [query][dim] */
    __local float k_tile[QK_TILE][QK_TILE + 1]; /* [dim][key] */

    float acc = 0.0f;
    for (int d0 = 0; d0 < HEAD_DIM; d0 += QK_TILE) {
        const int d = d0 + lx;
        const int qi = i0 + ly, kj = j0 + ly;
        q_tile[ly][lx] = (qi < sq.len_q && d < HEAD_DIM) ? load_elem(qh, qi * q_ss + d) : 0.0f;
        k_tile[lx][ly] = (kj < sq.len_k && d < HEAD_DIM) ? load_elem(kh, kj * k_ss + d) : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int dd = 0; dd < QK_TILE; dd++)
            acc = fma(q_tile[ly][dd], k_tile[dd][lx], acc);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const int i = i0 + ly, j = j0 + lx;
    if (i < sq.len_q && j < sq.len_k)
        s[s_off + ((long)chunk_head * seq_q + i) * seq_k + j] = acc;
}
