/* attn_bench's command line: the options, their defaults and --help. */
#ifndef BENCH_ARGS_H
#define BENCH_ARGS_H

#include "attn_cl.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* A doubling sweep from 1 to 2^30 has 31 points; a list may be longer. */
#define BENCH_MAX_POINTS 256

typedef struct bench_options {
    int32_t seqs[BENCH_MAX_POINTS]; /* the swept lengths */
    size_t num_seqs;
    int32_t fixed_seq_q; /* > 0: seq_q stays this and the sweep varies seq_k */
    int32_t fixed_seq_k; /* > 0: seq_k stays this and the sweep varies seq_q */
    int32_t batch, heads_q, heads_kv, head_dim, head_dim_v;
    attn_mask mask;
    /* Variants (attn_cl.h); see --help for what each generates. */
    attn_dtype dtype;
    int bshd; /* --layout bshd: Q, K, V, O as [batch, seq, heads, dim] */
    attn_window window;
    float softcap;
    float dropout; /* dropout_p; 0: off */
    int alibi, bias, keep_mask, key_padding, varlen;
    attn_algo algos[2]; /* requested: AUTO alone, or each concrete algorithm */
    size_t num_algos;
    int32_t platform_index, device_index; /* -1: the library's own choice */
    int repeats, warmup;
    double max_point_seconds; /* timed runs of one point stop early past this */
    int reference;            /* 0: never run the CPU reference */
    double ref_max_gflop;     /* run the reference only up to this much work */
    int32_t ref_max_seq;      /* > 0: instead, only while seq_q, seq_k <= this */
    uint64_t seed;
    int csv, list_devices, help;
    int first_forward; /* time a new context's first forward, kernel cache off/empty/warm */
    int overhead;      /* --overhead: the per-call host cost table instead of the sweep */
    int kvcache;       /* --kvcache: decoding steps over a KV cache (bench_kvcache.c) */
    attn_kv_dtype kv_dtype; /* --kv-dtype: the cache's storage (default Q's) */
    int host;          /* --host: time attn_plan_execute_host rather than the device call */
    int probs;         /* --probs (and --probs-*): host executes returning probabilities */
    int32_t probs_heads[2], probs_rows[2]; /* [A, B); negative: from the end */
    int backward;      /* --backward: the backward against the forward (bench_backward.c) */
} bench_options;

/* Parses argv into `opt`. Returns 0, or 2 after printing what is wrong to
 * stderr (the exit status for bad usage). */
int bench_parse_args(int argc, char **argv, bench_options *opt);

void bench_print_help(FILE *out, const char *program);

/* "none", "top-left", "bottom-right": the words --causal and the CSV use. */
const char *bench_mask_name(attn_mask mask);
/* "f32", "f16", "bf16": the words --dtype and the CSV use. */
const char *bench_dtype_name(attn_dtype dtype);
/* "auto", "three-kernel", "fused". */
const char *bench_algo_name(attn_algo algo);

#endif
