/* Test-only fault injection: in the library built with ATTN_FAULT_INJECTION
 * (the static attn_cl_fault that only tests link), every OpenCL call and host
 * allocation below goes through a wrapper that can make its N-th call fail
 * with a chosen error, so a test can walk every failure point of a forward.
 * The release library is built without it and contains none of this. */
#ifndef ATTN_FAULT_INJECTION_H
#define ATTN_FAULT_INJECTION_H

#include "attn_cl.h"

#include <stddef.h>

/* X(kind, function): the calls that can be made to fail. */
#define ATTN_FAULT_CALLS(X)                                                                        \
    X(ATTN_FAULT_CREATE_CONTEXT, clCreateContext)                                                  \
    X(ATTN_FAULT_CREATE_QUEUE, clCreateCommandQueue)                                               \
    X(ATTN_FAULT_CREATE_BUFFER, clCreateBuffer)                                                    \
    X(ATTN_FAULT_CREATE_PROGRAM, clCreateProgramWithSource)                                        \
    X(ATTN_FAULT_CREATE_PROGRAM_BINARY, clCreateProgramWithBinary)                                 \
    X(ATTN_FAULT_BUILD_PROGRAM, clBuildProgram)                                                    \
    X(ATTN_FAULT_CREATE_KERNEL, clCreateKernel)                                                    \
    X(ATTN_FAULT_SET_KERNEL_ARG, clSetKernelArg)                                                   \
    X(ATTN_FAULT_ENQUEUE_KERNEL, clEnqueueNDRangeKernel)                                           \
    X(ATTN_FAULT_ENQUEUE_READ, clEnqueueReadBuffer)                                                \
    X(ATTN_FAULT_ENQUEUE_WRITE, clEnqueueWriteBuffer)                                              \
    X(ATTN_FAULT_ENQUEUE_FILL, clEnqueueFillBuffer)                                                \
    X(ATTN_FAULT_MEM_INFO, clGetMemObjectInfo)                                                     \
    X(ATTN_FAULT_CONTEXT_INFO, clGetContextInfo)                                                   \
    X(ATTN_FAULT_QUEUE_INFO, clGetCommandQueueInfo)                                                \
    X(ATTN_FAULT_HOST_ALLOC, malloc)

typedef enum attn_fault_kind {
#define ATTN_FAULT_ENUM(kind, function) kind,
    ATTN_FAULT_CALLS(ATTN_FAULT_ENUM)
#undef ATTN_FAULT_ENUM
        ATTN_FAULT_KIND_COUNT
} attn_fault_kind;

/* Zeroes every call counter and disarms the fault. */
ATTN_API void attn_fault_reset(void);
/* The `nth` call (1-based, counted from the last reset) of `kind` fails with
 * `error` (an OpenCL code; ignored for host allocations, which return NULL). */
ATTN_API void attn_fault_arm(attn_fault_kind kind, long nth, cl_int error);
/* Calls of `kind` since the last reset. */
ATTN_API long attn_fault_count(attn_fault_kind kind);
/* Whether the armed fault has fired since it was armed. */
ATTN_API int attn_fault_fired(void);
/* The largest size in bytes asked of clCreateBuffer (ATTN_FAULT_CREATE_BUFFER)
 * or of a host allocation (ATTN_FAULT_HOST_ALLOC) since the last reset, 0
 * for the other kinds: lets a test check that nothing the library allocates
 * grows with a tensor it was handed. */
ATTN_API size_t attn_fault_largest(attn_fault_kind kind);
/* "clCreateBuffer", ...: the name of the call, as failure messages name it. */
ATTN_API const char *attn_fault_call_name(attn_fault_kind kind);

cl_context attn_fault_clCreateContext(const cl_context_properties *properties, cl_uint num_devices,
                                      const cl_device_id *devices,
                                      void(CL_CALLBACK *notify)(const char *, const void *, size_t,
                                                                void *),
                                      void *user_data, cl_int *errcode_ret);
cl_command_queue attn_fault_clCreateCommandQueue(cl_context context, cl_device_id device,
                                                 cl_command_queue_properties properties,
                                                 cl_int *errcode_ret);
cl_mem attn_fault_clCreateBuffer(cl_context context, cl_mem_flags flags, size_t size,
                                 void *host_ptr, cl_int *errcode_ret);
cl_program attn_fault_clCreateProgramWithSource(cl_context context, cl_uint count,
                                                const char **strings, const size_t *lengths,
                                                cl_int *errcode_ret);
cl_program attn_fault_clCreateProgramWithBinary(cl_context context, cl_uint num_devices,
                                                const cl_device_id *device_list,
                                                const size_t *lengths,
                                                const unsigned char **binaries,
                                                cl_int *binary_status, cl_int *errcode_ret);
cl_int attn_fault_clBuildProgram(cl_program program, cl_uint num_devices,
                                 const cl_device_id *device_list, const char *options,
                                 void(CL_CALLBACK *notify)(cl_program, void *), void *user_data);
cl_kernel attn_fault_clCreateKernel(cl_program program, const char *kernel_name,
                                    cl_int *errcode_ret);
cl_int attn_fault_clSetKernelArg(cl_kernel kernel, cl_uint arg_index, size_t arg_size,
                                 const void *arg_value);
cl_int attn_fault_clEnqueueNDRangeKernel(cl_command_queue queue, cl_kernel kernel, cl_uint work_dim,
                                         const size_t *global_offset, const size_t *global_size,
                                         const size_t *local_size, cl_uint num_events,
                                         const cl_event *wait_list, cl_event *event);
cl_int attn_fault_clEnqueueReadBuffer(cl_command_queue queue, cl_mem buffer, cl_bool blocking,
                                      size_t offset, size_t size, void *ptr, cl_uint num_events,
                                      const cl_event *wait_list, cl_event *event);
cl_int attn_fault_clEnqueueWriteBuffer(cl_command_queue queue, cl_mem buffer, cl_bool blocking,
                                       size_t offset, size_t size, const void *ptr,
                                       cl_uint num_events, const cl_event *wait_list,
                                       cl_event *event);
cl_int attn_fault_clEnqueueFillBuffer(cl_command_queue queue, cl_mem buffer, const void *pattern,
                                      size_t pattern_size, size_t offset, size_t size,
                                      cl_uint num_events, const cl_event *wait_list,
                                      cl_event *event);
cl_int attn_fault_clGetMemObjectInfo(cl_mem memobj, cl_mem_info name, size_t size, void *value,
                                     size_t *size_ret);
cl_int attn_fault_clGetContextInfo(cl_context context, cl_context_info name, size_t size,
                                   void *value, size_t *size_ret);
cl_int attn_fault_clGetCommandQueueInfo(cl_command_queue queue, cl_command_queue_info name,
                                        size_t size, void *value, size_t *size_ret);
void *attn_fault_malloc(size_t size);
void *attn_fault_calloc(size_t count, size_t size);
char *attn_fault_strdup(const char *text);

#endif
