/* Copies staged outputs into the caller's strided O and LSE: the last command
 * of a device-memory forward whose outputs are produced by several commands
 * (the three-kernel path in head chunks, or with LSE), so that a failure
 * before it leaves the caller's buffers untouched.
 *
 * Global size (seq_q, heads_q, batch), any work-group shape. One work-item
 * copies one query row: HEAD_DIM_V floats of O and, with HAS_LSE, its
 * log-sum-exp. Staging is contiguous: O [batch*heads_q][seq_q][HEAD_DIM_V],
 * LSE [batch*heads_q][seq_q].
 */
__kernel void commit_outputs(__global const float *o_stage, __global float *o, ulong o_off,
                             long o_sb, long o_sh, long o_ss, __global const float *lse_stage,
                             __global float *lse, ulong l_off, long l_sb, long l_sh, long l_ss) {
    const int i = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    const long row = ((long)b * get_global_size(1) + h) * get_global_size(0) + i;
    const __global float *src = o_stage + row * HEAD_DIM_V;
    __global float *dst = o + o_off + b * o_sb + h * o_sh + i * o_ss;
    for (int c = 0; c < HEAD_DIM_V; c++)
        dst[c] = src[c];
#if HAS_LSE
    lse[l_off + b * l_sb + h * l_sh + i * l_ss] = lse_stage[row];
#else
    (void)lse_stage;
    (void)lse;
    (void)l_off;
    (void)l_sb;
    (void)l_sh;
    (void)l_ss;
#endif
}
