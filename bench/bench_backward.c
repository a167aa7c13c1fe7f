#include "bench_backward.h"
#include "bench_data.h"
#include "bench_time.h"
#include "bench_work.h"

#include <stdlib.h>
#include <string.h>

/* The plan's forward (backward 0) or backward, waited for; ms. */
static attn_status run_once(attn_plan_t plan, int backward, const attn_device_tensors *f,
                            const attn_backward_device_tensors *b, double *ms) {
    cl_event done = NULL;
    const double t0 = bench_now_ms();
    attn_status st = backward ? attn_plan_execute_backward_device(plan, b, 0, NULL, &done)
                              : attn_plan_execute_device(plan, f, NULL, 0, 0, NULL, &done);
    if (st != ATTN_SUCCESS)
        return st;
    cl_int err = clWaitForEvents(1, &done);
    *ms = bench_now_ms() - t0;
    clReleaseEvent(done);
    return (attn_status)err;
}

static attn_status median_ms(const bench_options *opt, attn_plan_t plan, int backward,
                             const attn_device_tensors *f, const attn_backward_device_tensors *b,
                             double *median) {
    double times[64], ms = 0.0;
    const int repeats = opt->repeats < 1 ? 1 : opt->repeats > 64 ? 64 : opt->repeats;
    attn_status st = ATTN_SUCCESS;
    for (int r = 0; r < opt->warmup && st == ATTN_SUCCESS; r++)
        st = run_once(plan, backward, f, b, &ms);
    for (int r = 0; r < repeats && st == ATTN_SUCCESS; r++)
        st = run_once(plan, backward, f, b, &times[r]);
    if (st == ATTN_SUCCESS)
        *median = bench_median(times, (size_t)repeats);
    return st;
}

static int one_length(const bench_options *opt, attn_context_t ctx, cl_context cl, int32_t n,
                      FILE *out) {
    attn_params p;
    attn_params_init(&p, opt->batch, opt->heads_q, n, n, opt->head_dim);
    p.heads_kv = opt->heads_kv;
    p.head_dim_v = opt->head_dim_v;
    p.mask = opt->mask;
    p.dtype = opt->dtype;
    p.algo = ATTN_ALGO_FUSED;
    p.dropout_p = opt->dropout; /* the forward and the backward draw the same mask */
    p.dropout_seed = opt->seed;
    const int32_t hkv = p.heads_kv ? p.heads_kv : p.heads_q;
    const int32_t dv = p.head_dim_v ? p.head_dim_v : p.head_dim;
    const size_t es = p.dtype == ATTN_DTYPE_F32 ? 4 : 2;
    const size_t rows_q = (size_t)p.batch * (size_t)p.heads_q * (size_t)n;
    const size_t rows_k = (size_t)p.batch * (size_t)hkv * (size_t)n;
    const size_t elems[6] = {rows_q * (size_t)p.head_dim, rows_k * (size_t)p.head_dim,
                             rows_k * (size_t)dv,         rows_q * (size_t)dv,
                             rows_q * (size_t)dv,         rows_q};
    /* Q, K, V, O, dO, LSE, then dQ, dK, dV. */
    cl_mem mem[9] = {NULL};
    uint64_t state = opt->seed;
    cl_int err = CL_SUCCESS;
    for (int i = 0; i < 9 && err == CL_SUCCESS; i++) {
        const size_t e = i < 6 ? elems[i] : elems[i - 6];
        const size_t bytes = e * (i == 5 ? 4 : es);
        float *host = malloc(e * sizeof(float));
        void *stored = malloc(bytes);
        if (!host || !stored) {
            free(host);
            free(stored);
            err = CL_OUT_OF_HOST_MEMORY;
            break;
        }
        bench_fill_random(host, e, &state);
        if (es == 2 && i != 5)
            (p.dtype == ATTN_DTYPE_F16 ? attn_f32_to_f16 : attn_f32_to_bf16)(host, stored, e);
        else
            memcpy(stored, host, bytes);
        mem[i] = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes, stored, &err);
        free(host);
        free(stored);
    }
    attn_plan_t plan = NULL;
    attn_status st = (attn_status)err;
    if (st == ATTN_SUCCESS)
        st = attn_plan_create(ctx, &p, ATTN_PLAN_LSE | ATTN_PLAN_BACKWARD, &plan);
    const attn_device_tensors f = {
        .q = mem[0], .k = mem[1], .v = mem[2], .o = mem[3], .lse = mem[5]};
    const attn_backward_device_tensors b = {.q = mem[0],
                                            .k = mem[1],
                                            .v = mem[2],
                                            .o = mem[3],
                                            .dout = mem[4],
                                            .lse = mem[5],
                                            .dq = mem[6],
                                            .dk = mem[7],
                                            .dv = mem[8]};
    double fwd = 0.0, bwd = 0.0;
    if (st == ATTN_SUCCESS)
        st = median_ms(opt, plan, 0, &f, &b, &fwd); /* also O and LSE for the backward */
    if (st == ATTN_SUCCESS)
        st = median_ms(opt, plan, 1, &f, &b, &bwd);
    if (st == ATTN_SUCCESS) {
        attn_params r = p;
        r.heads_kv = hkv;
        r.head_dim_v = dv;
        const double flops = bench_flops(&r, NULL);
        if (opt->csv)
            fprintf(out, "%d,%s,%s,%.3f,%.3f,%.2f,%.2f,%.2f\n", (int)n, bench_mask_name(p.mask),
                    bench_dtype_name(p.dtype), fwd, bwd, flops / fwd * 1e-6,
                    2.5 * flops / bwd * 1e-6, bwd / fwd);
        else
            fprintf(out, "| %6d | %-12s | %-4s | %9.2f | %9.2f | %7.1f | %7.1f | %5.2f |\n", (int)n,
                    bench_mask_name(p.mask), bench_dtype_name(p.dtype), fwd, bwd,
                    flops / fwd * 1e-6, 2.5 * flops / bwd * 1e-6, bwd / fwd);
    } else {
        fprintf(stderr, "attn_bench --backward: n=%d: %s: %s\n", (int)n, attn_status_name(st),
                attn_last_error(ctx));
    }
    attn_plan_destroy(plan);
    for (int i = 0; i < 9; i++)
        if (mem[i])
            clReleaseMemObject(mem[i]);
    return st == ATTN_SUCCESS ? 0 : 1;
}

int bench_backward_run(const bench_options *opt, attn_context_t ctx, cl_context cl, FILE *out) {
    if (opt->csv)
        fprintf(out, "seq,mask,dtype,forward_ms,backward_ms,forward_gflops,backward_gflops,"
                     "ratio\n");
    else
        fprintf(out, "| n | mask | dtype | forward ms | backward ms | fwd GFLOP/s | bwd GFLOP/s "
                     "| bwd/fwd |\n|---|---|---|---|---|---|---|---|\n");
    int failed = 0;
    for (size_t i = 0; i < opt->num_seqs; i++)
        failed += one_length(opt, ctx, cl, opt->seqs[i], out);
    return failed ? 1 : 0;
}
