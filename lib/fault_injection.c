/* Test-only wrappers that fail the N-th call of a kind (see
 * fault_injection.h). Compiled only into the fault-injection build; this file
 * deliberately does not include cl_calls.h, so the names below are the real
 * functions. */
#include "fault_injection.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_long call_counts[ATTN_FAULT_KIND_COUNT];
static atomic_int armed_kind = -1;
static atomic_long armed_nth;
static atomic_int armed_error;
static atomic_int fired;
static atomic_size_t largest[ATTN_FAULT_KIND_COUNT];

/* Records a request of `size` bytes of `kind`. */
static void note_size(attn_fault_kind kind, size_t size) {
    size_t seen = atomic_load(&largest[kind]);
    while (size > seen && !atomic_compare_exchange_weak(&largest[kind], &seen, size))
        ;
}

size_t attn_fault_largest(attn_fault_kind kind) {
    return (unsigned)kind < ATTN_FAULT_KIND_COUNT ? atomic_load(&largest[kind]) : 0;
}

static const char *const call_names[ATTN_FAULT_KIND_COUNT] = {
#define ATTN_FAULT_NAME(kind, function) #function,
    ATTN_FAULT_CALLS(ATTN_FAULT_NAME)
#undef ATTN_FAULT_NAME
};

void attn_fault_reset(void) {
    atomic_store(&armed_kind, -1);
    for (int i = 0; i < ATTN_FAULT_KIND_COUNT; i++) {
        atomic_store(&call_counts[i], 0);
        atomic_store(&largest[i], 0);
    }
    atomic_store(&fired, 0);
}

void attn_fault_arm(attn_fault_kind kind, long nth, cl_int error) {
    atomic_store(&armed_nth, nth);
    atomic_store(&armed_error, error);
    atomic_store(&fired, 0);
    atomic_store(&armed_kind, (int)kind);
}

long attn_fault_count(attn_fault_kind kind) {
    return (unsigned)kind < ATTN_FAULT_KIND_COUNT ? atomic_load(&call_counts[kind]) : 0;
}

int attn_fault_fired(void) {
    return atomic_load(&fired);
}

const char *attn_fault_call_name(attn_fault_kind kind) {
    return (unsigned)kind < ATTN_FAULT_KIND_COUNT ? call_names[kind] : "unknown";
}

/* Counts a call of `kind`; returns 1 with the error to report when it is the
 * armed one. */
static int should_fail(attn_fault_kind kind, cl_int *error) {
    const long n = atomic_fetch_add(&call_counts[kind], 1) + 1;
    if (atomic_load(&armed_kind) != (int)kind || n != atomic_load(&armed_nth))
        return 0;
    atomic_store(&fired, 1);
    *error = atomic_load(&armed_error);
    return 1;
}

/* For calls that return an object and report through errcode_ret. */
#define FAIL_OBJECT(kind)                                                                          \
    do {                                                                                           \
        cl_int injected;                                                                           \
        if (should_fail(kind, &injected)) {                                                        \
            if (errcode_ret)                                                                       \
                *errcode_ret = injected;                                                           \
            return NULL;                                                                           \
        }                                                                                          \
    } while (0)

/* For calls that return their status. */
#define FAIL_STATUS(kind)                                                                          \
    do {                                                                                           \
        cl_int injected;                                                                           \
        if (should_fail(kind, &injected))                                                          \
            return injected;                                                                       \
    } while (0)

cl_context attn_fault_clCreateContext(const cl_context_properties *properties, cl_uint num_devices,
                                      const cl_device_id *devices,
                                      void(CL_CALLBACK *notify)(const char *, const void *, size_t,
                                                                void *),
                                      void *user_data, cl_int *errcode_ret) {
    FAIL_OBJECT(ATTN_FAULT_CREATE_CONTEXT);
    return clCreateContext(properties, num_devices, devices, notify, user_data, errcode_ret);
}

cl_command_queue attn_fault_clCreateCommandQueue(cl_context context, cl_device_id device,
                                                 cl_command_queue_properties properties,
                                                 cl_int *errcode_ret) {
    FAIL_OBJECT(ATTN_FAULT_CREATE_QUEUE);
    return clCreateCommandQueue(context, device, properties, errcode_ret);
}

cl_mem attn_fault_clCreateBuffer(cl_context context, cl_mem_flags flags, size_t size,
                                 void *host_ptr, cl_int *errcode_ret) {
    FAIL_OBJECT(ATTN_FAULT_CREATE_BUFFER);
    note_size(ATTN_FAULT_CREATE_BUFFER, size);
    return clCreateBuffer(context, flags, size, host_ptr, errcode_ret);
}

cl_program attn_fault_clCreateProgramWithSource(cl_context context, cl_uint count,
                                                const char **strings, const size_t *lengths,
                                                cl_int *errcode_ret) {
    FAIL_OBJECT(ATTN_FAULT_CREATE_PROGRAM);
    return clCreateProgramWithSource(context, count, strings, lengths, errcode_ret);
}

cl_program attn_fault_clCreateProgramWithBinary(cl_context context, cl_uint num_devices,
                                                const cl_device_id *device_list,
                                                const size_t *lengths,
                                                const unsigned char **binaries,
                                                cl_int *binary_status, cl_int *errcode_ret) {
    FAIL_OBJECT(ATTN_FAULT_CREATE_PROGRAM_BINARY);
    return clCreateProgramWithBinary(context, num_devices, device_list, lengths, binaries,
                                     binary_status, errcode_ret);
}

cl_int attn_fault_clBuildProgram(cl_program program, cl_uint num_devices,
                                 const cl_device_id *device_list, const char *options,
                                 void(CL_CALLBACK *notify)(cl_program, void *), void *user_data) {
    FAIL_STATUS(ATTN_FAULT_BUILD_PROGRAM);
    return clBuildProgram(program, num_devices, device_list, options, notify, user_data);
}

cl_kernel attn_fault_clCreateKernel(cl_program program, const char *kernel_name,
                                    cl_int *errcode_ret) {
    FAIL_OBJECT(ATTN_FAULT_CREATE_KERNEL);
    return clCreateKernel(program, kernel_name, errcode_ret);
}

cl_int attn_fault_clSetKernelArg(cl_kernel kernel, cl_uint arg_index, size_t arg_size,
                                 const void *arg_value) {
    FAIL_STATUS(ATTN_FAULT_SET_KERNEL_ARG);
    return clSetKernelArg(kernel, arg_index, arg_size, arg_value);
}

cl_int attn_fault_clEnqueueNDRangeKernel(cl_command_queue queue, cl_kernel kernel, cl_uint work_dim,
                                         const size_t *global_offset, const size_t *global_size,
                                         const size_t *local_size, cl_uint num_events,
                                         const cl_event *wait_list, cl_event *event) {
    FAIL_STATUS(ATTN_FAULT_ENQUEUE_KERNEL);
    return clEnqueueNDRangeKernel(queue, kernel, work_dim, global_offset, global_size, local_size,
                                  num_events, wait_list, event);
}

cl_int attn_fault_clEnqueueReadBuffer(cl_command_queue queue, cl_mem buffer, cl_bool blocking,
                                      size_t offset, size_t size, void *ptr, cl_uint num_events,
                                      const cl_event *wait_list, cl_event *event) {
    FAIL_STATUS(ATTN_FAULT_ENQUEUE_READ);
    return clEnqueueReadBuffer(queue, buffer, blocking, offset, size, ptr, num_events, wait_list,
                               event);
}

cl_int attn_fault_clEnqueueWriteBuffer(cl_command_queue queue, cl_mem buffer, cl_bool blocking,
                                       size_t offset, size_t size, const void *ptr,
                                       cl_uint num_events, const cl_event *wait_list,
                                       cl_event *event) {
    FAIL_STATUS(ATTN_FAULT_ENQUEUE_WRITE);
    return clEnqueueWriteBuffer(queue, buffer, blocking, offset, size, ptr, num_events, wait_list,
                                event);
}

cl_int attn_fault_clEnqueueFillBuffer(cl_command_queue queue, cl_mem buffer, const void *pattern,
                                      size_t pattern_size, size_t offset, size_t size,
                                      cl_uint num_events, const cl_event *wait_list,
                                      cl_event *event) {
    FAIL_STATUS(ATTN_FAULT_ENQUEUE_FILL);
    return clEnqueueFillBuffer(queue, buffer, pattern, pattern_size, offset, size, num_events,
                               wait_list, event);
}

cl_int attn_fault_clGetMemObjectInfo(cl_mem memobj, cl_mem_info name, size_t size, void *value,
                                     size_t *size_ret) {
    FAIL_STATUS(ATTN_FAULT_MEM_INFO);
    return clGetMemObjectInfo(memobj, name, size, value, size_ret);
}

cl_int attn_fault_clGetContextInfo(cl_context context, cl_context_info name, size_t size,
                                   void *value, size_t *size_ret) {
    FAIL_STATUS(ATTN_FAULT_CONTEXT_INFO);
    return clGetContextInfo(context, name, size, value, size_ret);
}

cl_int attn_fault_clGetCommandQueueInfo(cl_command_queue queue, cl_command_queue_info name,
                                        size_t size, void *value, size_t *size_ret) {
    FAIL_STATUS(ATTN_FAULT_QUEUE_INFO);
    return clGetCommandQueueInfo(queue, name, size, value, size_ret);
}

void *attn_fault_malloc(size_t size) {
    cl_int unused;
    note_size(ATTN_FAULT_HOST_ALLOC, size);
    return should_fail(ATTN_FAULT_HOST_ALLOC, &unused) ? NULL : malloc(size);
}

void *attn_fault_calloc(size_t count, size_t size) {
    cl_int unused;
    note_size(ATTN_FAULT_HOST_ALLOC, count && size > SIZE_MAX / count ? SIZE_MAX : count * size);
    return should_fail(ATTN_FAULT_HOST_ALLOC, &unused) ? NULL : calloc(count, size);
}

char *attn_fault_strdup(const char *text) {
    cl_int unused;
    return should_fail(ATTN_FAULT_HOST_ALLOC, &unused) ? NULL : strdup(text);
}
