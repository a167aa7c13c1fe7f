/* Scale + causal mask + softmax over rows of raw scores, in place (second
 * step of the three-kernel path), and the row's log-sum-exp.
 *
 * Work-group: SOFTMAX_WG work-items on one row (dim 1: row of the chunk,
 * head-major). Each work-item strides over the row's keys; the max and the
 * sum are reduced through local memory. Masked keys get probability 0; a row
 * with no visible key gets all zeros and log-sum-exp -INFINITY, never NaN.
 */
#ifndef SOFTMAX_WG
#define SOFTMAX_WG 64
#endif

inline float reduce_max(__local float *scratch, float value) {
    const int lid = get_local_id(0);
    scratch[lid] = value;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int width = SOFTMAX_WG / 2; width > 0; width >>= 1) {
        if (lid < width)
            scratch[lid] = fmax(scratch[lid], scratch[lid + width]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float result = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE); /* scratch is reused by the next reduction */
    return result;
}

inline float reduce_sum(__local float *scratch, float value) {
    const int lid = get_local_id(0);
    scratch[lid] = value;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int width = SOFTMAX_WG / 2; width > 0; width >>= 1) {
        if (lid < width)
            scratch[lid] += scratch[lid + width];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float result = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return result;
}

__kernel __attribute__((reqd_work_group_size(SOFTMAX_WG, 1, 1))) void
softmax_rows(__global float *s, int seq_q, int seq_k, float scale, int heads_q, int head_base,
             __global float *lse, ulong lse_off, long lse_sb, long lse_sh, long lse_ss) {
    __local float scratch[SOFTMAX_WG];
    const int lid = get_local_id(0);
    const long row = get_global_id(1); /* chunk_head * seq_q + i */
    const int i = (int)(row % seq_q);
    const int n_visible = visible_keys(i, seq_q, seq_k);
    __global float *r = s + row * seq_k;

    float m = -INFINITY;
    for (int j = lid; j < n_visible; j += SOFTMAX_WG)
        m = fmax(m, r[j] * scale);
    m = reduce_max(scratch, m);

    float sum = 0.0f;
    for (int j = lid; j < n_visible; j += SOFTMAX_WG)
        sum += exp(r[j] * scale - m);
    sum = reduce_sum(scratch, sum);

    const float inv_sum = n_visible > 0 ? 1.0f / sum : 0.0f;
    for (int j = lid; j < seq_k; j += SOFTMAX_WG)
        r[j] = j < n_visible ? exp(r[j] * scale - m) * inv_sum : 0.0f;

#if HAS_LSE
    if (lid == 0) {
        const int bh = head_base + (int)(row / seq_q);
        const int b = bh / heads_q, h = bh % heads_q;
        lse[lse_off + b * lse_sb + h * lse_sh + i * lse_ss] =
            n_visible > 0 ? m + log(sum) : -INFINITY;
    }
#else
    (void)heads_q;
    (void)head_base;
    (void)lse;
    (void)lse_off;
    (void)lse_sb;
    (void)lse_sh;
    (void)lse_ss;
#endif
}
