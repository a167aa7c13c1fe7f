/* attn_bench --first-forward: a new context's first forward with the
 * on-disk kernel cache off, empty and warm (see bench_first_forward.c). */
#ifndef BENCH_FIRST_FORWARD_H
#define BENCH_FIRST_FORWARD_H

#include "attn_cl.h"
#include "bench_args.h"
#include "bench_point.h"

#include <stddef.h>

/* Measures every point and algorithm of `opt` on ctx's device and OpenCL
 * context, reporting three rows each (cache off, empty, warm). Returns the
 * points measured; adds those that failed (after a note) to *failed. */
int bench_first_forward(const bench_options *opt, attn_context_t ctx, cl_context cl_ctx,
                        const attn_device_info *info, size_t *failed);

#endif
