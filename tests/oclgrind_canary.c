/* Kernels with one known defect each, for checking that
 * tests/oclgrind_check.sh turns an oclgrind report into a failure (a checker
 * that never fails checks nothing). Plain OpenCL, no libattn_cl.
 *
 *   oclgrind_canary KIND --count     prints 1 (the harness's protocol)
 *   oclgrind_canary KIND --run 0     runs the kernel KIND:
 *     clean   every access in bounds, no race: must pass
 *     oob     writes one element past the end of its buffer
 *     race    two work-items write one local element without a barrier
 *     uninit  stores a value read from a never-written local array
 */
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>

#include <stdio.h>
#include <string.h>

static const char *source = "__kernel void clean(__global float *out) {\n"
                            "    out[get_global_id(0)] = (float)get_global_id(0);\n"
                            "}\n"
                            "__kernel void oob(__global float *out) {\n"
                            "    out[get_global_id(0) + 1] = 1.0f;\n"
                            "}\n"
                            "__kernel void race(__global float *out) {\n"
                            "    __local float shared[1];\n"
                            "    shared[0] = (float)get_local_id(0);\n"
                            "    barrier(CLK_LOCAL_MEM_FENCE);\n"
                            "    out[get_global_id(0)] = shared[0];\n"
                            "}\n"
                            "__kernel void uninit(__global float *out) {\n"
                            "    __local float never_written[64];\n"
                            "    out[get_global_id(0)] = never_written[get_local_id(0)];\n"
                            "}\n";

#define ITEMS 16

static int fail(const char *what, cl_int err) {
    printf("FAIL: %s: %d\n", what, (int)err);
    return 1;
}

int main(int argc, char **argv) {
    const char *kinds[] = {"clean", "oob", "race", "uninit"};
    int known = 0;
    for (size_t i = 0; argc > 1 && i < sizeof kinds / sizeof kinds[0]; i++) {
        known |= strcmp(argv[1], kinds[i]) == 0;
    }
    if (argc == 3 && known && strcmp(argv[2], "--count") == 0) {
        printf("1\n");
        return 0;
    }
    if (argc != 4 || !known || strcmp(argv[2], "--run") != 0 || strcmp(argv[3], "0") != 0) {
        fprintf(stderr, "usage: %s clean|oob|race|uninit --count | --run 0\n", argv[0]);
        return 2;
    }

    cl_platform_id platform;
    cl_device_id device;
    cl_int err = clGetPlatformIDs(1, &platform, NULL);
    if (err == CL_SUCCESS) {
        err = clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 1, &device, NULL);
    }
    if (err != CL_SUCCESS) {
        return fail("no OpenCL device", err);
    }
    cl_context context = clCreateContext(NULL, 1, &device, NULL, NULL, &err);
    if (err != CL_SUCCESS) {
        return fail("clCreateContext", err);
    }
    cl_command_queue queue = clCreateCommandQueue(context, device, 0, &err);
    cl_program program = clCreateProgramWithSource(context, 1, &source, NULL, &err);
    if (err == CL_SUCCESS) {
        err = clBuildProgram(program, 1, &device, "", NULL, NULL);
    }
    cl_kernel kernel = err == CL_SUCCESS ? clCreateKernel(program, argv[1], &err) : NULL;
    /* One element of slack past the work-items' range would hide the oob
     * kernel's write, so the buffer is exactly ITEMS floats. */
    float host[ITEMS] = {0};
    cl_mem out = err == CL_SUCCESS
                     ? clCreateBuffer(context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                                      sizeof host, host, &err)
                     : NULL;
    if (err == CL_SUCCESS) {
        err = clSetKernelArg(kernel, 0, sizeof out, &out);
    }
    const size_t global = ITEMS, local = ITEMS;
    if (err == CL_SUCCESS) {
        err = clEnqueueNDRangeKernel(queue, kernel, 1, NULL, &global, &local, 0, NULL, NULL);
    }
    if (err == CL_SUCCESS) {
        err = clEnqueueReadBuffer(queue, out, CL_TRUE, 0, sizeof host, host, 0, NULL, NULL);
    }
    if (err != CL_SUCCESS) {
        return fail("running the kernel", err);
    }
    printf("kernel %s ran\n", argv[1]);
    clReleaseMemObject(out);
    clReleaseKernel(kernel);
    clReleaseProgram(program);
    clReleaseCommandQueue(queue);
    clReleaseContext(context);
    return 0;
}
