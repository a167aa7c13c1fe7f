/* Rotary position embedding on the host: the reference's and the host
 * call's copy of what kernels/rotary.cl computes, with the same float
 * operations in the same order (neither contracts a product and a sum into
 * one rounding: C11 here, FP_CONTRACT OFF there), so that the rows the
 * device appends into its cache and the ones the host appends into the
 * caller's are the same bits. */
#include "attn_internal.h"
#include "half.h"

#include <string.h>

int64_t attn_rotary_position(const attn_problem *pb, int64_t cached, int64_t i) {
    const int64_t pos = cached + i - (pb->kv.append ? 0 : pb->p.seq_q);
    const int64_t last = (int64_t)pb->kv.rotary_positions - 1;
    return pos < 0 ? 0 : pos > last ? last : pos;
}

/* Element c's partner in its pair, and the angle it turns by. */
static void pair_of(int c, int rotary_dim, int interleaved, int *partner, int *angle, float *sign) {
    const int half = rotary_dim / 2;
    if (interleaved) {
        *partner = c ^ 1;
        *angle = c / 2;
        *sign = (c & 1) ? 1.0f : -1.0f;
    } else {
        *partner = c < half ? c + half : c - half;
        *angle = c < half ? c : c - half;
        *sign = c < half ? -1.0f : 1.0f;
    }
}

static float load_float(const void *base, size_t index, attn_dtype dtype) {
    return (float)attn_load_element(base, index, dtype);
}

void attn_rotary_rows_host(const attn_problem *pb, const attn_kvcache_host_tensors *t,
                           const void *src, const attn_strides *s, int64_t heads, void *dst) {
    const attn_params *p = &pb->p;
    const attn_kvcache_layout *kv = &pb->kv;
    const int dim = p->head_dim, rd = kv->rotary_dim, half = rd / 2;
    for (int64_t b = 0; b < p->batch; b++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t i = 0; i < p->seq_q; i++) {
                const size_t from = (size_t)(b * s->batch + h * s->head + i * s->seq);
                const size_t to = (size_t)(((b * heads + h) * p->seq_q + i) * dim);
                const int64_t pos = attn_rotary_position(pb, t->cache_seqlens[b], i);
                const float *cs = t->rotary_cos + pos * half, *sn = t->rotary_sin + pos * half;
                for (int c = 0; c < dim; c++) {
                    const float x = load_float(src, from + (size_t)c, p->dtype);
                    float y = x;
                    if (c < rd) {
                        int partner, angle;
                        float sign;
                        pair_of(c, rd, kv->rotary_interleaved, &partner, &angle, &sign);
                        const float other = load_float(src, from + (size_t)partner, p->dtype);
                        const float turned = x * cs[angle];
                        const float mixed = sign * (other * sn[angle]);
                        y = turned + mixed;
                    }
                    attn_store_element(dst, to + (size_t)c, p->dtype, y);
                }
            }
}
