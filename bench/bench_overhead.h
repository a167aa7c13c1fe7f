/* attn_bench --overhead: the host cost of one call, with and without a
 * reused plan, on a tiny problem and a decode shape. */
#ifndef BENCH_OVERHEAD_H
#define BENCH_OVERHEAD_H

#include "attn_cl.h"

#include <stdio.h>

/* Prints a Markdown table to `out`, one row per shape and call; notes go to
 * stderr. Returns 0 when every shape was measured, 1 otherwise. */
int bench_overhead_run(attn_context_t ctx, cl_context cl_ctx, FILE *out);

#endif
