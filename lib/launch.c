/* Kernel arguments, appended in order by a cursor (attn_args), and
 * launches. The order of each kernel's parameters is its signature in
 * kernels/; attn_args_end compares the count with the kernel's own. */
#include "attn_internal.h"
#include "philox.h"

#include <stdio.h>

void attn_args_begin(attn_args *a, attn_context_t ctx, cl_kernel kernel, const char *kernel_name) {
    *a = (attn_args){.ctx = ctx, .kernel = kernel, .kernel_name = kernel_name};
}

static void set_arg(attn_args *a, size_t size, const void *value) {
    if (a->status != ATTN_SUCCESS)
        return;
    cl_int err = clSetKernelArg(a->kernel, a->next, size, value);
    if (err != CL_SUCCESS)
        a->status = attn_fail(a->ctx, (attn_status)err, "clSetKernelArg(%s, %u) failed: %s (%d)",
                              a->kernel_name, (unsigned)a->next, attn_cl_error_name(err), (int)err);
    a->next++;
}

void attn_arg_mem(attn_args *a, cl_mem value) {
    set_arg(a, sizeof value, &value);
}

void attn_arg_int(attn_args *a, cl_int value) {
    set_arg(a, sizeof value, &value);
}

void attn_arg_float(attn_args *a, cl_float value) {
    set_arg(a, sizeof value, &value);
}

void attn_arg_uint(attn_args *a, cl_uint value) {
    set_arg(a, sizeof value, &value);
}

void attn_arg_ulong(attn_args *a, cl_ulong value) {
    set_arg(a, sizeof value, &value);
}

void attn_arg_buffer(attn_args *a, cl_mem mem, size_t offset) {
    const cl_ulong off = offset;
    attn_arg_mem(a, mem);
    set_arg(a, sizeof off, &off);
}

void attn_arg_tensor(attn_args *a, cl_mem mem, size_t offset, const attn_strides *strides) {
    const cl_long sb = strides->batch, sh = strides->head, ss = strides->seq;
    attn_arg_buffer(a, mem, offset);
    set_arg(a, sizeof sb, &sb);
    set_arg(a, sizeof sh, &sh);
    set_arg(a, sizeof ss, &ss);
}

void attn_arg_features(attn_args *a, const attn_problem *pb, const attn_device_args *d) {
    const attn_params *p = &pb->p;
    /* Arguments the kernel is built without still need a buffer: Q's. */
    cl_mem arrays[ATTN_INPUT_COUNT];
    for (int i = 0; i < ATTN_INPUT_COUNT; i++)
        arrays[i] = d->arrays[i] ? d->arrays[i] : d->q;
    attn_arg_int(a, p->seq_q);
    attn_arg_int(a, p->seq_k);
    attn_arg_int(a, p->varlen ? p->total_q : p->seq_q);
    attn_arg_int(a, p->varlen ? p->total_k : p->seq_k);
    attn_arg_mem(a, arrays[ATTN_INPUT_cu_seqlens_q]);
    attn_arg_mem(a, arrays[ATTN_INPUT_cu_seqlens_k]);
    attn_arg_mem(a, arrays[ATTN_INPUT_key_lengths]);
    attn_arg_int(a, p->window.left);
    attn_arg_int(a, p->window.right);
    attn_arg_float(a, p->softcap > 0.0f ? p->softcap : 1.0f);
    attn_arg_mem(a, arrays[ATTN_INPUT_alibi_slopes]);
    attn_arg_tensor(a, d->bias ? d->bias : d->q, d->bias_offset, &p->bias.strides);
    attn_arg_tensor(a, d->keep_mask ? d->keep_mask : d->q, d->keep_mask_offset,
                    &p->keep_mask.strides);
    attn_arg_ulong(a, p->dropout_seed);
    attn_arg_ulong(a, p->dropout_offset);
    attn_arg_uint(a, attn_dropout_threshold(p->dropout_p));
    attn_arg_float(a, (float)(1.0 / (1.0 - (double)p->dropout_p)));
}

attn_status attn_args_end(attn_args *a) {
    if (a->status != ATTN_SUCCESS)
        return a->status;
    cl_uint expected = 0;
    cl_int err = clGetKernelInfo(a->kernel, CL_KERNEL_NUM_ARGS, sizeof expected, &expected, NULL);
    if (err != CL_SUCCESS)
        return attn_fail_cl(a->ctx, err, "clGetKernelInfo(CL_KERNEL_NUM_ARGS)");
    if (expected != a->next)
        return attn_fail(a->ctx, ATTN_ERR_UNSUPPORTED,
                         "%s takes %u arguments but the host set %u: host and kernel disagree",
                         a->kernel_name, (unsigned)expected, (unsigned)a->next);
    return ATTN_SUCCESS;
}

void attn_feature_options(const attn_problem *pb, char *buf, size_t size) {
    const attn_params *p = &pb->p;
    snprintf(buf, size,
             "-DDTYPE=%d -DMASK_MODE=%d -DWINDOW=%d -DKEY_PADDING=%d -DVARLEN=%d -DSOFTCAP=%d "
             "-DALIBI=%d -DHAS_BIAS=%d -DHAS_KEEP_MASK=%d -DDROPOUT=%d",
             (int)p->dtype, (int)p->mask, p->window.enabled, p->key_padding, p->varlen,
             p->softcap > 0.0f, p->alibi, p->bias.present, p->keep_mask.present,
             p->dropout_p > 0.0f);
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
