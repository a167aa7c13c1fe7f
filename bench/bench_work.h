/* How much work one attention forward is, so that every tool that reports
 * GFLOP/s (attn_bench, peers.py) counts it the same way. */
#ifndef BENCH_WORK_H
#define BENCH_WORK_H

#include "attn_cl.h"

#include <stdint.h>

/* Query-key pairs that the mask leaves visible in one head. */
uint64_t bench_visible_pairs(int32_t seq_q, int32_t seq_k, attn_mask mask);

/* 2 · batch · heads_q · visible pairs · (head_dim + head_dim_v): one
 * multiply-add per element of Q·Kᵀ and of P·V. The softmax is not counted.
 * `params` has heads_kv and head_dim_v resolved (non-zero). */
double bench_flops(const attn_params *params);

#endif
