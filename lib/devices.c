/* Device discovery: listing every device and choosing one for a context. */
#include "devices.h"
#include "attn_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PLATFORMS 16
#define MAX_DEVICES 64

static void copy_string_info(cl_device_id device, cl_device_info what, char *out, size_t size) {
    out[0] = '\0';
    if (clGetDeviceInfo(device, what, size, out, NULL) != CL_SUCCESS)
        out[0] = '\0';
    out[size - 1] = '\0';
}

attn_status attn_query_device_info(attn_context_t ctx, cl_device_id device, int32_t platform_index,
                                   int32_t device_index, attn_device_info *info) {
    attn_device_info out = {0};
    out.platform_index = platform_index;
    out.device_index = device_index;

    cl_platform_id platform;
    cl_device_type type;
    cl_uint units;
    cl_ulong global_mem, max_alloc, local_mem;
    cl_int err = clGetDeviceInfo(device, CL_DEVICE_PLATFORM, sizeof platform, &platform, NULL);
    if (err == CL_SUCCESS)
        err = clGetDeviceInfo(device, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    if (err == CL_SUCCESS)
        err = clGetDeviceInfo(device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof units, &units, NULL);
    if (err == CL_SUCCESS)
        err = clGetDeviceInfo(device, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof global_mem, &global_mem,
                              NULL);
    if (err == CL_SUCCESS)
        err = clGetDeviceInfo(device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof max_alloc, &max_alloc,
                              NULL);
    if (err == CL_SUCCESS)
        err = clGetDeviceInfo(device, CL_DEVICE_LOCAL_MEM_SIZE, sizeof local_mem, &local_mem, NULL);
    if (err != CL_SUCCESS)
        return attn_fail_cl(ctx, err, "clGetDeviceInfo");

    out.is_gpu = (type & CL_DEVICE_TYPE_GPU) != 0;
    out.compute_units = (int32_t)units;
    out.global_mem_bytes = global_mem;
    out.max_alloc_bytes = max_alloc;
    out.local_mem_bytes = local_mem;
    if (clGetPlatformInfo(platform, CL_PLATFORM_NAME, sizeof out.platform_name, out.platform_name,
                          NULL) != CL_SUCCESS)
        out.platform_name[0] = '\0';
    out.platform_name[sizeof out.platform_name - 1] = '\0';
    copy_string_info(device, CL_DEVICE_NAME, out.device_name, sizeof out.device_name);
    copy_string_info(device, CL_DEVICE_VENDOR, out.vendor, sizeof out.vendor);
    copy_string_info(device, CL_DEVICE_VERSION, out.device_version, sizeof out.device_version);
    copy_string_info(device, CL_DRIVER_VERSION, out.driver_version, sizeof out.driver_version);
    *info = out;
    return ATTN_SUCCESS;
}

/* Platforms, or none: a loader with no vendor files answers
 * CL_PLATFORM_NOT_FOUND_KHR, which is an empty list, not an error. */
static attn_status get_platforms(cl_platform_id *platforms, cl_uint *count) {
    cl_int err = clGetPlatformIDs(MAX_PLATFORMS, platforms, count);
    if (err == -1001 /* CL_PLATFORM_NOT_FOUND_KHR */) {
        *count = 0;
        return ATTN_SUCCESS;
    }
    if (err != CL_SUCCESS)
        return attn_fail_cl(NULL, err, "clGetPlatformIDs");
    if (*count > MAX_PLATFORMS)
        *count = MAX_PLATFORMS;
    return ATTN_SUCCESS;
}

static attn_status get_devices(cl_platform_id platform, cl_device_id *devices, cl_uint *count) {
    cl_int err = clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, MAX_DEVICES, devices, count);
    if (err == CL_DEVICE_NOT_FOUND) {
        *count = 0;
        return ATTN_SUCCESS;
    }
    if (err != CL_SUCCESS)
        return attn_fail_cl(NULL, err, "clGetDeviceIDs");
    if (*count > MAX_DEVICES)
        *count = MAX_DEVICES;
    return ATTN_SUCCESS;
}

attn_status attn_list_devices(attn_device_info *out, size_t capacity, size_t *count) {
    if (!count || (capacity > 0 && !out))
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT,
                         "attn_list_devices needs count, and out when capacity > 0");
    cl_platform_id platforms[MAX_PLATFORMS];
    cl_uint platform_count;
    attn_status status = get_platforms(platforms, &platform_count);
    if (status != ATTN_SUCCESS)
        return status;
    size_t total = 0;
    for (cl_uint p = 0; p < platform_count; p++) {
        cl_device_id devices[MAX_DEVICES];
        cl_uint device_count;
        status = get_devices(platforms[p], devices, &device_count);
        if (status != ATTN_SUCCESS)
            return status;
        for (cl_uint d = 0; d < device_count; d++, total++) {
            if (total >= capacity)
                continue;
            status = attn_query_device_info(NULL, devices[d], (int32_t)p, (int32_t)d, &out[total]);
            if (status != ATTN_SUCCESS)
                return status;
        }
    }
    *count = total;
    return ATTN_SUCCESS;
}

/* Parses "P:D" (two non-negative decimal indices). */
static int parse_device_spec(const char *spec, int32_t *platform, int32_t *device) {
    char *end;
    long p = strtol(spec, &end, 10);
    if (end == spec || *end != ':' || p < 0 || p > 1000)
        return 0;
    const char *rest = end + 1;
    long d = strtol(rest, &end, 10);
    if (end == rest || *end != '\0' || d < 0 || d > 1000)
        return 0;
    *platform = (int32_t)p;
    *device = (int32_t)d;
    return 1;
}

attn_status attn_choose_device(const attn_context_options *options, cl_device_id *chosen,
                               int32_t *platform_index, int32_t *device_index) {
    int32_t want_platform = options ? options->platform_index : -1;
    int32_t want_device = options ? options->device_index : -1;
    const char *origin = "the options";
    if (want_platform < 0 && want_device < 0) {
        const char *spec = getenv("ATTN_CL_DEVICE");
        if (spec && *spec) {
            if (!parse_device_spec(spec, &want_platform, &want_device))
                return attn_fail(NULL, ATTN_ERR_INVALID_DEVICE_SPEC,
                                 "ATTN_CL_DEVICE=\"%s\" is not \"platform:device\" (for example "
                                 "\"0:1\")",
                                 spec);
            origin = "ATTN_CL_DEVICE";
        }
    } else if (want_platform < 0) {
        want_platform = 0; /* a device index alone refers to the first platform */
    }

    cl_platform_id platforms[MAX_PLATFORMS];
    cl_uint platform_count;
    attn_status status = get_platforms(platforms, &platform_count);
    if (status != ATTN_SUCCESS)
        return status;
    if (platform_count == 0)
        return attn_fail(NULL, ATTN_ERR_NO_DEVICE,
                         "no OpenCL platform found (is an ICD such as pocl-opencl-icd installed?)");

    if (want_platform >= 0) {
        if ((cl_uint)want_platform >= platform_count)
            return attn_fail(NULL, ATTN_ERR_INVALID_DEVICE_SPEC,
                             "%s asks for platform %d, but there are %u", origin, want_platform,
                             platform_count);
        cl_device_id devices[MAX_DEVICES];
        cl_uint device_count;
        status = get_devices(platforms[want_platform], devices, &device_count);
        if (status != ATTN_SUCCESS)
            return status;
        if (want_device < 0)
            want_device = 0;
        if ((cl_uint)want_device >= device_count)
            return attn_fail(NULL, ATTN_ERR_INVALID_DEVICE_SPEC,
                             "%s asks for device %d of platform %d, which has %u", origin,
                             want_device, want_platform, device_count);
        *chosen = devices[want_device];
        *platform_index = want_platform;
        *device_index = want_device;
        return ATTN_SUCCESS;
    }

    /* Default: the first GPU of any platform, else the first device. */
    int found = 0;
    for (int pass = 0; pass < 2 && !found; pass++) {
        for (cl_uint p = 0; p < platform_count && !found; p++) {
            cl_device_id devices[MAX_DEVICES];
            cl_uint device_count;
            status = get_devices(platforms[p], devices, &device_count);
            if (status != ATTN_SUCCESS)
                return status;
            for (cl_uint d = 0; d < device_count && !found; d++) {
                cl_device_type type = 0;
                if (clGetDeviceInfo(devices[d], CL_DEVICE_TYPE, sizeof type, &type, NULL) !=
                    CL_SUCCESS)
                    continue;
                if (pass == 1 || (type & CL_DEVICE_TYPE_GPU)) {
                    *chosen = devices[d];
                    *platform_index = (int32_t)p;
                    *device_index = (int32_t)d;
                    found = 1;
                }
            }
        }
    }
    if (!found)
        return attn_fail(NULL, ATTN_ERR_NO_DEVICE, "no OpenCL device found on %u platform(s)",
                         platform_count);
    return ATTN_SUCCESS;
}

void attn_find_device_indices(cl_device_id device, int32_t *platform_index, int32_t *device_index) {
    *platform_index = -1;
    *device_index = -1;
    cl_platform_id platforms[MAX_PLATFORMS];
    cl_uint platform_count;
    if (get_platforms(platforms, &platform_count) != ATTN_SUCCESS)
        return;
    for (cl_uint p = 0; p < platform_count; p++) {
        cl_device_id devices[MAX_DEVICES];
        cl_uint device_count;
        if (get_devices(platforms[p], devices, &device_count) != ATTN_SUCCESS)
            continue;
        for (cl_uint d = 0; d < device_count; d++)
            if (devices[d] == device) {
                *platform_index = (int32_t)p;
                *device_index = (int32_t)d;
                return;
            }
    }
}
