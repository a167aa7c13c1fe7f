/* Copies staged outputs into the caller's strided O and LSE: the last command
 * of a device-memory forward whose outputs are produced by several commands
 * (the three-kernel path in head chunks, or with LSE), so that a failure
 * before it leaves the caller's buffers untouched.
 *
 * Global size (seq_q, heads_q, batch), any work-group shape. One work-item
 * copies one query row of one sequence: HEAD_DIM_V elements of O and, with
 * HAS_LSE, its log-sum-exp. The staging has the tensors' logical shape,
 * packed: O [batch][heads_q][rows][HEAD_DIM_V], LSE [batch][heads_q][rows],
 * rows = seq_q (varlen: batch 1, rows = the packed total).
 */
__kernel void commit_outputs(__global const elem_t *o_stage, ulong o_stage_off,
                             TENSOR(__global elem_t, o, o), __global const float *lse_stage,
                             ulong lse_stage_off,
                             TENSOR(__global float, lse, l),
                             int stage_rows, FEATURE_PARAMS) {
    const int i = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    const sequence_info sq = sequence_of(b, FEATURE_SEQUENCES);
    if (i >= sq.len_q)
        return;
    const int row = sq.q0 + i;
    const int stage_b = VARLEN ? 0 : b;
    const long staged = ((long)stage_b * get_global_size(1) + h) * stage_rows + row;
    const __global elem_bits_t *src = (const __global elem_bits_t *)o_stage + o_stage_off + staged * HEAD_DIM_V;
    __global elem_bits_t *dst =
        (__global elem_bits_t *)o + AT(o, b, h, row);
    for (int c = 0; c < HEAD_DIM_V; c++)
        dst[c] = src[c];
#if HAS_LSE
    lse[AT(l, b, h, row)] = lse_stage[lse_stage_off + staged];
#endif
}
