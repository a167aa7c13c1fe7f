/* Merges two partial attention results over disjoint key sets by their
 * log-sum-exps (attn_merge_device): split-KV decoding, ring attention.
 *
 * Global size (rows, heads_q, batch), any work-group shape; rows is seq_q, or
 * with varlen the packed total (batch 1). One work-item merges one row: its
 * LSE and HEAD_DIM_V elements of O. Each reads all of its row before writing
 * it, so the output may be either input.
 */
__kernel void merge_partials(__global const elem_t *o_a, ulong oa_off, __global const elem_t *o_b,
                             ulong ob_off, TENSOR(__global elem_t, o, o),
                             __global const float *lse_a, ulong la_off,
                             __global const float *lse_b, ulong lb_off,
                             TENSOR(__global float, lse, l)) {
    const int i = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    const long row = STEP(o, b, h, i);
    const long at = STEP(l, b, h, i);
    const float la = lse_a[la_off + at], lb = lse_b[lb_off + at];
    const float m = fmax(la, lb);
    float wa = 0.0f, wb = 0.0f, merged = -INFINITY;
    if (isnan(la) || isnan(lb)) {
        wa = wb = merged = NAN;
    } else if (m == INFINITY) {
        /* A part at +inf dominates (the other weighs exactly 0); both at
         * +inf have no limit: O NaN, LSE +inf (lib/merge.c). */
        merged = INFINITY;
        wa = la != INFINITY ? 0.0f : lb != INFINITY ? 1.0f : NAN;
        wb = lb != INFINITY ? 0.0f : la != INFINITY ? 1.0f : NAN;
    } else if (m != -INFINITY) {
        /* Weights of each part; a part at -inf weighs exactly 0. */
        const float ea = exp(la - m), eb = exp(lb - m), sum = ea + eb;
        wa = ea / sum;
        wb = eb / sum;
        merged = m + log(sum);
    }
    for (int d = 0; d < HEAD_DIM_V; d++) {
        const float a = wa == 0.0f ? 0.0f : wa * load_elem(o_a, oa_off + row + d);
        const float c = wb == 0.0f ? 0.0f : wb * load_elem(o_b, ob_off + row + d);
        store_elem(o, o_off + row + d, a + c);
    }
    lse[l_off + at] = merged;
}
