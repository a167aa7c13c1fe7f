/* attn_bench --backward: the backward pass timed next to the forward of the
 * same shape, in the same run. */
#ifndef BENCH_BACKWARD_H
#define BENCH_BACKWARD_H

#include "attn_cl.h"
#include "bench_args.h"

#include <stdio.h>

/* For each length of opt's sweep (seq_q = seq_k): one plan made with
 * ATTN_PLAN_LSE | ATTN_PLAN_BACKWARD on device buffers (f32 or opt's dtype,
 * --mask applies), the forward's and the backward's median ms over
 * --repeats, their GFLOP/s (the backward counted as 2.5 forwards, as
 * FlashAttention counts it) and backward / forward. Markdown to `out`, or
 * CSV with --csv. Returns 0 when every row was measured. */
int bench_backward_run(const bench_options *opt, attn_context_t ctx, cl_context cl, FILE *out);

#endif
