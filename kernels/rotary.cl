/* Rotary position embedding of a KV-cache call's new rows (lib/decode.c runs
 * it first when the cache problem has rotary_dim > 0): Q's rows and k_new's
 * rows, each turned by the angles of its position, into packed copies in the
 * workspace that the decode kernel then reads (and appends from) in place
 * of Q and k_new. The rule is include/attn_cl.h's; lib/rotary.c computes
 * the same float operations in the same order on the host.
 *
 * Global size (seq_q, heads_q + heads_kv, batch): one work-item rotates one
 * row, of Q for the first heads_q, of k_new after them.
 *
 * Build-time parameters (beside common.cl's): ROTARY_DIM (even,
 * 2..HEAD_DIM), ROTARY_INTERLEAVED (0: pairs (c, c + ROTARY_DIM/2); 1:
 * pairs (2c, 2c + 1)), APPEND (0 or 1: whether the rows are appended, which
 * moves their positions).
 */
#if !defined(ROTARY_DIM) || ROTARY_DIM < 2 || ROTARY_DIM % 2 != 0 || ROTARY_DIM > HEAD_DIM
#error "ROTARY_DIM must be even and 2..HEAD_DIM"
#endif
#ifndef ROTARY_INTERLEAVED
#define ROTARY_INTERLEAVED 0
#endif
#ifndef APPEND
#define APPEND 0
#endif

/* x cos + sign * (y sin), each product and the sum rounded: lib/rotary.c's
 * bits. */
#pragma OPENCL FP_CONTRACT OFF

__kernel void rotary_rows(TENSOR(__global const elem_t, q, q), __global elem_t *q_out, ulong q_out_off,
                          TENSOR(__global const elem_t, kn, kn), __global elem_t *kn_out,
                          ulong kn_out_off, __global const float *rot_cos,
                          __global const float *rot_sin, __global const int *kv_lengths,
                          int seq_q, int capacity, int heads_q, int heads_kv, int positions) {
    const int i = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    if (i >= seq_q || h >= heads_q + heads_kv)
        return;
    const int is_q = h < heads_q;
    const int hh = is_q ? h : h - heads_q;
    const __global elem_t *src = is_q ? q + AT(q, b, hh, i) : kn + AT(kn, b, hh, i);
    __global elem_t *dst = is_q ? q_out + q_out_off + (((long)b * heads_q + hh) * seq_q + i) * HEAD_DIM
                                : kn_out + kn_out_off + (((long)b * heads_kv + hh) * seq_q + i) * HEAD_DIM;
    /* The cache length as the decode kernel clamps it, then the row's
     * position (include/attn_cl.h), clamped into the tables. */
    const int cached = clamp(kv_lengths[b], 0, capacity - (APPEND ? seq_q : 0));
    const long pos = clamp((long)cached + i - (APPEND ? 0 : seq_q), 0L, (long)positions - 1);
    const __global float *cs = rot_cos + pos * (ROTARY_DIM / 2);
    const __global float *sn = rot_sin + pos * (ROTARY_DIM / 2);
    for (int c = 0; c < HEAD_DIM; c++) {
        const float x = load_elem(src, c);
        float y = x;
        if (c < ROTARY_DIM) {
#if ROTARY_INTERLEAVED
            const int partner = c ^ 1, angle = c / 2;
            const float sign = (c & 1) ? 1.0f : -1.0f;
#else
            const int first_half = c < ROTARY_DIM / 2;
            const int partner = first_half ? c + ROTARY_DIM / 2 : c - ROTARY_DIM / 2;
            const int angle = first_half ? c : c - ROTARY_DIM / 2;
            const float sign = first_half ? -1.0f : 1.0f;
#endif
            const float other = load_elem(src, partner);
            const float turned = x * cs[angle];
            const float mixed = sign * (other * sn[angle]);
            y = turned + mixed;
        }
        store_elem(dst, c, y);
    }
}
