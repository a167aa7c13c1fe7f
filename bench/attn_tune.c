/* attn_tune: searches the kernel parameters (lib/tuning.h) of the fused path,
 * (--algo three-kernel) of the three-kernel path, (--algo backward) of
 * the backward's shape or (--algo decode) of the decode kernels' shape and
 * splits for one device, head_dim
 * and mask, and prints the winner as an entry of the table in lib/tuning.c
 * and as an ATTN_CL_TUNE spec. The table's entry serves both paths (the
 * three-kernel path's cpu shape reads its rows, tile_k and vec).
 *
 * Every candidate is first checked against attn_reference on a small problem
 * of the same head dims and mask (lengths that break tiling); a candidate
 * that fails to build, fails to run or misses the reference is reported and
 * skipped. The survivors are timed on the benchmark shape (median of
 * --repeats forwards on device buffers, after one warm-up). The search is
 * staged rather than exhaustive: the shape parameters first, then the
 * vector width and unroll factor of the best shape.
 *
 * Candidates are applied through ATTN_CL_TUNE, which the library reads at
 * every forward and backward. The backward's keys (bwd_*) sit beside the
 * forward's in the same entry; its search keeps the entry's forward keys
 * and ends by running the winner through attn_context_set_tuning, checked
 * against the reference again, so that the entry printed is one the
 * backward reads. */
#include "attn_cl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct options {
    int batch, heads, heads_kv, seq, seq_q, head_dim, head_dim_v, repeats;
    attn_mask mask;
    const char *variant; /* "cpu", "gpu" or NULL: the device type's */
    attn_algo algo;      /* ATTN_ALGO_FUSED or ATTN_ALGO_THREE_KERNEL */
    int backward;        /* 1: search the backward's keys (--algo backward) */
    int decode;          /* 1: search decode_wg and splits (--algo decode) */
} options;

typedef struct candidate {
    char spec[128];
    double ms, gflops;
} candidate;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return 1e3 * (double)t.tv_sec + 1e-6 * (double)t.tv_nsec;
}

static int compare_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void fill(float *data, size_t n, unsigned seed) {
    unsigned long long state = 0x9E3779B97F4A7C15ull ^ seed;
    for (size_t i = 0; i < n; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        data[i] = (float)((state >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
    }
}

/* Pairs (query, key) the mask lets through, for the FLOP count. */
static double visible_pairs(int seq_q, int seq_k, attn_mask mask) {
    double pairs = 0;
    for (int i = 0; i < seq_q; i++) {
        long last = seq_k - 1;
        if (mask == ATTN_MASK_CAUSAL_TOP_LEFT)
            last = i < last ? i : last;
        else if (mask == ATTN_MASK_CAUSAL_BOTTOM_RIGHT)
            last = (long)i + seq_k - seq_q < last ? (long)i + seq_k - seq_q : last;
        pairs += last >= 0 ? (double)(last + 1) : 0.0;
    }
    return pairs;
}

static attn_params make_params(const options *o, int seq_q, int seq_k) {
    attn_params p;
    attn_params_init(&p, o->batch, o->heads, seq_q, seq_k, o->head_dim);
    p.heads_kv = o->heads_kv;
    p.head_dim_v = o->head_dim_v;
    p.mask = o->mask;
    p.algo = o->algo;
    return p;
}

/* Whether the forward under the current ATTN_CL_TUNE matches the
 * reference on lengths that break every tiling. */
static int check(attn_context_t ctx, const options *o, char *why, size_t why_size) {
    static const int lengths[][2] = {{1, 1}, {7, 100}, {100, 7}, {257, 257}};
    for (size_t c = 0; c < sizeof lengths / sizeof lengths[0]; c++) {
        attn_params p = make_params(o, lengths[c][0], lengths[c][1]);
        p.batch = 1;
        p.heads_q = p.heads_kv = 2;
        const size_t nq = 2 * (size_t)p.seq_q * (size_t)p.head_dim;
        const size_t nk = 2 * (size_t)p.seq_k * (size_t)p.head_dim;
        const size_t nv = 2 * (size_t)p.seq_k * (size_t)p.head_dim_v;
        const size_t no = 2 * (size_t)p.seq_q * (size_t)p.head_dim_v;
        float *buf = malloc((nq + nk + nv + 2 * no) * sizeof(float));
        if (!buf) {
            snprintf(why, why_size, "out of host memory");
            return 0;
        }
        float *q = buf, *k = q + nq, *v = k + nk, *out = v + nv, *ref = out + no;
        fill(q, nq, 1);
        fill(k, nk, 2);
        fill(v, nv, 3);
        attn_status st = attn_forward(ctx, &p, q, k, v, out, NULL, NULL);
        if (st != ATTN_SUCCESS) {
            snprintf(why, why_size, "%s: %s", attn_status_name(st), attn_last_error(ctx));
            free(buf);
            return 0;
        }
        st = attn_reference(&p, q, k, v, ref, NULL, NULL);
        double err = 0;
        for (size_t i = 0; i < no && st == ATTN_SUCCESS; i++) {
            const double e = fabs((double)out[i] - (double)ref[i]);
            err = e > err || e != e ? e : err;
        }
        free(buf);
        /* Inputs in [-1, 1): fp32 errors are ~1e-7; a broken tiling is ~1e-1. */
        if (st != ATTN_SUCCESS || !(err <= 1e-5)) {
            snprintf(why, why_size, "seq_q %d seq_k %d: max|out - ref| = %.3g", p.seq_q, p.seq_k,
                     err);
            return 0;
        }
    }
    return 1;
}

/* The median of o->repeats runs (after one warm-up) of the forward on `f`
 * or, when `f` is NULL, the backward on `b`; 0 (with `why`) on a failure. */
static int median_ms(attn_context_t ctx, const options *o, const attn_params *p,
                     const attn_device_tensors *f, const attn_backward_device_tensors *b,
                     double *ms, char *why, size_t why_size) {
    double *times = malloc((size_t)(o->repeats + 1) * sizeof(double));
    if (!times) {
        snprintf(why, why_size, "out of host memory");
        return 0;
    }
    int ok = 1;
    for (int r = 0; ok && r <= o->repeats; r++) {
        cl_event done = NULL;
        const double start = now_ms();
        attn_status st = f ? attn_forward_device(ctx, p, f, 0, NULL, &done)
                           : attn_backward_device(ctx, p, b, 0, NULL, &done);
        if (st == ATTN_SUCCESS) {
            clWaitForEvents(1, &done);
            clReleaseEvent(done);
        } else {
            snprintf(why, why_size, "%s: %s", attn_status_name(st), attn_last_error(ctx));
            ok = 0;
        }
        if (r > 0) /* the first run is the warm-up */
            times[r - 1] = now_ms() - start;
    }
    if (ok) {
        qsort(times, (size_t)o->repeats, sizeof(double), compare_double);
        *ms = times[o->repeats / 2];
    }
    free(times);
    return ok;
}

/* Median milliseconds of the forward on the benchmark shape. */
static int time_forward(attn_context_t ctx, const options *o, double *ms, char *why,
                        size_t why_size) {
    attn_params p = make_params(o, o->seq_q, o->seq);
    const size_t nq = (size_t)o->batch * o->heads * o->seq_q * o->head_dim;
    const size_t nk = (size_t)o->batch * o->heads_kv * o->seq * o->head_dim;
    const size_t nv = (size_t)o->batch * o->heads_kv * o->seq * o->head_dim_v;
    const size_t no = (size_t)o->batch * o->heads * o->seq_q * o->head_dim_v;
    cl_context cl_ctx = NULL;
    cl_command_queue queue = attn_context_queue(ctx);
    if (clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof cl_ctx, &cl_ctx, NULL) !=
        CL_SUCCESS) {
        snprintf(why, why_size, "clGetCommandQueueInfo failed");
        return 0;
    }
    const size_t largest = nq > nk ? (nq > nv ? nq : nv) : (nk > nv ? nk : nv);
    float *host = malloc((largest > no ? largest : no) * sizeof(float));
    if (!host) {
        snprintf(why, why_size, "out of host memory");
        return 0;
    }
    cl_int err = CL_SUCCESS;
    attn_device_tensors t = {0};
    cl_mem *mems[4] = {&t.q, &t.k, &t.v, &t.o};
    const size_t sizes[4] = {nq, nk, nv, no};
    for (int i = 0; i < 4 && err == CL_SUCCESS; i++) {
        fill(host, sizes[i], (unsigned)i + 10);
        *mems[i] = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                                  sizes[i] * sizeof(float), host, &err);
    }
    free(host);
    int ok = err == CL_SUCCESS;
    if (!ok)
        snprintf(why, why_size, "clCreateBuffer failed (%d)", (int)err);
    if (ok)
        ok = median_ms(ctx, o, &p, &t, NULL, ms, why, why_size);
    for (int i = 0; i < 4; i++)
        if (*mems[i])
            clReleaseMemObject(*mems[i]);
    return ok;
}

/* The backward's gradients against attn_reference_backward on lengths
 * that break every tiling (LSE from the forward on the same device). */
static int check_backward(attn_context_t ctx, const options *o, char *why, size_t why_size) {
    static const int lengths[][2] = {{1, 1}, {7, 100}, {100, 7}, {131, 131}};
    for (size_t c = 0; c < sizeof lengths / sizeof lengths[0]; c++) {
        attn_params p = make_params(o, lengths[c][0], lengths[c][1]);
        p.batch = 1;
        p.heads_q = p.heads_kv = 2;
        const size_t nq = 2 * (size_t)p.seq_q * (size_t)p.head_dim;
        const size_t nk = 2 * (size_t)p.seq_k * (size_t)p.head_dim;
        const size_t nv = 2 * (size_t)p.seq_k * (size_t)p.head_dim_v;
        const size_t no = 2 * (size_t)p.seq_q * (size_t)p.head_dim_v;
        const size_t nl = 2 * (size_t)p.seq_q;
        /* q k v o dout lse, then dq dk dv and the reference's */
        float *buf = malloc((nq + nk + nv + 2 * no + nl + 2 * (nq + nk + nv)) * sizeof(float));
        if (!buf) {
            snprintf(why, why_size, "out of host memory");
            return 0;
        }
        float *q = buf, *k = q + nq, *v = k + nk, *out = v + nv, *dout = out + no;
        float *lse = dout + no, *grads = lse + nl, *refs = grads + nq + nk + nv;
        fill(q, nq, 1);
        fill(k, nk, 2);
        fill(v, nv, 3);
        fill(dout, no, 4);
        attn_backward_host_tensors t = {0};
        t.q = q, t.k = k, t.v = v, t.o = out, t.dout = dout, t.lse = lse;
        t.dq = grads, t.dk = grads + nq, t.dv = grads + nq + nk;
        attn_status st = attn_forward(ctx, &p, q, k, v, out, lse, NULL);
        if (st == ATTN_SUCCESS)
            st = attn_backward_host(ctx, &p, &t);
        if (st != ATTN_SUCCESS) {
            snprintf(why, why_size, "%s: %s", attn_status_name(st), attn_last_error(ctx));
            free(buf);
            return 0;
        }
        t.dq = refs, t.dk = refs + nq, t.dv = refs + nq + nk;
        st = attn_reference_backward(&p, &t);
        double err = 0, scale = 0;
        for (size_t i = 0; i < nq + nk + nv && st == ATTN_SUCCESS; i++) {
            const double e = fabs((double)grads[i] - (double)refs[i]);
            err = e > err || e != e ? e : err;
            scale = fabs((double)refs[i]) > scale ? fabs((double)refs[i]) : scale;
        }
        free(buf);
        /* fp32 gradients are ~1e-6 of their largest here; a broken tiling
         * misses by a sizeable fraction of it. */
        if (st != ATTN_SUCCESS || !(err <= 1e-4 * (1.0 + scale))) {
            snprintf(why, why_size, "seq_q %d seq_k %d: max|grad - ref| = %.3g (max|ref| %.3g)",
                     p.seq_q, p.seq_k, err, scale);
            return 0;
        }
    }
    return 1;
}

/* Median milliseconds of the backward on the benchmark shape (its O and
 * LSE from one forward). */
static int time_backward(attn_context_t ctx, const options *o, double *ms, char *why,
                         size_t why_size) {
    attn_params p = make_params(o, o->seq, o->seq);
    const size_t nq = (size_t)o->batch * o->heads * o->seq * o->head_dim;
    const size_t nv = (size_t)o->batch * o->heads * o->seq * o->head_dim_v;
    const size_t nl = (size_t)o->batch * o->heads * o->seq;
    cl_context cl_ctx = NULL;
    cl_command_queue queue = attn_context_queue(ctx);
    if (clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof cl_ctx, &cl_ctx, NULL) !=
        CL_SUCCESS) {
        snprintf(why, why_size, "clGetCommandQueueInfo failed");
        return 0;
    }
    float *host = malloc((nq > nv ? nq : nv) * sizeof(float));
    if (!host) {
        snprintf(why, why_size, "out of host memory");
        return 0;
    }
    cl_int err = CL_SUCCESS;
    attn_backward_device_tensors t = {0};
    cl_mem *mems[9] = {&t.q, &t.k, &t.v, &t.o, &t.dout, &t.lse, &t.dq, &t.dk, &t.dv};
    const size_t sizes[9] = {nq, nq, nv, nv, nv, nl, nq, nq, nv};
    for (int i = 0; i < 9 && err == CL_SUCCESS; i++) {
        fill(host, sizes[i], (unsigned)i + 10);
        *mems[i] = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                                  sizes[i] * sizeof(float), host, &err);
    }
    free(host);
    int ok = err == CL_SUCCESS;
    if (!ok)
        snprintf(why, why_size, "clCreateBuffer failed (%d)", (int)err);
    if (ok) {
        attn_device_tensors f = {0};
        f.q = t.q, f.k = t.k, f.v = t.v, f.o = t.o, f.lse = t.lse;
        cl_event done = NULL;
        attn_status st = attn_forward_device(ctx, &p, &f, 0, NULL, &done);
        if (st == ATTN_SUCCESS) {
            clWaitForEvents(1, &done);
            clReleaseEvent(done);
        } else {
            snprintf(why, why_size, "%s: %s", attn_status_name(st), attn_last_error(ctx));
            ok = 0;
        }
    }
    if (ok)
        ok = median_ms(ctx, o, &p, NULL, &t, ms, why, why_size);
    for (int i = 0; i < 9; i++)
        if (*mems[i])
            clReleaseMemObject(*mems[i]);
    return ok;
}

/* Checks and times one spec; returns whether it ran. */
static int try_spec(attn_context_t ctx, const options *o, const char *spec, candidate *out) {
    setenv("ATTN_CL_TUNE", spec, 1);
    char why[512] = "";
    double ms = 0;
    const int ran =
        o->backward
            ? check_backward(ctx, o, why, sizeof why) && time_backward(ctx, o, &ms, why, sizeof why)
            : check(ctx, o, why, sizeof why) && time_forward(ctx, o, &ms, why, sizeof why);
    if (!ran) {
        fprintf(stderr, "  %-52s skipped: %s\n", spec, why);
        return 0;
    }
    /* The backward counts 2.5x the forward's work, as attn_bench does. */
    const double flops = (o->backward ? 2.5 : 1.0) * 2.0 * o->batch * o->heads *
                         visible_pairs(o->seq_q, o->seq, o->mask) * (o->head_dim + o->head_dim_v);
    snprintf(out->spec, sizeof out->spec, "%s", spec);
    out->ms = ms;
    out->gflops = flops / ms * 1e-6;
    fprintf(stderr, "  %-52s %9.2f ms %8.1f GFLOP/s\n", spec, ms, out->gflops);
    return 1;
}

static void keep_best(candidate *best, const candidate *c) {
    if (best->spec[0] == '\0' || c->ms < best->ms)
        *best = *c;
}

/* Ends a search: clears ATTN_CL_TUNE; without a winner says so and
 * destroys the context. */
static int search_done(attn_context_t ctx, const candidate *best) {
    unsetenv("ATTN_CL_TUNE");
    if (best->spec[0])
        return 1;
    fprintf(stderr, "attn_tune: no candidate passed\n");
    attn_context_destroy(ctx);
    return 0;
}

static int parse_int(const char *s, int lo, int hi, int *out) {
    char *end;
    const long v = strtol(s, &end, 10);
    if (*s == '\0' || *end || v < lo || v > hi)
        return 0;
    *out = (int)v;
    return 1;
}

/* The backward's search: the cpu shape's bwd_block x bwd_tile, or the gpu
 * shape's bwd_rows x bwd_tile_k x bwd_wg, under the table's forward keys;
 * the winner is checked once more through attn_context_set_tuning (what an
 * application or the table gives the backward) and printed. */
static int search_backward(attn_context_t ctx, const options *o, const attn_device_info *info) {
    candidate best = {0}, c;
    char spec[128];
    const int cpu = !strcmp(o->variant, "cpu");
    if (cpu) {
        static const int blocks[] = {4, 8, 16};
        for (int b = 0; b < 3; b++)
            for (int tile = 1; tile <= 8; tile *= 2) {
                snprintf(spec, sizeof spec, "bwd_block=%d,bwd_tile=%d", blocks[b], tile);
                if (try_spec(ctx, o, spec, &c))
                    keep_best(&best, &c);
            }
    } else {
        static const int rows_list[] = {8, 16, 32, 64}, per_row[] = {1, 2, 4, 8, 16},
                         tiles[] = {16, 32, 64};
        for (int r = 0; r < 4; r++)
            for (int w = 0; w < 5; w++)
                for (int t = 0; t < 3; t++) {
                    const int rows = rows_list[r], wg = rows * per_row[w];
                    if (wg < 32 || wg > 512)
                        continue;
                    snprintf(spec, sizeof spec, "variant=gpu,bwd_rows=%d,bwd_tile_k=%d,bwd_wg=%d",
                             rows, tiles[t], wg);
                    if (try_spec(ctx, o, spec, &c))
                        keep_best(&best, &c);
                }
    }
    if (!search_done(ctx, &best))
        return 1;
    /* The entry as the backward reads it: the context's spec this time. */
    char why[512] = "";
    if (attn_context_set_tuning(ctx, best.spec) != ATTN_SUCCESS ||
        !check_backward(ctx, o, why, sizeof why)) {
        fprintf(stderr, "attn_tune: the winner %s failed through attn_context_set_tuning: %s%s\n",
                best.spec, why, why[0] ? "" : attn_last_error(ctx));
        attn_context_destroy(ctx);
        return 1;
    }
    int block = 0, tile = 0, rows = 0, tile_k = 0, wg = 0;
    if (cpu)
        sscanf(best.spec, "bwd_block=%d,bwd_tile=%d", &block, &tile);
    else
        sscanf(best.spec, "variant=gpu,bwd_rows=%d,bwd_tile_k=%d,bwd_wg=%d", &rows, &tile_k, &wg);
    const int dim = o->head_dim > o->head_dim_v ? o->head_dim : o->head_dim_v;
    printf("/* %s, head_dim %d, %s, n=%d: %.1f GFLOP/s (backward; the entry's trailing\n"
           " * bwd_block, bwd_tile, bwd_rows, bwd_tile_k, bwd_wg) */\n",
           info->device_name, dim, o->mask == ATTN_MASK_NONE ? "no mask" : "causal", o->seq,
           best.gflops);
    printf("..., %d, %d, %d, %d, %d}},\n", block, tile, rows, tile_k, wg);
    printf("ATTN_CL_TUNE=\"%s\"\n", best.spec);
    attn_context_destroy(ctx);
    return 0;
}

/* The decode kernels' search, on the decode benchmark shape (--seq-q rows
 * over --seq keys): the gpu shape's groups and vector widths with the
 * automatic splits, and the cpu shape (decode_wg 1); then the best of those
 * with fixed splits. On a GPU the cpu shape goes last: it runs there 50x
 * slower than the gpu shape (an NVIDIA H200), and a search's time limit
 * should go to the candidates that can win. */
static int search_decode(attn_context_t ctx, const options *o, const attn_device_info *info) {
    static const int groups[] = {32, 64, 128, 256}, vecs[] = {4, 8, 16};
    static const int splits[] = {1, 4, 16, 64};
    candidate best = {0}, c;
    char spec[128];
    const char *const cpu_shape = "variant=decode,decode_wg=1,vec=16,splits=0";
    if (!info->is_gpu && try_spec(ctx, o, cpu_shape, &c))
        keep_best(&best, &c);
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
        for (size_t v = 0; v < sizeof vecs / sizeof vecs[0]; v++) {
            snprintf(spec, sizeof spec, "variant=decode,decode_wg=%d,vec=%d,splits=0", groups[g],
                     vecs[v]);
            if (try_spec(ctx, o, spec, &c))
                keep_best(&best, &c);
        }
    if (info->is_gpu && try_spec(ctx, o, cpu_shape, &c))
        keep_best(&best, &c);
    if (best.spec[0]) {
        int wg = 1, vec = 16;
        sscanf(best.spec, "variant=decode,decode_wg=%d,vec=%d", &wg, &vec);
        for (size_t s = 0; s < sizeof splits / sizeof splits[0]; s++) {
            snprintf(spec, sizeof spec, "variant=decode,decode_wg=%d,vec=%d,splits=%d", wg, vec,
                     splits[s]);
            if (try_spec(ctx, o, spec, &c))
                keep_best(&best, &c);
        }
    }
    if (!search_done(ctx, &best))
        return 1;
    int wg = 1, vec = 16, split = 0;
    sscanf(best.spec, "variant=decode,decode_wg=%d,vec=%d,splits=%d", &wg, &vec, &split);
    const int dim = o->head_dim > o->head_dim_v ? o->head_dim : o->head_dim_v;
    printf("/* %s, head_dim %d, %s, %d query rows over %d keys, %d/%d heads: %.3f ms "
           "(decode; the entry's splits and trailing decode_wg) */\n",
           info->device_name, dim, o->mask == ATTN_MASK_NONE ? "no mask" : "causal", o->seq_q,
           o->seq, o->heads, o->heads_kv, best.ms);
    printf("splits %d, ..., decode_wg %d (the entry has no decode vec: vec %d goes in "
           "ATTN_CL_TUNE where lib/decode.c's default, 16 bytes a work-item, differs)\n",
           split, wg, vec);
    printf("ATTN_CL_TUNE=\"variant=decode,decode_wg=%d,vec=%d,splits=%d\"\n", wg, vec, split);
    attn_context_destroy(ctx);
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: attn_tune [options]\n\n"
               "Searches the kernel parameters of the fused (or the three-kernel) path for\n"
               "this device and prints the best as an entry of lib/tuning.c's table and as\n"
               "an ATTN_CL_TUNE spec.\n\n"
               "  --algo A          fused (default), three-kernel or backward; the three-kernel\n"
               "                    path has no gpu parameters to search (its gpu shape is\n"
               "                    fixed); backward searches the backward's bwd_* keys (cpu:\n"
               "                    bwd_block, bwd_tile; gpu: bwd_rows, bwd_tile_k, bwd_wg)\n"
               "                    under the device's table entry for the forward; decode\n"
               "                    searches the decode kernels' decode_wg (1: the cpu shape)\n"
               "                    and splits on --seq-q rows over --seq keys\n"
               "  --head-dim N      head dimension of Q and K (default 64)\n"
               "  --head-dim-v N    of V and O (default: --head-dim)\n"
               "  --causal          causal mask (bottom-right); default none\n"
               "  --seq N           benchmark length, seq_q = seq_k (default 2048)\n"
               "  --heads N         heads (default 8)\n"
               "  --heads-kv N      key/value heads (default: --heads)\n"
               "  --seq-q N         query rows (default: --seq; --algo decode: 1)\n"
               "  --batch N         batch (default 1)\n"
               "  --repeats N       timed forwards per candidate, median (default 3)\n"
               "  --variant V       cpu or gpu (default: by device type)\n"
               "The device is the library's choice (ATTN_CL_DEVICE=P:D selects another).\n"
               "Progress goes to stderr, the result to stdout.\n");
}

int main(int argc, char **argv) {
    options o = {1, 8, 0, 2048, 0, 64, 0, 3, ATTN_MASK_NONE, NULL, ATTN_ALGO_FUSED, 0, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        int ok = 1;
        if (!strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--causal")) {
            o.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
        } else if (!strcmp(a, "--head-dim")) {
            ok = parse_int(v, 1, ATTN_MAX_HEAD_DIM, &o.head_dim), i++;
        } else if (!strcmp(a, "--head-dim-v")) {
            ok = parse_int(v, 1, ATTN_MAX_HEAD_DIM, &o.head_dim_v), i++;
        } else if (!strcmp(a, "--seq")) {
            ok = parse_int(v, 1, 1 << 20, &o.seq), i++;
        } else if (!strcmp(a, "--heads")) {
            ok = parse_int(v, 1, 1024, &o.heads), i++;
        } else if (!strcmp(a, "--heads-kv")) {
            ok = parse_int(v, 1, 1024, &o.heads_kv), i++;
        } else if (!strcmp(a, "--seq-q")) {
            ok = parse_int(v, 1, 1 << 20, &o.seq_q), i++;
        } else if (!strcmp(a, "--batch")) {
            ok = parse_int(v, 1, 1024, &o.batch), i++;
        } else if (!strcmp(a, "--repeats")) {
            ok = parse_int(v, 1, 1000, &o.repeats), i++;
        } else if (!strcmp(a, "--algo") &&
                   (!strcmp(v, "fused") || !strcmp(v, "three-kernel") || !strcmp(v, "backward") ||
                    !strcmp(v, "decode"))) {
            o.algo = !strcmp(v, "three-kernel") ? ATTN_ALGO_THREE_KERNEL : ATTN_ALGO_FUSED, i++;
            o.backward = !strcmp(v, "backward");
            o.decode = !strcmp(v, "decode");
        } else if (!strcmp(a, "--variant") && (!strcmp(v, "cpu") || !strcmp(v, "gpu"))) {
            o.variant = v, i++;
        } else {
            ok = 0;
        }
        if (!ok) {
            fprintf(stderr, "attn_tune: bad option %s %s\n", a, v);
            usage(stderr);
            return 2;
        }
    }
    if (o.head_dim_v == 0)
        o.head_dim_v = o.head_dim;
    if (o.heads_kv == 0)
        o.heads_kv = o.heads;
    if (o.seq_q == 0 || o.backward)
        o.seq_q = o.decode ? 1 : o.seq;
    if (o.heads % o.heads_kv != 0 || (o.backward && o.heads_kv != o.heads)) {
        fprintf(stderr, "attn_tune: --heads-kv must divide --heads (and equal it for the "
                        "backward)\n");
        return 2;
    }

    attn_context_t ctx = NULL;
    if (attn_context_create(NULL, &ctx) != ATTN_SUCCESS) {
        fprintf(stderr, "attn_tune: %s\n", attn_last_error(NULL));
        return 1;
    }
    attn_device_info info;
    attn_context_device_info(ctx, &info);
    if (!o.variant)
        o.variant = info.is_gpu ? "gpu" : "cpu";
    const int three = o.algo == ATTN_ALGO_THREE_KERNEL;
    if (three && strcmp(o.variant, "cpu") != 0) {
        fprintf(stderr, "attn_tune: the three-kernel path's gpu shape has no parameters to "
                        "search; --variant cpu searches its cpu shape\n");
        attn_context_destroy(ctx);
        return 2;
    }
    fprintf(stderr, "device: %s (%s), %s path, head_dim %d/%d, %s, %d x %d heads x %d\n",
            info.device_name, info.vendor,
            o.backward ? "backward"
            : o.decode ? "decode"
            : three    ? "three-kernel"
                       : "fused",
            o.head_dim, o.head_dim_v, o.mask == ATTN_MASK_NONE ? "no mask" : "causal", o.batch,
            o.heads, o.seq);

    candidate best = {0}, c;
    char spec[128];
    if (o.backward)
        return search_backward(ctx, &o, &info);
    if (o.decode)
        return search_decode(ctx, &o, &info);
    if (!strcmp(o.variant, "cpu")) {
        /* Shape first (vec 16, no unroll), then vec and unroll for it. */
        static const int tiles[] = {4, 8, 16};
        for (int rows = 1; rows <= 8; rows++)
            for (int t = 0; t < 3; t++) {
                snprintf(spec, sizeof spec, "variant=cpu,rows=%d,tile_k=%d,wg=1,vec=16,unroll=1",
                         rows, tiles[t]);
                if (try_spec(ctx, &o, spec, &c))
                    keep_best(&best, &c);
            }
        int rows = 0, tile = 0;
        if (best.spec[0] && sscanf(best.spec, "variant=cpu,rows=%d,tile_k=%d", &rows, &tile) == 2) {
            static const int vecs[] = {4, 8}, unrolls[] = {2, 4, 8};
            for (int i = 0; i < 2; i++) {
                snprintf(spec, sizeof spec, "variant=cpu,rows=%d,tile_k=%d,wg=1,vec=%d,unroll=1",
                         rows, tile, vecs[i]);
                if (try_spec(ctx, &o, spec, &c))
                    keep_best(&best, &c);
            }
            int vec = 16;
            sscanf(best.spec, "variant=cpu,rows=%*d,tile_k=%*d,wg=1,vec=%d", &vec);
            for (int i = 0; i < (three ? 0 : 3); i++) { /* three-kernel: no unroll */
                snprintf(spec, sizeof spec, "variant=cpu,rows=%d,tile_k=%d,wg=1,vec=%d,unroll=%d",
                         rows, tile, vec, unrolls[i]);
                if (try_spec(ctx, &o, spec, &c))
                    keep_best(&best, &c);
            }
        }
    } else {
        static const int rows_list[] = {4, 8, 16, 32, 64}, per_row[] = {1, 2, 4, 8, 16, 32},
                         tiles[] = {8, 16, 32, 64, 128};
        for (int r = 0; r < 5; r++)
            for (int w = 0; w < 6; w++)
                for (int t = 0; t < 5; t++) {
                    const int rows = rows_list[r], wg = rows * per_row[w];
                    if (wg < 32 || wg > 512 || tiles[t] % per_row[w] != 0)
                        continue;
                    snprintf(spec, sizeof spec, "variant=gpu,rows=%d,tile_k=%d,wg=%d", rows,
                             tiles[t], wg);
                    if (try_spec(ctx, &o, spec, &c))
                        keep_best(&best, &c);
                }
    }
    if (!search_done(ctx, &best))
        return 1;

    int rows = 0, tile = 0, wg = 1, vec = 16, unroll = 1;
    if (!strcmp(o.variant, "cpu"))
        sscanf(best.spec, "variant=cpu,rows=%d,tile_k=%d,wg=%d,vec=%d,unroll=%d", &rows, &tile, &wg,
               &vec, &unroll);
    else
        sscanf(best.spec, "variant=gpu,rows=%d,tile_k=%d,wg=%d", &rows, &tile, &wg);
    const int dim = o.head_dim > o.head_dim_v ? o.head_dim : o.head_dim_v;
    printf("/* %s, head_dim %d, %s, n=%d: %.1f GFLOP/s (%s path) */\n", info.device_name, dim,
           o.mask == ATTN_MASK_NONE ? "no mask" : "causal", o.seq, best.gflops,
           three ? "three-kernel" : "fused");
    /* Every field of the entry: splits and the backward's keys at their
     * defaults (0), decode_wg the device type's (attn_tune --algo decode
     * and --algo backward search those). */
    printf("{%s, \"%s\", \"%s\", %d, {%s, %d, %d, %d, %d, %d, 0, 0, 0, 0, 0, 0, %d}},\n",
           info.is_gpu ? "CL_DEVICE_TYPE_GPU" : "CL_DEVICE_TYPE_CPU", info.vendor, info.device_name,
           dim, !strcmp(o.variant, "cpu") ? "ATTN_FUSED_CPU" : "ATTN_FUSED_GPU", rows, tile, wg,
           vec, unroll, info.is_gpu ? 64 : 1);
    printf("ATTN_CL_TUNE=\"%s\"\n", best.spec);
    attn_context_destroy(ctx);
    return 0;
}
