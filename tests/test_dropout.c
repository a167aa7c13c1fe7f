/* Dropout (attn_cl.h's dropout fields): the generator and the mask.
 *
 *   1. Philox-4x32-10 on the host (lib/philox.c) gives the published
 *      known-answer vectors, and the device's (kernels/common.cl, built
 *      here from the source tree) the same words for them and for random
 *      counters and keys, and the same keep decisions.
 *   2. Every forward path and kernel shape draws exactly the host's mask:
 *      with Q = 0 every visible key weighs 1/n and V = the identity
 *      (head_dim_v = seq_k), so O[i][j] = keep(b, h, i, j) / ((1 - p) n)
 *      shows each (b, h, i, j)'s decision and the 1/(1-p) scale; host and
 *      device calls, f32 and f16 storage, causal shapes that break tiling.
 *   3. The kept fraction over 2M weights is within 4 sigma of 1 - p.
 *   4. The same seed and offset give the same bits; another offset or seed
 *      another mask; p = 0 gives the bits of a forward without dropout
 *      whatever the seed.
 *   5. p outside [0, 1) (NaN, negative, 1, more) is refused with
 *      ATTN_ERR_INVALID_VALUE, O untouched; the KV-cache plans refuse
 *      dropout with ATTN_ERR_UNSUPPORTED.
 *
 * argv[1]: the directory of kernels/common.cl. */
#include "test_util.h"

#include "philox.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

static void check(int ok, const char *what) {
    printf("  %-64s %s\n", what, ok ? "PASS" : "FAIL");
    failures += !ok;
}

/* ---- 1. The generator ------------------------------------------------------ */

typedef struct kat {
    uint32_t ctr[4], key[2], out[4];
} kat;

/* The published Philox-4x32-10 known-answer vectors. */
static const kat kats[] = {
    {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
     {0xffffffff, 0xffffffff},
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
     {0xa4093822, 0x299f31d0},
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
};
#define KATS (sizeof kats / sizeof kats[0])

static void test_host_kats(void) {
    for (size_t n = 0; n < KATS; n++) {
        uint32_t out[4];
        attn_philox4x32_10(kats[n].ctr, kats[n].key, out);
        char what[96];
        snprintf(what, sizeof what, "host Philox-4x32-10 known answer %zu", n);
        check(memcmp(out, kats[n].out, sizeof out) == 0, what);
    }
}

static const char *test_kernels =
    "__kernel void philox_words(__global const uint *ctr, __global const uint *key,\n"
    "                           __global uint *out) {\n"
    "    const size_t g = get_global_id(0);\n"
    "    vstore4(philox4x32_10(vload4(g, ctr), vload2(g, key)), g, out);\n"
    "}\n"
    "__kernel void dropout_mask(ulong seed, ulong offset, uint stream, uint threshold,\n"
    "                           __global uchar *out) {\n"
    "    const int i = get_global_id(1), j = get_global_id(0);\n"
    "    out[(size_t)i * get_global_size(0) + j] =\n"
    "        (uchar)dropout_keep(seed, offset, stream, i, j, threshold);\n"
    "}\n";

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    const long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + strlen(test_kernels) + 2);
    if (text && fread(text, 1, (size_t)size, f) == (size_t)size) {
        text[size] = '\n';
        strcpy(text + size + 1, test_kernels);
    } else {
        free(text);
        text = NULL;
    }
    fclose(f);
    return text;
}

#define RANDOM_WORDS 4096

/* splitmix64's output, high half: any bit pattern, every word. */
static uint32_t next_word(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}
#define MASK_ROWS 37
#define MASK_COLS 301

/* The device's generator (common.cl built as the library builds it, with
 * two test kernels appended) against the host's, bit for bit. */
static void test_device_generator(attn_context_t ctx, const char *kernel_dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/common.cl", kernel_dir);
    char *source = read_file(path);
    if (!source) {
        printf("  cannot read %s\n", path);
        check(0, "device generator: kernels/common.cl read");
        return;
    }
    cl_command_queue queue = attn_context_queue(ctx);
    cl_context context;
    cl_device_id device;
    clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof context, &context, NULL);
    clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof device, &device, NULL);
    cl_int err;
    const char *src = source;
    cl_program program = clCreateProgramWithSource(context, 1, &src, NULL, &err);
    if (err == CL_SUCCESS) {
        err = clBuildProgram(program, 1, &device, "-cl-std=CL1.2", NULL, NULL);
    }
    free(source);
    if (err != CL_SUCCESS) {
        char log[8192] = "";
        clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
        printf("  build failed (%d): %s\n", (int)err, log);
        check(0, "device generator: common.cl builds");
        clReleaseProgram(program);
        return;
    }

    /* The known answers, then random counters and keys. */
    const size_t n = KATS + RANDOM_WORDS;
    uint32_t *ctr = malloc(n * 4 * sizeof *ctr), *key = malloc(n * 2 * sizeof *key);
    uint32_t *dev = calloc(n * 4, sizeof *dev), *host = malloc(n * 4 * sizeof *host);
    uint64_t state = 11;
    for (size_t g = 0; g < n; g++) {
        for (int w = 0; w < 4; w++) {
            ctr[g * 4 + w] = g < KATS ? kats[g].ctr[w] : next_word(&state);
        }
        for (int w = 0; w < 2; w++) {
            key[g * 2 + w] = g < KATS ? kats[g].key[w] : next_word(&state);
        }
        attn_philox4x32_10(ctr + g * 4, key + g * 2, host + g * 4);
    }
    cl_kernel kernel = clCreateKernel(program, "philox_words", &err);
    cl_mem bc = clCreateBuffer(context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n * 16, ctr, &err);
    cl_mem bk = clCreateBuffer(context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n * 8, key, &err);
    cl_mem bo = clCreateBuffer(context, CL_MEM_WRITE_ONLY, n * 16, NULL, &err);
    clSetKernelArg(kernel, 0, sizeof bc, &bc);
    clSetKernelArg(kernel, 1, sizeof bk, &bk);
    clSetKernelArg(kernel, 2, sizeof bo, &bo);
    err = clEnqueueNDRangeKernel(queue, kernel, 1, NULL, &n, NULL, 0, NULL, NULL);
    if (err == CL_SUCCESS) {
        err = clEnqueueReadBuffer(queue, bo, CL_TRUE, 0, n * 16, dev, 0, NULL, NULL);
    }
    check(err == CL_SUCCESS && memcmp(dev, host, KATS * 16) == 0,
          "device Philox-4x32-10 known answers");
    check(err == CL_SUCCESS && memcmp(dev, host, n * 16) == 0,
          "device Philox-4x32-10 = host on 4096 random counters and keys");
    clReleaseKernel(kernel);
    clReleaseMemObject(bc);
    clReleaseMemObject(bk);
    clReleaseMemObject(bo);

    /* dropout_keep over a block of rows and keys, for seeds and offsets
     * with both words set. */
    const uint64_t seeds[2] = {0x0123456789abcdefull, 3};
    const uint64_t offsets[2] = {0xfedcba9876543210ull, 0};
    const uint32_t thresholds[2] = {attn_dropout_threshold(0.3f), attn_dropout_threshold(0.9f)};
    kernel = clCreateKernel(program, "dropout_mask", &err);
    const size_t cells = (size_t)MASK_ROWS * MASK_COLS;
    uint8_t *mask = malloc(cells);
    cl_mem bm = clCreateBuffer(context, CL_MEM_WRITE_ONLY, cells, NULL, &err);
    int same = 1;
    for (int c = 0; c < 2; c++) {
        const cl_ulong seed = seeds[c], offset = offsets[c];
        const cl_uint stream = 5 + 1000u * (cl_uint)c, threshold = thresholds[c];
        clSetKernelArg(kernel, 0, sizeof seed, &seed);
        clSetKernelArg(kernel, 1, sizeof offset, &offset);
        clSetKernelArg(kernel, 2, sizeof stream, &stream);
        clSetKernelArg(kernel, 3, sizeof threshold, &threshold);
        clSetKernelArg(kernel, 4, sizeof bm, &bm);
        const size_t global[2] = {MASK_COLS, MASK_ROWS};
        err = clEnqueueNDRangeKernel(queue, kernel, 2, NULL, global, NULL, 0, NULL, NULL);
        if (err == CL_SUCCESS) {
            err = clEnqueueReadBuffer(queue, bm, CL_TRUE, 0, cells, mask, 0, NULL, NULL);
        }
        same &= err == CL_SUCCESS;
        for (uint32_t i = 0; i < MASK_ROWS && err == CL_SUCCESS; i++) {
            for (uint32_t j = 0; j < MASK_COLS; j++) {
                same &= mask[i * MASK_COLS + j] ==
                        attn_dropout_keep(seed, offset, stream, i, j, threshold);
            }
        }
    }
    check(same, "device dropout_keep = host attn_dropout_keep (37 x 301, 2 keys)");
    clReleaseMemObject(bm);
    clReleaseKernel(kernel);
    clReleaseProgram(program);
    free(mask);
    free(ctr);
    free(key);
    free(dev);
    free(host);
}

/* ---- 2-4. The mask through the forward paths ---------------------------------- */

typedef struct path {
    const char *name;
    attn_algo algo;
    const char *tuning;
} path;

/* The table's shapes of the two algorithms first: the quick run takes those. */
static const path paths[] = {
    {"three-kernel", ATTN_ALGO_THREE_KERNEL, ""},
    {"fused (table entry)", ATTN_ALGO_FUSED, ""},
    {"three-kernel gpu", ATTN_ALGO_THREE_KERNEL, "variant=gpu,rows=16,tile_k=32,wg=128"},
    {"three-kernel cpu odd", ATTN_ALGO_THREE_KERNEL, "variant=cpu,rows=5,tile_k=4,vec=4"},
    {"fused cpu narrow", ATTN_ALGO_FUSED, "variant=cpu,rows=1,tile_k=4,wg=1,vec=4,unroll=4"},
    {"fused cpu 8-wide", ATTN_ALGO_FUSED, "variant=cpu,rows=5,tile_k=8,wg=1,vec=8,unroll=2"},
    /* 16 Philox evaluations a block: one full 16-wide chunk. */
    {"fused cpu 8 rows", ATTN_ALGO_FUSED, "variant=cpu,rows=8,tile_k=16,wg=1,vec=16,unroll=1"},
    {"fused gpu odd", ATTN_ALGO_FUSED, "variant=gpu,rows=4,tile_k=12,wg=12"},
};
#define PATHS (sizeof paths / sizeof paths[0])

/* A mask-revealing problem: Q = 0, K random, V = identity [seq_k x seq_k]. */
typedef struct reveal {
    attn_params p;
    void *q, *k, *v, *o;
    size_t q_elems, k_elems, v_elems, o_elems;
    float *of;
    float lse_dummy;
} reveal;

static void reveal_init(reveal *r, int32_t batch, int32_t heads, int32_t sq, int32_t sk,
                        attn_mask mask, attn_dtype dtype, float p, uint64_t seed, uint64_t offset) {
    memset(r, 0, sizeof *r);
    attn_params_init(&r->p, batch, heads, sq, sk, 8);
    r->p.head_dim_v = sk;
    r->p.mask = mask;
    r->p.dtype = dtype;
    r->p.dropout_p = p;
    r->p.dropout_seed = seed;
    r->p.dropout_offset = offset;
    r->q_elems = (size_t)batch * heads * sq * 8;
    r->k_elems = (size_t)batch * heads * sk * 8;
    r->v_elems = (size_t)batch * heads * sk * sk;
    r->o_elems = (size_t)batch * heads * sq * sk;
    float *q = calloc(r->q_elems, sizeof *q), *k = malloc(r->k_elems * sizeof *k);
    float *v = calloc(r->v_elems, sizeof *v);
    test_rng rng;
    test_rng_seed(&rng, 5);
    test_fill_uniform(&rng, k, r->k_elems, -1.0f, 1.0f);
    for (size_t bh = 0; bh < (size_t)batch * heads; bh++) {
        for (int32_t j = 0; j < sk; j++) {
            v[(bh * sk + j) * sk + j] = 1.0f;
        }
    }
    r->q = test_to_storage(dtype, q, r->q_elems);
    r->k = test_to_storage(dtype, k, r->k_elems);
    r->v = test_to_storage(dtype, v, r->v_elems);
    r->o = test_alloc_sentinel(r->o_elems * test_dtype_size(dtype));
    r->of = malloc(r->o_elems * sizeof *r->of);
    free(q);
    free(k);
    free(v);
}

static void reveal_free(reveal *r) {
    free(r->q);
    free(r->k);
    free(r->v);
    free(r->o);
    free(r->of);
}

/* Runs r through the host call (device 0) or the device call (1). */
static attn_status reveal_run(attn_context_t ctx, reveal *r, int device_call) {
    const size_t es = test_dtype_size(r->p.dtype);
    attn_status status;
    if (!device_call) {
        status = attn_forward(ctx, &r->p, r->q, r->k, r->v, r->o, NULL, NULL);
    } else {
        cl_command_queue queue = attn_context_queue(ctx);
        cl_context context;
        clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof context, &context, NULL);
        cl_int err;
        attn_device_tensors t = {0};
        t.q = clCreateBuffer(context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, r->q_elems * es,
                             r->q, &err);
        t.k = clCreateBuffer(context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, r->k_elems * es,
                             r->k, &err);
        t.v = clCreateBuffer(context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, r->v_elems * es,
                             r->v, &err);
        t.o = clCreateBuffer(context, CL_MEM_READ_WRITE, r->o_elems * es, NULL, &err);
        cl_event done = NULL;
        status = attn_forward_device(ctx, &r->p, &t, 0, NULL, &done);
        if (status == ATTN_SUCCESS) {
            clEnqueueReadBuffer(queue, t.o, CL_TRUE, 0, r->o_elems * es, r->o, 1, &done, NULL);
            clReleaseEvent(done);
        }
        clReleaseMemObject(t.q);
        clReleaseMemObject(t.k);
        clReleaseMemObject(t.v);
        clReleaseMemObject(t.o);
    }
    if (status == ATTN_SUCCESS) {
        test_from_storage(r->p.dtype, r->o, r->of, r->o_elems);
    }
    return status;
}

/* Compares r's O with the host mask: every visible key's O is 0 when
 * dropped and 1 / ((1 - p) n) when kept (relative tol); counts the kept. */
static int reveal_matches(const reveal *r, double tol, size_t *kept, size_t *visible) {
    const attn_params *p = &r->p;
    const uint32_t threshold = attn_dropout_threshold(p->dropout_p);
    int ok = 1;
    *kept = *visible = 0;
    for (int32_t b = 0; b < p->batch; b++) {
        for (int32_t h = 0; h < p->heads_q; h++) {
            for (int32_t i = 0; i < p->seq_q; i++) {
                const int64_t diag =
                    p->mask == ATTN_MASK_CAUSAL_TOP_LEFT ? i : (int64_t)i + p->seq_k - p->seq_q;
                int64_t n = p->mask == ATTN_MASK_NONE ? p->seq_k : (diag + 1 < 0 ? 0 : diag + 1);
                n = n < p->seq_k ? n : p->seq_k;
                const float *orow =
                    r->of + (((size_t)b * p->heads_q + h) * p->seq_q + i) * (size_t)p->seq_k;
                const double want = n > 0 ? 1.0 / ((1.0 - (double)p->dropout_p) * (double)n) : 0;
                for (int32_t j = 0; j < p->seq_k; j++) {
                    const int seen = j < n;
                    const int keep =
                        seen && (p->dropout_p == 0.0f ||
                                 attn_dropout_keep(p->dropout_seed, p->dropout_offset,
                                                   (uint32_t)(b * p->heads_q + h), (uint32_t)i,
                                                   (uint32_t)j, threshold));
                    *visible += seen;
                    *kept += keep;
                    const double got = orow[j];
                    const int good = keep ? fabs(got - want) <= tol * want : got == 0.0;
                    if (!good && ok) {
                        printf("    first mismatch at b%d h%d i%d j%d: O %g, want %g\n", b, h, i, j,
                               got, keep ? want : 0.0);
                    }
                    ok &= good;
                }
            }
        }
    }
    return ok;
}

static void test_paths(attn_context_t ctx) {
    /* Causal shapes that break every tiling: the mask must not depend on
     * which kernel or tile draws it. */
    const struct {
        int32_t batch, heads, sq, sk;
        attn_mask mask;
        attn_dtype dtype;
        float p;
    } shapes[] = {
        {2, 3, 37, 70, ATTN_MASK_CAUSAL_BOTTOM_RIGHT, ATTN_DTYPE_F32, 0.3f},
        {1, 2, 70, 37, ATTN_MASK_CAUSAL_TOP_LEFT, ATTN_DTYPE_F16, 0.5f},
        {1, 2, 17, 129, ATTN_MASK_NONE, ATTN_DTYPE_F32, 0.85f},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (size_t a = 0; a < PATHS; a++) {
            for (int call = 0; call < 2; call++) {
                if (attn_context_set_tuning(ctx, paths[a].tuning) != ATTN_SUCCESS) {
                    check(0, "set tuning");
                    continue;
                }
                reveal r;
                reveal_init(&r, shapes[s].batch, shapes[s].heads, shapes[s].sq, shapes[s].sk,
                            shapes[s].mask, shapes[s].dtype, shapes[s].p, 0xdeadbeefcafeull + s,
                            s * 0x100000001ull);
                r.p.algo = paths[a].algo;
                const attn_status status = reveal_run(ctx, &r, call);
                size_t kept = 0, visible = 0;
                /* f16 stores 1/((1-p) n) rounded: 2^-11 relative. */
                const double tol = shapes[s].dtype == ATTN_DTYPE_F16 ? 1e-3 : 2e-6;
                const int ok =
                    test_ok(ctx, status, "forward") && reveal_matches(&r, tol, &kept, &visible);
                char what[160];
                snprintf(what, sizeof what, "B%d H%d Sq%d Sk%d %s p=%g %s %s: mask (%zu/%zu kept)",
                         shapes[s].batch, shapes[s].heads, shapes[s].sq, shapes[s].sk,
                         test_dtype_name(shapes[s].dtype), (double)shapes[s].p, paths[a].name,
                         call ? "device" : "host", kept, visible);
                check(ok, what);
                reveal_free(&r);
            }
        }
    }
    attn_context_set_tuning(ctx, NULL);
}

/* A NaN in V at key NAN_KEY (V[j][j] of the identity) reaches exactly the
 * rows that keep that key: O[i][NAN_KEY] is NaN there and 0 where it is
 * dropped, on every path, whatever the tile holds beside it. */
#define NAN_KEY 21
static void test_nan_in_dropped_keys(attn_context_t ctx) {
    for (size_t a = 0; a < PATHS; a++) {
        attn_context_set_tuning(ctx, paths[a].tuning);
        reveal r;
        reveal_init(&r, 1, 2, 37, 70, ATTN_MASK_NONE, ATTN_DTYPE_F32, 0.5f, 31, 4);
        r.p.algo = paths[a].algo;
        ((float *)r.v)[(size_t)NAN_KEY * 70 + NAN_KEY] = NAN;
        ((float *)r.v)[(70 + (size_t)NAN_KEY) * 70 + NAN_KEY] = INFINITY;
        int ok = test_ok(ctx, reveal_run(ctx, &r, 0), "forward");
        size_t kept = 0;
        const uint32_t threshold = attn_dropout_threshold(0.5f);
        for (int h = 0; ok && h < 2; h++) {
            for (int i = 0; i < 37; i++) {
                const float *orow = r.of + ((size_t)h * 37 + i) * 70;
                const int keep =
                    attn_dropout_keep(31, 4, (uint32_t)h, (uint32_t)i, NAN_KEY, threshold);
                kept += keep;
                /* Kept: NaN, or inf * weight (h 1: infinity). */
                ok &= keep ? !isfinite(orow[NAN_KEY]) : orow[NAN_KEY] == 0.0f;
                for (int j = 0; j < 70; j++) {
                    ok &= j == NAN_KEY || isfinite(orow[j]);
                }
            }
        }
        char what[160];
        snprintf(what, sizeof what, "NaN / inf in V: only rows keeping the key (%zu of 74), %s",
                 kept, paths[a].name);
        check(ok && kept > 0 && kept < 74, what);
        reveal_free(&r);
    }
    attn_context_set_tuning(ctx, NULL);
}

/* 2M weights (B1 H8 512 x 512): kept fraction within 4 sigma of 1 - p, on
 * the default fused path. */
static void test_kept_fraction(attn_context_t ctx) {
    const float ps[3] = {0.1f, 0.5f, 0.97f};
    for (int n = 0; n < 3; n++) {
        reveal r;
        reveal_init(&r, 1, 8, 512, 512, ATTN_MASK_NONE, ATTN_DTYPE_F32, ps[n], 1234 + n, 77);
        const attn_status status = reveal_run(ctx, &r, 0);
        size_t kept = 0, visible = 0;
        int ok = test_ok(ctx, status, "forward") && reveal_matches(&r, 2e-6, &kept, &visible);
        const double q = 1.0 - (double)ps[n];
        const double frac = (double)kept / (double)visible;
        const double sigma = sqrt(q * (1.0 - q) / (double)visible);
        ok &= fabs(frac - q) <= 4.0 * sigma;
        char what[160];
        snprintf(what, sizeof what, "p=%g: kept %.5f of %zu, 1-p %.5f, |diff| %.1f sigma",
                 (double)ps[n], frac, visible, q, fabs(frac - q) / sigma);
        check(ok, what);
        reveal_free(&r);
    }
}

/* Same seed and offset: the same bits; another offset or seed: another
 * mask (about 2p(1-p) of the weights differ); p = 0: the bits of no
 * dropout, whatever the seed and offset. */
static void test_reproducible(attn_context_t ctx) {
    const uint64_t seed = 99, offset = 5;
    reveal a, b, c, d;
    reveal_init(&a, 1, 4, 64, 64, ATTN_MASK_NONE, ATTN_DTYPE_F32, 0.5f, seed, offset);
    reveal_init(&b, 1, 4, 64, 64, ATTN_MASK_NONE, ATTN_DTYPE_F32, 0.5f, seed, offset);
    reveal_init(&c, 1, 4, 64, 64, ATTN_MASK_NONE, ATTN_DTYPE_F32, 0.5f, seed, offset + 1);
    reveal_init(&d, 1, 4, 64, 64, ATTN_MASK_NONE, ATTN_DTYPE_F32, 0.5f, seed + 1, offset);
    int ok = reveal_run(ctx, &a, 0) == ATTN_SUCCESS && reveal_run(ctx, &b, 1) == ATTN_SUCCESS &&
             reveal_run(ctx, &c, 0) == ATTN_SUCCESS && reveal_run(ctx, &d, 0) == ATTN_SUCCESS;
    check(ok && memcmp(a.o, b.o, a.o_elems * sizeof(float)) == 0,
          "same seed and offset, host and device calls: same bits");
    size_t diff_offset = 0, diff_seed = 0;
    for (size_t e = 0; ok && e < a.o_elems; e++) {
        diff_offset += (a.of[e] == 0.0f) != (c.of[e] == 0.0f);
        diff_seed += (a.of[e] == 0.0f) != (d.of[e] == 0.0f);
    }
    /* Expected half of 16384 each; a tenth would already be no accident. */
    char what[160];
    snprintf(what, sizeof what, "offset + 1: %zu of %zu decisions differ", diff_offset, a.o_elems);
    check(ok && diff_offset > a.o_elems / 4, what);
    snprintf(what, sizeof what, "seed + 1: %zu of %zu decisions differ", diff_seed, a.o_elems);
    check(ok && diff_seed > a.o_elems / 4, what);
    reveal_free(&a);
    reveal_free(&b);
    reveal_free(&c);
    reveal_free(&d);

    /* p = 0 with a seed and offset against no dropout at all, on random
     * inputs, every path: O and LSE bit for bit. */
    attn_params p;
    attn_params_init(&p, 2, 2, 33, 65, 31);
    p.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
    const size_t qn = 2 * 2 * 33 * 31, kn = 2 * 2 * 65 * 31, on = qn, ln = 2 * 2 * 33;
    float *q = malloc(qn * 4), *k = malloc(kn * 4), *v = malloc(kn * 4);
    float *o0 = malloc(on * 4), *o1 = malloc(on * 4), *l0 = malloc(ln * 4), *l1 = malloc(ln * 4);
    test_rng rng;
    test_rng_seed(&rng, 3);
    test_fill_uniform(&rng, q, qn, -1, 1);
    test_fill_uniform(&rng, k, kn, -1, 1);
    test_fill_uniform(&rng, v, kn, -1, 1);
    /* The quick (memcheck) run: the two algorithms' table shapes; the other
     * shapes differ only in their kernels, which cost ~40 s each to build
     * under valgrind. */
    const size_t paths_run = test_quick() ? 2 : PATHS;
    for (size_t a2 = 0; a2 < paths_run; a2++) {
        attn_context_set_tuning(ctx, paths[a2].tuning);
        attn_params with = p;
        p.algo = with.algo = paths[a2].algo;
        with.dropout_p = 0.0f;
        with.dropout_seed = 12345;
        with.dropout_offset = 678;
        const int ran = attn_forward(ctx, &p, q, k, v, o0, l0, NULL) == ATTN_SUCCESS &&
                        attn_forward(ctx, &with, q, k, v, o1, l1, NULL) == ATTN_SUCCESS;
        snprintf(what, sizeof what, "p = 0 with seed and offset = no dropout, bits (%s)",
                 paths[a2].name);
        check(ran && !memcmp(o0, o1, on * 4) && !memcmp(l0, l1, ln * 4), what);
    }
    attn_context_set_tuning(ctx, NULL);
    free(q);
    free(k);
    free(v);
    free(o0);
    free(o1);
    free(l0);
    free(l1);
}

/* ---- 5. Refusals ------------------------------------------------------------ */

static void test_refusals(attn_context_t ctx) {
    const float bad[] = {NAN, -0.1f, -INFINITY, 1.0f, 1.5f, INFINITY};
    float q[4 * 8] = {0}, k[4 * 8] = {0}, v[4 * 8] = {0};
    for (size_t n = 0; n < sizeof bad / sizeof bad[0]; n++) {
        attn_params p;
        attn_params_init(&p, 1, 1, 4, 4, 8);
        p.dropout_p = bad[n];
        float *o = test_alloc_sentinel(sizeof q);
        float lse[4];
        const attn_status s1 = attn_forward(ctx, &p, q, k, v, o, lse, NULL);
        const int untouched = test_is_sentinel(o, sizeof q);
        const attn_status s2 = attn_check(ctx, &p, 1, 0, NULL);
        const attn_status s3 = attn_reference(&p, q, k, v, o, NULL, NULL);
        char what[160];
        snprintf(what, sizeof what, "dropout_p %g: forward, check, reference refuse it (%s)",
                 (double)bad[n], attn_status_name(s1));
        check(s1 == ATTN_ERR_INVALID_VALUE && s2 == ATTN_ERR_INVALID_VALUE &&
                  s3 == ATTN_ERR_INVALID_VALUE && untouched &&
                  strstr(attn_last_error(NULL), "dropout_p") != NULL,
              what);
        free(o);
    }
    /* The largest float below 1 is accepted. */
    attn_params p;
    attn_params_init(&p, 1, 1, 4, 4, 8);
    p.dropout_p = nextafterf(1.0f, 0.0f);
    check(attn_check(ctx, &p, 1, 0, NULL) == ATTN_SUCCESS, "dropout_p 1 - 2^-24 accepted");

    attn_kvcache_params kv;
    attn_kvcache_params_init(&kv, 1, 2, 1, 64, 16);
    kv.attn.dropout_p = 0.1f;
    attn_plan_t plan = NULL;
    const attn_status s = attn_plan_create_kvcache(ctx, &kv, 0, &plan);
    check(s == ATTN_ERR_UNSUPPORTED && plan == NULL, "KV-cache plan with dropout: unsupported");
    attn_plan_destroy(plan);
    /* The KV-cache reference refuses it too, before reading any tensor. */
    float dummy[4] = {0};
    const attn_kvcache_host_tensors none = {
        .q = dummy, .o = dummy, .k_cache = dummy, .v_cache = dummy};
    check(attn_reference_kvcache(&kv, &none) == ATTN_ERR_UNSUPPORTED,
          "KV-cache reference with dropout: unsupported");
    attn_context_set_tuning(ctx, "variant=decode");
    p.dropout_p = 0.1f;
    check(attn_check(ctx, &p, 1, 0, NULL) == ATTN_ERR_UNSUPPORTED,
          "variant=decode with dropout: unsupported");
    attn_context_set_tuning(ctx, NULL);
    /* AUTO on a decode shape goes to the fused kernels instead. */
    attn_params_init(&p, 1, 2, 1, 512, 16);
    p.dropout_p = 0.1f;
    attn_algo algo = ATTN_ALGO_AUTO;
    check(attn_check(ctx, &p, 1, 0, &algo) == ATTN_SUCCESS && algo == ATTN_ALGO_FUSED,
          "decode shape with dropout: served by the fused path");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s KERNEL_DIR\n", argv[0]);
        return 2;
    }
    printf("generator\n");
    test_host_kats();
    attn_context_t ctx = test_context_create();
    test_device_generator(ctx, argv[1]);
    printf("refusals\n");
    test_refusals(ctx);
    printf("reproducibility\n");
    test_reproducible(ctx);
    if (!test_quick()) {
        printf("the mask on every path\n");
        test_paths(ctx);
        printf("non-finite V at dropped keys\n");
        test_nan_in_dropped_keys(ctx);
        printf("kept fraction\n");
        test_kept_fraction(ctx);
    }
    attn_context_destroy(ctx);
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
