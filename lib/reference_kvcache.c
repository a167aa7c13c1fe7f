/* The CPU reference over a KV cache: each sequence's keys and values
 * gathered from the cache (through the slot or the block table) and the new
 * rows (as the cache stores them: converted or quantized, lib/kv_storage.c)
 * into one dense K and V of doubles, dequantized, and lib/reference.c's
 * attention over them; then the new rows appended into the cache. Written
 * from the header's description, not from the kernels. */
#include "attn_internal.h"
#include "half.h"
#include "reference_rows.h"

#include <stdint.h>

#include <stdlib.h>
#include <string.h>

/* Key `key` of kv head h of sequence b: its element offset in the cache. */
static size_t cache_row(const attn_problem *pb, const attn_kvcache_host_tensors *t,
                        const attn_strides *s, int64_t b, int64_t h, int64_t key) {
    const attn_kvcache_layout *kv = &pb->kv;
    if (kv->paged)
        return attn_ref_row(s, t->block_table[b * kv->max_pages + key / kv->page_size], h,
                            key % kv->page_size);
    return attn_ref_row(s, kv->batch_idx ? t->cache_batch_idx[b] : b, h, key);
}

static attn_status reference_gathered(const attn_kvcache_params *params,
                                      const attn_kvcache_host_tensors *t, attn_problem *pb);

attn_status attn_reference_kvcache(const attn_kvcache_params *params,
                                   const attn_kvcache_host_tensors *t) {
    if (!params || !t || !t->q || !t->o || !t->k_cache || !t->v_cache)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT,
                         "attn_reference_kvcache: params, tensors and their q, o, k_cache and "
                         "v_cache are required");
    attn_problem pb;
    attn_status status = attn_kvcache_validate(params, t, &pb);
    if (status != ATTN_SUCCESS)
        return status;
    /* Rotary embedding: Q and k_new rotated first (lib/rotary.c), packed. */
    void *rotated_q = NULL, *rotated_k = NULL;
    attn_kvcache_host_tensors rt = *t;
    attn_kvcache_params rp = *params;
    if (pb.kv.rotary_dim) {
        const attn_params *p = &pb.p;
        const int64_t dim = p->head_dim;
        const size_t rows_q = (size_t)p->batch * (size_t)p->heads_q * (size_t)p->seq_q;
        const size_t rows_k = (size_t)p->batch * (size_t)p->heads_kv * (size_t)p->seq_q;
        rotated_q = malloc(rows_q * (size_t)dim * pb.element_size);
        rotated_k = malloc(rows_k * (size_t)dim * pb.element_size);
        if (!rotated_q || !rotated_k) {
            free(rotated_q);
            free(rotated_k);
            return attn_fail(NULL, ATTN_ERR_HOST_OUT_OF_MEMORY,
                             "attn_reference_kvcache: cannot rotate the new rows");
        }
        attn_rotary_rows_host(&pb, t, t->q, &p->q_strides, p->heads_q, rotated_q);
        rt.q = rotated_q;
        pb.p.q_strides = rp.attn.q_strides =
            (attn_strides){p->heads_q * p->seq_q * dim, p->seq_q * dim, dim};
        if (pb.kv.append) {
            attn_rotary_rows_host(&pb, t, t->k_new, &pb.kv.k_new_strides, p->heads_kv, rotated_k);
            rt.k_new = rotated_k;
            pb.kv.k_new_strides = (attn_strides){p->heads_kv * p->seq_q * dim, p->seq_q * dim, dim};
        }
        t = &rt;
        params = &rp;
    }
    status = reference_gathered(params, t, &pb);
    free(rotated_q);
    free(rotated_k);
    return status;
}

/* The reference on `pb` (validated; Q and k_new already rotated). */
static attn_status reference_gathered(const attn_kvcache_params *params,
                                      const attn_kvcache_host_tensors *t, attn_problem *pbp) {
    attn_problem pb = *pbp;
    attn_status status = ATTN_SUCCESS;
    const attn_params *p = &pb.p;
    const attn_kvcache_layout *kv = &pb.kv;
    const size_t es = pb.element_size;
    const attn_kv_dtype kt = kv->kv_dtype;
    const int int8 = kt == ATTN_KV_DTYPE_INT8;
    const size_t dk = (size_t)p->head_dim * sizeof(double), dv = (size_t)p->head_dim_v * sizeof(double);
    /* A new row as the cache stores it: at most ATTN_MAX_HEAD_DIM floats. */
    float stored[ATTN_MAX_HEAD_DIM];

    /* One sequence at a time: dense [1, heads_kv, keys, D] K and V. */
    int32_t longest = 1;
    for (int32_t b = 0; b < p->batch; b++) {
        const int32_t keys = t->cache_seqlens[b] + (kv->append ? p->seq_q : 0);
        longest = keys > longest ? keys : longest;
    }
    const size_t rows = (size_t)p->heads_kv * (size_t)longest;
    double *k = malloc(rows * dk), *v = malloc(rows * dv);
    if (!k || !v) {
        free(k);
        free(v);
        return attn_fail(NULL, ATTN_ERR_HOST_OUT_OF_MEMORY,
                         "attn_reference_kvcache: cannot gather %zu rows", rows);
    }
    for (int32_t b = 0; b < p->batch && status == ATTN_SUCCESS; b++) {
        const int32_t cached = t->cache_seqlens[b];
        const int32_t keys = cached + (kv->append ? p->seq_q : 0);
        const int32_t seq_k = keys > 0 ? keys : 1; /* none: one padded-away key */
        for (int64_t h = 0; h < p->heads_kv; h++)
            for (int64_t j = 0; j < keys; j++) {
                const size_t at = (size_t)h * (size_t)seq_k + (size_t)j;
                for (int tensor = 0; tensor < 2; tensor++) {
                    const int n = tensor == 0 ? p->head_dim : p->head_dim_v;
                    double *dst = (tensor == 0 ? k : v) + at * (size_t)n;
                    float scale = 0.0f;
                    if (j < cached) {
                        const attn_strides *cs = tensor == 0 ? &p->k_strides : &p->v_strides;
                        const void *cache = tensor == 0 ? t->k_cache : t->v_cache;
                        const size_t row = cache_row(&pb, t, cs, b, h, j);
                        if (int8)
                            scale = tensor == 0 ? t->k_scale[cache_row(&pb, t, &kv->k_scale_strides,
                                                                       b, h, j)]
                                                : t->v_scale[cache_row(&pb, t, &kv->v_scale_strides,
                                                                       b, h, j)];
                        for (int d = 0; d < n; d++)
                            dst[d] = attn_kv_load(cache, row + (size_t)d, kt, scale);
                        continue;
                    }
                    const attn_strides *ns = tensor == 0 ? &kv->k_new_strides : &kv->v_new_strides;
                    const void *x = tensor == 0 ? t->k_new : t->v_new;
                    const size_t row = attn_ref_row(ns, b, h, j - cached);
                    if (!kv->convert) {
                        for (int d = 0; d < n; d++)
                            dst[d] = attn_load_element(x, row + (size_t)d, p->dtype);
                        continue;
                    }
                    /* As the append will store it. */
                    attn_kv_store_row(x, row, p->dtype, n, stored, 0, kt, &scale);
                    for (int d = 0; d < n; d++)
                        dst[d] = attn_kv_load(stored, (size_t)d, kt, scale);
                }
            }
        if (keys == 0) {
            memset(k, 0, (size_t)p->heads_kv * dk);
            memset(v, 0, (size_t)p->heads_kv * dv);
        }
        attn_params one = params->attn;
        one.batch = 1;
        one.seq_k = seq_k;
        one.heads_kv = p->heads_kv;
        one.head_dim_v = p->head_dim_v;
        one.q_strides = p->q_strides;
        one.o_strides = p->o_strides;
        one.lse_strides = p->lse_strides;
        one.k_strides = one.v_strides = (attn_strides){0};
        one.key_padding = keys == 0;
        const int32_t no_keys = 0;
        const attn_host_tensors dense = {
            .q = (const char *)t->q + (size_t)b * (size_t)p->q_strides.batch * es,
            .k = k,
            .v = v,
            .o = (char *)t->o + (size_t)b * (size_t)p->o_strides.batch * es,
            .lse = t->lse ? t->lse + (size_t)b * (size_t)p->lse_strides.batch : NULL,
            .key_lengths = &no_keys,
            .alibi_slopes = t->alibi_slopes,
        };
        status = attn_reference_host_f64_kv(&one, &dense);
    }
    free(k);
    free(v);
    if (status == ATTN_SUCCESS && kv->append)
        attn_kvcache_append_host(&pb, t);
    return status;
}
