/* A KV cache's storage types on the host (include/attn_cl.h, "Decoding over
 * a KV cache"): new rows converted or quantized into the cache's type, cache
 * elements read back (dequantized) in double, and the host checks of int8
 * scales. The host call's append and the reference share these, and
 * kernels/kv_convert.cl computes the same float operations in the same
 * order, so that the rows the device appends into its cache and the ones
 * the host appends into the caller's are the same bits. */
#include "attn_internal.h"
#include "half.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

int attn_kv_as_dtype(attn_kv_dtype kv) {
    switch (kv) {
    case ATTN_KV_DTYPE_F32:
        return ATTN_DTYPE_F32;
    case ATTN_KV_DTYPE_F16:
        return ATTN_DTYPE_F16;
    case ATTN_KV_DTYPE_BF16:
        return ATTN_DTYPE_BF16;
    default:
        return -1;
    }
}

size_t attn_kv_element_size(attn_kv_dtype kv) {
    return kv == ATTN_KV_DTYPE_F32    ? sizeof(float)
           : kv == ATTN_KV_DTYPE_INT8 ? 1
                                      : sizeof(uint16_t);
}

void attn_kv_store_row(const void *src, size_t src_at, attn_dtype from, int n, void *dst,
                       size_t dst_at, attn_kv_dtype kv, float *scale) {
    if (kv != ATTN_KV_DTYPE_INT8) {
        const attn_dtype to = (attn_dtype)attn_kv_as_dtype(kv);
        for (int d = 0; d < n; d++)
            attn_store_element(dst, dst_at + (size_t)d, to,
                               (float)attn_load_element(src, src_at + (size_t)d, from));
        return;
    }
    /* Symmetric: scale = max|x| / 127, q = rint(x / scale) in -127..127. */
    int8_t *q = (int8_t *)dst + dst_at;
    float amax = 0.0f;
    int finite = 1;
    for (int d = 0; d < n; d++) {
        const float x = (float)attn_load_element(src, src_at + (size_t)d, from);
        finite &= isfinite(x) != 0;
        amax = fabsf(x) > amax ? fabsf(x) : amax;
    }
    if (!finite) { /* the device call's rule; the host calls refuse such rows */
        *scale = NAN;
        memset(q, 0, (size_t)n);
        return;
    }
    const float s = amax / 127.0f;
    *scale = s;
    for (int d = 0; d < n; d++) {
        const float x = (float)attn_load_element(src, src_at + (size_t)d, from);
        float r = s == 0.0f ? 0.0f : rintf(x / s);
        r = r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r;
        q[d] = (int8_t)r;
    }
}

double attn_kv_load(const void *base, size_t index, attn_kv_dtype kv, float scale) {
    if (kv == ATTN_KV_DTYPE_INT8)
        return (double)((const int8_t *)base)[index] * (double)scale;
    return attn_load_element(base, index, (attn_dtype)attn_kv_as_dtype(kv));
}

static size_t row_at(const attn_strides *s, int64_t b, int64_t h, int64_t r) {
    return (size_t)b * (size_t)s->batch + (size_t)h * (size_t)s->head + (size_t)r * (size_t)s->seq;
}

attn_status attn_kv_check_int8_host(attn_context_t ctx, const attn_problem *pb,
                                    const attn_kvcache_host_tensors *t) {
    const attn_params *p = &pb->p;
    const attn_kvcache_layout *kv = &pb->kv;
    if (kv->kv_dtype != ATTN_KV_DTYPE_INT8)
        return ATTN_SUCCESS;
    /* The rows each sequence reads from the cache: O(cached rows) floats,
     * a 1/D fraction of what the step reads anyway. */
    for (int64_t b = 0; b < p->batch; b++)
        for (int64_t h = 0; h < p->heads_kv; h++)
            for (int64_t j = 0; j < t->cache_seqlens[b]; j++) {
                int64_t block = kv->batch_idx ? t->cache_batch_idx[b] : b, row = j;
                if (kv->paged) {
                    block = t->block_table[b * kv->max_pages + j / kv->page_size];
                    row = j % kv->page_size;
                }
                const float ks = t->k_scale[row_at(&kv->k_scale_strides, block, h, row)];
                const float vs = t->v_scale[row_at(&kv->v_scale_strides, block, h, row)];
                if (!(ks >= 0.0f && isfinite(ks)) || !(vs >= 0.0f && isfinite(vs)))
                    return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                                     "the int8 cache's %s scale of key %lld of sequence %lld, kv "
                                     "head %lld is %g: scales are finite and >= 0",
                                     !(ks >= 0.0f && isfinite(ks)) ? "K" : "V", (long long)j,
                                     (long long)b, (long long)h,
                                     (double)(!(ks >= 0.0f && isfinite(ks)) ? ks : vs));
            }
    if (!kv->append)
        return ATTN_SUCCESS;
    for (int tensor = 0; tensor < 2; tensor++) {
        const void *x = tensor == 0 ? t->k_new : t->v_new;
        const attn_strides *s = tensor == 0 ? &kv->k_new_strides : &kv->v_new_strides;
        const int n = tensor == 0 ? p->head_dim : p->head_dim_v;
        for (int64_t b = 0; b < p->batch; b++)
            for (int64_t h = 0; h < p->heads_kv; h++)
                for (int64_t i = 0; i < p->seq_q; i++)
                    for (int d = 0; d < n; d++) {
                        const double v =
                            attn_load_element(x, row_at(s, b, h, i) + (size_t)d, p->dtype);
                        if (!isfinite(v))
                            return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                                             "%s[%lld, %lld, %lld, %d] is %g: an int8 cache "
                                             "quantizes only finite values",
                                             tensor == 0 ? "k_new" : "v_new", (long long)b,
                                             (long long)h, (long long)i, d, v);
                    }
    }
    return ATTN_SUCCESS;
}
