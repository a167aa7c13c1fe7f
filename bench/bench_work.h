/* How much work one attention forward is, so that every tool that reports
 * GFLOP/s (attn_bench, peers.py) counts it the same way. */
#ifndef BENCH_WORK_H
#define BENCH_WORK_H

#include "attn_cl.h"

#include <stdint.h>

/* Query-key pairs that the mask leaves visible in one head. */
uint64_t bench_visible_pairs(int32_t seq_q, int32_t seq_k, attn_mask mask);

/* The per-batch lengths a forward may have (NULL when params do not ask for
 * them): key padding, and the varlen prefix sums. */
typedef struct bench_lengths {
    const int32_t *key_lengths, *cu_seqlens_q, *cu_seqlens_k;
} bench_lengths;

/* Query-key pairs one head of sequence b computes: those the causal mask,
 * the window, the key padding and the sequence's lengths leave visible. A
 * keep-mask or a -inf bias hides pairs the kernels still compute: they count. */
uint64_t bench_sequence_pairs(const attn_params *params, const bench_lengths *lengths, int32_t b);

/* 2 · heads_q · Σ_b pairs(b) · (head_dim + head_dim_v): one multiply-add per
 * element of Q·Kᵀ and of P·V. The softmax is not counted. `params` has
 * heads_kv and head_dim_v resolved (non-zero); `lengths` may be NULL when
 * params need none. */
double bench_flops(const attn_params *params, const bench_lengths *lengths);

#endif
