/* Context lifetime: creating one on a chosen device or around a caller's
 * OpenCL objects, and releasing everything it holds. */
#include "attn_internal.h"
#include "devices.h"

#include <stdlib.h>
#include <string.h>

void attn_context_options_init(attn_context_options *options) {
    if (!options)
        return;
    *options = (attn_context_options){.platform_index = -1, .device_index = -1};
}

static attn_context_t context_alloc(void) {
    attn_context_t ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return NULL;
    if (pthread_mutex_init(&ctx->lock, NULL) != 0) {
        free(ctx);
        return NULL;
    }
    if (pthread_mutex_init(&ctx->error_lock, NULL) != 0) {
        pthread_mutex_destroy(&ctx->lock);
        free(ctx);
        return NULL;
    }
    return ctx;
}

/* Copies the message a failure recorded on ctx to the thread, so that
 * attn_last_error(NULL) explains a failed create. */
static attn_status fail_create(attn_context_t ctx, attn_status status, attn_context_t *out) {
    attn_fail(NULL, status, "%s", ctx->last_error);
    attn_context_destroy(ctx);
    *out = NULL;
    return status;
}

attn_status attn_context_create(const attn_context_options *options, attn_context_t *out) {
    if (!out)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "attn_context_create: ctx is NULL");
    *out = NULL;
    cl_device_id device;
    int32_t platform_index, device_index;
    attn_status status = attn_choose_device(options, &device, &platform_index, &device_index);
    if (status != ATTN_SUCCESS)
        return status;

    attn_context_t ctx = context_alloc();
    if (!ctx)
        return attn_fail(NULL, ATTN_ERR_HOST_OUT_OF_MEMORY, "cannot allocate a context");
    status = attn_query_device_info(ctx, device, platform_index, device_index, &ctx->info);
    if (status != ATTN_SUCCESS)
        return fail_create(ctx, status, out);

    cl_int err;
    ctx->context = clCreateContext(NULL, 1, &device, NULL, NULL, &err);
    if (err != CL_SUCCESS) {
        ctx->context = NULL;
        return fail_create(ctx, attn_fail_cl(ctx, err, "clCreateContext"), out);
    }
    ctx->device = device;
    cl_command_queue_properties props =
        (options && options->enable_profiling) ? CL_QUEUE_PROFILING_ENABLE : 0;
    ctx->queue = clCreateCommandQueue(ctx->context, device, props, &err);
    if (err != CL_SUCCESS) {
        ctx->queue = NULL;
        return fail_create(ctx, attn_fail_cl(ctx, err, "clCreateCommandQueue"), out);
    }
    *out = ctx;
    return ATTN_SUCCESS;
}

/* A caller's objects must belong together, or the first forward fails
 * far from the cause (CL_INVALID_CONTEXT on its first buffer): the queue is
 * of the context and of the device, the device one of the context's, and
 * the queue in order (the library orders its commands by the queue alone). */
static attn_status check_cl_objects(cl_context context, cl_device_id device,
                                    cl_command_queue queue) {
    cl_context queue_context = NULL;
    cl_device_id queue_device = NULL;
    cl_command_queue_properties props = 0;
    cl_int err =
        clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof queue_context, &queue_context, NULL);
    if (err == CL_SUCCESS)
        err =
            clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof queue_device, &queue_device, NULL);
    if (err == CL_SUCCESS)
        err = clGetCommandQueueInfo(queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL);
    if (err != CL_SUCCESS)
        return attn_fail_cl(NULL, err, "clGetCommandQueueInfo");
    size_t bytes = 0;
    err = clGetContextInfo(context, CL_CONTEXT_DEVICES, 0, NULL, &bytes);
    if (err != CL_SUCCESS)
        return attn_fail_cl(NULL, err, "clGetContextInfo(CL_CONTEXT_DEVICES)");
    cl_device_id *devices = malloc(bytes ? bytes : 1);
    if (!devices)
        return attn_fail(NULL, ATTN_ERR_HOST_OUT_OF_MEMORY,
                         "cannot allocate the context's device list (%zu bytes)", bytes);
    err = clGetContextInfo(context, CL_CONTEXT_DEVICES, bytes, devices, NULL);
    /* The queue's own device is the context's whatever the list says: PoCL
     * lists the root device for a context of its sub-devices. */
    int in_context = queue_context == context && device == queue_device;
    for (size_t i = 0; err == CL_SUCCESS && i < bytes / sizeof *devices; i++)
        in_context |= devices[i] == device;
    free(devices);
    if (err != CL_SUCCESS)
        return attn_fail_cl(NULL, err, "clGetContextInfo(CL_CONTEXT_DEVICES)");

    if (queue_context != context)
        return attn_fail(NULL, ATTN_ERR_INVALID_VALUE,
                         "attn_context_create_from_cl: the queue belongs to another context "
                         "(CL_QUEUE_CONTEXT)");
    if (!in_context)
        return attn_fail(NULL, ATTN_ERR_INVALID_VALUE,
                         "attn_context_create_from_cl: the device is not one of the context's "
                         "devices (CL_CONTEXT_DEVICES)");
    if (queue_device != device)
        return attn_fail(NULL, ATTN_ERR_INVALID_VALUE,
                         "attn_context_create_from_cl: the queue is of another device of the "
                         "context (CL_QUEUE_DEVICE)");
    if (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE)
        return attn_fail(NULL, ATTN_ERR_UNSUPPORTED,
                         "attn_context_create_from_cl: the queue is out-of-order; libattn_cl "
                         "needs an in-order queue");
    return ATTN_SUCCESS;
}

attn_status attn_context_create_from_cl(cl_context context, cl_device_id device,
                                        cl_command_queue queue, attn_context_t *out) {
    if (!out)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "attn_context_create_from_cl: ctx is NULL");
    *out = NULL;
    if (!context || !device || !queue)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT,
                         "attn_context_create_from_cl needs a context, a device and a queue");
    attn_status status = check_cl_objects(context, device, queue);
    if (status != ATTN_SUCCESS)
        return status;

    attn_context_t ctx = context_alloc();
    if (!ctx)
        return attn_fail(NULL, ATTN_ERR_HOST_OUT_OF_MEMORY, "cannot allocate a context");
    int32_t platform_index, device_index;
    attn_find_device_indices(device, &platform_index, &device_index);
    status = attn_query_device_info(ctx, device, platform_index, device_index, &ctx->info);
    if (status != ATTN_SUCCESS)
        return fail_create(ctx, status, out);
    cl_int err = clRetainContext(context);
    if (err != CL_SUCCESS)
        return fail_create(ctx, attn_fail_cl(ctx, err, "clRetainContext"), out);
    ctx->context = context;
    err = clRetainCommandQueue(queue);
    if (err != CL_SUCCESS)
        return fail_create(ctx, attn_fail_cl(ctx, err, "clRetainCommandQueue"), out);
    ctx->queue = queue;
    ctx->device = device;
    *out = ctx;
    return ATTN_SUCCESS;
}

void attn_context_destroy(attn_context_t ctx) {
    if (!ctx)
        return;
    if (ctx->queue)
        clFinish(ctx->queue); /* temporaries of enqueued forwards are released on completion */
    attn_program_cache_clear(ctx);
    if (ctx->queue)
        clReleaseCommandQueue(ctx->queue);
    if (ctx->context)
        clReleaseContext(ctx->context);
    pthread_mutex_destroy(&ctx->error_lock);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
}

attn_status attn_context_device_info(attn_context_t ctx, attn_device_info *info) {
    if (!ctx || !info)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT, "attn_context_device_info: NULL argument");
    *info = ctx->info;
    return ATTN_SUCCESS;
}

cl_command_queue attn_context_queue(attn_context_t ctx) {
    return ctx ? ctx->queue : NULL;
}
