/* attn_bench --kvcache: decoding steps over a KV cache against the
 * bandwidth roof of the same device, measured in the same run. */
#ifndef BENCH_KVCACHE_H
#define BENCH_KVCACHE_H

#include "attn_cl.h"
#include "bench_args.h"

#include <stdio.h>

/* For each length of opt's sweep (the cache length, seq_q 1): one row per
 * cache layout (contiguous, pages of 16, 256 and 1) with the step's median
 * ms, tokens/s, the K and V bytes it reads, their effective bandwidth and the
 * roof's. Markdown to `out`, notes to stderr. Returns 0 when every row was
 * measured. */
int bench_kvcache_run(const bench_options *opt, attn_context_t ctx, cl_context cl, FILE *out);

#endif
