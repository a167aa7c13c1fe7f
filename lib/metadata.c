/* The small per-batch and per-head arrays of a forward (key lengths, ALiBi
 * slopes, cu_seqlens), copied from the caller's host memory into device
 * buffers of the library's at the call, so that they need not outlive it. */
#include "attn_internal.h"

attn_status attn_metadata_upload(attn_context_t ctx, const attn_plan *plan, attn_device_args *a) {
    const attn_params *p = &plan->p;
    const size_t batch = (size_t)p->batch;
    struct {
        const void *host;
        size_t bytes;
        cl_mem *out;
        const char *name;
    } arrays[4] = {
        {a->meta.key_lengths, batch * sizeof(int32_t), &a->key_lengths, "key_lengths"},
        {a->meta.alibi_slopes, (size_t)p->heads_q * sizeof(float), &a->alibi_slopes,
         "alibi_slopes"},
        {a->meta.cu_seqlens_q, (batch + 1) * sizeof(int32_t), &a->cu_seqlens_q, "cu_seqlens_q"},
        {a->meta.cu_seqlens_k, (batch + 1) * sizeof(int32_t), &a->cu_seqlens_k, "cu_seqlens_k"},
    };
    const int wanted[4] = {p->key_padding, p->alibi, p->varlen, p->varlen};
    for (int t = 0; t < 4; t++) {
        *arrays[t].out = NULL;
    }
    for (int t = 0; t < 4; t++) {
        if (!wanted[t])
            continue;
        cl_int err;
        *arrays[t].out = clCreateBuffer(ctx->context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                        arrays[t].bytes, (void *)(uintptr_t)arrays[t].host, &err);
        if (err != CL_SUCCESS) {
            *arrays[t].out = NULL;
            attn_metadata_release(a);
            return attn_fail(ctx, (attn_status)err, "clCreateBuffer for %s failed: %s (%d)",
                             arrays[t].name, attn_cl_error_name(err), (int)err);
        }
    }
    return ATTN_SUCCESS;
}

void attn_metadata_release(attn_device_args *a) {
    cl_mem *mems[4] = {&a->key_lengths, &a->alibi_slopes, &a->cu_seqlens_q, &a->cu_seqlens_k};
    for (int t = 0; t < 4; t++) {
        if (*mems[t])
            clReleaseMemObject(*mems[t]);
        *mems[t] = NULL;
    }
}
