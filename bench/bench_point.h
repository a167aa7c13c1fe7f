/* One point of the sweep: its parameters (the options' variants applied),
 * its inputs in host memory and on the device, and the reference output
 * when it is wanted. */
#ifndef BENCH_POINT_H
#define BENCH_POINT_H

#include "attn_cl.h"
#include "bench_args.h"
#include "bench_work.h"

#include <stddef.h>
#include <stdint.h>

typedef struct bench_point {
    attn_params params;                        /* algo AUTO; heads_kv and head_dim_v resolved */
    size_t q_elems, k_elems, v_elems, o_elems; /* of the storage type */
    size_t bias_elems, keep_elems;
    void *q, *k, *v;                                    /* in the storage type */
    float *bias;                                        /* --bias */
    uint8_t *keep_mask;                                 /* --keep-mask */
    int32_t *key_lengths, *cu_seqlens_q, *cu_seqlens_k; /* --key-padding, --varlen */
    float *alibi_slopes;                                /* --alibi */
    bench_lengths lengths;                              /* the above, for the work count */
    double flops;
    float *ref_o;  /* the reference's O as float; NULL when it did not run */
    void *dev_o;   /* the device's O read back, storage type */
    double ref_ms; /* < 0: no reference */
    cl_mem q_buf, k_buf, v_buf, o_buf, bias_buf, keep_buf;
    char label[64]; /* "[3/7] 512x512" for progress lines */
} bench_point;

/* pt's parameters for length (seq_q, seq_k), shape and variants from `opt`,
 * and the per-batch and per-head arrays they ask for (varlen totals
 * included): everything attn_check needs. pt->label must be set. Returns 0,
 * or -1 after a note on stderr. */
int bench_point_params(const bench_options *opt, int32_t seq_q, int32_t seq_k, bench_point *pt);

/* Fills pt (whose params are made): host inputs and device buffers.
 * Returns 0, or -1 after a note on stderr. */
int bench_point_setup(const bench_options *opt, cl_context cl_ctx, bench_point *pt);

/* The device tensors of pt for attn_forward_device. */
attn_device_tensors bench_point_tensors(const bench_point *pt);

/* The reference's O, timed once, when opt asks for it and the work is small
 * enough: fills pt->ref_o and pt->ref_ms (left NULL and -1 otherwise). */
void bench_point_reference(const bench_options *opt, bench_point *pt);

/* max |device O - reference O| after reading O back; NaN when any differs
 * by NaN. Returns 0, or -1 when reading fails. */
int bench_point_error(cl_command_queue queue, bench_point *pt, double *max_abs_err);

void bench_point_release(bench_point *pt);

/* Bytes of one element of the storage type. */
size_t bench_dtype_size(attn_dtype dtype);

#endif
