/* Helpers for launching kernels: arguments (one by one, a strided tensor's
 * five, the feature block every attention kernel ends with) and enqueueing. */
#include "attn_internal.h"

#include <stdio.h>

static attn_status set_args(attn_context_t ctx, cl_kernel kernel, const char *kernel_name,
                            cl_uint first, int count, va_list args) {
    for (int i = 0; i < count; i++) {
        size_t size = va_arg(args, size_t);
        const void *value = va_arg(args, const void *);
        cl_int err = clSetKernelArg(kernel, first + (cl_uint)i, size, value);
        if (err != CL_SUCCESS)
            return attn_fail(ctx, (attn_status)err, "clSetKernelArg(%s, %u) failed: %s (%d)",
                             kernel_name, first + (unsigned)i, attn_cl_error_name(err), (int)err);
    }
    return ATTN_SUCCESS;
}

attn_status attn_set_kernel_args(attn_context_t ctx, cl_kernel kernel, const char *kernel_name,
                                 cl_uint first, int count, ...) {
    va_list args;
    va_start(args, count);
    attn_status status = set_args(ctx, kernel, kernel_name, first, count, args);
    va_end(args);
    return status;
}

attn_status attn_set_tensor_args(attn_context_t ctx, cl_kernel kernel, const char *kernel_name,
                                 cl_uint first, cl_mem mem, size_t offset,
                                 const attn_strides *strides) {
    const cl_ulong off = offset;
    const cl_long sb = strides->batch, sh = strides->head, ss = strides->seq;
    return attn_set_kernel_args(ctx, kernel, kernel_name, first, 5, ATTN_ARG(mem), ATTN_ARG(off),
                                ATTN_ARG(sb), ATTN_ARG(sh), ATTN_ARG(ss));
}

attn_status attn_set_feature_args(attn_context_t ctx, cl_kernel kernel, const char *kernel_name,
                                  cl_uint first, const attn_plan *plan, const attn_device_args *a) {
    const attn_params *p = &plan->p;
    const cl_int seq_q = p->seq_q, seq_k = p->seq_k;
    const cl_int win_left = p->window.left, win_right = p->window.right;
    const cl_float softcap = p->softcap > 0.0f ? p->softcap : 1.0f;
    /* Arguments the kernel is built without still need a buffer: Q's. */
    const cl_mem cu_q = a->cu_seqlens_q ? a->cu_seqlens_q : a->q;
    const cl_mem cu_k = a->cu_seqlens_k ? a->cu_seqlens_k : a->q;
    const cl_mem lengths = a->key_lengths ? a->key_lengths : a->q;
    const cl_mem slopes = a->alibi_slopes ? a->alibi_slopes : a->q;
    attn_status status =
        attn_set_kernel_args(ctx, kernel, kernel_name, first, 9, ATTN_ARG(seq_q), ATTN_ARG(seq_k),
                             ATTN_ARG(cu_q), ATTN_ARG(cu_k), ATTN_ARG(lengths), ATTN_ARG(win_left),
                             ATTN_ARG(win_right), ATTN_ARG(softcap), ATTN_ARG(slopes));
    if (status == ATTN_SUCCESS)
        status = attn_set_tensor_args(ctx, kernel, kernel_name, first + 9, a->bias ? a->bias : a->q,
                                      a->bias_offset, &p->bias.strides);
    if (status == ATTN_SUCCESS)
        status = attn_set_tensor_args(ctx, kernel, kernel_name, first + 14,
                                      a->keep_mask ? a->keep_mask : a->q, a->keep_mask_offset,
                                      &p->keep_mask.strides);
    return status;
}

void attn_feature_options(const attn_plan *plan, char *buf, size_t size) {
    const attn_params *p = &plan->p;
    snprintf(buf, size,
             "-DDTYPE=%d -DMASK_MODE=%d -DWINDOW=%d -DKEY_PADDING=%d -DVARLEN=%d -DSOFTCAP=%d "
             "-DALIBI=%d -DHAS_BIAS=%d -DHAS_KEEP_MASK=%d",
             (int)p->dtype, (int)p->mask, p->window.enabled, p->key_padding, p->varlen,
             p->softcap > 0.0f, p->alibi, p->bias.present, p->keep_mask.present);
}

attn_status attn_enqueue_kernel(attn_context_t ctx, cl_kernel kernel, const char *kernel_name,
                                const size_t global[3], const size_t local[3], cl_uint num_wait,
                                const cl_event *wait_list, cl_event *event) {
    cl_int err = clEnqueueNDRangeKernel(ctx->queue, kernel, 3, NULL, global, local, num_wait,
                                        wait_list, event);
    if (err != CL_SUCCESS)
        return attn_fail(ctx, (attn_status)err, "clEnqueueNDRangeKernel(%s) failed: %s (%d)",
                         kernel_name, attn_cl_error_name(err), (int)err);
    return ATTN_SUCCESS;
}

size_t attn_round_up(size_t value, size_t multiple) {
    return (value + multiple - 1) / multiple * multiple;
}
