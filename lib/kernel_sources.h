/* Kernel sources: embedded at build time (kernels/embed.py), or read from
 * $ATTN_CL_KERNEL_DIR for kernel development. */
#ifndef ATTN_KERNEL_SOURCES_H
#define ATTN_KERNEL_SOURCES_H

#include "attn_internal.h"

typedef struct attn_embedded_kernel {
    const char *name; /* file name without ".cl" */
    const char *source;
} attn_embedded_kernel;

extern const attn_embedded_kernel attn_embedded_kernels[];
extern const size_t attn_embedded_kernel_count;

/* The full source of a program: common.cl, the file it shares with another
 * program where it has one (kernel_sources.c's table), then <program_name>.cl.
 * *source is malloc'ed; the caller frees it. */
attn_status attn_kernel_source(attn_context_t ctx, const char *program_name, char **source);

#endif
