/* Scale + modifiers + masks + softmax over rows of raw scores, in place
 * (second step of the three-kernel path), and the row's log-sum-exp.
 *
 * Work-group: SOFTMAX_WG work-items on one row (group dim 1: row of the
 * chunk, head-major, seq_q rows a head). Each work-item strides over the row's keys,
 * always the same ones, so the three passes (modified scores in place, their
 * sum, the probabilities) need no barrier between a work-item's own writes
 * and reads; the max, the sum and a NaN flag are reduced through local
 * memory. Masked keys, and keys and rows past the sequence, get probability
 * 0; a row with no visible key (or only -inf scores) gets all zeros and
 * log-sum-exp -INFINITY; a NaN score makes its row NaN. Key indices are
 * long: j + SOFTMAX_WG may pass INT32_MAX.
 */
#ifndef SOFTMAX_WG
#define SOFTMAX_WG 64
#endif
#if SOFTMAX_WG < 1 || (SOFTMAX_WG & (SOFTMAX_WG - 1)) != 0
#error "SOFTMAX_WG must be a power of two (the reductions halve it)"
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
softmax_rows(__global float *s, ulong s_off, float scale, int heads_q, int head_base,
             TENSOR(__global float, lse, lse), FEATURE_PARAMS) {
    __local float scratch[SOFTMAX_WG];
    const int lid = get_local_id(0);
    const long row = get_group_id(1); /* chunk_head * seq_q + i */
    const int i = (int)(row % seq_q);
    const int bh = head_base + (int)(row / seq_q);
    const int b = bh / heads_q, h = bh % heads_q;
    const sequence_info sq = sequence_of(b, FEATURE_SEQUENCES);
    __global float *r = s + s_off + row * seq_k;

    /* A row past its sequence (varlen) sees no key: probabilities 0, and no
     * LSE. It runs the same code rather than returning early: every
     * work-item must reach every barrier, and some runtimes (PoCL) miscompile
     * an early return they cannot prove uniform. */
    const int in_sequence = i < sq.len_q;
    const int first = first_key(i, sq, win_left);
    const int last = in_sequence ? last_key(i, sq, win_right) : -1;
    const float slope = SLOPE(h);
    __global const float *bias_row = 0;
#if HAS_BIAS
    bias_row = BIAS_ROW(b, h, i);
#endif
#if HAS_KEEP_MASK
    __global const uchar *keep_row = KEEP_ROW(b, h, i);
#endif

    float m = -INFINITY, nan = 0.0f;
    for (long j = lid; j < seq_k; j += SOFTMAX_WG) {
        int visible = j >= first && j <= last;
#if HAS_KEEP_MASK
        visible = visible && keep_row[j] != 0;
#endif
        const float x = visible
                            ? modified_score(r[j], scale, softcap, slope, i, (int)j, sq, bias_row)
                            : -INFINITY;
        r[j] = x;
        nan = isnan(x) ? 1.0f : nan;
        m = fmax(m, x);
    }
    m = reduce_max(scratch, m);
    nan = reduce_max(scratch, nan);

    float sum = 0.0f;
    if (m != -INFINITY)
        for (long j = lid; j < seq_k; j += SOFTMAX_WG)
            sum += exp(r[j] - m);
    sum = reduce_sum(scratch, sum);
    if (nan != 0.0f)
        sum = NAN;

    /* sum is 0 exactly when no key is visible (m = -inf). */
    const float inv_sum = sum == 0.0f ? 0.0f : 1.0f / sum;
#if DROPOUT
    /* The dropped and scaled weights P * keep / (1 - p): what pv.cl
     * multiplies V by and what the probabilities output returns; the sum
     * and LSE stay the un-dropped softmax's. A masked key (probability 0)
     * needs no draw. */
    const uint stream = (uint)bh;
    const float kept_scale = inv_sum * dropout_scale;
    for (long j = lid; j < seq_k; j += SOFTMAX_WG) {
        const float x = sum == 0.0f ? 0.0f : exp(r[j] - m);
        const int kept = x != 0.0f && dropout_keep(dropout_seed, dropout_offset, stream, i,
                                                   (int)j, dropout_threshold);
        r[j] = isnan(sum) ? sum : kept ? x * kept_scale : 0.0f; /* a NaN row stays NaN */
    }
#else
    for (long j = lid; j < seq_k; j += SOFTMAX_WG)
        r[j] = sum == 0.0f ? 0.0f : exp(r[j] - m) * inv_sum;
#endif

#if HAS_LSE
    if (lid == 0 && in_sequence)
        lse[AT(lse, b, h, sq.q0 + i)] =
            sum == 0.0f ? -INFINITY : m + log(sum);
#endif
}
