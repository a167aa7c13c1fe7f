/* libFuzzer target for the public API: each input decodes into one request
 * (attn_params, small tensors, which outputs and calls) and runs it on one
 * context created once. Built with -fsanitize=fuzzer,address,undefined
 * (meson -Dfuzz=true, clang); tests/fuzz_replay.c runs the same function
 * over files, so that the seed corpus and every reduced crash also run in
 * the ordinary builds.
 *
 * Properties checked (a violation prints why and aborts):
 *   - every status is ATTN_SUCCESS or one of the library's own codes
 *     (-2001..-2012); an OpenCL code on these small requests is a finding;
 *   - a failed call leaves a message and every output byte untouched;
 *   - attn_check answers with the forward's own status (and, on success,
 *     the algorithm the request asks for: AUTO is fused unless the
 *     probabilities are wanted);
 *   - a request that is valid by the header's rules (sizes, head dims,
 *     enums, finite scale, a known non-overlapping layout) succeeds;
 *   - a successful forward leaves the bytes between strided rows alone, is
 *     answered by attn_reference too and, when Q, K, V and the scale are
 *     finite and modest (|x| <= 4, |scale| <= 2), matches it within
 *     test_util.h's max-error bound: max|out - ref| <= 2 max|naive_fp32 -
 *     ref| + 1e-6 max(1, max|ref|), -inf exactly where the reference has
 *     it, nothing else non-finite (the NMSE rule is left to test_forward's
 *     large shapes: see check_against_reference);
 *   - the device-memory call gives the host call's status and bits, and
 *     refuses buffers one element short (ATTN_ERR_BUFFER_TOO_SMALL) and
 *     offsets that are not a multiple of 4 (ATTN_ERR_INVALID_VALUE),
 *     leaving the caller's buffers untouched;
 *   - attn_context_set_tuning accepts or refuses any string with
 *     ATTN_ERR_INVALID_VALUE; attn_status_name never returns NULL.
 *
 * Kernel builds cost ~0.5 s each on PoCL, so device forwards run only for
 * head dims in a small set (1, 3, 8, 16); other valid head dims go through
 * attn_check and attn_reference alone.
 *
 * Input layout (a byte read past the end is 0): see decode() below. */
#include "test_util.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

static uint8_t u8(reader *r) {
    if (!r->n) {
        return 0;
    }
    r->n--;
    return *r->p++;
}

static uint32_t u32(reader *r) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        v |= (uint32_t)u8(r) << (8 * i);
    }
    return v;
}

static float bits_to_float(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Values no valid request has. */
static const int32_t bad_sizes[4] = {0, -1, INT32_MIN, INT32_MAX};

/* A size in 1..max, or 1 time in 16 an invalid one. */
static int32_t size_field(reader *r, int32_t max) {
    const uint8_t b = u8(r);
    if ((b >> 4) == 0) {
        return bad_sizes[b & 3];
    }
    return 1 + (int32_t)(b % (uint8_t)max);
}

/* Head dims: mostly from the device set, sometimes any of 1..256, sometimes
 * invalid. `zero_ok` lets 0 mean "same as head_dim" (head_dim_v). */
static const int32_t device_dims[4] = {1, 3, 8, 16};
static int32_t dim_field(reader *r, int zero_ok) {
    const uint8_t cls = u8(r), v = u8(r);
    if (zero_ok && cls < 64) {
        return 0;
    }
    if (cls < 80) {
        const int32_t bad[4] = {0, -1, ATTN_MAX_HEAD_DIM + 1, INT32_MAX};
        return bad[v & 3];
    }
    if (cls < 112) {
        return 1 + v % ATTN_MAX_HEAD_DIM;
    }
    return device_dims[v & 3];
}

static int is_device_dim(int32_t d) {
    for (int i = 0; i < 4; i++) {
        if (d == device_dims[i]) {
            return 1;
        }
    }
    return 0;
}

static int32_t enum_field(reader *r, int32_t count) {
    const uint8_t b = u8(r);
    if (b < 240) {
        return b % count;
    }
    const int32_t bad[4] = {count, -1, 255, INT32_MIN};
    return bad[b & 3];
}

static float scale_field(reader *r) {
    const uint8_t cls = u8(r);
    const uint32_t raw = u32(r);
    const float specials[8] = {NAN, INFINITY, -INFINITY, FLT_MAX, 1e-38f, 1.4e-45f, -0.0f, 1e6f};
    switch (cls & 7) {
    case 4:
        return specials[raw & 7];
    case 5:
        return bits_to_float(raw); /* anything, NaN payloads included */
    case 6:
    case 7:
        return -2.0f + 4.0f * (float)(raw & 0xffff) / 65535.0f;
    default:
        return 0.0f; /* the default, 1/sqrt(head_dim) */
    }
}

/* ---- The request -------------------------------------------------------- */

enum {
    WANT_LSE = 1,
    WANT_PROBS = 2,
    DEVICE_CALL = 4,
    DEVICE_SHORT = 8,       /* the device call's O buffer one element short */
    DEVICE_MISALIGNED = 16, /* the device call's Q offset 2 bytes */
    TUNING_STRING = 32,     /* the rest of the input is a tuning spec */
};

typedef struct request {
    uint8_t flags;
    attn_params p;
    int known_layout; /* strides from test_set_layout (or defaults) */
    uint8_t value_mode, specials;
    uint32_t seed;
} request;

static void strides_field(reader *r, attn_params *p, int *known_layout) {
    const uint8_t sel = u8(r);
    *known_layout = 1;
    switch (sel & 7) {
    case 3:
    case 4:
    case 5:
        /* BSHD, HBSD, padded: only for sizes the layouts can take. */
        if (p->batch > 0 && p->batch <= 64 && p->heads_q > 0 && p->heads_q <= 64 &&
            p->heads_kv >= 0 && p->heads_kv <= 64 && p->seq_q > 0 && p->seq_q <= 64 &&
            p->seq_k > 0 && p->seq_k <= 64 && p->head_dim > 0 && p->head_dim <= ATTN_MAX_HEAD_DIM &&
            p->head_dim_v >= 0 && p->head_dim_v <= ATTN_MAX_HEAD_DIM) {
            const test_layout layouts[3] = {TEST_BSHD, TEST_HBSD, TEST_PADDED};
            test_set_layout(p, layouts[(sel & 7) - 3]);
        }
        return;
    case 6:
    case 7: {
        /* Any small stride, negative and overlapping ones included. */
        attn_strides *all[5] = {&p->q_strides, &p->k_strides, &p->v_strides, &p->o_strides,
                                &p->lse_strides};
        for (int t = 0; t < 5; t++) {
            all[t]->batch = (int8_t)u8(r) * 4;
            all[t]->head = (int8_t)u8(r) * 2;
            all[t]->seq = (int8_t)u8(r);
        }
        *known_layout = 0;
        return;
    }
    default:
        return; /* packed BHSD */
    }
}

static void decode(reader *r, request *q) {
    memset(q, 0, sizeof *q);
    q->flags = u8(r);
    attn_params *p = &q->p;
    attn_params_init(p, 1, 1, 1, 1, 1);
    p->batch = size_field(r, 3);
    p->heads_q = size_field(r, 3);
    const uint8_t kv = u8(r);
    p->heads_kv = kv < 128 ? 0 : (kv < 136 ? bad_sizes[kv & 3] : 1 + kv % 3);
    p->seq_q = size_field(r, 40);
    p->seq_k = size_field(r, 40);
    p->head_dim = dim_field(r, 0);
    p->head_dim_v = dim_field(r, 1);
    p->mask = (attn_mask)enum_field(r, 3);
    p->algo = (attn_algo)enum_field(r, 3);
    p->dtype = u8(r) == 255 ? (attn_dtype)3 : ATTN_DTYPE_F32;
    p->scale = scale_field(r);
    strides_field(r, p, &q->known_layout);
    q->value_mode = u8(r);
    q->specials = u8(r);
    q->seed = u32(r);
}

/* Requests by the magnitude of their sizes. */
typedef enum size_class {
    SIZES_SMALL,   /* every size within -1..ATTN_MAX_HEAD_DIM + 1: tensors are allocated */
    SIZES_REFUSED, /* an INT32_MIN count or an INT32_MAX head dim: must be refused */
    SIZES_HUGE,    /* an INT32_MAX count: may be valid but cannot be allocated */
} size_class;

static size_class classify(const attn_params *p) {
    const int32_t counts[5] = {p->batch, p->heads_q, p->heads_kv, p->seq_q, p->seq_k};
    int huge = 0;
    for (int i = 0; i < 5; i++) {
        if (counts[i] == INT32_MIN) {
            return SIZES_REFUSED;
        }
        huge |= counts[i] == INT32_MAX;
    }
    if (p->head_dim == INT32_MAX || p->head_dim_v == INT32_MAX) {
        return SIZES_REFUSED;
    }
    return huge ? SIZES_HUGE : SIZES_SMALL;
}

/* Whether the header's rules make `p` a request every device must run. */
static int valid_by_header(const request *q) {
    const attn_params *p = &q->p;
    const int32_t hkv = p->heads_kv ? p->heads_kv : p->heads_q;
    const int32_t dv = p->head_dim_v ? p->head_dim_v : p->head_dim;
    return q->known_layout && p->batch > 0 && p->heads_q > 0 && hkv > 0 && p->heads_q % hkv == 0 &&
           p->seq_q > 0 && p->seq_k > 0 && p->head_dim >= 1 && p->head_dim <= ATTN_MAX_HEAD_DIM &&
           dv >= 1 && dv <= ATTN_MAX_HEAD_DIM &&
           (unsigned)p->mask <= ATTN_MASK_CAUSAL_BOTTOM_RIGHT &&
           (unsigned)p->algo <= ATTN_ALGO_FUSED && p->dtype == ATTN_DTYPE_F32 &&
           isfinite(p->scale) && !((q->flags & WANT_PROBS) && p->algo == ATTN_ALGO_FUSED);
}

/* ---- Tensors ------------------------------------------------------------ */

/* Elements a tensor of `s` spans, or 0 when its sizes or strides are not
 * ones a valid request can have (the library must then refuse before it
 * reads: the harness passes a small dummy buffer). */
static size_t extent_or_zero(const test_shape *s) {
    if (s->batch <= 0 || s->heads <= 0 || s->seq <= 0 || s->inner <= 0 ||
        s->inner > ATTN_MAX_HEAD_DIM || s->strides.batch < 0 || s->strides.head < 0 ||
        s->strides.seq < 0) {
        return 0;
    }
    return test_shape_extent(s);
}

#define DUMMY_ELEMS 16

typedef struct tensors {
    attn_params r; /* resolved by the header's rules (test_resolve) */
    test_shape shape[6];
    size_t elems[6]; /* 0: dummy */
    float *q, *k, *v;
    int modest; /* every input finite and |x| <= 4, |scale| <= 2 */
} tensors;

static float *alloc_elems(size_t elems) {
    return test_alloc_sentinel((elems ? elems : DUMMY_ELEMS) * sizeof(float));
}

static void fill_values(const request *q, float *x, size_t n, uint64_t salt) {
    test_rng rng;
    test_rng_seed(&rng, ((uint64_t)q->seed << 8) ^ salt);
    const float range = (q->value_mode & 3) == 3 ? 16.0f : 1.0f;
    for (size_t i = 0; i < n; i++) {
        x[i] = test_rng_float(&rng, -range, range);
    }
    /* Some special values at input-chosen places. */
    static const float specials[8] = {NAN,    INFINITY, -INFINITY, 1e30f,
                                      -1e30f, 1e-30f,   1.4e-45f,  -0.0f};
    const int count = (q->value_mode >> 2) & 3 ? 0 : q->specials & 7;
    for (int c = 0; c < count; c++) {
        const uint64_t pick = (uint64_t)(test_rng_float(&rng, 0.0f, 1.0f) * 1e9f);
        x[pick % n] = specials[((q->specials >> 3) + c) & 7];
    }
}

static int all_modest(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!(fabsf(x[i]) <= 4.0f)) {
            return 0;
        }
    }
    return 1;
}

/* Tensors of the request's extents, or (`dummies`, for sizes whose
 * products the harness cannot form) dummy buffers throughout. */
static void make_tensors(const request *q, int dummies, tensors *t) {
    memset(t, 0, sizeof *t);
    if (!dummies) {
        test_resolve(&q->p, &t->r);
        const test_tensor which[6] = {TEST_Q, TEST_K, TEST_V, TEST_O, TEST_LSE, TEST_PROBS};
        for (int i = 0; i < 6; i++) {
            t->shape[i] = test_tensor_shape(&t->r, which[i]);
            t->elems[i] = extent_or_zero(&t->shape[i]);
        }
    }
    t->q = alloc_elems(t->elems[0]);
    t->k = alloc_elems(t->elems[1]);
    t->v = alloc_elems(t->elems[2]);
    fill_values(q, t->q, t->elems[0] ? t->elems[0] : DUMMY_ELEMS, 1);
    fill_values(q, t->k, t->elems[1] ? t->elems[1] : DUMMY_ELEMS, 2);
    fill_values(q, t->v, t->elems[2] ? t->elems[2] : DUMMY_ELEMS, 3);
    t->modest = all_modest(t->q, t->elems[0]) && all_modest(t->k, t->elems[1]) &&
                all_modest(t->v, t->elems[2]) && fabsf(q->p.scale) <= 2.0f;
}

static void free_tensors(tensors *t) {
    free(t->q);
    free(t->k);
    free(t->v);
}

/* ---- Checks ------------------------------------------------------------- */

static const uint8_t *current_input;
static size_t current_size;

/* ATTN_FUZZ_TRACE=1 (tests/fuzz_replay sets it) prints what each input
 * asked for and what each call answered. */
static char trace_line[512];
static size_t trace_len;

static void trace(const char *fmt, const char *name, attn_status st) {
    if (trace_len < sizeof trace_line) {
        trace_len += (size_t)snprintf(trace_line + trace_len, sizeof trace_line - trace_len, fmt,
                                      name, attn_status_name(st));
    }
}

static void violation(const char *what, const request *q, attn_status st, const char *message) {
    char desc[160];
    test_describe(desc, sizeof desc, &q->p, TEST_BHSD);
    fprintf(stderr,
            "fuzz_forward: %s\n  request %s algo %d dtype %d scale %a flags 0x%02x known "
            "layout %d\n  status %s (%d): %s\n  input (%zu bytes):",
            what, desc, (int)q->p.algo, (int)q->p.dtype, (double)q->p.scale, q->flags,
            q->known_layout, attn_status_name(st), (int)st, message ? message : "", current_size);
    for (size_t i = 0; i < current_size; i++) {
        fprintf(stderr, " %02x", current_input[i]);
    }
    fprintf(stderr, "\n");
    abort();
}

static int documented(attn_status st) {
    return st == ATTN_SUCCESS || (st <= ATTN_ERR_NULL_ARGUMENT && st >= ATTN_ERR_KERNEL_SOURCE);
}

typedef struct outputs {
    float *o, *lse, *probs;
    size_t o_elems, lse_elems, probs_elems; /* allocated (dummy when 0 was asked) */
} outputs;

static void alloc_outputs(const request *q, const tensors *t, outputs *out) {
    memset(out, 0, sizeof *out);
    out->o_elems = t->elems[3] ? t->elems[3] : DUMMY_ELEMS;
    out->o = alloc_elems(t->elems[3]);
    if (q->flags & WANT_LSE) {
        out->lse_elems = t->elems[4] ? t->elems[4] : DUMMY_ELEMS;
        out->lse = alloc_elems(t->elems[4]);
    }
    if (q->flags & WANT_PROBS) {
        /* Contiguous; 0 elems when the shape is invalid. */
        out->probs_elems = t->elems[5] ? t->elems[5] : DUMMY_ELEMS;
        out->probs = alloc_elems(t->elems[5]);
    }
}

static void free_outputs(outputs *out) {
    free(out->o);
    free(out->lse);
    free(out->probs);
}

static int outputs_untouched(const outputs *out) {
    return test_is_sentinel(out->o, out->o_elems * sizeof(float)) &&
           (!out->lse || test_is_sentinel(out->lse, out->lse_elems * sizeof(float))) &&
           (!out->probs || test_is_sentinel(out->probs, out->probs_elems * sizeof(float)));
}

static void check_failure(const request *q, attn_status st, const char *message, const outputs *out,
                          const char *call) {
    char what[128];
    if (!documented(st)) {
        snprintf(what, sizeof what, "%s returned an undocumented or OpenCL status", call);
        violation(what, q, st, message);
    }
    if (st != ATTN_SUCCESS && (!message || !*message)) {
        snprintf(what, sizeof what, "%s failed without a message", call);
        violation(what, q, st, message);
    }
    if (st != ATTN_SUCCESS && !outputs_untouched(out)) {
        snprintf(what, sizeof what, "%s failed but wrote its outputs", call);
        violation(what, q, st, message);
    }
}

/* The forward's result against attn_reference on the same buffers. */
static void check_against_reference(const request *q, const tensors *t, const outputs *got) {
    outputs ref, naive;
    alloc_outputs(q, t, &ref);
    alloc_outputs(q, t, &naive);
    attn_status st = attn_reference(&q->p, t->q, t->k, t->v, ref.o, ref.lse, ref.probs);
    if (st != ATTN_SUCCESS) {
        violation("attn_forward succeeded where attn_reference fails", q, st,
                  attn_last_error(NULL));
    }
    /* Every byte between strided rows keeps the sentinel. */
    test_result gaps = test_compare(&t->shape[3], got->o, got->o, got->o, got->o_elems);
    if (gaps.gaps_written) {
        violation("attn_forward wrote between the rows of O", q, st, "");
    }
    if (got->lse &&
        test_compare(&t->shape[4], got->lse, got->lse, got->lse, got->lse_elems).gaps_written) {
        violation("attn_forward wrote between the rows of LSE", q, st, "");
    }
    if (t->modest) {
        test_naive_fp32(&t->r, t->q, t->k, t->v, NULL, naive.o, naive.lse, naive.probs);
        const float *outs[3] = {got->o, got->lse, got->probs};
        const float *refs[3] = {ref.o, ref.lse, ref.probs};
        const float *naives[3] = {naive.o, naive.lse, naive.probs};
        const size_t elems[3] = {got->o_elems, got->lse_elems, got->probs_elems};
        const char *names[3] = {"O", "LSE", "probabilities"};
        for (int i = 0; i < 3; i++) {
            if (!outs[i]) {
                continue;
            }
            test_result r = test_compare(&t->shape[3 + i], outs[i], refs[i], naives[i], elems[i]);
            /* The max-error rule alone: the NMSE rule is a statistic over
             * many elements, and these tensors can hold one (one output
             * of cancelling values, or a denormal scale's ~1e-45 LSE,
             * puts its relative error at 1e-4 while it is off by 5e-9). */
            const int ok = r.max_err <= r.bound && r.mismatch == 0 && r.gaps_written == 0 &&
                           !r.naive_disagrees;
            if (!ok) {
                char line[256], what[64];
                test_format_result(line, sizeof line, names[i], &r);
                snprintf(what, sizeof what, "%s outside the bound", names[i]);
                violation(what, q, ATTN_SUCCESS, line);
            }
        }
    }
    free_outputs(&ref);
    free_outputs(&naive);
}

/* ---- The device-memory call --------------------------------------------- */

static cl_mem upload(cl_context context, const float *host, size_t elems) {
    cl_int err;
    cl_mem mem = clCreateBuffer(context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                                elems * sizeof(float), (void *)(uintptr_t)host, &err);
    if (err != CL_SUCCESS) {
        fprintf(stderr, "fuzz_forward: clCreateBuffer failed: %d\n", (int)err);
        abort();
    }
    return mem;
}

static void device_call(attn_context_t ctx, const request *q, const tensors *t,
                        attn_status host_status, const outputs *host) {
    cl_command_queue queue = attn_context_queue(ctx);
    cl_context context = NULL;
    clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof context, &context, NULL);
    const int short_o = (q->flags & DEVICE_SHORT) && t->elems[3] > 1;
    const int misaligned = (q->flags & DEVICE_MISALIGNED) != 0;
    outputs out;
    alloc_outputs(q, t, &out);
    const size_t q_elems = t->elems[0] ? t->elems[0] : DUMMY_ELEMS;
    /* One element more for Q when its offset moves by 2 bytes. */
    float *q_host = alloc_elems(q_elems + 1);
    memcpy((char *)q_host + (misaligned ? 2 : 0), t->q, q_elems * sizeof(float));
    attn_device_tensors dt = {0};
    dt.q = upload(context, q_host, q_elems + 1);
    dt.q_offset = misaligned ? 2 : 0;
    dt.k = upload(context, t->k, t->elems[1] ? t->elems[1] : DUMMY_ELEMS);
    dt.v = upload(context, t->v, t->elems[2] ? t->elems[2] : DUMMY_ELEMS);
    dt.o = upload(context, out.o, out.o_elems - (short_o ? 1 : 0));
    dt.lse = out.lse ? upload(context, out.lse, out.lse_elems) : NULL;

    /* The device call never makes probabilities: ask the way the host call
     * would without them. */
    request dq = *q;
    dq.flags &= (uint8_t)~WANT_PROBS;
    cl_event done = NULL;
    attn_status st = attn_forward_device(ctx, &q->p, &dt, 0, NULL, &done);
    trace(" %s %s", "device", st);
    const char *message = st == ATTN_SUCCESS ? "" : attn_last_error(ctx);
    if (st == ATTN_SUCCESS) {
        if (clWaitForEvents(1, &done) != CL_SUCCESS) {
            violation("the device call's event failed", &dq, st, "");
        }
        clReleaseEvent(done);
    }
    clEnqueueReadBuffer(queue, dt.o, CL_TRUE, 0, (out.o_elems - (short_o ? 1 : 0)) * sizeof(float),
                        out.o, 0, NULL, NULL);
    if (out.lse) {
        clEnqueueReadBuffer(queue, dt.lse, CL_TRUE, 0, out.lse_elems * sizeof(float), out.lse, 0,
                            NULL, NULL);
    }
    check_failure(&dq, st, message, &out, "attn_forward_device");
    /* Without probabilities the host call's verdict may differ only where
     * the probabilities decided it. */
    const int host_comparable = !(q->flags & WANT_PROBS);
    if (host_comparable && host_status == ATTN_SUCCESS) {
        const attn_status want = misaligned ? ATTN_ERR_INVALID_VALUE
                                 : short_o  ? ATTN_ERR_BUFFER_TOO_SMALL
                                            : ATTN_SUCCESS;
        if (st != want) {
            violation("the device call's status is not the expected one", &dq, st, message);
        }
        if (st == ATTN_SUCCESS &&
            (memcmp(out.o, host->o, out.o_elems * sizeof(float)) != 0 ||
             (out.lse && memcmp(out.lse, host->lse, out.lse_elems * sizeof(float)) != 0))) {
            violation("the device call's bits differ from the host call's", &dq, st, "");
        }
    } else if (host_comparable && !misaligned && !short_o && st != host_status) {
        violation("the device call and the host call disagree on a bad request", &dq, st, message);
    }
    cl_mem mems[5] = {dt.q, dt.k, dt.v, dt.o, dt.lse};
    for (int i = 0; i < 5; i++) {
        if (mems[i]) {
            clReleaseMemObject(mems[i]);
        }
    }
    free(q_host);
    free_outputs(&out);
}

/* ---- One input ---------------------------------------------------------- */

static void finish_trace(const request *q) {
    static int enabled = -1;
    if (enabled < 0) {
        const char *env = getenv("ATTN_FUZZ_TRACE");
        enabled = env && *env && strcmp(env, "0") != 0;
    }
    if (enabled) {
        char desc[160];
        test_describe(desc, sizeof desc, &q->p, TEST_BHSD);
        desc[strlen(desc) - strlen(" bhsd")] = '\0'; /* the strides say more */
        printf(" %s algo %d Q strides %lld/%lld/%lld%s flags 0x%02x:%s", desc, (int)q->p.algo,
               (long long)q->p.q_strides.batch, (long long)q->p.q_strides.head,
               (long long)q->p.q_strides.seq, q->known_layout ? "" : " (raw)", q->flags,
               trace_line);
    }
    trace_len = 0;
    trace_line[0] = '\0';
}

static attn_context_t context(void) {
    static attn_context_t ctx;
    if (!ctx) {
        attn_status st = attn_context_create(NULL, &ctx);
        if (st != ATTN_SUCCESS) {
            fprintf(stderr, "fuzz_forward: no context: %s: %s\n", attn_status_name(st),
                    attn_last_error(NULL));
            abort();
        }
    }
    return ctx;
}

static void tuning_string(attn_context_t ctx, reader *r) {
    char spec[300];
    size_t n = r->n < sizeof spec - 1 ? r->n : sizeof spec - 1;
    memcpy(spec, r->p, n);
    spec[n] = '\0';
    r->n -= n;
    attn_status st = attn_context_set_tuning(ctx, spec);
    trace(" %s %s", "set_tuning", st);
    if (st != ATTN_SUCCESS && st != ATTN_ERR_INVALID_VALUE) {
        request none;
        memset(&none, 0, sizeof none);
        violation("attn_context_set_tuning gave neither success nor INVALID_VALUE", &none, st,
                  attn_last_error(ctx));
    }
    /* Forwards run on the device's table entry. */
    attn_context_set_tuning(ctx, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    current_input = data;
    current_size = size;
    attn_context_t ctx = context();
    reader r = {data, size};
    request q;
    decode(&r, &q);
    if (!attn_status_name((attn_status)(int32_t)q.seed) ||
        !*attn_status_name((attn_status)(int32_t)q.seed)) {
        violation("attn_status_name gave NULL or \"\"", &q, ATTN_SUCCESS, "");
    }
    if (q.flags & TUNING_STRING) {
        tuning_string(ctx, &r);
    }

    const int want_lse = (q.flags & WANT_LSE) != 0, want_probs = (q.flags & WANT_PROBS) != 0;
    const size_class sizes = classify(&q.p);
    if (sizes == SIZES_HUGE) {
        /* Nothing that reads tensors: the check alone must answer. */
        attn_status st = attn_check(ctx, &q.p, want_lse, want_probs, NULL);
        trace(" %s %s", "check", st);
        check_failure(&q, st, st ? attn_last_error(ctx) : "", &(outputs){0}, "attn_check");
        finish_trace(&q);
        return 0;
    }
    tensors t;
    make_tensors(&q, sizes == SIZES_REFUSED, &t);
    const int valid = sizes == SIZES_SMALL && valid_by_header(&q);
    if (sizes == SIZES_REFUSED && valid_by_header(&q)) {
        violation("the harness took a request with extreme sizes for valid", &q, ATTN_SUCCESS, "");
    }
    const int32_t dv = q.p.head_dim_v ? q.p.head_dim_v : q.p.head_dim;
    /* Device work only where it builds few kernels (see the top). */
    const int run_device = !valid || (is_device_dim(q.p.head_dim) && is_device_dim(dv));

    attn_algo chosen = ATTN_ALGO_AUTO;
    attn_status checked = attn_check(ctx, &q.p, want_lse, want_probs, &chosen);
    trace(" %s %s", "check", checked);
    check_failure(&q, checked, checked ? attn_last_error(ctx) : "", &(outputs){0}, "attn_check");
    if (sizes == SIZES_REFUSED && checked == ATTN_SUCCESS) {
        violation("attn_check accepted a request with an INT32_MIN size or head dim", &q, checked,
                  "");
    }
    if (valid && checked != ATTN_SUCCESS) {
        violation("attn_check refused a valid request", &q, checked, attn_last_error(ctx));
    }
    const attn_algo expected = q.p.algo != ATTN_ALGO_AUTO ? q.p.algo
                               : want_probs               ? ATTN_ALGO_THREE_KERNEL
                                                          : ATTN_ALGO_FUSED;
    if (checked == ATTN_SUCCESS && chosen != expected) {
        violation("attn_check chose another algorithm", &q, checked, "");
    }

    if (run_device) {
        outputs out;
        alloc_outputs(&q, &t, &out);
        attn_status st = attn_forward(ctx, &q.p, t.q, t.k, t.v, out.o, out.lse, out.probs);
        trace(" %s %s", "forward", st);
        const char *message = st == ATTN_SUCCESS ? "" : attn_last_error(ctx);
        check_failure(&q, st, message, &out, "attn_forward");
        if (st != checked) {
            violation("attn_forward and attn_check disagree", &q, st, message);
        }
        if (st == ATTN_SUCCESS) {
            check_against_reference(&q, &t, &out);
        }
        if (q.flags & DEVICE_CALL) {
            device_call(ctx, &q, &t, st, &out);
        }
        free_outputs(&out);
    } else {
        /* The reference alone: it validates the same way. */
        outputs ref;
        alloc_outputs(&q, &t, &ref);
        attn_status st = attn_reference(&q.p, t.q, t.k, t.v, ref.o, ref.lse, ref.probs);
        trace(" %s %s", "reference", st);
        check_failure(&q, st, st ? attn_last_error(NULL) : "", &ref, "attn_reference");
        if (valid && st != ATTN_SUCCESS) {
            violation("attn_reference refused a valid request", &q, st, attn_last_error(NULL));
        }
        free_outputs(&ref);
    }
    free_tensors(&t);
    finish_trace(&q);
    return 0;
}
