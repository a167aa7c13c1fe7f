/* Status names and the error messages the library keeps instead of printing. */
#include "attn_internal.h"

#include <stdio.h>
#include <string.h>

/* The calling thread's most recent failure, of any call. */
static _Thread_local char thread_last_error[ATTN_ERROR_MESSAGE_MAX];
/* What attn_last_error(ctx) hands this thread: a copy of the context's
 * message taken under its lock, so that no other thread's failure can
 * rewrite it while the caller reads it. */
static _Thread_local char thread_context_error[ATTN_ERROR_MESSAGE_MAX];

const char *attn_cl_error_name(cl_int err) {
    switch (err) {
#define NAME(code)                                                                                 \
    case code:                                                                                     \
        return #code;
        NAME(CL_SUCCESS)
        NAME(CL_DEVICE_NOT_FOUND)
        NAME(CL_DEVICE_NOT_AVAILABLE)
        NAME(CL_COMPILER_NOT_AVAILABLE)
        NAME(CL_MEM_OBJECT_ALLOCATION_FAILURE)
        NAME(CL_OUT_OF_RESOURCES)
        NAME(CL_OUT_OF_HOST_MEMORY)
        NAME(CL_PROFILING_INFO_NOT_AVAILABLE)
        NAME(CL_MEM_COPY_OVERLAP)
        NAME(CL_IMAGE_FORMAT_MISMATCH)
        NAME(CL_IMAGE_FORMAT_NOT_SUPPORTED)
        NAME(CL_BUILD_PROGRAM_FAILURE)
        NAME(CL_MAP_FAILURE)
        NAME(CL_MISALIGNED_SUB_BUFFER_OFFSET)
        NAME(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
        NAME(CL_COMPILE_PROGRAM_FAILURE)
        NAME(CL_LINKER_NOT_AVAILABLE)
        NAME(CL_LINK_PROGRAM_FAILURE)
        NAME(CL_DEVICE_PARTITION_FAILED)
        NAME(CL_KERNEL_ARG_INFO_NOT_AVAILABLE)
        NAME(CL_INVALID_VALUE)
        NAME(CL_INVALID_DEVICE_TYPE)
        NAME(CL_INVALID_PLATFORM)
        NAME(CL_INVALID_DEVICE)
        NAME(CL_INVALID_CONTEXT)
        NAME(CL_INVALID_QUEUE_PROPERTIES)
        NAME(CL_INVALID_COMMAND_QUEUE)
        NAME(CL_INVALID_HOST_PTR)
        NAME(CL_INVALID_MEM_OBJECT)
        NAME(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR)
        NAME(CL_INVALID_IMAGE_SIZE)
        NAME(CL_INVALID_SAMPLER)
        NAME(CL_INVALID_BINARY)
        NAME(CL_INVALID_BUILD_OPTIONS)
        NAME(CL_INVALID_PROGRAM)
        NAME(CL_INVALID_PROGRAM_EXECUTABLE)
        NAME(CL_INVALID_KERNEL_NAME)
        NAME(CL_INVALID_KERNEL_DEFINITION)
        NAME(CL_INVALID_KERNEL)
        NAME(CL_INVALID_ARG_INDEX)
        NAME(CL_INVALID_ARG_VALUE)
        NAME(CL_INVALID_ARG_SIZE)
        NAME(CL_INVALID_KERNEL_ARGS)
        NAME(CL_INVALID_WORK_DIMENSION)
        NAME(CL_INVALID_WORK_GROUP_SIZE)
        NAME(CL_INVALID_WORK_ITEM_SIZE)
        NAME(CL_INVALID_GLOBAL_OFFSET)
        NAME(CL_INVALID_EVENT_WAIT_LIST)
        NAME(CL_INVALID_EVENT)
        NAME(CL_INVALID_OPERATION)
        NAME(CL_INVALID_GL_OBJECT)
        NAME(CL_INVALID_BUFFER_SIZE)
        NAME(CL_INVALID_MIP_LEVEL)
        NAME(CL_INVALID_GLOBAL_WORK_SIZE)
        NAME(CL_INVALID_PROPERTY)
        NAME(CL_INVALID_IMAGE_DESCRIPTOR)
        NAME(CL_INVALID_COMPILER_OPTIONS)
        NAME(CL_INVALID_LINKER_OPTIONS)
        NAME(CL_INVALID_DEVICE_PARTITION_COUNT)
#undef NAME
    case -1001:
        return "CL_PLATFORM_NOT_FOUND_KHR";
    default:
        return "CL_UNKNOWN_ERROR";
    }
}

const char *attn_status_name(attn_status status) {
    switch (status) {
    case ATTN_SUCCESS:
        return "ATTN_SUCCESS";
    case ATTN_ERR_NULL_ARGUMENT:
        return "ATTN_ERR_NULL_ARGUMENT";
    case ATTN_ERR_INVALID_SIZE:
        return "ATTN_ERR_INVALID_SIZE";
    case ATTN_ERR_UNSUPPORTED_HEAD_DIM:
        return "ATTN_ERR_UNSUPPORTED_HEAD_DIM";
    case ATTN_ERR_SIZE_OVERFLOW:
        return "ATTN_ERR_SIZE_OVERFLOW";
    case ATTN_ERR_BUFFER_TOO_SMALL:
        return "ATTN_ERR_BUFFER_TOO_SMALL";
    case ATTN_ERR_INVALID_VALUE:
        return "ATTN_ERR_INVALID_VALUE";
    case ATTN_ERR_UNSUPPORTED:
        return "ATTN_ERR_UNSUPPORTED";
    case ATTN_ERR_DEVICE_OUT_OF_MEMORY:
        return "ATTN_ERR_DEVICE_OUT_OF_MEMORY";
    case ATTN_ERR_HOST_OUT_OF_MEMORY:
        return "ATTN_ERR_HOST_OUT_OF_MEMORY";
    case ATTN_ERR_NO_DEVICE:
        return "ATTN_ERR_NO_DEVICE";
    case ATTN_ERR_INVALID_DEVICE_SPEC:
        return "ATTN_ERR_INVALID_DEVICE_SPEC";
    case ATTN_ERR_KERNEL_SOURCE:
        return "ATTN_ERR_KERNEL_SOURCE";
    }
    if ((int)status < 0 && (int)status > -2000)
        return attn_cl_error_name((cl_int)status);
    return "ATTN_UNKNOWN_STATUS";
}

static void format_message(char *buffer, const char *fmt, va_list args) {
    vsnprintf(buffer, ATTN_ERROR_MESSAGE_MAX, fmt, args);
}

attn_status attn_fail(attn_context_t ctx, attn_status status, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    format_message(thread_last_error, fmt, args);
    va_end(args);
    if (ctx) {
        pthread_mutex_lock(&ctx->error_lock);
        memcpy(ctx->last_error, thread_last_error, sizeof thread_last_error);
        pthread_mutex_unlock(&ctx->error_lock);
    }
    return status;
}

attn_status attn_fail_cl(attn_context_t ctx, cl_int err, const char *call) {
    return attn_fail(ctx, (attn_status)err, "%s failed: %s (%d)", call, attn_cl_error_name(err),
                     (int)err);
}

const char *attn_last_error(attn_context_t ctx) {
    if (!ctx)
        return thread_last_error;
    pthread_mutex_lock(&ctx->error_lock);
    memcpy(thread_context_error, ctx->last_error, sizeof thread_context_error);
    pthread_mutex_unlock(&ctx->error_lock);
    return thread_context_error;
}
