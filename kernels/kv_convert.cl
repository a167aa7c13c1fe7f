/* A KV-cache call's new rows into the cache's storage type when it is not
 * Q's (lib/decode.c runs it after the rotation, before the decode kernel):
 * k_new and v_new rows converted (rounding to nearest even) or, for int8,
 * quantized with a scale per row, into packed copies in the workspace that
 * the decode kernel attends to and appends from, so that the queries see
 * the rows exactly as the cache will hold them. The rule is
 * include/attn_cl.h's; lib/kv_storage.c computes the same float operations
 * in the same order on the host. The program is built with
 * -cl-fp32-correctly-rounded-divide-sqrt: the division is the host's.
 *
 * Global size (seq_q, 2 * heads_kv, batch): one work-item a row, of k_new
 * for the first heads_kv, of v_new after them.
 *
 * Build-time parameters (beside common.cl's): KV_DTYPE (common.cl).
 */

/* One rounding per operation, as on the host. */
#pragma OPENCL FP_CONTRACT OFF

__kernel void kv_convert_rows(TENSOR(__global const elem_t, kn, kn),
                              TENSOR(__global const elem_t, vn, vn), __global kv_t *k_out,
                              ulong k_out_off, __global kv_t *v_out, ulong v_out_off,
                              __global float *scales, ulong k_scale_off, ulong v_scale_off,
                              int seq_q, int heads_kv) {
    const int i = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    if (i >= seq_q || h >= 2 * heads_kv)
        return;
    const int is_k = h < heads_kv;
    const int hh = is_k ? h : h - heads_kv;
    const int n = is_k ? HEAD_DIM : HEAD_DIM_V;
    const long row = ((long)b * heads_kv + hh) * seq_q + i;
    const __global elem_t *src = is_k ? kn + AT(kn, b, hh, i) : vn + AT(vn, b, hh, i);
    __global kv_t *dst = is_k ? k_out + k_out_off + row * HEAD_DIM : v_out + v_out_off + row * HEAD_DIM_V;
#if KV_DTYPE == 3
    /* Symmetric: scale = max|x| / 127, q = rint(x / scale) in -127..127. */
    __global float *scale = scales + (is_k ? k_scale_off : v_scale_off) + row;
    float amax = 0.0f;
    int finite = 1;
    for (int d = 0; d < n; d++) {
        const float x = load_elem(src, d);
        finite &= isfinite(x) != 0;
        amax = fabs(x) > amax ? fabs(x) : amax;
    }
    if (!finite) {
        /* Not checked on the host (device memory): a NaN scale and zeros. */
        *scale = NAN;
        for (int d = 0; d < n; d++)
            dst[d] = 0;
        return;
    }
    const float s = amax / 127.0f;
    *scale = s;
    for (int d = 0; d < n; d++) {
        const float r = s == 0.0f ? 0.0f : rint(load_elem(src, d) / s);
        dst[d] = (char)clamp(r, -127.0f, 127.0f);
    }
#else
    for (int d = 0; d < n; d++)
        store_kv(dst, d, load_elem(src, d));
#endif
}
