#include "bench_point.h"

#include "bench_data.h"
#include "bench_report.h"
#include "bench_time.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t bench_dtype_size(attn_dtype dtype) {
    return dtype == ATTN_DTYPE_F32 ? sizeof(float) : sizeof(uint16_t);
}

static int make_metadata(const bench_options *opt, bench_point *pt);

int bench_point_params(const bench_options *opt, int32_t seq_q, int32_t seq_k, bench_point *pt) {
    attn_params *p = &pt->params;
    attn_params_init(p, opt->batch, opt->heads_q, seq_q, seq_k, opt->head_dim);
    p->heads_kv = opt->heads_kv;
    p->head_dim_v = opt->head_dim_v;
    p->mask = opt->mask;
    p->dtype = opt->dtype;
    p->window = opt->window;
    p->softcap = opt->softcap;
    p->dropout_p = opt->dropout;
    p->dropout_seed = opt->seed;
    p->alibi = opt->alibi;
    p->key_padding = opt->key_padding;
    p->varlen = opt->varlen;
    /* A bias per head shared by the batch (relative-position style); a mask
     * per batch shared by the heads (padding or document style). */
    if (opt->bias) {
        p->bias = (attn_score_operand){1, 1, opt->heads_q, {0, 0, 0}};
    }
    if (opt->keep_mask) {
        p->keep_mask = (attn_score_operand){1, opt->batch, 1, {0, 0, 0}};
    }
    if (make_metadata(opt, pt) != 0) {
        bench_note("%s: skipped: out of host memory (or int32 totals) for the lengths", pt->label);
        return -1;
    }
    if (p->varlen) {
        bench_note("%s: varlen: %d sequences, %d queries and %d keys in all", pt->label,
                   (int)p->batch, (int)p->total_q, (int)p->total_k);
    }
    return 0;
}

/* A length from ceil(max / 2) to max, from `state`. */
static int32_t draw_length(int32_t max, uint64_t *state) {
    float unit;
    bench_fill_random(&unit, 1, state); /* [-1, 1) */
    const int32_t low = (max + 1) / 2;
    int32_t len = low + (int32_t)((unit + 1.0f) * 0.5f * (float)(max - low + 1));
    return len > max ? max : len;
}

/* The per-batch and per-head arrays the options ask for; 0 or -1. */
static int make_metadata(const bench_options *opt, bench_point *pt) {
    attn_params *p = &pt->params;
    const size_t batch = (size_t)p->batch;
    uint64_t state = opt->seed ^ 0x6a09e667f3bcc909ull; /* apart from the tensors' stream */
    if (p->varlen) {
        pt->cu_seqlens_q = calloc(batch + 1, sizeof(int32_t));
        pt->cu_seqlens_k = calloc(batch + 1, sizeof(int32_t));
        if (!pt->cu_seqlens_q || !pt->cu_seqlens_k) {
            return -1;
        }
        for (size_t b = 0; b < batch; b++) {
            const int64_t q = pt->cu_seqlens_q[b] + (int64_t)draw_length(p->seq_q, &state);
            const int64_t k = pt->cu_seqlens_k[b] + (int64_t)draw_length(p->seq_k, &state);
            if (q > INT32_MAX || k > INT32_MAX) {
                return -1;
            }
            pt->cu_seqlens_q[b + 1] = (int32_t)q;
            pt->cu_seqlens_k[b + 1] = (int32_t)k;
        }
        p->total_q = pt->cu_seqlens_q[batch];
        p->total_k = pt->cu_seqlens_k[batch];
    }
    if (p->key_padding) {
        pt->key_lengths = calloc(batch, sizeof(int32_t));
        if (!pt->key_lengths) {
            return -1;
        }
        for (size_t b = 0; b < batch; b++) {
            pt->key_lengths[b] = draw_length(p->seq_k, &state);
        }
    }
    if (p->alibi) {
        pt->alibi_slopes = calloc((size_t)p->heads_q, sizeof(float));
        if (!pt->alibi_slopes) {
            return -1;
        }
        for (int32_t h = 0; h < p->heads_q; h++) {
            pt->alibi_slopes[h] = exp2f(-8.0f * (float)(h + 1) / (float)p->heads_q);
        }
    }
    pt->lengths = (bench_lengths){pt->key_lengths, pt->cu_seqlens_q, pt->cu_seqlens_k};
    return 0;
}

/* BSHD strides of a tensor of `rows` rows per head. */
static attn_strides bshd(int64_t rows, int64_t heads, int64_t dim) {
    return (attn_strides){rows * heads * dim, dim, heads * dim};
}

/* n random values in [-1, 1), stored in the point's storage type. */
static void *random_storage(attn_dtype dtype, size_t n, uint64_t *state) {
    float *values = malloc(n * sizeof(float));
    void *stored = malloc(n * bench_dtype_size(dtype));
    if (!values || !stored) {
        free(values);
        free(stored);
        return NULL;
    }
    bench_fill_random(values, n, state);
    if (dtype == ATTN_DTYPE_F16) {
        attn_f32_to_f16(values, stored, n);
    } else if (dtype == ATTN_DTYPE_BF16) {
        attn_f32_to_bf16(values, stored, n);
    } else {
        memcpy(stored, values, n * sizeof(float));
    }
    free(values);
    return stored;
}

static cl_mem upload(cl_context cl_ctx, const void *host, size_t bytes, cl_int *err) {
    if (*err != CL_SUCCESS) {
        return NULL;
    }
    return clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, bytes, (void *)host,
                          err);
}

int bench_point_setup(const bench_options *opt, cl_context cl_ctx, bench_point *pt) {
    attn_params *p = &pt->params;
    pt->ref_ms = -1.0;
    /* Packed sequences are one batch of the totals. */
    const int64_t batch = p->varlen ? 1 : p->batch;
    const int64_t rows_q = p->varlen ? p->total_q : p->seq_q;
    const int64_t rows_k = p->varlen ? p->total_k : p->seq_k;
    if (opt->bshd) {
        p->q_strides = bshd(rows_q, p->heads_q, p->head_dim);
        p->k_strides = bshd(rows_k, p->heads_kv, p->head_dim);
        p->v_strides = bshd(rows_k, p->heads_kv, p->head_dim_v);
        p->o_strides = bshd(rows_q, p->heads_q, p->head_dim_v);
    }
    pt->q_elems = bench_elements(batch, p->heads_q, rows_q, p->head_dim);
    pt->k_elems = bench_elements(batch, p->heads_kv, rows_k, p->head_dim);
    pt->v_elems = bench_elements(batch, p->heads_kv, rows_k, p->head_dim_v);
    pt->o_elems = bench_elements(batch, p->heads_q, rows_q, p->head_dim_v);
    pt->bias_elems = p->bias.present ? bench_elements(1, p->heads_q, p->seq_q, p->seq_k) : 1;
    pt->keep_elems = p->keep_mask.present ? bench_elements(p->batch, 1, p->seq_q, p->seq_k) : 1;
    if (!pt->q_elems || !pt->k_elems || !pt->v_elems || !pt->o_elems || !pt->bias_elems ||
        !pt->keep_elems) {
        bench_note("%s: skipped: the tensors do not fit this machine's address space", pt->label);
        return -1;
    }
    pt->flops = bench_flops(p, &pt->lengths);

    /* The same seed for every point: a length's inputs do not depend on
     * which other lengths the sweep holds. */
    uint64_t state = opt->seed;
    const size_t es = bench_dtype_size(p->dtype);
    pt->q = random_storage(p->dtype, pt->q_elems, &state);
    pt->k = random_storage(p->dtype, pt->k_elems, &state);
    pt->v = random_storage(p->dtype, pt->v_elems, &state);
    pt->dev_o = malloc(pt->o_elems * es);
    int ok = pt->q && pt->k && pt->v && pt->dev_o;
    if (ok && p->bias.present) {
        pt->bias = random_storage(ATTN_DTYPE_F32, pt->bias_elems, &state);
        ok = pt->bias != NULL;
    }
    if (ok && p->keep_mask.present) {
        pt->keep_mask = malloc(pt->keep_elems);
        float *u = malloc(pt->keep_elems * sizeof(float));
        ok = pt->keep_mask && u;
        if (ok) {
            bench_fill_random(u, pt->keep_elems, &state);
            for (size_t e = 0; e < pt->keep_elems; e++) {
                pt->keep_mask[e] = u[e] < 0.8f; /* [-1, 1): 90% */
            }
        }
        free(u);
    }
    if (!ok) {
        bench_note("%s: skipped: out of host memory for the inputs", pt->label);
        return -1;
    }

    cl_int err = CL_SUCCESS;
    pt->q_buf = upload(cl_ctx, pt->q, pt->q_elems * es, &err);
    pt->k_buf = upload(cl_ctx, pt->k, pt->k_elems * es, &err);
    pt->v_buf = upload(cl_ctx, pt->v, pt->v_elems * es, &err);
    if (p->bias.present) {
        pt->bias_buf = upload(cl_ctx, pt->bias, pt->bias_elems * sizeof(float), &err);
    }
    if (p->keep_mask.present) {
        pt->keep_buf = upload(cl_ctx, pt->keep_mask, pt->keep_elems, &err);
    }
    if (err == CL_SUCCESS) {
        pt->o_buf = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, pt->o_elems * es, NULL, &err);
    }
    if (err != CL_SUCCESS) {
        bench_note("%s: skipped: cannot create the device buffers (%.1f MiB): %s", pt->label,
                   (double)(pt->q_elems + pt->k_elems + pt->v_elems + pt->o_elems) * (double)es /
                       1048576.0,
                   attn_status_name((attn_status)err));
        return -1;
    }
    return 0;
}

attn_device_tensors bench_point_tensors(const bench_point *pt) {
    attn_device_tensors t;
    memset(&t, 0, sizeof t);
    t.q = pt->q_buf;
    t.k = pt->k_buf;
    t.v = pt->v_buf;
    t.o = pt->o_buf;
    t.bias = pt->bias_buf;
    t.keep_mask = pt->keep_buf;
    t.key_lengths = pt->key_lengths;
    t.cu_seqlens_q = pt->cu_seqlens_q;
    t.cu_seqlens_k = pt->cu_seqlens_k;
    t.alibi_slopes = pt->alibi_slopes;
    return t;
}

static int reference_wanted(const bench_options *opt, const bench_point *pt) {
    const attn_params *p = &pt->params;
    if (!opt->reference) {
        return 0;
    }
    if (opt->ref_max_seq > 0) {
        return p->seq_q <= opt->ref_max_seq && p->seq_k <= opt->ref_max_seq;
    }
    return pt->flops <= opt->ref_max_gflop * 1e9;
}

/* n elements of the storage type as float. */
static void to_float(attn_dtype dtype, const void *in, float *out, size_t n) {
    if (dtype == ATTN_DTYPE_F16) {
        attn_f16_to_f32(in, out, n);
    } else if (dtype == ATTN_DTYPE_BF16) {
        attn_bf16_to_f32(in, out, n);
    } else {
        memcpy(out, in, n * sizeof(float));
    }
}

void bench_point_reference(const bench_options *opt, bench_point *pt) {
    const attn_params *p = &pt->params;
    if (!reference_wanted(opt, pt)) {
        return;
    }
    void *o = malloc(pt->o_elems * bench_dtype_size(p->dtype));
    pt->ref_o = malloc(pt->o_elems * sizeof(float));
    if (!o || !pt->ref_o) {
        bench_note("%s: no reference: out of host memory", pt->label);
        free(o);
        free(pt->ref_o);
        pt->ref_o = NULL;
        return;
    }
    bench_note("%s: CPU reference (%.2f GFLOP, one thread) ...", pt->label, pt->flops * 1e-9);
    const attn_host_tensors t = {.q = pt->q,
                                 .k = pt->k,
                                 .v = pt->v,
                                 .o = o,
                                 .bias = pt->bias,
                                 .keep_mask = pt->keep_mask,
                                 .key_lengths = pt->key_lengths,
                                 .alibi_slopes = pt->alibi_slopes,
                                 .cu_seqlens_q = pt->cu_seqlens_q,
                                 .cu_seqlens_k = pt->cu_seqlens_k};
    const double t0 = bench_now_ms();
    attn_status st = attn_reference_host(p, &t);
    const double t1 = bench_now_ms();
    if (st != ATTN_SUCCESS) {
        bench_note("%s: no reference: %s: %s", pt->label, attn_status_name(st),
                   attn_last_error(NULL));
        free(pt->ref_o);
        pt->ref_o = NULL;
    } else {
        to_float(p->dtype, o, pt->ref_o, pt->o_elems);
        pt->ref_ms = t1 - t0;
        bench_note("%s: CPU reference took %.1f ms", pt->label, pt->ref_ms);
    }
    free(o);
}

int bench_point_error(cl_command_queue queue, bench_point *pt, double *max_abs_err) {
    const attn_dtype dtype = pt->params.dtype;
    cl_int err =
        clEnqueueReadBuffer(queue, pt->o_buf, CL_TRUE, 0, pt->o_elems * bench_dtype_size(dtype),
                            pt->dev_o, 0, NULL, NULL);
    float *o = malloc(pt->o_elems * sizeof(float));
    if (err != CL_SUCCESS || !o) {
        free(o);
        return -1;
    }
    to_float(dtype, pt->dev_o, o, pt->o_elems);
    *max_abs_err = bench_max_abs_diff(o, pt->ref_o, pt->o_elems);
    free(o);
    return 0;
}

void bench_point_release(bench_point *pt) {
    cl_mem *bufs[] = {&pt->q_buf, &pt->k_buf, &pt->v_buf, &pt->o_buf, &pt->bias_buf, &pt->keep_buf};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if (*bufs[i]) {
            clReleaseMemObject(*bufs[i]);
            *bufs[i] = NULL;
        }
    }
    void *host[] = {pt->q,
                    pt->k,
                    pt->v,
                    pt->bias,
                    pt->keep_mask,
                    pt->key_lengths,
                    pt->cu_seqlens_q,
                    pt->cu_seqlens_k,
                    pt->alibi_slopes,
                    pt->ref_o,
                    pt->dev_o};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) {
        free(host[i]);
    }
    memset(pt, 0, sizeof *pt);
}
