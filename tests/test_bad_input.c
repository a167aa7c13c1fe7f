/* Every error path: the status the header names for it, a message in
 * attn_last_error, the right attn_status_name, and the caller's outputs
 * (host and device) byte for byte as they were. Each parameter error is sent
 * through attn_forward, attn_forward_device, attn_check, attn_prepare and
 * attn_reference, which must all agree. */
#include "test_util.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;

/* The shape every case starts from; buffers are sized for it. */
enum { B = 2, HQ = 4, HKV = 2, SQ = 8, SK = 12, D = 16 };
#define Q_ELEMS ((size_t)B * HQ * SQ * D)
#define K_ELEMS ((size_t)B * HKV * SK * D)
#define O_ELEMS ((size_t)B * HQ * SQ * D)
#define L_ELEMS ((size_t)B * HQ * SQ)
#define P_ELEMS ((size_t)B * HQ * SQ * SK)

static attn_context_t ctx;
static cl_context cl_ctx;
static cl_command_queue queue;
static float q[Q_ELEMS], k[K_ELEMS], v[K_ELEMS];
static float o[O_ELEMS], lse[L_ELEMS], probs[P_ELEMS];
static attn_device_tensors dev;

static attn_params base_params(void) {
    attn_params p;
    attn_params_init(&p, B, HQ, SQ, SK, D);
    p.heads_kv = HKV;
    p.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT; /* the kernels the other memcheck tests build */
    return p;
}

static cl_mem make_buffer(size_t bytes, const void *data) {
    cl_int err;
    cl_mem mem = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (err == CL_SUCCESS) {
        void *init = data ? NULL : test_alloc_sentinel(bytes);
        err =
            clEnqueueWriteBuffer(queue, mem, CL_TRUE, 0, bytes, data ? data : init, 0, NULL, NULL);
        free(init);
    }
    if (err != CL_SUCCESS) {
        printf("FAIL: creating a %zu-byte buffer: %d\n", bytes, (int)err);
        exit(1);
    }
    return mem;
}

static void reset_outputs(void) {
    memset(o, TEST_SENTINEL_BYTE, sizeof o);
    memset(lse, TEST_SENTINEL_BYTE, sizeof lse);
    memset(probs, TEST_SENTINEL_BYTE, sizeof probs);
}

static int host_untouched(void) {
    return test_is_sentinel(o, sizeof o) && test_is_sentinel(lse, sizeof lse) &&
           test_is_sentinel(probs, sizeof probs);
}

/* Whether a cl_mem still holds only the sentinel. */
static int device_untouched(cl_mem mem) {
    size_t bytes = 0;
    clGetMemObjectInfo(mem, CL_MEM_SIZE, sizeof bytes, &bytes, NULL);
    unsigned char *host = malloc(bytes);
    cl_int err = clEnqueueReadBuffer(queue, mem, CL_TRUE, 0, bytes, host, 0, NULL, NULL);
    int ok = err == CL_SUCCESS && test_is_sentinel(host, bytes);
    free(host);
    return ok;
}

static cl_uint ref_count(cl_mem mem) {
    cl_uint count = 0;
    clGetMemObjectInfo(mem, CL_MEM_REFERENCE_COUNT, sizeof count, &count, NULL);
    return count;
}

/* A failed call's status and message: the expected status, its name, and a
 * message that says something. */
static int status_ok(attn_status got, attn_status want, const char *want_name,
                     attn_context_t where) {
    return got == want && strcmp(attn_status_name(got), want_name) == 0 &&
           *attn_last_error(where) != '\0';
}

static void report(const char *name, int ok, const char *detail) {
    printf("%-50s %-64s %s\n", name, detail, ok ? "PASS" : "FAIL");
    failures += !ok;
}

enum { ENTRY_HOST = 1, ENTRY_DEVICE = 2, ENTRY_CHECK = 4, ENTRY_REFERENCE = 8, ENTRY_ALL = 15 };

/* Sends `p` (NULL allowed) through the entry points in `entries` and expects
 * `want` from each. `with_probs` asks the host call for probabilities. */
static void expect_params(const char *name, const attn_params *p, attn_status want,
                          const char *want_name, int entries, int with_probs) {
    int ok = 1;
    char detail[256] = "";
    size_t n = 0;
#define NOTE(...)                                                                                  \
    n += (size_t)snprintf(detail + n, n < sizeof detail ? sizeof detail - n : 0, __VA_ARGS__)

    if (entries & ENTRY_HOST) {
        reset_outputs();
        attn_status st = attn_forward(ctx, p, q, k, v, o, lse, with_probs ? probs : NULL);
        int good = status_ok(st, want, want_name, ctx) && host_untouched();
        NOTE("forward %s%s ", good ? "ok" : attn_status_name(st),
             host_untouched() ? "" : " WROTE OUTPUTS");
        ok &= good;
    }
    if (entries & ENTRY_DEVICE) {
        cl_uint refs = ref_count(dev.o);
        cl_event ev = NULL;
        attn_status st = attn_forward_device(ctx, p, &dev, 0, NULL, &ev);
        clFinish(queue);
        int untouched = device_untouched(dev.o) && device_untouched(dev.lse);
        int good = status_ok(st, want, want_name, ctx) && untouched && ev == NULL &&
                   ref_count(dev.o) == refs;
        NOTE("device %s%s%s ", good ? "ok" : attn_status_name(st),
             untouched ? "" : " WROTE OUTPUTS", ev ? " EVENT SET" : "");
        if (ev) {
            clReleaseEvent(ev);
        }
        ok &= good;
    }
    if (entries & ENTRY_CHECK) {
        attn_status st = attn_check(ctx, p, 1, with_probs, NULL);
        attn_status prep = attn_prepare(ctx, p, 1, with_probs);
        int good = status_ok(st, want, want_name, ctx) && prep == want;
        NOTE("check %s prepare %s ", st == want ? "ok" : attn_status_name(st),
             prep == want ? "ok" : attn_status_name(prep));
        ok &= good;
    }
    if (entries & ENTRY_REFERENCE) {
        reset_outputs();
        attn_status st = attn_reference(p, q, k, v, o, lse, with_probs ? probs : NULL);
        int good = status_ok(st, want, want_name, NULL) && host_untouched();
        NOTE("reference %s", good ? "ok" : attn_status_name(st));
        ok &= good;
    }
#undef NOTE
    char label[160];
    snprintf(label, sizeof label, "%s -> %s", name, want_name);
    report(label, ok, detail);
}

#define EXPECT(name, p, want, entries, with_probs)                                                 \
    expect_params(name, p, want, #want, entries, with_probs)

/* Applies `field = value` to the base parameters and expects `want` from
 * every entry point. */
#define EXPECT_FIELD(field, value, want)                                                           \
    do {                                                                                           \
        attn_params p_ = base_params();                                                            \
        p_.field = value;                                                                          \
        EXPECT(#field " = " #value, &p_, want, ENTRY_ALL, 0);                                      \
    } while (0)

static void bad_params(void) {
    EXPECT("params NULL", NULL, ATTN_ERR_NULL_ARGUMENT, ENTRY_ALL, 0);

    EXPECT_FIELD(batch, 0, ATTN_ERR_INVALID_SIZE);
    EXPECT_FIELD(batch, -1, ATTN_ERR_INVALID_SIZE);
    EXPECT_FIELD(heads_q, 0, ATTN_ERR_INVALID_SIZE);
    EXPECT_FIELD(heads_q, -3, ATTN_ERR_INVALID_SIZE);
    EXPECT_FIELD(heads_kv, -1, ATTN_ERR_INVALID_SIZE);
    EXPECT_FIELD(heads_kv, 3, ATTN_ERR_INVALID_SIZE); /* does not divide 4 */
    EXPECT_FIELD(heads_kv, 8, ATTN_ERR_INVALID_SIZE); /* more than heads_q */
    EXPECT_FIELD(seq_q, 0, ATTN_ERR_INVALID_SIZE);
    EXPECT_FIELD(seq_q, -1, ATTN_ERR_INVALID_SIZE);
    EXPECT_FIELD(seq_k, 0, ATTN_ERR_INVALID_SIZE);
    EXPECT_FIELD(seq_k, INT32_MIN, ATTN_ERR_INVALID_SIZE);
    EXPECT_FIELD(head_dim, 0, ATTN_ERR_UNSUPPORTED_HEAD_DIM);
    EXPECT_FIELD(head_dim, -16, ATTN_ERR_UNSUPPORTED_HEAD_DIM);
    EXPECT_FIELD(head_dim, ATTN_MAX_HEAD_DIM + 1, ATTN_ERR_UNSUPPORTED_HEAD_DIM);
    EXPECT_FIELD(head_dim_v, -1, ATTN_ERR_UNSUPPORTED_HEAD_DIM);
    EXPECT_FIELD(head_dim_v, ATTN_MAX_HEAD_DIM + 1, ATTN_ERR_UNSUPPORTED_HEAD_DIM);

    EXPECT_FIELD(mask, (attn_mask)3, ATTN_ERR_INVALID_VALUE);
    EXPECT_FIELD(mask, (attn_mask)-1, ATTN_ERR_INVALID_VALUE);
    EXPECT_FIELD(algo, (attn_algo)3, ATTN_ERR_INVALID_VALUE);
    EXPECT_FIELD(algo, (attn_algo)-1, ATTN_ERR_INVALID_VALUE);
    EXPECT_FIELD(dtype, (attn_dtype)3, ATTN_ERR_INVALID_VALUE);
    EXPECT_FIELD(dtype, (attn_dtype)-1, ATTN_ERR_INVALID_VALUE);
    EXPECT_FIELD(scale, NAN, ATTN_ERR_INVALID_VALUE);
    EXPECT_FIELD(scale, INFINITY, ATTN_ERR_INVALID_VALUE);
    EXPECT_FIELD(scale, -INFINITY, ATTN_ERR_INVALID_VALUE);

    EXPECT_FIELD(softcap, NAN, ATTN_ERR_INVALID_VALUE);
    EXPECT_FIELD(softcap, INFINITY, ATTN_ERR_INVALID_VALUE);
    EXPECT_FIELD(softcap, -1.0f, ATTN_ERR_INVALID_VALUE);

    /* A bias or keep-mask broadcast over neither 1 nor the full count. */
    {
        attn_params p = base_params();
        p.bias = (attn_score_operand){1, B + 1, 1, {0, 0, 0}};
        EXPECT("bias batch B + 1", &p, ATTN_ERR_INVALID_SIZE, ENTRY_ALL, 0);
        p = base_params();
        p.keep_mask = (attn_score_operand){1, 1, HQ - 1, {0, 0, 0}};
        EXPECT("keep_mask heads Hq - 1", &p, ATTN_ERR_INVALID_SIZE, ENTRY_ALL, 0);
        p = base_params();
        p.bias = (attn_score_operand){1, 1, 1, {0, 0, -1}};
        EXPECT("bias with a negative stride", &p, ATTN_ERR_INVALID_VALUE, ENTRY_ALL, 0);
    }
    /* Varlen without its totals. */
    {
        attn_params p = base_params();
        p.varlen = 1;
        EXPECT("varlen with total_q 0", &p, ATTN_ERR_INVALID_SIZE, ENTRY_ALL, 0);
        p.total_q = SQ;
        p.total_k = -1;
        EXPECT("varlen with total_k -1", &p, ATTN_ERR_INVALID_SIZE, ENTRY_ALL, 0);
    }
    /* Inputs the params ask for but the plain calls cannot pass (attn_check
     * takes no pointers: it accepts these). */
    {
        attn_params p = base_params();
        p.bias = (attn_score_operand){1, 1, 1, {0, 0, 0}};
        EXPECT("bias asked for, none given", &p, ATTN_ERR_NULL_ARGUMENT,
               ENTRY_HOST | ENTRY_DEVICE | ENTRY_REFERENCE, 0);
        p = base_params();
        p.keep_mask = (attn_score_operand){1, B, HQ, {0, 0, 0}};
        EXPECT("keep_mask asked for, none given", &p, ATTN_ERR_NULL_ARGUMENT,
               ENTRY_HOST | ENTRY_DEVICE | ENTRY_REFERENCE, 0);
        p = base_params();
        p.key_padding = 1;
        EXPECT("key_padding asked for, no key_lengths", &p, ATTN_ERR_NULL_ARGUMENT,
               ENTRY_HOST | ENTRY_DEVICE | ENTRY_REFERENCE, 0);
        p = base_params();
        p.alibi = 1;
        EXPECT("alibi asked for, no slopes", &p, ATTN_ERR_NULL_ARGUMENT,
               ENTRY_HOST | ENTRY_DEVICE | ENTRY_REFERENCE, 0);
    }

    /* Negative strides, one tensor at a time. */
    EXPECT_FIELD(q_strides.seq, -D, ATTN_ERR_INVALID_VALUE);
    EXPECT_FIELD(k_strides.head, -1, ATTN_ERR_INVALID_VALUE);
    EXPECT_FIELD(v_strides.batch, -1024, ATTN_ERR_INVALID_VALUE);
    EXPECT_FIELD(o_strides.seq, -D, ATTN_ERR_INVALID_VALUE);
    EXPECT_FIELD(lse_strides.seq, -1, ATTN_ERR_INVALID_VALUE);
    /* Output strides under which two elements share memory. */
    {
        attn_params p = base_params();
        p.o_strides = (attn_strides){HQ * SQ * D, SQ * D, D - 1};
        EXPECT("O seq stride < head_dim (rows overlap)", &p, ATTN_ERR_INVALID_VALUE, ENTRY_ALL, 0);
        p = base_params();
        p.lse_strides = (attn_strides){HQ * SQ, 1, 1};
        EXPECT("LSE head stride 1 = seq stride 1", &p, ATTN_ERR_INVALID_VALUE, ENTRY_ALL, 0);
    }

    /* Counts that do not fit size_t. */
    {
        attn_params p;
        attn_params_init(&p, INT32_MAX, INT32_MAX, INT32_MAX, INT32_MAX, 256);
        EXPECT("all sizes INT32_MAX, head_dim 256", &p, ATTN_ERR_SIZE_OVERFLOW, ENTRY_ALL, 0);
        /* 2^30 * 2^30 * 4 elements = 2^62 fit; their 2^64 bytes do not. */
        attn_params_init(&p, 1 << 30, 1 << 30, 1, 1, 4);
        EXPECT("2^62 elements of Q: bytes overflow", &p, ATTN_ERR_SIZE_OVERFLOW, ENTRY_ALL, 0);
        /* Tensors of 2^60 bytes fit size_t; 2^80 scores do not. */
        attn_params_init(&p, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 1);
        p.algo = ATTN_ALGO_THREE_KERNEL;
        EXPECT("2^80 scores for the three-kernel path", &p, ATTN_ERR_SIZE_OVERFLOW, ENTRY_ALL, 1);
        p = base_params();
        p.k_strides = (attn_strides){INT64_MAX, 1, 1};
        EXPECT("K batch stride INT64_MAX", &p, ATTN_ERR_SIZE_OVERFLOW, ENTRY_ALL, 0);
    }

    /* The fused path produces probabilities with its cpu kernels only: a
     * caller's variant=gpu is refused as the caller's (INVALID_VALUE); the
     * reference, which has no paths, still answers. Bad subsets are
     * test_forward's. */
    {
        attn_params p = base_params();
        p.algo = ATTN_ALGO_FUSED;
        attn_context_set_tuning(ctx, "variant=gpu");
        EXPECT("probabilities with ATTN_ALGO_FUSED under variant=gpu", &p, ATTN_ERR_INVALID_VALUE,
               ENTRY_HOST | ENTRY_CHECK, 1);
        attn_context_set_tuning(ctx, NULL);
        reset_outputs();
        attn_status st = attn_reference(&p, q, k, v, o, lse, probs);
        report("reference: probabilities with ATTN_ALGO_FUSED", st == ATTN_SUCCESS,
               attn_status_name(st));
    }
}

/* The per-batch and per-head arrays, out of range: through
 * attn_forward_host, attn_forward_device and attn_reference_host, each must
 * refuse with ATTN_ERR_INVALID_VALUE and write nothing. */
static void expect_metadata(const char *name, const attn_params *p, const int32_t *key_lengths,
                            const float *slopes, const int32_t *cu_q, const int32_t *cu_k) {
    reset_outputs();
    attn_host_tensors h = {.q = q,
                           .k = k,
                           .v = v,
                           .o = o,
                           .lse = lse,
                           .key_lengths = key_lengths,
                           .alibi_slopes = slopes,
                           .cu_seqlens_q = cu_q,
                           .cu_seqlens_k = cu_k};
    attn_status host = attn_forward_host(ctx, p, &h);
    int ok =
        status_ok(host, ATTN_ERR_INVALID_VALUE, "ATTN_ERR_INVALID_VALUE", ctx) && host_untouched();
    attn_status ref = attn_reference_host(p, &h);
    ok &=
        status_ok(ref, ATTN_ERR_INVALID_VALUE, "ATTN_ERR_INVALID_VALUE", NULL) && host_untouched();
    attn_device_tensors d = dev;
    d.key_lengths = key_lengths;
    d.alibi_slopes = slopes;
    d.cu_seqlens_q = cu_q;
    d.cu_seqlens_k = cu_k;
    cl_event ev = NULL;
    attn_status device = attn_forward_device(ctx, p, &d, 0, NULL, &ev);
    clFinish(queue);
    ok &= status_ok(device, ATTN_ERR_INVALID_VALUE, "ATTN_ERR_INVALID_VALUE", ctx) && !ev &&
          device_untouched(dev.o) && device_untouched(dev.lse);
    char detail[160];
    snprintf(detail, sizeof detail, "host %s, reference %s, device %s", attn_status_name(host),
             attn_status_name(ref), attn_status_name(device));
    report(name, ok, detail);
}

static void bad_metadata(void) {
    attn_params p = base_params();
    p.key_padding = 1;
    const int32_t negative[B] = {3, -1}, too_long[B] = {SK + 1, 2};
    expect_metadata("key_lengths[1] = -1", &p, negative, NULL, NULL, NULL);
    expect_metadata("key_lengths[0] = seq_k + 1", &p, too_long, NULL, NULL, NULL);

    p = base_params();
    p.alibi = 1;
    const float slopes[HQ] = {0.5f, NAN, 0.125f, 0.0625f};
    expect_metadata("alibi_slopes[1] = NaN", &p, NULL, slopes, NULL, NULL);

    /* Two sequences packed into rows of the base tensors. */
    p = base_params();
    p.varlen = 1;
    p.total_q = SQ;
    p.total_k = SK;
    const int32_t good_q[B + 1] = {0, 3, SQ}, good_k[B + 1] = {0, 5, SK};
    const int32_t not_zero[B + 1] = {1, 3, SQ}, falling[B + 1] = {0, 5, 4},
                               past_total[B + 1] = {0, 3, SQ + 1}, too_long_q[B + 1] = {0, 0, SQ};
    expect_metadata("cu_seqlens_q[0] = 1", &p, NULL, NULL, not_zero, good_k);
    expect_metadata("cu_seqlens_k falling", &p, NULL, NULL, good_q, falling);
    expect_metadata("cu_seqlens_q[B] past total_q", &p, NULL, NULL, past_total, good_k);
    p.seq_q = SQ - 1; /* the longest sequence may have this many queries */
    expect_metadata("a sequence longer than seq_q", &p, NULL, NULL, too_long_q, good_k);
}

/* Missing pointers and handles. */
static void null_arguments(void) {
    attn_params p = base_params();
    struct {
        const char *name;
        const void *q, *k, *v;
        void *o;
    } host[4] = {{"q NULL", NULL, k, v, o},
                 {"k NULL", q, NULL, v, o},
                 {"v NULL", q, k, NULL, o},
                 {"o NULL", q, k, v, NULL}};
    for (int i = 0; i < 4; i++) {
        reset_outputs();
        attn_status st =
            attn_forward(ctx, &p, host[i].q, host[i].k, host[i].v, host[i].o, lse, probs);
        int ok = status_ok(st, ATTN_ERR_NULL_ARGUMENT, "ATTN_ERR_NULL_ARGUMENT", ctx) &&
                 host_untouched();
        attn_status rs = attn_reference(&p, host[i].q, host[i].k, host[i].v, host[i].o, lse, probs);
        ok &= status_ok(rs, ATTN_ERR_NULL_ARGUMENT, "ATTN_ERR_NULL_ARGUMENT", NULL) &&
              host_untouched();
        char detail[96];
        snprintf(detail, sizeof detail, "forward %s reference %s", attn_status_name(st),
                 attn_status_name(rs));
        char label[64];
        snprintf(label, sizeof label, "%s -> ATTN_ERR_NULL_ARGUMENT", host[i].name);
        report(label, ok, detail);
    }

    reset_outputs();
    attn_status st = attn_forward(NULL, &p, q, k, v, o, lse, probs);
    report("ctx NULL: attn_forward",
           status_ok(st, ATTN_ERR_NULL_ARGUMENT, "ATTN_ERR_NULL_ARGUMENT", NULL) &&
               host_untouched(),
           attn_status_name(st));
    st = attn_forward_device(NULL, &p, &dev, 0, NULL, NULL);
    report("ctx NULL: attn_forward_device",
           status_ok(st, ATTN_ERR_NULL_ARGUMENT, "ATTN_ERR_NULL_ARGUMENT", NULL),
           attn_status_name(st));
    st = attn_check(NULL, &p, 0, 0, NULL);
    report("ctx NULL: attn_check",
           status_ok(st, ATTN_ERR_NULL_ARGUMENT, "ATTN_ERR_NULL_ARGUMENT", NULL),
           attn_status_name(st));
    st = attn_prepare(NULL, &p, 0, 0);
    report("ctx NULL: attn_prepare",
           status_ok(st, ATTN_ERR_NULL_ARGUMENT, "ATTN_ERR_NULL_ARGUMENT", NULL),
           attn_status_name(st));

    st = attn_forward_device(ctx, &p, NULL, 0, NULL, NULL);
    report("device tensors NULL",
           status_ok(st, ATTN_ERR_NULL_ARGUMENT, "ATTN_ERR_NULL_ARGUMENT", ctx),
           attn_status_name(st));
    const char *names[4] = {"q", "k", "v", "o"};
    for (int i = 0; i < 4; i++) {
        attn_device_tensors t = dev;
        cl_mem *field[4] = {&t.q, &t.k, &t.v, &t.o};
        *field[i] = NULL;
        st = attn_forward_device(ctx, &p, &t, 0, NULL, NULL);
        clFinish(queue);
        char label[64];
        snprintf(label, sizeof label, "device %s NULL -> ATTN_ERR_NULL_ARGUMENT", names[i]);
        report(label,
               status_ok(st, ATTN_ERR_NULL_ARGUMENT, "ATTN_ERR_NULL_ARGUMENT", ctx) &&
                   device_untouched(dev.o) && device_untouched(dev.lse),
               attn_status_name(st));
    }
}

/* cl_mem arguments that cannot hold the shape, and offsets that are not
 * whole elements. */
static void bad_device_tensors(void) {
    attn_params p = base_params();
    const size_t bytes[5] = {Q_ELEMS * 4, K_ELEMS * 4, K_ELEMS * 4, O_ELEMS * 4, L_ELEMS * 4};
    const char *names[5] = {"Q", "K", "V", "O", "LSE"};
    for (int i = 0; i < 5; i++) {
        /* One element short. */
        cl_mem small = make_buffer(bytes[i] - 4, NULL);
        attn_device_tensors t = dev;
        cl_mem *mem[5] = {&t.q, &t.k, &t.v, &t.o, &t.lse};
        size_t *off[5] = {&t.q_offset, &t.k_offset, &t.v_offset, &t.o_offset, &t.lse_offset};
        *mem[i] = small;
        cl_uint refs = ref_count(small);
        attn_status st = attn_forward_device(ctx, &p, &t, 0, NULL, NULL);
        clFinish(queue);
        char label[80];
        snprintf(label, sizeof label, "%s buffer 4 bytes short", names[i]);
        report(label,
               status_ok(st, ATTN_ERR_BUFFER_TOO_SMALL, "ATTN_ERR_BUFFER_TOO_SMALL", ctx) &&
                   device_untouched(dev.o) && device_untouched(dev.lse) && ref_count(small) == refs,
               attn_status_name(st));
        clReleaseMemObject(small);

        /* The right size, but the offset eats into it. */
        t = dev;
        *off[i] = 4;
        st = attn_forward_device(ctx, &p, &t, 0, NULL, NULL);
        clFinish(queue);
        snprintf(label, sizeof label, "%s offset 4 into an exact-size buffer", names[i]);
        report(label,
               status_ok(st, ATTN_ERR_BUFFER_TOO_SMALL, "ATTN_ERR_BUFFER_TOO_SMALL", ctx) &&
                   device_untouched(dev.o) && device_untouched(dev.lse),
               attn_status_name(st));

        /* An offset past the end. */
        t = dev;
        *off[i] = bytes[i] + 64;
        st = attn_forward_device(ctx, &p, &t, 0, NULL, NULL);
        clFinish(queue);
        snprintf(label, sizeof label, "%s offset past the end", names[i]);
        report(label,
               status_ok(st, ATTN_ERR_BUFFER_TOO_SMALL, "ATTN_ERR_BUFFER_TOO_SMALL", ctx) &&
                   device_untouched(dev.o) && device_untouched(dev.lse),
               attn_status_name(st));

        /* Not a whole number of elements. */
        t = dev;
        *off[i] = 2;
        st = attn_forward_device(ctx, &p, &t, 0, NULL, NULL);
        clFinish(queue);
        snprintf(label, sizeof label, "%s offset 2 bytes (not a multiple of 4)", names[i]);
        report(label,
               status_ok(st, ATTN_ERR_INVALID_VALUE, "ATTN_ERR_INVALID_VALUE", ctx) &&
                   device_untouched(dev.o) && device_untouched(dev.lse),
               attn_status_name(st));
    }

    cl_event dummy = NULL;
    attn_status st = attn_forward_device(ctx, &p, &dev, 1, NULL, NULL);
    clFinish(queue);
    report("num_wait_events 1 with wait_list NULL",
           status_ok(st, ATTN_ERR_INVALID_VALUE, "ATTN_ERR_INVALID_VALUE", ctx) &&
               device_untouched(dev.o),
           attn_status_name(st));
    st = attn_forward_device(ctx, &p, &dev, 0, &dummy, NULL);
    clFinish(queue);
    report("num_wait_events 0 with a wait_list",
           status_ok(st, ATTN_ERR_INVALID_VALUE, "ATTN_ERR_INVALID_VALUE", ctx) &&
               device_untouched(dev.o),
           attn_status_name(st));
}

/* A buffer's bytes, read back (malloc'ed). */
static unsigned char *contents(cl_mem mem, size_t *bytes) {
    clGetMemObjectInfo(mem, CL_MEM_SIZE, sizeof *bytes, bytes, NULL);
    unsigned char *host = malloc(*bytes);
    if (clEnqueueReadBuffer(queue, mem, CL_TRUE, 0, *bytes, host, 0, NULL, NULL) != CL_SUCCESS) {
        printf("FAIL: clEnqueueReadBuffer\n");
        exit(1);
    }
    return host;
}

/* attn_forward_device on `t`, which makes an output share memory with an
 * input or the other output: ATTN_ERR_INVALID_VALUE (or `want`), with a
 * message, no event, and `shared` (the buffer they share) as it was. */
static void expect_overlap(const char *name, const attn_device_tensors *t, cl_mem shared,
                           attn_status want, const char *want_name) {
    attn_params p = base_params();
    size_t before_bytes = 0, after_bytes = 0;
    unsigned char *before = contents(shared, &before_bytes);
    cl_event ev = NULL;
    attn_status st = attn_forward_device(ctx, &p, t, 0, NULL, &ev);
    clFinish(queue);
    unsigned char *after = contents(shared, &after_bytes);
    const int unchanged = before_bytes == after_bytes && !memcmp(before, after, before_bytes);
    char detail[200];
    snprintf(detail, sizeof detail, "%s: %.120s", attn_status_name(st),
             st == ATTN_SUCCESS ? "" : attn_last_error(ctx));
    report(name,
           status_ok(st, want, want_name, ctx) &&
               (want == ATTN_SUCCESS ? ev != NULL : ev == NULL && unchanged),
           detail);
    if (ev) {
        clReleaseEvent(ev);
    }
    free(before);
    free(after);
}

static cl_mem sub_buffer(cl_mem parent, size_t origin, size_t size) {
    cl_buffer_region region = {origin, size};
    cl_int err;
    cl_mem sub =
        clCreateSubBuffer(parent, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &region, &err);
    if (err != CL_SUCCESS) {
        printf("FAIL: clCreateSubBuffer(%zu, %zu): %d\n", origin, size, (int)err);
        exit(1);
    }
    return sub;
}

/* The device call with outputs in its inputs' memory (include/attn_cl.h:
 * refused, since the kernels would read what they overwrite), through the
 * same cl_mem and through sub-buffers of one buffer; and O and LSE sharing
 * an element. Adjacent tensors of one buffer are accepted. */
static void device_overlaps(void) {
    const size_t kb = sizeof k, vb = sizeof v, ob = sizeof o, lb = sizeof lse;
    attn_device_tensors t = dev;
    t.o = dev.q;
    expect_overlap("O is Q's buffer -> INVALID_VALUE", &t, dev.q, ATTN_ERR_INVALID_VALUE,
                   "ATTN_ERR_INVALID_VALUE");

    /* V and then LSE in one buffer: one element into V's last, or right
     * after it. */
    cl_mem v_lse = make_buffer(vb + lb, NULL);
    clEnqueueWriteBuffer(queue, v_lse, CL_TRUE, 0, vb, v, 0, NULL, NULL);
    t = dev;
    t.v = t.lse = v_lse;
    t.lse_offset = vb - 4;
    expect_overlap("LSE's first element on V's last -> INVALID_VALUE", &t, v_lse,
                   ATTN_ERR_INVALID_VALUE, "ATTN_ERR_INVALID_VALUE");
    t.lse_offset = vb;
    expect_overlap("LSE right after V in one buffer -> success", &t, v_lse, ATTN_SUCCESS,
                   "ATTN_SUCCESS");
    clReleaseMemObject(v_lse);

    /* K and O as sub-buffers of one buffer, O from the first aligned origin
     * inside K, then from the first one past it. */
    cl_device_id device = NULL;
    cl_uint align_bits = 0;
    clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof device, &device, NULL);
    clGetDeviceInfo(device, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits, NULL);
    const size_t align = align_bits / 8 ? align_bits / 8 : 1;
    const size_t past_k = (kb + align - 1) / align * align;
    if (align < kb) {
        cl_mem parent = make_buffer(past_k + ob, NULL);
        clEnqueueWriteBuffer(queue, parent, CL_TRUE, 0, kb, k, 0, NULL, NULL);
        cl_mem k_sub = sub_buffer(parent, 0, kb), o_inside = sub_buffer(parent, align, ob);
        cl_mem o_after = sub_buffer(parent, past_k, ob);
        t = dev;
        t.k = k_sub;
        t.o = o_inside;
        expect_overlap("O a sub-buffer inside K's buffer -> INVALID_VALUE", &t, parent,
                       ATTN_ERR_INVALID_VALUE, "ATTN_ERR_INVALID_VALUE");
        t.k = parent; /* K the parent itself, O its sub-buffer */
        expect_overlap("O a sub-buffer of K's buffer (K the parent) -> INVALID_VALUE", &t, parent,
                       ATTN_ERR_INVALID_VALUE, "ATTN_ERR_INVALID_VALUE");
        t.k = k_sub;
        t.o = o_after;
        expect_overlap("K and O disjoint sub-buffers of one buffer -> success", &t, k_sub,
                       ATTN_SUCCESS, "ATTN_SUCCESS");
        clReleaseMemObject(o_after);
        clReleaseMemObject(o_inside);
        clReleaseMemObject(k_sub);
        clReleaseMemObject(parent);
    } else {
        printf("%-50s %-64s SKIP\n", "sub-buffers", "alignment past K's size");
    }

    /* O and LSE in one buffer, LSE's first element on O's second. */
    cl_mem o_lse = make_buffer(ob + lb, NULL);
    t = dev;
    t.o = t.lse = o_lse;
    t.lse_offset = 4;
    expect_overlap("LSE on O's elements -> INVALID_VALUE", &t, o_lse, ATTN_ERR_INVALID_VALUE,
                   "ATTN_ERR_INVALID_VALUE");
    clReleaseMemObject(o_lse);
}

/* The event out-parameter after a failure: NULL, whatever it held and
 * however early the call failed (include/attn_cl.h), for both calls that
 * return one. It starts as a stale non-NULL handle, as a caller reusing a
 * variable would leave it. */
static void failed_calls_clear_event(void) {
    const cl_event stale = (cl_event)(uintptr_t)0x5a5a5a5a;
    attn_params p = base_params(), bad_size = base_params();
    bad_size.batch = 0;
    attn_device_tensors no_o = dev, small = dev;
    no_o.o = NULL;
    cl_mem tiny = make_buffer(16, NULL);
    small.o = tiny;
    struct {
        const char *name;
        attn_context_t ctx;
        const attn_params *p;
        const attn_device_tensors *t;
        attn_status want;
    } cases[5] = {{"ctx NULL", NULL, &p, &dev, ATTN_ERR_NULL_ARGUMENT},
                  {"tensors NULL", ctx, &p, NULL, ATTN_ERR_NULL_ARGUMENT},
                  {"o NULL", ctx, &p, &no_o, ATTN_ERR_NULL_ARGUMENT},
                  {"batch 0", ctx, &bad_size, &dev, ATTN_ERR_INVALID_SIZE},
                  {"O buffer too small", ctx, &p, &small, ATTN_ERR_BUFFER_TOO_SMALL}};
    for (int i = 0; i < 5; i++) {
        cl_event ev = stale;
        attn_status st = attn_forward_device(cases[i].ctx, cases[i].p, cases[i].t, 0, NULL, &ev);
        char label[96];
        snprintf(label, sizeof label, "attn_forward_device, %s: *event NULL", cases[i].name);
        report(label, st == cases[i].want && ev == NULL, attn_status_name(st));
    }

    attn_merge_device_tensors m = {
        .o_a = dev.o, .o_b = dev.o, .lse_a = dev.lse, .lse_b = dev.lse, .o = dev.o, .lse = dev.lse};
    attn_merge_device_tensors m_no_o = m, m_small = m;
    m_no_o.o = NULL;
    m_small.o = tiny;
    struct {
        const char *name;
        attn_context_t ctx;
        const attn_params *p;
        const attn_merge_device_tensors *t;
        attn_status want;
    } merges[5] = {{"ctx NULL", NULL, &p, &m, ATTN_ERR_NULL_ARGUMENT},
                   {"tensors NULL", ctx, &p, NULL, ATTN_ERR_NULL_ARGUMENT},
                   {"o NULL", ctx, &p, &m_no_o, ATTN_ERR_NULL_ARGUMENT},
                   {"batch 0", ctx, &bad_size, &m, ATTN_ERR_INVALID_SIZE},
                   {"O buffer too small", ctx, &p, &m_small, ATTN_ERR_BUFFER_TOO_SMALL}};
    for (int i = 0; i < 5; i++) {
        cl_event ev = stale;
        attn_status st = attn_merge_device(merges[i].ctx, merges[i].p, merges[i].t, 0, NULL, &ev);
        char label[96];
        snprintf(label, sizeof label, "attn_merge_device, %s: *event NULL", merges[i].name);
        report(label, st == merges[i].want && ev == NULL, attn_status_name(st));
    }
    clFinish(queue);
    clReleaseMemObject(tiny);
}

/* ATTN_CL_DEVICE naming no device: its own status, *ctx NULL. */
static void bad_device_spec(void) {
    const char *specs[4] = {"99:0", "0:99", "garbage", "0:"};
    for (int i = 0; i < 4; i++) {
        setenv("ATTN_CL_DEVICE", specs[i], 1);
        attn_context_t c = (attn_context_t)&failures; /* must be overwritten */
        attn_status st = attn_context_create(NULL, &c);
        char label[64];
        snprintf(label, sizeof label, "ATTN_CL_DEVICE=\"%s\"", specs[i]);
        report(label,
               status_ok(st, ATTN_ERR_INVALID_DEVICE_SPEC, "ATTN_ERR_INVALID_DEVICE_SPEC", NULL) &&
                   c == NULL,
               attn_status_name(st));
        if (st == ATTN_SUCCESS && c != (attn_context_t)&failures) {
            attn_context_destroy(c);
        }
    }
    unsetenv("ATTN_CL_DEVICE");

    attn_context_options opt;
    attn_context_options_init(&opt);
    opt.platform_index = 99;
    opt.device_index = 0;
    attn_context_t c = (attn_context_t)&failures;
    attn_status st = attn_context_create(&opt, &c);
    report("options platform 99",
           status_ok(st, ATTN_ERR_INVALID_DEVICE_SPEC, "ATTN_ERR_INVALID_DEVICE_SPEC", NULL) &&
               c == NULL,
           attn_status_name(st));
    if (st == ATTN_SUCCESS && c != (attn_context_t)&failures) {
        attn_context_destroy(c);
    }

    st = attn_context_create(NULL, NULL);
    report("attn_context_create(ctx NULL)",
           status_ok(st, ATTN_ERR_NULL_ARGUMENT, "ATTN_ERR_NULL_ARGUMENT", NULL),
           attn_status_name(st));
}

/* ATTN_CL_KERNEL_DIR where common.cl is not a kernel file: a directory, a
 * FIFO, a file past any kernel's size. Each must give
 * ATTN_ERR_KERNEL_SOURCE naming the path, at once (a FIFO must not block
 * the call), on a fresh context (whose first build reads the sources). */
static void kernel_dir_not_a_file(void) {
    char dir[] = "/tmp/attn_kernel_dir_XXXXXX";
    if (!mkdtemp(dir)) {
        report("mkdtemp for ATTN_CL_KERNEL_DIR", 0, "");
        return;
    }
    char path[sizeof dir + 16];
    snprintf(path, sizeof path, "%s/common.cl", dir);
    setenv("ATTN_CL_KERNEL_DIR", dir, 1);
    alarm(120); /* a blocked open must fail the test, not hang it */
    for (int kind = 0; kind < 3; kind++) {
        static const char *const names[3] = {"a directory", "a FIFO", "a 16 MiB + 1 byte file"};
        int made = -1;
        if (kind == 0) {
            made = mkdir(path, 0700);
        } else if (kind == 1) {
            made = mkfifo(path, 0600);
        } else {
            int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            made = fd < 0 ? -1 : ftruncate(fd, ((off_t)16 << 20) + 1); /* sparse */
            if (fd >= 0) {
                close(fd);
            }
        }
        char label[96], detail[200];
        snprintf(label, sizeof label, "ATTN_CL_KERNEL_DIR: common.cl is %s", names[kind]);
        attn_context_t fresh = NULL;
        if (made != 0 || attn_context_create(NULL, &fresh) != ATTN_SUCCESS) {
            report(label, 0, "cannot set the case up");
        } else {
            attn_params p = base_params();
            attn_status st = attn_prepare(fresh, &p, 1, 0);
            snprintf(detail, sizeof detail, "%s: %.150s", attn_status_name(st),
                     attn_last_error(fresh));
            report(label,
                   status_ok(st, ATTN_ERR_KERNEL_SOURCE, "ATTN_ERR_KERNEL_SOURCE", fresh) &&
                       strstr(attn_last_error(fresh), path),
                   detail);
            attn_context_destroy(fresh);
        }
        if (kind == 0) {
            rmdir(path);
        } else {
            unlink(path);
        }
    }
    alarm(0);
    unsetenv("ATTN_CL_KERNEL_DIR");
    rmdir(dir);
}

/* Names of statuses the tests above cannot provoke, and of OpenCL codes. */
static void status_names(void) {
    struct {
        attn_status status;
        const char *name;
    } names[] = {
        {ATTN_SUCCESS, "ATTN_SUCCESS"},
        {ATTN_ERR_DEVICE_OUT_OF_MEMORY, "ATTN_ERR_DEVICE_OUT_OF_MEMORY"},
        {ATTN_ERR_HOST_OUT_OF_MEMORY, "ATTN_ERR_HOST_OUT_OF_MEMORY"},
        {ATTN_ERR_NO_DEVICE, "ATTN_ERR_NO_DEVICE"},
        {ATTN_ERR_KERNEL_SOURCE, "ATTN_ERR_KERNEL_SOURCE"},
        {(attn_status)CL_OUT_OF_RESOURCES, "CL_OUT_OF_RESOURCES"},
        {(attn_status)CL_BUILD_PROGRAM_FAILURE, "CL_BUILD_PROGRAM_FAILURE"},
        {(attn_status)CL_INVALID_MEM_OBJECT, "CL_INVALID_MEM_OBJECT"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *got = attn_status_name(names[i].status);
        char label[64];
        snprintf(label, sizeof label, "attn_status_name(%d)", (int)names[i].status);
        report(label, got && strcmp(got, names[i].name) == 0, got ? got : "(NULL)");
    }
    const char *unknown = attn_status_name((attn_status)-1999);
    report("attn_status_name(-1999) is not NULL", unknown != NULL, unknown ? unknown : "(NULL)");
}

int main(void) {
    ctx = test_context_create();
    queue = attn_context_queue(ctx);
    if (clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof cl_ctx, &cl_ctx, NULL) !=
        CL_SUCCESS) {
        printf("FAIL: clGetCommandQueueInfo(CL_QUEUE_CONTEXT)\n");
        return 1;
    }
    test_rng rng;
    test_rng_seed(&rng, 5);
    test_fill_uniform(&rng, q, Q_ELEMS, -1.0f, 1.0f);
    test_fill_uniform(&rng, k, K_ELEMS, -1.0f, 1.0f);
    test_fill_uniform(&rng, v, K_ELEMS, -1.0f, 1.0f);
    dev.q = make_buffer(sizeof q, q);
    dev.k = make_buffer(sizeof k, k);
    dev.v = make_buffer(sizeof v, v);
    dev.o = make_buffer(sizeof o, NULL);
    dev.lse = make_buffer(sizeof lse, NULL);

    /* The base request itself must succeed, or every case below would pass
     * for the wrong reason. */
    attn_params p = base_params();
    attn_status st = attn_forward(ctx, &p, q, k, v, o, lse, probs);
    report("base request succeeds", st == ATTN_SUCCESS, attn_status_name(st));
    st = attn_reference(&p, q, k, v, o, lse, probs);
    report("base request succeeds in the reference", st == ATTN_SUCCESS, attn_status_name(st));

    bad_params();
    bad_metadata();
    null_arguments();
    bad_device_tensors();
    device_overlaps();
    failed_calls_clear_event();
    bad_device_spec();
    kernel_dir_not_a_file();
    status_names();

    clReleaseMemObject(dev.q);
    clReleaseMemObject(dev.k);
    clReleaseMemObject(dev.v);
    clReleaseMemObject(dev.o);
    clReleaseMemObject(dev.lse);
    attn_context_destroy(ctx);
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
