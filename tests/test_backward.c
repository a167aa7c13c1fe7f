/* The device backward (attn_backward_host, attn_backward_device) against
 * attn_reference_backward, over shapes that break tiling, every feature and
 * the storage types; then its determinism and its refusals.
 *
 * Bound (test_util.h's rule, as for the forward): for each gradient,
 * max|out - ref| <= 2 * max|naive - ref| + 1e-6 * max(1, max|ref|) and
 * NMSE <= 4 * NMSE(naive) + 1e-10, where ref is the double reference on the
 * stored inputs and naive the textbook backward in float written below
 * (from test_naive_fp32's probabilities: dV = P^T dO, dP = dO V^T,
 * D = dO . O, dS = P (dP - D), dQ = scale dS' K, dK = scale dS'^T Q), its
 * gradients rounded to the storage type like the library's.
 *
 * With dropout the naive backward takes the dropped, scaled weights W of
 * test_naive_fp32 for dV (W^T dO) and the mask (W != 0) for dP (scaled by
 * 1 / (1 - p)), and the un-dropped P for dS. mask_identity checks that the
 * backward's mask is the forward's: dV against W^T dO from the device
 * forward's own probabilities, and those against lib/philox.c's mask.
 *
 * The inputs O and LSE are the reference forward's (O rounded to storage).
 * Determinism: two runs, two contexts and the host and device calls give
 * the same bits for every gradient. */
#include "test_util.h"

#include "philox.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const cases[] = {
    "B1 Hq1 Hkv1 Sq1 Sk1 D1 none bhsd quick",
    "B2 Hq4 Hkv2 Sq33 Sk65 D31 none bhsd quick",
    "B2 Hq2 Hkv2 Sq65 Sk33 D16 tl bshd",
    "B1 Hq4 Hkv1 Sq17 Sk70 D8 br padded",
    "B2 Hq3 Hkv3 Sq40 Sk40 D64 none hbsd",
    "B1 Hq2 Hkv1 Sq33 Sk65 D40 Dv24 br bhsd",
    "B2 Hq4 Hkv2 Sq33 Sk65 D31 none bhsd bias=2x4",
    "B2 Hq4 Hkv2 Sq33 Sk17 D16 br padded bias=1x4",
    "B3 Hq2 Hkv1 Sq7 Sk40 D8 tl bshd bias=3x1",
    "B2 Hq2 Hkv2 Sq20 Sk30 D16 none bhsd bias=1x1",
    "B2 Hq2 Hkv2 Sq33 Sk65 D31 none bhsd keep=2x2",
    "B4 Hq2 Hkv2 Sq17 Sk40 D31 none bhsd pad",
    "B1 Hq2 Hkv2 Sq60 Sk60 D32 none bhsd win=8,8",
    "B1 Hq2 Hkv2 Sq40 Sk70 D16 br bshd win=5,0",
    "B1 Hq4 Hkv2 Sq40 Sk40 D16 tl bhsd alibi",
    "B1 Hq2 Hkv2 Sq33 Sk65 D31 tl bhsd softcap=5 qk=4",
    "B3 Hq4 Hkv2 Sq30 Sk40 D16 none bhsd varlen",
    "B3 Hq4 Hkv2 Sq30 Sk40 D16 br bshd varlen",
    "B2 Hq4 Hkv2 Sq33 Sk33 D64 none bhsd f16",
    "B1 Hq2 Hkv1 Sq30 Sk50 D32 br padded bf16",
    ("B3 Hq4 Hkv2 Sq9 Sk13 D16 br padded f16 alibi bias=3x1 keep=1x4 pad varlen win=4,1 "
     "softcap=8 quick"),
    "B2 Hq4 Hkv2 Sq25 Sk31 D24 Dv40 tl bshd bf16 softcap=10 bias=2x1 win=6,-1",
    /* Head dims to 512: 8- and 4-lane blocks. */
    "B1 Hq2 Hkv1 Sq21 Sk19 D200 Dv160 br bhsd",
    "B1 Hq2 Hkv2 Sq13 Sk17 D512 none bshd f16",
    "B1 Hq1 Hkv1 Sq9 Sk11 D320 Dv512 tl bhsd bias=1x1",
    /* Dropout, with the features and each block width (16, 8, 4 lanes). */
    "B2 Hq2 Hkv1 Sq9 Sk13 D8 br bhsd drop=0.3,7,3 quick",
    "B2 Hq4 Hkv2 Sq65 Sk33 D16 tl bshd drop=0.5,7,3",
    "B2 Hq4 Hkv2 Sq33 Sk65 D31 none bhsd bias=2x1 drop=0.2,9,18446744073709551615",
    "B3 Hq4 Hkv2 Sq30 Sk40 D16 br bshd varlen f16 drop=0.1,123,456",
    "B1 Hq2 Hkv1 Sq33 Sk50 D32 br padded bf16 keep=1x2 softcap=5 alibi win=20,5 drop=0.9",
    "B4 Hq2 Hkv2 Sq17 Sk40 D31 none bhsd pad drop=0.4,1,2",
    "B1 Hq2 Hkv1 Sq21 Sk19 D200 Dv160 br bhsd drop=0.3",
    "B1 Hq2 Hkv2 Sq13 Sk17 D512 none bshd f16 drop=0.25,5,5",
};

static int failures;

/* ---- The naive fp32 backward --------------------------------------------- */

typedef struct grads {
    float *dq, *dk, *dv, *dbias;
} grads;

/* probs: the un-dropped P; kept: the forward's weights (with dropout the
 * dropped, scaled ones; else probs). */
static void naive_backward(const test_problem *t, const float *o, const float *dout,
                           const float *probs, const float *kept, grads *g) {
    const attn_params *r = &t->r;
    const float keep_scale = 1.0f / (1.0f - r->dropout_p);
    const test_shape bias_shape = test_tensor_shape(r, TEST_BIAS);
    const int group = r->heads_q / r->heads_kv;
    for (int64_t b = 0; b < r->batch; b++) {
        int64_t q0 = 0, k0 = 0, len_q = r->seq_q, len_k = r->seq_k, bt = b;
        if (r->varlen) {
            q0 = t->x.cu_seqlens_q[b];
            k0 = t->x.cu_seqlens_k[b];
            len_q = t->x.cu_seqlens_q[b + 1] - q0;
            len_k = t->x.cu_seqlens_k[b + 1] - k0;
            bt = 0;
        }
        for (int64_t h = 0; h < r->heads_q; h++) {
            const int64_t kv = h / group;
            for (int64_t i = 0; i < len_q; i++) {
                const size_t row_at =
                    ((size_t)(b * r->heads_q + h) * (size_t)r->seq_q + (size_t)i) *
                    (size_t)r->seq_k;
                const float *prow = probs + row_at, *wrow = kept + row_at;
                const float *qi = t->q + test_element_at(&t->q_shape, bt, h, q0 + i, 0);
                const float *di = dout + test_element_at(&t->o_shape, bt, h, q0 + i, 0);
                const float *oi = o + test_element_at(&t->o_shape, bt, h, q0 + i, 0);
                float delta = 0.0f;
                for (int d = 0; d < r->head_dim_v; d++)
                    delta += di[d] * oi[d];
                float *dqi = g->dq + test_element_at(&t->q_shape, bt, h, q0 + i, 0);
                for (int64_t j = 0; j < len_k; j++) {
                    const float p = prow[j];
                    if (p == 0.0f)
                        continue;
                    const float *kj = t->k + test_element_at(&t->k_shape, bt, kv, k0 + j, 0);
                    const float *vj = t->v + test_element_at(&t->v_shape, bt, kv, k0 + j, 0);
                    float *dkj = g->dk + test_element_at(&t->k_shape, bt, kv, k0 + j, 0);
                    float *dvj = g->dv + test_element_at(&t->v_shape, bt, kv, k0 + j, 0);
                    float dp = 0.0f, raw = 0.0f;
                    for (int d = 0; d < r->head_dim_v; d++)
                        dp += di[d] * vj[d];
                    for (int d = 0; d < r->head_dim; d++)
                        raw += qi[d] * kj[d];
                    if (r->dropout_p > 0.0f)
                        dp = wrow[j] != 0.0f ? dp * keep_scale : 0.0f;
                    const float ds = p * (dp - delta);
                    float slope = 1.0f;
                    if (r->softcap > 0.0f) {
                        const float th = tanhf(raw * r->scale / r->softcap);
                        slope = 1.0f - th * th;
                    }
                    const float dx = ds * slope * r->scale;
                    for (int d = 0; d < r->head_dim_v && wrow[j] != 0.0f; d++)
                        dvj[d] += wrow[j] * di[d];
                    for (int d = 0; d < r->head_dim; d++) {
                        dqi[d] += dx * kj[d];
                        dkj[d] += dx * qi[d];
                    }
                    if (g->dbias)
                        g->dbias[test_element_at(&bias_shape, bias_shape.batch == 1 ? 0 : b,
                                                 bias_shape.heads == 1 ? 0 : h, i, j)] += ds;
                }
            }
        }
    }
}

/* Zeros over every element `s` covers (the rest keeps the sentinel). */
static void zero_rows(float *x, const test_shape *s) {
    for (int64_t b = 0; b < s->batch; b++)
        for (int64_t h = 0; h < s->heads; h++)
            for (int64_t i = 0; i < s->seq; i++)
                for (int64_t d = 0; d < s->inner; d++)
                    x[test_element_at(s, b, h, i, d)] = 0.0f;
}

/* With varlen, rows outside every sequence stay the sentinel (no one's). */
static void restore_outside_rows(float *x, const float *sentinel_src, const test_problem *t,
                                 const test_shape *s, const int32_t *cu) {
    if (!t->r.varlen)
        return;
    for (int64_t h = 0; h < s->heads; h++)
        for (int64_t i = cu[t->r.batch]; i < s->seq; i++)
            for (int64_t d = 0; d < s->inner; d++) {
                const size_t at = test_element_at(s, 0, h, i, d);
                x[at] = sentinel_src[at];
            }
}

/* ---- One case ---------------------------------------------------------------- */

typedef struct bwd_case {
    test_problem t;
    test_shape bias_shape;
    size_t bias_elems;
    float *dout;      /* rounded to storage, float */
    void *dout_store; /* storage */
    void *o_store;    /* the reference's O in storage */
    float *o_stored;  /* and back in float */
    grads ref, naive;
} bwd_case;

typedef struct device_grads {
    void *dq, *dk, *dv; /* storage */
    float *dbias;
} device_grads;

static void device_grads_free(device_grads *d) {
    free(d->dq);
    free(d->dk);
    free(d->dv);
    free(d->dbias);
    memset(d, 0, sizeof *d);
}

static int device_grads_equal(const bwd_case *c, const device_grads *a, const device_grads *b) {
    const size_t es = test_dtype_size(c->t.p.dtype);
    return memcmp(a->dq, b->dq, c->t.q_elems * es) == 0 &&
           memcmp(a->dk, b->dk, c->t.k_elems * es) == 0 &&
           memcmp(a->dv, b->dv, c->t.v_elems * es) == 0 &&
           (!a->dbias || memcmp(a->dbias, b->dbias, c->bias_elems * sizeof(float)) == 0);
}

static float *sentinel_floats(size_t n) {
    return test_alloc_sentinel((n ? n : 1) * sizeof(float));
}

static int case_init(bwd_case *c, const char *text, uint64_t seed, int poison_hidden_keys,
                     int *quick_out) {
    memset(c, 0, sizeof *c);
    attn_params p;
    test_layout layout;
    float qk;
    int quick;
    if (!test_parse_case(text, &p, &layout, &qk, &quick))
        return -1;
    *quick_out = quick;
    if (test_quick() && !quick)
        return 1;
    if (p.varlen)
        test_varlen_totals(&p, seed);
    test_set_layout(&p, layout);
    p.algo = ATTN_ALGO_AUTO;
    if (test_problem_init(&c->t, &p, seed, qk, 1, 0) != 0)
        return -1;
    test_problem *t = &c->t;
    if (poison_hidden_keys) {
        /* NaN and infinity in K and V rows of keys no query sees (top-left
         * causal, seq_k > seq_q: keys seq_q.. of every head): like the
         * forward's O, no gradient may see them. */
        for (int64_t b = 0; b < t->k_shape.batch; b++)
            for (int64_t h = 0; h < t->k_shape.heads; h++)
                for (int64_t j = t->r.seq_q; j < t->k_shape.seq; j++) {
                    t->k[test_element_at(&t->k_shape, b, h, j, 0)] = NAN;
                    t->v[test_element_at(&t->v_shape, b, h, j, 0)] = INFINITY;
                }
        free(t->k_store);
        free(t->v_store);
        t->k_store = test_to_storage(t->p.dtype, t->k, t->k_elems);
        t->v_store = test_to_storage(t->p.dtype, t->v, t->v_elems);
        if (test_problem_compute_outputs(t) != 0)
            return -1;
    }
    const attn_dtype dtype = t->p.dtype;
    c->bias_shape = test_tensor_shape(&t->r, TEST_BIAS);
    c->bias_elems = t->x.bias ? t->x.bias_elems : 0;
    test_rng rng;
    test_rng_seed(&rng, seed * 13 + 5);
    c->dout = malloc(t->o_elems * sizeof(float));
    test_fill_uniform(&rng, c->dout, t->o_elems, -1.0f, 1.0f);
    test_round_to_storage(dtype, c->dout, t->o_elems);
    c->dout_store = test_to_storage(dtype, c->dout, t->o_elems);
    c->o_store = test_to_storage(dtype, t->ref_o, t->o_elems);
    c->o_stored = malloc(t->o_elems * sizeof(float));
    test_from_storage(dtype, c->o_store, c->o_stored, t->o_elems);

    /* The reference: double, on the stored values, unrounded (f32 out). */
    c->ref =
        (grads){sentinel_floats(t->q_elems), sentinel_floats(t->k_elems),
                sentinel_floats(t->v_elems), t->x.bias ? sentinel_floats(c->bias_elems) : NULL};
    attn_params f32 = t->p;
    f32.dtype = ATTN_DTYPE_F32;
    attn_backward_host_tensors rt = {.q = t->q,
                                     .k = t->k,
                                     .v = t->v,
                                     .dout = c->dout,
                                     .dq = c->ref.dq,
                                     .dk = c->ref.dk,
                                     .dv = c->ref.dv,
                                     .dbias = c->ref.dbias,
                                     .bias = t->x.bias,
                                     .keep_mask = t->x.keep_mask,
                                     .key_lengths = t->x.key_lengths,
                                     .alibi_slopes = t->x.alibi_slopes,
                                     .cu_seqlens_q = t->x.cu_seqlens_q,
                                     .cu_seqlens_k = t->x.cu_seqlens_k};
    attn_status st = attn_reference_backward(&f32, &rt);
    if (st != ATTN_SUCCESS) {
        printf("%s  attn_reference_backward: %s %s\n", text, attn_status_name(st),
               attn_last_error(NULL));
        return -1;
    }

    /* The naive fp32 backward, from naive_fp32's probabilities. */
    const size_t probs_elems =
        (size_t)t->r.batch * (size_t)t->r.heads_q * (size_t)t->r.seq_q * (size_t)t->r.seq_k;
    float *probs = calloc(probs_elems, sizeof(float));
    float *kept = calloc(probs_elems, sizeof(float));
    float *o = malloc(t->o_elems * sizeof(float));
    attn_params undropped = t->r;
    undropped.dropout_p = 0.0f;
    test_naive_fp32(&undropped, t->q, t->k, t->v, &t->x, o, NULL, probs);
    test_naive_fp32(&t->r, t->q, t->k, t->v, &t->x, o, NULL, kept);
    c->naive =
        (grads){sentinel_floats(t->q_elems), sentinel_floats(t->k_elems),
                sentinel_floats(t->v_elems), t->x.bias ? sentinel_floats(c->bias_elems) : NULL};
    zero_rows(c->naive.dq, &t->q_shape);
    zero_rows(c->naive.dk, &t->k_shape);
    zero_rows(c->naive.dv, &t->v_shape);
    if (c->naive.dbias)
        zero_rows(c->naive.dbias, &c->bias_shape);
    naive_backward(t, c->o_stored, c->dout, probs, kept, &c->naive);
    restore_outside_rows(c->naive.dq, c->ref.dq, t, &t->q_shape, t->x.cu_seqlens_q);
    restore_outside_rows(c->naive.dk, c->ref.dk, t, &t->k_shape, t->x.cu_seqlens_k);
    restore_outside_rows(c->naive.dv, c->ref.dv, t, &t->v_shape, t->x.cu_seqlens_k);
    test_round_to_storage(dtype, c->naive.dq, t->q_elems);
    test_round_to_storage(dtype, c->naive.dk, t->k_elems);
    test_round_to_storage(dtype, c->naive.dv, t->v_elems);
    free(probs);
    free(kept);
    free(o);
    return 0;
}

static void case_free(bwd_case *c) {
    free(c->dout);
    free(c->dout_store);
    free(c->o_store);
    free(c->o_stored);
    grads *g[2] = {&c->ref, &c->naive};
    for (int i = 0; i < 2; i++) {
        free(g[i]->dq);
        free(g[i]->dk);
        free(g[i]->dv);
        free(g[i]->dbias);
    }
    test_problem_free(&c->t);
}

static attn_backward_host_tensors host_tensors(const bwd_case *c, device_grads *out) {
    const test_problem *t = &c->t;
    return (attn_backward_host_tensors){.q = t->q_store,
                                        .k = t->k_store,
                                        .v = t->v_store,
                                        .o = c->o_store,
                                        .dout = c->dout_store,
                                        .lse = t->ref_lse,
                                        .dq = out->dq,
                                        .dk = out->dk,
                                        .dv = out->dv,
                                        .dbias = out->dbias,
                                        .bias = t->x.bias,
                                        .keep_mask = t->x.keep_mask,
                                        .key_lengths = t->x.key_lengths,
                                        .alibi_slopes = t->x.alibi_slopes,
                                        .cu_seqlens_q = t->x.cu_seqlens_q,
                                        .cu_seqlens_k = t->x.cu_seqlens_k};
}

static void device_grads_alloc(const bwd_case *c, device_grads *d) {
    const size_t es = test_dtype_size(c->t.p.dtype);
    d->dq = test_alloc_sentinel(c->t.q_elems * es);
    d->dk = test_alloc_sentinel(c->t.k_elems * es);
    d->dv = test_alloc_sentinel(c->t.v_elems * es);
    d->dbias = c->t.x.bias ? sentinel_floats(c->bias_elems) : NULL;
}

static cl_mem upload(cl_context context, const void *host, size_t bytes, cl_int *err) {
    if (!host)
        return NULL;
    return clCreateBuffer(context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes,
                          (void *)(uintptr_t)host, err);
}

/* attn_backward_device on buffers of the context (outputs sentinel-filled),
 * read back into `d`. */
static attn_status run_device(attn_context_t ctx, attn_plan_t plan, const bwd_case *c,
                              device_grads *d, char *why, size_t why_size) {
    const test_problem *t = &c->t;
    cl_command_queue queue = attn_context_queue(ctx);
    cl_context context = NULL;
    cl_int err = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof context, &context, NULL);
    const size_t es = test_dtype_size(t->p.dtype);
    enum { Q, K, V, O, DOUT, LSE, BIAS, KEEP, DQ, DK, DV, DBIAS, N };
    const void *hosts[N] = {t->q_store,    t->k_store, t->v_store, c->o_store,
                            c->dout_store, t->ref_lse, t->x.bias,  t->x.keep_mask,
                            d->dq,         d->dk,      d->dv,      d->dbias};
    const size_t bytes[N] = {t->q_elems * es,   t->k_elems * es,      t->v_elems * es,
                             t->o_elems * es,   t->o_elems * es,      t->lse_elems * sizeof(float),
                             c->bias_elems * 4, t->x.keep_mask_elems, t->q_elems * es,
                             t->k_elems * es,   t->v_elems * es,      c->bias_elems * 4};
    cl_mem m[N] = {0};
    for (int i = 0; i < N && err == CL_SUCCESS; i++)
        m[i] = upload(context, hosts[i], bytes[i], &err);
    attn_status st = (attn_status)err;
    if (err == CL_SUCCESS) {
        attn_backward_device_tensors dt = {.q = m[Q],
                                           .k = m[K],
                                           .v = m[V],
                                           .o = m[O],
                                           .dout = m[DOUT],
                                           .lse = m[LSE],
                                           .dq = m[DQ],
                                           .dk = m[DK],
                                           .dv = m[DV],
                                           .dbias = m[DBIAS],
                                           .bias = m[BIAS],
                                           .keep_mask = m[KEEP],
                                           .key_lengths = t->x.key_lengths,
                                           .alibi_slopes = t->x.alibi_slopes,
                                           .cu_seqlens_q = t->x.cu_seqlens_q,
                                           .cu_seqlens_k = t->x.cu_seqlens_k};
        cl_event done = NULL;
        st = plan ? attn_plan_execute_backward_device(plan, &dt, 0, NULL, &done)
                  : attn_backward_device(ctx, &t->p, &dt, 0, NULL, &done);
        if (st != ATTN_SUCCESS) {
            snprintf(why, why_size, "attn_backward_device: %s: %s", attn_status_name(st),
                     attn_last_error(ctx));
        } else {
            err = clWaitForEvents(1, &done);
            clReleaseEvent(done);
            void *outs[4] = {d->dq, d->dk, d->dv, d->dbias};
            for (int i = 0; i < 4 && err == CL_SUCCESS; i++)
                if (outs[i])
                    err = clEnqueueReadBuffer(queue, m[DQ + i], CL_TRUE, 0, bytes[DQ + i], outs[i],
                                              0, NULL, NULL);
            st = (attn_status)err;
        }
    } else {
        snprintf(why, why_size, "setting up device buffers: %d", (int)err);
    }
    for (int i = 0; i < N; i++)
        if (m[i])
            clReleaseMemObject(m[i]);
    return st;
}

/* One backward through the host (device 0) or device call, one-call or
 * through `plan` when not NULL. */
static attn_status run_call(attn_context_t ctx, attn_plan_t plan, const bwd_case *c, int device,
                            device_grads *d, char *why, size_t why_size) {
    device_grads_alloc(c, d);
    if (device)
        return run_device(ctx, plan, c, d, why, why_size);
    attn_backward_host_tensors ht = host_tensors(c, d);
    attn_status st =
        plan ? attn_plan_execute_backward_host(plan, &ht) : attn_backward_host(ctx, &c->t.p, &ht);
    if (st != ATTN_SUCCESS)
        snprintf(why, why_size, "attn_backward_host: %s: %s", attn_status_name(st),
                 attn_last_error(ctx));
    return st;
}

/* Each gradient against the reference; appends verdicts to `line`. */
static int check_grads(const bwd_case *c, const device_grads *d, char *line, size_t size) {
    const test_problem *t = &c->t;
    const attn_dtype dtype = t->p.dtype;
    /* naive and the reference agree within fp32 error plus one rounding to
     * the storage type. */
    const double naive_rtol = dtype == ATTN_DTYPE_F32   ? 1e-3
                              : dtype == ATTN_DTYPE_F16 ? 2e-3
                                                        : 1.6e-2;
    const void *outs[3] = {d->dq, d->dk, d->dv};
    const float *refs[3] = {c->ref.dq, c->ref.dk, c->ref.dv};
    const float *naives[3] = {c->naive.dq, c->naive.dk, c->naive.dv};
    const test_shape *shapes[3] = {&t->q_shape, &t->k_shape, &t->v_shape};
    const size_t elems[3] = {t->q_elems, t->k_elems, t->v_elems};
    const char *names[3] = {"dQ", "dK", "dV"};
    int ok = 1;
    for (int g = 0; g < 4; g++) {
        test_result r;
        if (g < 3) {
            float *out = malloc(elems[g] * sizeof(float));
            test_from_storage(dtype, outs[g], out, elems[g]);
            r = test_compare_rtol(shapes[g], out, refs[g], naives[g], 0, naive_rtol);
            /* gaps, byte for byte in the storage type */
            free(out);
        } else {
            if (!d->dbias)
                break;
            r = test_compare_rtol(&c->bias_shape, d->dbias, c->ref.dbias, c->naive.dbias,
                                  c->bias_elems, 2e-3);
        }
        char buf[160];
        test_format_result(buf, sizeof buf, g < 3 ? names[g] : "dBias", &r);
        const size_t used = strlen(line);
        snprintf(line + used, size - used, "%s%s", used ? "; " : "", buf);
        ok &= r.ok;
    }
    return ok;
}

static int stored_gaps_intact(const bwd_case *c, const device_grads *d) {
    /* Every element the reference left at the sentinel (gaps, rows of no
     * sequence) must still be the sentinel in the library's output. */
    const test_problem *t = &c->t;
    const size_t es = test_dtype_size(t->p.dtype);
    const void *outs[3] = {d->dq, d->dk, d->dv};
    const float *refs[3] = {c->ref.dq, c->ref.dk, c->ref.dv};
    const size_t elems[3] = {t->q_elems, t->k_elems, t->v_elems};
    for (int g = 0; g < 3; g++)
        for (size_t e = 0; e < elems[g]; e++)
            if (test_is_sentinel(&refs[g][e], sizeof(float)) &&
                !test_is_sentinel((const unsigned char *)outs[g] + e * es, es))
                return 0;
    return 1;
}

static void run_case(attn_context_t ctx, attn_context_t ctx2, const char *text, uint64_t seed,
                     int poison) {
    bwd_case c;
    int quick = 0;
    const int init = case_init(&c, text, seed, poison, &quick);
    if (init == 1)
        return;
    if (init != 0) {
        printf("%s  FAIL (setup)\n", text);
        failures++;
        if (c.t.q)
            case_free(&c);
        return;
    }
    printf("%s%s\n", text, c.t.x.bias ? " +dbias" : "");
    device_grads runs[2];
    int have[2] = {0, 0};
    for (int call = 0; call < 2; call++) {
        char line[1024] = "", why[512] = "";
        const double start = test_seconds();
        attn_status st = run_call(ctx, NULL, &c, call, &runs[call], why, sizeof why);
        const double ms = 1e3 * (test_seconds() - start);
        int ok = st == ATTN_SUCCESS;
        if (ok) {
            ok = check_grads(&c, &runs[call], line, sizeof line);
            if (!stored_gaps_intact(&c, &runs[call])) {
                ok = 0;
                strncat(line, "; a gap or a row of no sequence was written",
                        sizeof line - strlen(line) - 1);
            }
            have[call] = 1;
        }
        printf("  %-6s %7.1f ms  %s  %s\n", call ? "device" : "host", ms,
               st == ATTN_SUCCESS ? line : why, ok ? "PASS" : "FAIL");
        failures += !ok;
    }
    /* Bits: host vs device call, a second run, another context. */
    if (have[0] && have[1]) {
        device_grads again, other;
        char why[512] = "";
        int same = device_grads_equal(&c, &runs[0], &runs[1]);
        attn_status st = run_call(ctx, NULL, &c, 1, &again, why, sizeof why);
        same &= st == ATTN_SUCCESS && device_grads_equal(&c, &runs[1], &again);
        st = run_call(ctx2, NULL, &c, 0, &other, why, sizeof why);
        same &= st == ATTN_SUCCESS && device_grads_equal(&c, &runs[0], &other);
        /* A plan: two host executes (the second on kept buffers), one device. */
        attn_plan_t plan = NULL;
        st = attn_plan_create(ctx, &c.t.p, ATTN_PLAN_LSE | ATTN_PLAN_BACKWARD, &plan);
        same &= st == ATTN_SUCCESS;
        for (int e = 0; e < 3 && st == ATTN_SUCCESS; e++) {
            device_grads planned;
            st = run_call(ctx, plan, &c, e == 2, &planned, why, sizeof why);
            same &= st == ATTN_SUCCESS && device_grads_equal(&c, &runs[0], &planned);
            device_grads_free(&planned);
        }
        attn_plan_destroy(plan);
        printf("  bits: host = device = rerun = other context = plan host x2 = plan device  %s%s\n",
               same ? "PASS" : "FAIL", st == ATTN_SUCCESS ? "" : why);
        failures += !same;
        device_grads_free(&again);
        device_grads_free(&other);
    }
    for (int call = 0; call < 2; call++)
        if (have[call] || runs[call].dq)
            device_grads_free(&runs[call]);
    fflush(stdout);
    case_free(&c);
}

/* ---- Dropout: one mask for the forward, the backward and the reference ---- */

/* max|a - b| <= 1e-4 max(1, max|b|) over `n` floats, b in double. */
static int close_to(const float *a, const double *b, size_t n, double *err) {
    double worst = 0.0, most = 1.0;
    for (size_t e = 0; e < n; e++) {
        worst = fmax(worst, fabs((double)a[e] - b[e]));
        most = fmax(most, fabs(b[e]));
    }
    *err = worst / most;
    return worst <= 1e-4 * most;
}

/* The device forward's probabilities W (the dropped, scaled weights) give
 * its mask (W != 0 where the un-dropped P is not): it must be lib/philox.c's,
 * with a kept fraction within 4 sigma of 1 - p, and the device and the
 * reference backward's dV must be W^T dO summed over each group. */
static void mask_identity(attn_context_t ctx) {
    const char *text = "B2 Hq4 Hkv2 Sq37 Sk70 D16 br bhsd drop=0.3,11,22";
    bwd_case c;
    int quick;
    const int init = case_init(&c, text, 810, 0, &quick);
    if (init == 1)
        return;
    if (init != 0) {
        printf("mask identity: FAIL (setup)\n");
        failures++;
        return;
    }
    const test_problem *t = &c.t;
    const attn_params *r = &t->r;
    printf("mask identity: %s\n", text);
    const size_t probs_elems =
        (size_t)r->batch * (size_t)r->heads_q * (size_t)r->seq_q * (size_t)r->seq_k;
    float *w = calloc(probs_elems, sizeof(float)), *p0 = calloc(probs_elems, sizeof(float));
    float *o_naive = malloc(t->o_elems * sizeof(float));
    void *o = test_alloc_output(t);
    attn_host_tensors ht = test_host_tensors(t, o, NULL, w);
    attn_status st = attn_forward_host(ctx, &t->p, &ht);
    attn_params undropped = *r;
    undropped.dropout_p = 0.0f;
    test_naive_fp32(&undropped, t->q, t->k, t->v, &t->x, o_naive, NULL, p0);

    const uint32_t threshold = attn_dropout_threshold(r->dropout_p);
    long visible = 0, kept = 0, mismatched = 0;
    const int group = r->heads_q / r->heads_kv;
    double *dv_w = calloc(t->v_elems, sizeof(double));
    for (int64_t b = 0; b < r->batch && st == ATTN_SUCCESS; b++)
        for (int64_t h = 0; h < r->heads_q; h++)
            for (int64_t i = 0; i < r->seq_q; i++)
                for (int64_t j = 0; j < r->seq_k; j++) {
                    const size_t at =
                        (((size_t)b * (size_t)r->heads_q + (size_t)h) * (size_t)r->seq_q +
                         (size_t)i) *
                            (size_t)r->seq_k +
                        (size_t)j;
                    if (p0[at] == 0.0f)
                        continue;
                    visible++;
                    const int drawn = attn_dropout_keep(r->dropout_seed, r->dropout_offset,
                                                        (uint32_t)(b * r->heads_q + h), (uint32_t)i,
                                                        (uint32_t)j, threshold);
                    kept += w[at] != 0.0f;
                    mismatched += drawn != (w[at] != 0.0f);
                    const float *di = c.dout + test_element_at(&t->o_shape, b, h, i, 0);
                    for (int d = 0; d < r->head_dim_v; d++)
                        dv_w[test_element_at(&t->v_shape, b, h / group, j, d)] +=
                            (double)w[at] * di[d];
                }
    const double q = 1.0 - (double)r->dropout_p;
    const double sigma = sqrt((double)visible * q * (1.0 - q));
    const int fraction_ok = visible > 0 && fabs((double)kept - q * (double)visible) <= 4.0 * sigma;
    printf("  forward: %s; %ld of %ld visible weights kept (expected %.0f +- %.0f), "
           "%ld unlike lib/philox.c's mask  %s\n",
           attn_status_name(st), kept, visible, q * (double)visible, 4.0 * sigma, mismatched,
           st == ATTN_SUCCESS && fraction_ok && mismatched == 0 ? "PASS" : "FAIL");
    failures += !(st == ATTN_SUCCESS && fraction_ok && mismatched == 0);

    device_grads d;
    char why[512] = "";
    st = run_call(ctx, NULL, &c, 1, &d, why, sizeof why);
    double err_dev = INFINITY, err_ref = INFINITY;
    int ok = st == ATTN_SUCCESS && close_to((const float *)d.dv, dv_w, t->v_elems, &err_dev);
    ok &= close_to(c.ref.dv, dv_w, t->v_elems, &err_ref);
    printf("  dV = (W)^T dO from the forward's W: device %.2e, reference %.2e (of max|dV|)  "
           "%s%s\n",
           err_dev, err_ref, ok ? "PASS" : "FAIL", st == ATTN_SUCCESS ? "" : why);
    failures += !ok;
    device_grads_free(&d);

    /* p = 0 is no dropout, whatever the seed and offset: the same bits. */
    device_grads off, off_seeded;
    c.t.p.dropout_p = 0.0f;
    c.t.p.dropout_seed = c.t.p.dropout_offset = 0;
    attn_status st0 = run_call(ctx, NULL, &c, 0, &off, why, sizeof why);
    c.t.p.dropout_seed = 99;
    c.t.p.dropout_offset = 5;
    attn_status st1 = run_call(ctx, NULL, &c, 0, &off_seeded, why, sizeof why);
    const int same =
        st0 == ATTN_SUCCESS && st1 == ATTN_SUCCESS && device_grads_equal(&c, &off, &off_seeded);
    printf("  p = 0 with seed 99, offset 5: the bits of no dropout  %s\n", same ? "PASS" : "FAIL");
    failures += !same;
    device_grads_free(&off);
    device_grads_free(&off_seeded);
    free(dv_w);
    free(o);
    free(o_naive);
    free(w);
    free(p0);
    case_free(&c);
}

/* ---- An LSE past fp32 ------------------------------------------------------ */

/* A scale near FLT_MAX: the even query rows (Q all 1, K in [0.5, 1)) have
 * scores past FLT_MAX, so the forward stores LSE +inf; the odd rows (Q
 * tiny) stay finite. attn_cl.h's rule: the +inf rows contribute nothing
 * (dQ row 0, nothing to dK and dV), the reference agrees, nothing is NaN,
 * on the host and device calls. */
static void lse_overflow(attn_context_t ctx) {
    enum { SQ = 7, SK = 9, D = 8 };
    attn_params p;
    attn_params_init(&p, 1, 1, SQ, SK, D);
    p.scale = 3e38f;
    float q[SQ * D], k[SK * D], v[SK * D], o[SQ * D], dout[SQ * D], lse[SQ];
    float grads[2][(SQ + 2 * SK) * D], ref[(SQ + 2 * SK) * D];
    test_rng rng;
    test_rng_seed(&rng, 4242);
    test_fill_uniform(&rng, k, SK * D, 0.5f, 1.0f);
    test_fill_uniform(&rng, v, SK * D, -1.0f, 1.0f);
    test_fill_uniform(&rng, dout, SQ * D, -1.0f, 1.0f);
    for (int i = 0; i < SQ; i++)
        for (int d = 0; d < D; d++)
            q[i * D + d] = i % 2 == 0 ? 1.0f : test_rng_float(&rng, -1e-38f, 1e-38f);
    attn_status st = attn_forward(ctx, &p, q, k, v, o, lse, NULL);
    int ok = st == ATTN_SUCCESS;
    for (int i = 0; i < SQ && ok; i++)
        ok = i % 2 == 0 ? lse[i] == INFINITY : isfinite(lse[i]);
    printf("LSE past fp32 (scale 3e38, even rows' LSE +inf): forward %s%s\n", attn_status_name(st),
           ok ? "" : " (LSE not as expected)");
    attn_backward_host_tensors t = {0};
    t.q = q, t.k = k, t.v = v, t.o = o, t.dout = dout, t.lse = lse;
    t.dq = ref, t.dk = ref + SQ * D, t.dv = ref + (SQ + SK) * D;
    if (ok)
        ok = attn_reference_backward(&p, &t) == ATTN_SUCCESS;
    for (int call = 0; call < 2 && ok; call++) {
        float *g = grads[call];
        t.dq = g, t.dk = g + SQ * D, t.dv = g + (SQ + SK) * D;
        if (call == 0) {
            st = attn_backward_host(ctx, &p, &t);
        } else {
            /* A plan made for a training step, executed on the host. */
            attn_plan_t plan = NULL;
            st = attn_plan_create(ctx, &p, ATTN_PLAN_LSE | ATTN_PLAN_BACKWARD, &plan);
            if (st == ATTN_SUCCESS)
                st = attn_plan_execute_backward_host(plan, &t);
            attn_plan_destroy(plan);
        }
        double err = 0.0, most = 1.0;
        int finite = 1, zero_rows = 1;
        for (int e = 0; e < (SQ + 2 * SK) * D; e++) {
            finite &= isfinite(g[e]) && isfinite(ref[e]);
            err = fmax(err, fabs((double)g[e] - (double)ref[e]));
            most = fmax(most, fabs((double)ref[e]));
        }
        for (int i = 0; i < SQ; i += 2)
            for (int d = 0; d < D; d++)
                zero_rows &= g[i * D + d] == 0.0f && ref[i * D + d] == 0.0f;
        const int good = st == ATTN_SUCCESS && finite && zero_rows && err <= 1e-4 * most;
        printf("  %-6s %s: finite %d, +inf rows' dQ 0 %d, max|grad - ref| %.3g (max|ref| %.3g)  "
               "%s\n",
               call ? "plan" : "host", attn_status_name(st), finite, zero_rows, err, most,
               good ? "PASS" : "FAIL");
        ok = good;
    }
    if (!ok) {
        printf("  FAIL\n");
        failures++;
    }
}

/* ---- Refusals ------------------------------------------------------------------- */

/* Each bad request fails with `want` and leaves every gradient's bytes. */
static void expect(attn_context_t ctx, const char *what, const attn_params *p,
                   const attn_backward_host_tensors *t, attn_status want, const bwd_case *c,
                   const device_grads *d) {
    attn_status st = attn_backward_host(ctx, p, t);
    const size_t es = test_dtype_size(c->t.p.dtype);
    const int untouched = test_is_sentinel(d->dq, c->t.q_elems * es) &&
                          test_is_sentinel(d->dk, c->t.k_elems * es) &&
                          test_is_sentinel(d->dv, c->t.v_elems * es) &&
                          (!d->dbias || test_is_sentinel(d->dbias, c->bias_elems * 4));
    const int ok = st == want && untouched && (st == ATTN_SUCCESS || attn_last_error(ctx)[0]);
    printf("  %-44s %s (%s)%s  %s\n", what, attn_status_name(st), attn_last_error(ctx),
           untouched ? "" : " GRADIENTS WRITTEN", ok ? "PASS" : "FAIL");
    failures += !ok;
}

static void bad_inputs(attn_context_t ctx) {
    bwd_case c;
    int quick;
    if (case_init(&c, "B2 Hq4 Hkv2 Sq9 Sk13 D8 br bhsd bias=1x4 quick", 900, 0, &quick) != 0) {
        printf("bad inputs: FAIL (setup)\n");
        failures++;
        return;
    }
    printf("bad inputs\n");
    device_grads d;
    device_grads_alloc(&c, &d);
    const attn_backward_host_tensors good = host_tensors(&c, &d);
    attn_backward_host_tensors t = good;
    attn_params p = c.t.p;

    /* The backward reads the tuning's bwd_* keys: one the cpu shape cannot
     * take is the caller's error, named, before any kernel runs. */
    {
        /* ATTN_CL_TUNE (a run of this test on another shape) would apply
         * over the context's spec: off for this one call. */
        const char *env = getenv("ATTN_CL_TUNE");
        char *saved = env ? strdup(env) : NULL;
        unsetenv("ATTN_CL_TUNE");
        attn_context_set_tuning(ctx, "bwd_block=12");
        expect(ctx, "tuning bwd_block=12", &p, &t, ATTN_ERR_INVALID_VALUE, &c, &d);
        attn_context_set_tuning(ctx, NULL);
        if (saved)
            setenv("ATTN_CL_TUNE", saved, 1);
        free(saved);
    }
    t.lse = NULL;
    expect(ctx, "missing LSE", &p, &t, ATTN_ERR_NULL_ARGUMENT, &c, &d);
    t = good;
    t.dout = NULL;
    expect(ctx, "missing dO", &p, &t, ATTN_ERR_NULL_ARGUMENT, &c, &d);
    t = good;
    t.dq = NULL;
    expect(ctx, "NULL dQ", &p, &t, ATTN_ERR_NULL_ARGUMENT, &c, &d);
    t = good;
    t.bias = NULL;
    expect(ctx, "bias asked, NULL", &p, &t, ATTN_ERR_NULL_ARGUMENT, &c, &d);
    attn_params nobias = p;
    nobias.bias.present = 0;
    t = good;
    t.bias = NULL;
    expect(ctx, "dBias without a bias", &nobias, &t, ATTN_ERR_INVALID_VALUE, &c, &d);
    attn_params bad = p;
    bad.o_strides.seq = -1;
    expect(ctx, "dO/O strides negative", &bad, &good, ATTN_ERR_INVALID_VALUE, &c, &d);
    bad = p;
    bad.lse_strides.seq = -3;
    expect(ctx, "LSE strides negative", &bad, &good, ATTN_ERR_INVALID_VALUE, &c, &d);
    bad = p;
    bad.heads_kv = 3;
    expect(ctx, "heads_kv not dividing heads_q", &bad, &good, ATTN_ERR_INVALID_SIZE, &c, &d);
    bad = p;
    bad.struct_size = 4;
    expect(ctx, "struct_size", &bad, &good, ATTN_ERR_INVALID_VALUE, &c, &d);
    const float bad_p[3] = {-0.1f, 1.0f, NAN};
    for (int i = 0; i < 3; i++) {
        bad = p;
        bad.dropout_p = bad_p[i];
        char what[64];
        snprintf(what, sizeof what, "dropout_p %g", (double)bad_p[i]);
        expect(ctx, what, &bad, &good, ATTN_ERR_INVALID_VALUE, &c, &d);
    }
    expect(ctx, "NULL params", NULL, &good, ATTN_ERR_NULL_ARGUMENT, &c, &d);
    expect(ctx, "NULL tensors", &p, NULL, ATTN_ERR_NULL_ARGUMENT, &c, &d);
    {
        attn_plan_t plan = NULL;
        attn_status st = attn_plan_create(ctx, &p, ATTN_PLAN_LSE, &plan);
        if (st == ATTN_SUCCESS)
            st = attn_plan_execute_backward_host(plan, &good);
        const int ok = st == ATTN_ERR_INVALID_VALUE && test_is_sentinel(d.dq, c.t.q_elems * 4);
        printf("  %-44s %s (%s)  %s\n", "plan without ATTN_PLAN_BACKWARD", attn_status_name(st),
               attn_last_error(ctx), ok ? "PASS" : "FAIL");
        failures += !ok;
        attn_plan_destroy(plan);
        st = attn_plan_execute_backward_host(NULL, &good);
        printf("  %-44s %s  %s\n", "NULL plan", attn_status_name(st),
               st == ATTN_ERR_NULL_ARGUMENT ? "PASS" : "FAIL");
        failures += st != ATTN_ERR_NULL_ARGUMENT;
    }

    /* Device call: a dO buffer too small for O's strides, an LSE buffer too
     * small, a gradient overlapping an input. */
    cl_command_queue queue = attn_context_queue(ctx);
    cl_context context = NULL;
    clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof context, &context, NULL);
    const size_t es = test_dtype_size(c.t.p.dtype);
    cl_int err = CL_SUCCESS;
    cl_mem q = upload(context, c.t.q_store, c.t.q_elems * es, &err);
    cl_mem k = upload(context, c.t.k_store, c.t.k_elems * es, &err);
    cl_mem v = upload(context, c.t.v_store, c.t.v_elems * es, &err);
    cl_mem o = upload(context, c.o_store, c.t.o_elems * es, &err);
    cl_mem dout = upload(context, c.dout_store, c.t.o_elems * es, &err);
    cl_mem small = upload(context, c.dout_store, 8, &err);
    cl_mem lse = upload(context, c.t.ref_lse, c.t.lse_elems * 4, &err);
    cl_mem bias = upload(context, c.t.x.bias, c.bias_elems * 4, &err);
    cl_mem dq = upload(context, d.dq, c.t.q_elems * es, &err);
    cl_mem dk = upload(context, d.dk, c.t.k_elems * es, &err);
    cl_mem dv = upload(context, d.dv, c.t.v_elems * es, &err);
    const attn_backward_device_tensors dgood = {.q = q,
                                                .k = k,
                                                .v = v,
                                                .o = o,
                                                .dout = dout,
                                                .lse = lse,
                                                .dq = dq,
                                                .dk = dk,
                                                .dv = dv,
                                                .bias = bias};
    struct {
        const char *what;
        attn_backward_device_tensors t;
        attn_status want;
    } dcases[5];
    for (int i = 0; i < 5; i++)
        dcases[i].t = dgood;
    dcases[0].what = "device: dO buffer too small";
    dcases[0].t.dout = small;
    dcases[0].want = ATTN_ERR_BUFFER_TOO_SMALL;
    dcases[1].what = "device: LSE buffer too small";
    dcases[1].t.lse = small;
    dcases[1].want = ATTN_ERR_BUFFER_TOO_SMALL;
    dcases[2].what = "device: dK is K";
    dcases[2].t.dk = k;
    dcases[2].want = ATTN_ERR_INVALID_VALUE;
    dcases[3].what = "device: dV is dK";
    dcases[3].t.dv = dk;
    dcases[3].want = ATTN_ERR_INVALID_VALUE;
    dcases[4].what = "device: missing LSE";
    dcases[4].t.lse = NULL;
    dcases[4].want = ATTN_ERR_NULL_ARGUMENT;
    for (int i = 0; i < 5 && err == CL_SUCCESS; i++) {
        cl_event ev = (cl_event)(uintptr_t)1;
        attn_status st = attn_backward_device(ctx, &p, &dcases[i].t, 0, NULL, &ev);
        clFinish(queue);
        void *back[3] = {malloc(c.t.q_elems * es), malloc(c.t.k_elems * es),
                         malloc(c.t.v_elems * es)};
        cl_mem mems[3] = {dq, dk, dv};
        int untouched = 1;
        const size_t sizes[3] = {c.t.q_elems * es, c.t.k_elems * es, c.t.v_elems * es};
        for (int g = 0; g < 3; g++) {
            clEnqueueReadBuffer(queue, mems[g], CL_TRUE, 0, sizes[g], back[g], 0, NULL, NULL);
            untouched &= test_is_sentinel(back[g], sizes[g]);
            free(back[g]);
        }
        const int ok = st == dcases[i].want && ev == NULL && untouched;
        printf("  %-44s %s (%s)%s  %s\n", dcases[i].what, attn_status_name(st),
               attn_last_error(ctx), untouched ? "" : " GRADIENTS WRITTEN", ok ? "PASS" : "FAIL");
        failures += !ok;
    }
    if (err != CL_SUCCESS) {
        printf("  device buffers: %d  FAIL\n", (int)err);
        failures++;
    }
    cl_mem all[11] = {q, k, v, o, dout, small, lse, bias, dq, dk, dv};
    for (int i = 0; i < 11; i++)
        if (all[i])
            clReleaseMemObject(all[i]);
    device_grads_free(&d);
    case_free(&c);
}

#ifdef BACKWARD_FAULT_WALK
/* ---- The fault walk (test_backward_faults: this file on the library's
 * fault-injection build, lib/fault_injection.h) -----------------------------
 *
 * Each failure point of a backward, one at a time: the N-th call of each
 * OpenCL function or host allocation fails, for every N an unarmed run
 * makes (on a warm context: kernel builds are the forward walk's). Each
 * failing run must return the injected code (ATTN_ERR_HOST_OUT_OF_MEMORY for
 * a host allocation) with a message, or absorb the fault and be right; leave
 * every gradient untouched (on the device call, an enqueue failing after
 * the first kernel may have let that kernel write: the header says so); and
 * leave the context usable: the same backward, unarmed, then gives the
 * same bits. Calls: the host one-call, the device one-call, and a plan
 * (create, host execute, device execute). */
#include "fault_injection.h"

typedef struct walk_buffers {
    cl_mem m[12]; /* as run_device's */
} walk_buffers;

static cl_int injected(attn_fault_kind kind) {
    return kind == ATTN_FAULT_BUILD_PROGRAM ? CL_BUILD_PROGRAM_FAILURE : CL_OUT_OF_RESOURCES;
}

/* mode 0 host one-call, 1 device one-call, 2 plan (create + host + device).
 * *device_phase says whether a failure came from the device call (or the
 * plan's device execute, after its host execute succeeded). */
static attn_status walk_run(attn_context_t ctx, const bwd_case *c, int mode, device_grads *host,
                            device_grads *dev, int *device_phase) {
    char why[512];
    *device_phase = mode == 1;
    if (mode == 0)
        return run_call(ctx, NULL, c, 0, host, why, sizeof why);
    if (mode == 1)
        return run_call(ctx, NULL, c, 1, dev, why, sizeof why);
    attn_plan_t plan = NULL;
    attn_status st = attn_plan_create(ctx, &c->t.p, ATTN_PLAN_LSE | ATTN_PLAN_BACKWARD, &plan);
    if (st == ATTN_SUCCESS)
        st = run_call(ctx, plan, c, 0, host, why, sizeof why);
    else
        device_grads_alloc(c, host);
    if (st == ATTN_SUCCESS) {
        *device_phase = 1;
        st = run_call(ctx, plan, c, 1, dev, why, sizeof why);
    } else {
        device_grads_alloc(c, dev);
    }
    attn_plan_destroy(plan);
    return st;
}

static int grads_untouched(const bwd_case *c, const device_grads *d) {
    const size_t es = test_dtype_size(c->t.p.dtype);
    return test_is_sentinel(d->dq, c->t.q_elems * es) &&
           test_is_sentinel(d->dk, c->t.k_elems * es) &&
           test_is_sentinel(d->dv, c->t.v_elems * es) &&
           (!d->dbias || test_is_sentinel(d->dbias, c->bias_elems * 4));
}

static int walk(attn_context_t ctx) {
    bwd_case c;
    int quick;
    if (case_init(&c, "B2 Hq4 Hkv2 Sq9 Sk13 D8 br padded bias=2x1 pad varlen alibi drop=0.2 quick",
                  950, 0, &quick) != 0) {
        printf("fault walk: FAIL (setup)\n");
        return 1;
    }
    const char *modes[3] = {"host call", "device call", "plan"};
    for (int mode = 0; mode < 3; mode++) {
        device_grads base_h = {0}, base_d = {0};
        attn_fault_reset();
        int phase;
        attn_status st = walk_run(ctx, &c, mode, &base_h, &base_d, &phase);
        long counts[ATTN_FAULT_KIND_COUNT];
        for (int k = 0; k < ATTN_FAULT_KIND_COUNT; k++)
            counts[k] = attn_fault_count((attn_fault_kind)k);
        if (st != ATTN_SUCCESS) {
            printf("%s: unarmed run fails: %s  FAIL\n", modes[mode], attn_status_name(st));
            failures++;
        }
        long points = 0, bad = 0;
        for (int k = 0; k < ATTN_FAULT_KIND_COUNT && st == ATTN_SUCCESS; k++) {
            for (long nth = 1; nth <= counts[k]; nth++) {
                const attn_fault_kind kind = (attn_fault_kind)k;
                device_grads h = {0}, d = {0}, again_h = {0}, again_d = {0};
                attn_fault_reset();
                attn_fault_arm(kind, nth, injected(kind));
                int device_phase;
                const attn_status got = walk_run(ctx, &c, mode, &h, &d, &device_phase);
                const int fired = attn_fault_fired();
                attn_fault_reset();
                const attn_status want = kind == ATTN_FAULT_HOST_ALLOC
                                             ? ATTN_ERR_HOST_OUT_OF_MEMORY
                                             : (attn_status)injected(kind);
                int ok = 1;
                if (got != ATTN_SUCCESS) {
                    ok = fired && got == want && attn_last_error(ctx)[0] != 0;
                    /* Host gradients: untouched, or (the plan's device execute
                     * failed) its host execute's. Device ones: untouched, except
                     * when an enqueue fails (the kernels before it may have
                     * written theirs: the header says so). */
                    if (mode != 1)
                        ok &= device_phase ? device_grads_equal(&c, &base_h, &h)
                                           : grads_untouched(&c, &h);
                    if (device_phase && kind != ATTN_FAULT_ENQUEUE_KERNEL)
                        ok &= grads_untouched(&c, &d);
                } else {
                    ok = (mode == 1 || device_grads_equal(&c, &base_h, &h)) &&
                         (mode == 0 || device_grads_equal(&c, &base_d, &d));
                }
                const attn_status st2 = walk_run(ctx, &c, mode, &again_h, &again_d, &device_phase);
                ok &= st2 == ATTN_SUCCESS &&
                      (mode == 1 || device_grads_equal(&c, &base_h, &again_h)) &&
                      (mode == 0 || device_grads_equal(&c, &base_d, &again_d));
                if (!ok) {
                    printf("  %s: %s #%ld: %s (%s)  FAIL\n", modes[mode],
                           attn_fault_call_name(kind), nth, attn_status_name(got),
                           attn_last_error(ctx));
                    bad++;
                }
                points++;
                device_grads_free(&h);
                device_grads_free(&d);
                device_grads_free(&again_h);
                device_grads_free(&again_d);
            }
        }
        printf("%s: %ld failure point(s), %ld wrong  %s\n", modes[mode], points, bad,
               bad ? "FAIL" : "PASS");
        failures += bad != 0;
        device_grads_free(&base_h);
        device_grads_free(&base_d);
    }
    case_free(&c);
    return failures ? 1 : 0;
}
#endif

/* Tiny requests for oclgrind (tests/oclgrind_check.sh): each through the
 * host call (run 2n) and the device call (run 2n + 1), one backward a
 * process (test_kernels_checked.c says why). */
static const char *const checked_cases[] = {
    "B1 Hq1 Hkv1 Sq1 Sk1 D1 none bhsd",
    "B1 Hq2 Hkv1 Sq7 Sk9 D8 Dv5 br bshd bias=1x2",
    "B2 Hq2 Hkv2 Sq5 Sk7 D4 tl hbsd bf16 bias=2x2 win=2,-1 keep=2x1",
    "B3 Hq4 Hkv2 Sq9 Sk13 D16 br padded f16 alibi bias=3x1 keep=1x4 pad varlen win=4,1 softcap=8",
    "B2 Hq2 Hkv1 Sq7 Sk11 D8 tl bhsd bias=1x2 drop=0.3,3,4",
};

static int run_checked(int run) {
    const int count = (int)(sizeof checked_cases / sizeof checked_cases[0]);
    if (run < 0 || run >= 2 * count) {
        printf("--run %d: there are %d runs\n", run, 2 * count);
        return 2;
    }
    attn_context_t ctx = test_context_create();
    bwd_case c;
    int quick;
    const char *text = checked_cases[run / 2];
    int ok = case_init(&c, text, 700 + (uint64_t)run / 2, 0, &quick) == 0;
    if (ok) {
        device_grads d;
        char line[1024] = "", why[512] = "";
        ok = run_call(ctx, NULL, &c, run % 2, &d, why, sizeof why) == ATTN_SUCCESS;
        if (ok)
            ok = check_grads(&c, &d, line, sizeof line) && stored_gaps_intact(&c, &d);
        printf("%s (%s call)  %s  %s\n", text, run % 2 ? "device" : "host", ok ? line : why,
               ok ? "PASS" : "FAIL");
        device_grads_free(&d);
        case_free(&c);
    } else {
        printf("%s  FAIL (setup)\n", text);
    }
    attn_context_destroy(ctx);
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--count") == 0) {
        printf("%d\n", (int)(2 * sizeof checked_cases / sizeof checked_cases[0]));
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "--run") == 0)
        return run_checked(atoi(argv[2]));
#ifdef BACKWARD_FAULT_WALK
    {
        attn_context_t walk_ctx = test_context_create();
        const int rc = walk(walk_ctx);
        attn_context_destroy(walk_ctx);
        printf("%s\n", rc ? "FAIL" : "PASS");
        return rc;
    }
#endif
    attn_context_t ctx = test_context_create();
    attn_context_t ctx2 = test_context_create();
    const double start = test_seconds();
    const size_t count = sizeof cases / sizeof cases[0];
    printf("bound: max|out - ref| <= 2 max|naive_fp32 - ref| + 1e-6 max(1, max|ref|), "
           "NMSE <= 4 NMSE(naive) + 1e-10\n");
    for (size_t i = 0; i < count; i++)
        run_case(ctx, ctx2, cases[i], 500 + i, 0);
    /* Non-finite K and V where no query looks. */
    run_case(ctx, ctx2, "B2 Hq4 Hkv2 Sq9 Sk20 D16 tl bshd quick", 600, 1);
    run_case(ctx, ctx2, "B1 Hq2 Hkv1 Sq17 Sk40 D8 tl padded f16 bias=1x2 keep=1x1", 601, 1);
    mask_identity(ctx);
    lse_overflow(ctx);
    bad_inputs(ctx);
    attn_context_destroy(ctx2);
    attn_context_destroy(ctx);
    printf("%s: %zu case(s) x host and device calls, %d failure(s), %.1f s\n",
           failures ? "FAIL" : "PASS", count + 2, failures, test_seconds() - start);
    return failures ? 1 : 0;
}
