/* Built programs and their kernels, cached per context by (program, build
 * options): PoCL and some GPU drivers take a second or more per build. */
#include "attn_internal.h"
#include "binary_cache.h"
#include "kernel_sources.h"

#include <stdlib.h>
#include <string.h>

#define MAX_KERNELS_PER_PROGRAM 8

struct attn_program_entry {
    char *program_name;
    char *options;
    cl_program program;
    int kernel_count;
    char *kernel_names[MAX_KERNELS_PER_PROGRAM];
    cl_kernel kernels[MAX_KERNELS_PER_PROGRAM];
    attn_program_entry *next;
};

static void entry_free(attn_program_entry *e) {
    for (int i = 0; i < e->kernel_count; i++) {
        clReleaseKernel(e->kernels[i]);
        free(e->kernel_names[i]);
    }
    if (e->program)
        clReleaseProgram(e->program);
    free(e->program_name);
    free(e->options);
    free(e);
}

void attn_program_cache_clear(attn_context_t ctx) {
    attn_program_entry *e = ctx->programs;
    while (e) {
        attn_program_entry *next = e->next;
        entry_free(e);
        e = next;
    }
    ctx->programs = NULL;
}

/* Records the build log in the context's message. */
static attn_status fail_build(attn_context_t ctx, cl_int err, cl_program program,
                              const char *program_name, const char *options) {
    size_t log_size = 0;
    char *log = NULL;
    if (clGetProgramBuildInfo(program, ctx->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &log_size) ==
            CL_SUCCESS &&
        log_size > 0 && (log = malloc(log_size + 1)) != NULL) {
        if (clGetProgramBuildInfo(program, ctx->device, CL_PROGRAM_BUILD_LOG, log_size, log,
                                  NULL) != CL_SUCCESS)
            log[0] = '\0';
        log[log_size] = '\0';
    }
    attn_status status = attn_fail(
        ctx, (attn_status)err, "clBuildProgram failed for %s.cl with options \"%s\": %s (%d)\n%s",
        program_name, options, attn_cl_error_name(err), (int)err, log ? log : "");
    free(log);
    return status;
}

/* The options clBuildProgram gets (malloc'ed): the caller's, with -Werror
 * in development and test builds (meson -Dwerror=true), where a kernel
 * warning is a build failure, as a host one is. */
static char *compiler_options(const char *options) {
#ifdef ATTN_CL_KERNEL_WERROR
    static const char strict[] = " -Werror";
#else
    static const char strict[] = "";
#endif
    char *out = malloc(strlen(options) + sizeof strict);
    if (out) {
        strcpy(out, options);
        strcat(out, strict);
    }
    return out;
}

static attn_status build_from_source(attn_context_t ctx, const char *program_name,
                                     const char *options, const char *source,
                                     const char *build_options, cl_program *out) {
    cl_int err;
    const char *sources[1] = {source};
    cl_program program = clCreateProgramWithSource(ctx->context, 1, sources, NULL, &err);
    if (err != CL_SUCCESS)
        return attn_fail_cl(ctx, err, "clCreateProgramWithSource");
    err = clBuildProgram(program, 1, &ctx->device, build_options, NULL, NULL);
    if (err != CL_SUCCESS) {
        attn_status status = fail_build(ctx, err, program, program_name, options);
        clReleaseProgram(program);
        return status;
    }
    *out = program;
    return ATTN_SUCCESS;
}

/* From the on-disk binary cache when it holds the program (lib/binary_cache.c),
 * else from source, storing the binary for the next process. */
static attn_status build_program(attn_context_t ctx, const char *program_name, const char *options,
                                 cl_program *out) {
    char *source = NULL;
    attn_status status = attn_kernel_source(ctx, program_name, &source);
    if (status != ATTN_SUCCESS)
        return status;
    char *build_options = compiler_options(options);
    if (!build_options) {
        free(source);
        return attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY, "cannot allocate build options");
    }
    attn_binary_entry entry;
    const int cached = attn_binary_cache_entry(ctx, source, build_options, &entry);
    cl_program program = cached ? attn_binary_cache_load(ctx, &entry, build_options) : NULL;
    if (!program) {
        status = build_from_source(ctx, program_name, options, source, build_options, &program);
        if (status == ATTN_SUCCESS && cached)
            attn_binary_cache_store(ctx, &entry, program);
    }
    free(build_options);
    free(source);
    if (status == ATTN_SUCCESS)
        *out = program;
    return status;
}

static attn_program_entry *find_entry(attn_context_t ctx, const char *program_name,
                                      const char *options) {
    for (attn_program_entry *e = ctx->programs; e; e = e->next)
        if (strcmp(e->program_name, program_name) == 0 && strcmp(e->options, options) == 0)
            return e;
    return NULL;
}

static attn_status get_entry(attn_context_t ctx, const char *program_name, const char *options,
                             attn_program_entry **out) {
    attn_program_entry *e = find_entry(ctx, program_name, options);
    if (e) {
        *out = e;
        return ATTN_SUCCESS;
    }
    e = calloc(1, sizeof *e);
    if (!e)
        return attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY, "cannot allocate a program entry");
    e->program_name = strdup(program_name);
    e->options = strdup(options);
    if (!e->program_name || !e->options) {
        entry_free(e);
        return attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY, "cannot allocate a program entry");
    }
    attn_status status = build_program(ctx, program_name, options, &e->program);
    if (status != ATTN_SUCCESS) {
        entry_free(e);
        return status;
    }
    e->next = ctx->programs;
    ctx->programs = e;
    *out = e;
    return ATTN_SUCCESS;
}

attn_status attn_get_kernel(attn_context_t ctx, const char *program_name, const char *kernel_name,
                            const char *options, cl_kernel *kernel) {
    attn_program_entry *e = NULL;
    attn_status status = get_entry(ctx, program_name, options, &e);
    if (status != ATTN_SUCCESS)
        return status;
    for (int i = 0; i < e->kernel_count; i++)
        if (strcmp(e->kernel_names[i], kernel_name) == 0) {
            *kernel = e->kernels[i];
            return ATTN_SUCCESS;
        }
    if (e->kernel_count == MAX_KERNELS_PER_PROGRAM)
        return attn_fail(ctx, ATTN_ERR_UNSUPPORTED, "program %s has more than %d kernels",
                         program_name, MAX_KERNELS_PER_PROGRAM);
    char *name = strdup(kernel_name);
    if (!name)
        return attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY, "cannot copy a kernel name");
    cl_int err;
    cl_kernel k = clCreateKernel(e->program, kernel_name, &err);
    if (err != CL_SUCCESS) {
        free(name);
        return attn_fail(ctx, (attn_status)err, "clCreateKernel(%s) in %s.cl failed: %s (%d)",
                         kernel_name, program_name, attn_cl_error_name(err), (int)err);
    }
    e->kernel_names[e->kernel_count] = name;
    e->kernels[e->kernel_count] = k;
    e->kernel_count++;
    *kernel = k;
    return ATTN_SUCCESS;
}

attn_status attn_create_kernel(attn_context_t ctx, const char *program_name,
                               const char *kernel_name, const char *options, cl_kernel *kernel) {
    attn_program_entry *e = NULL;
    attn_status status = get_entry(ctx, program_name, options, &e);
    if (status != ATTN_SUCCESS)
        return status;
    cl_int err;
    *kernel = clCreateKernel(e->program, kernel_name, &err);
    if (err != CL_SUCCESS) {
        *kernel = NULL;
        return attn_fail(ctx, (attn_status)err, "clCreateKernel(%s) in %s.cl failed: %s (%d)",
                         kernel_name, program_name, attn_cl_error_name(err), (int)err);
    }
    return ATTN_SUCCESS;
}
