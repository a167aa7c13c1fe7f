/* Small helpers for launching kernels. */
#include "attn_internal.h"

attn_status attn_set_kernel_args(attn_context_t ctx, cl_kernel kernel, const char *kernel_name,
                                 int count, ...) {
    va_list args;
    va_start(args, count);
    attn_status status = ATTN_SUCCESS;
    for (int i = 0; i < count; i++) {
        size_t size = va_arg(args, size_t);
        const void *value = va_arg(args, const void *);
        cl_int err = clSetKernelArg(kernel, (cl_uint)i, size, value);
        if (err != CL_SUCCESS) {
            status = attn_fail(ctx, (attn_status)err, "clSetKernelArg(%s, %d) failed: %s (%d)",
                               kernel_name, i, attn_cl_error_name(err), (int)err);
            break;
        }
    }
    va_end(args);
    return status;
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
