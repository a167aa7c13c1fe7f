/* The attention variants (attn_cl.h: GQA, strides, bias, keep-mask, key
 * padding, sliding windows, ALiBi, softcap, varlen, head dims to 512, f16
 * and bf16 storage) against attn_reference_host, on one algorithm (argv[1]:
 * "three-kernel" or "fused"; ATTN_CL_TUNE picks the fused kernel variant),
 * each alone and in combination, through both attn_forward_host and
 * attn_forward_device.
 *
 * A case is one line of words:
 *   B2 Hq4 Hkv2 Sq33 Sk65 D31 Dv16   sizes (Hkv, Dv default to Hq, D)
 *   none | tl | br                   mask: none, causal top-left, bottom-right
 *   bhsd | bshd | hbsd | padded      layout of every tensor (test_util.h)
 *   f32 | f16 | bf16                 storage of Q, K, V and O
 *   win=L,R  softcap=C  alibi  bias=BxH  keep=BxH  pad  varlen   features
 *   qk=X                             Q and K drawn from [-X, X) (default 1)
 *   quick                            also in the memcheck subset
 *
 * Bound (test_util.h): max|out - ref| <= 2 * max|naive_fp32 - ref| + atol,
 * atol = 1e-6 * max(1, max|ref|), NMSE <= 4 * NMSE(naive_fp32) + 1e-10, for
 * O, LSE and (three-kernel) probabilities. ref is the double reference on
 * the stored inputs, unrounded; naive_fp32 rounds its O to the storage type,
 * so with f16 (11-bit significand) and bf16 (8-bit) the bound is about one
 * rounding of O, about 5e-4 and 4e-3 of |O|. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const cases[] = {
    /* Each feature alone, under each mask, on shapes that break tiling. */
    "B2 Hq4 Hkv2 Sq33 Sk65 D31 none bhsd bias=2x4",
    "B2 Hq4 Hkv2 Sq65 Sk33 D16 br padded bias=1x4",
    "B3 Hq2 Hkv1 Sq7 Sk100 D8 tl bshd bias=3x1",
    "B1 Hq3 Hkv3 Sq100 Sk100 D64 none bhsd bias=1x1",
    "B2 Hq2 Hkv2 Sq33 Sk65 D31 none bhsd keep=2x2",
    "B2 Hq4 Hkv1 Sq64 Sk64 D32 br bshd keep=1x1",
    "B1 Hq2 Hkv2 Sq100 Sk7 D16 tl padded keep=1x2",
    "B4 Hq2 Hkv2 Sq17 Sk70 D31 none bhsd pad",
    "B3 Hq2 Hkv1 Sq70 Sk17 D8 br bshd pad",
    "B1 Hq2 Hkv2 Sq100 Sk100 D32 none bhsd win=8,8",
    "B1 Hq2 Hkv2 Sq100 Sk100 D32 none bhsd win=-1,0",
    "B1 Hq2 Hkv2 Sq64 Sk257 D16 tl bhsd win=20,-1",
    "B1 Hq2 Hkv2 Sq257 Sk64 D16 br bshd win=5,0",
    "B2 Hq2 Hkv1 Sq33 Sk65 D31 br padded win=0,3",
    "B1 Hq2 Hkv2 Sq7 Sk100 D8 none bhsd win=3,2",
    "B1 Hq4 Hkv4 Sq100 Sk100 D64 none bhsd alibi",
    "B1 Hq4 Hkv2 Sq65 Sk33 D16 br bshd alibi",
    "B1 Hq2 Hkv2 Sq100 Sk100 D64 none bhsd softcap=30 qk=30",
    "B1 Hq2 Hkv2 Sq33 Sk65 D31 tl bhsd softcap=5",
    "B3 Hq4 Hkv2 Sq40 Sk50 D16 none bhsd varlen",
    "B3 Hq4 Hkv2 Sq40 Sk50 D16 br bshd varlen",
    "B4 Hq2 Hkv1 Sq33 Sk17 D31 tl padded varlen",
    /* Head sizes: up to 512, and head_dim_v != head_dim. */
    "B1 Hq2 Hkv2 Sq64 Sk64 D512 none bhsd",
    "B1 Hq2 Hkv1 Sq33 Sk65 D192 Dv128 br bhsd",
    "B1 Hq1 Hkv1 Sq17 Sk33 D320 Dv512 tl bshd",
    /* 16-bit storage. */
    "B2 Hq4 Hkv2 Sq65 Sk33 D64 none bhsd f16",
    "B2 Hq4 Hkv2 Sq33 Sk65 D31 br bshd f16",
    "B1 Hq2 Hkv2 Sq100 Sk100 D64 tl padded bf16",
    "B2 Hq2 Hkv1 Sq7 Sk100 D8 none hbsd bf16",
    "B1 Hq2 Hkv2 Sq64 Sk64 D96 Dv80 br bhsd f16 qk=30",
    /* Combinations. */
    "B3 Hq4 Hkv2 Sq40 Sk60 D32 br bshd win=6,0 varlen",
    "B3 Hq4 Hkv1 Sq33 Sk65 D31 tl bshd bf16 softcap=20 pad",
    "B2 Hq4 Hkv2 Sq33 Sk65 D16 br padded f16 alibi bias=2x1 keep=1x4",
    "B3 Hq2 Hkv2 Sq40 Sk40 D64 tl bhsd varlen pad alibi win=10,-1",
    "B2 Hq6 Hkv2 Sq100 Sk257 D80 none bshd bf16 win=30,30 keep=2x6 softcap=10",
    "B2 Hq2 Hkv2 Sq257 Sk100 D128 br bhsd varlen f16 bias=1x2",
    "B3 Hq4 Hkv2 Sq9 Sk13 D16 br padded f16 alibi bias=3x1 keep=1x4 pad varlen win=4,1 "
    "softcap=8 quick",
};

static int failures;

/* Parses one case into params and options; returns 0 on a bad word. */
static int parse_case(const char *text, attn_params *p, test_layout *layout, float *qk,
                      int *quick) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", text);
    attn_params_init(p, 1, 1, 1, 1, 1);
    p->heads_kv = 0;
    p->head_dim_v = 0;
    *layout = TEST_BHSD;
    *qk = 1.0f;
    *quick = 0;
    int hkv = 0, dv = 0;
    for (char *w = strtok(buf, " "); w; w = strtok(NULL, " ")) {
        int a = 0, b = 0;
        float f = 0;
        if (sscanf(w, "B%d", &a) == 1) {
            p->batch = a;
        } else if (sscanf(w, "Hq%d", &a) == 1) {
            p->heads_q = a;
        } else if (sscanf(w, "Hkv%d", &a) == 1) {
            hkv = a;
        } else if (sscanf(w, "Sq%d", &a) == 1) {
            p->seq_q = a;
        } else if (sscanf(w, "Sk%d", &a) == 1) {
            p->seq_k = a;
        } else if (sscanf(w, "Dv%d", &a) == 1) {
            dv = a;
        } else if (sscanf(w, "D%d", &a) == 1) {
            p->head_dim = a;
        } else if (!strcmp(w, "none") || !strcmp(w, "tl") || !strcmp(w, "br")) {
            p->mask = !strcmp(w, "tl")   ? ATTN_MASK_CAUSAL_TOP_LEFT
                      : !strcmp(w, "br") ? ATTN_MASK_CAUSAL_BOTTOM_RIGHT
                                         : ATTN_MASK_NONE;
        } else if (!strcmp(w, "bhsd") || !strcmp(w, "bshd") || !strcmp(w, "hbsd") ||
                   !strcmp(w, "padded")) {
            *layout = !strcmp(w, "bshd")     ? TEST_BSHD
                      : !strcmp(w, "hbsd")   ? TEST_HBSD
                      : !strcmp(w, "padded") ? TEST_PADDED
                                             : TEST_BHSD;
        } else if (!strcmp(w, "f32") || !strcmp(w, "f16") || !strcmp(w, "bf16")) {
            p->dtype = !strcmp(w, "f16")    ? ATTN_DTYPE_F16
                       : !strcmp(w, "bf16") ? ATTN_DTYPE_BF16
                                            : ATTN_DTYPE_F32;
        } else if (sscanf(w, "win=%d,%d", &a, &b) == 2) {
            p->window = (attn_window){1, a, b};
        } else if (sscanf(w, "softcap=%f", &f) == 1) {
            p->softcap = f;
        } else if (sscanf(w, "qk=%f", &f) == 1) {
            *qk = f;
        } else if (!strcmp(w, "alibi")) {
            p->alibi = 1;
        } else if (sscanf(w, "bias=%dx%d", &a, &b) == 2) {
            p->bias = (attn_score_operand){1, a, b, {0, 0, 0}};
        } else if (sscanf(w, "keep=%dx%d", &a, &b) == 2) {
            p->keep_mask = (attn_score_operand){1, a, b, {0, 0, 0}};
        } else if (!strcmp(w, "pad")) {
            p->key_padding = 1;
        } else if (!strcmp(w, "varlen")) {
            p->varlen = 1;
        } else if (!strcmp(w, "quick")) {
            *quick = 1;
        } else {
            printf("FAIL: bad word '%s' in case \"%s\"\n", w, text);
            return 0;
        }
    }
    p->heads_kv = hkv ? hkv : p->heads_q;
    p->head_dim_v = dv ? dv : p->head_dim;
    return 1;
}

/* O, LSE and probabilities of one call against the reference; appends the
 * verdicts to `line`. */
static int check_outputs(const test_problem *t, const void *o, const float *lse, const float *probs,
                         char *line, size_t size) {
    char part[200];
    test_result r = test_compare_output(t, o);
    int ok = r.ok;
    test_format_result(part, sizeof part, "O", &r);
    size_t n = strlen(line);
    n += (size_t)snprintf(line + n, size - n, "%s", part);
    r = test_compare(&t->lse_shape, lse, t->ref_lse, t->naive_lse, t->lse_elems);
    ok &= r.ok;
    test_format_result(part, sizeof part, " LSE", &r);
    n += (size_t)snprintf(line + n, n < size ? size - n : 0, "%s", part);
    if (probs) {
        r = test_compare(&t->probs_shape, probs, t->ref_probs, t->naive_probs, t->probs_elems);
        ok &= r.ok;
        test_format_result(part, sizeof part, " P", &r);
        snprintf(line + n, n < size ? size - n : 0, "%s", part);
    }
    return ok;
}

static cl_mem device_copy(cl_context context, const void *host, size_t bytes) {
    cl_int err;
    cl_mem mem = clCreateBuffer(context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes,
                                (void *)host, &err);
    if (err != CL_SUCCESS) {
        printf("FAIL: clCreateBuffer (%zu bytes): %d\n", bytes, (int)err);
        exit(1);
    }
    return mem;
}

/* attn_forward_device on buffers holding t's inputs, O and LSE starting as
 * the sentinel; the metadata stays in host memory. */
static int run_device(attn_context_t ctx, const test_problem *t, char *line, size_t size) {
    cl_command_queue queue = attn_context_queue(ctx);
    cl_context context;
    clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof context, &context, NULL);
    const size_t es = test_dtype_size(t->p.dtype);
    void *o = test_alloc_output(t);
    float *lse = test_alloc_sentinel(t->lse_elems * sizeof(float));
    attn_device_tensors d = {
        .q = device_copy(context, t->q_store, t->q_elems * es),
        .k = device_copy(context, t->k_store, t->k_elems * es),
        .v = device_copy(context, t->v_store, t->v_elems * es),
        .o = device_copy(context, o, t->o_elems * es),
        .lse = device_copy(context, lse, t->lse_elems * sizeof(float)),
        .bias = t->x.bias ? device_copy(context, t->x.bias, t->x.bias_elems * sizeof(float)) : NULL,
        .keep_mask =
            t->x.keep_mask ? device_copy(context, t->x.keep_mask, t->x.keep_mask_elems) : NULL,
        .key_lengths = t->x.key_lengths,
        .cu_seqlens_q = t->x.cu_seqlens_q,
        .cu_seqlens_k = t->x.cu_seqlens_k,
        .alibi_slopes = t->x.alibi_slopes};
    cl_event done = NULL;
    attn_status st = attn_forward_device(ctx, &t->p, &d, 0, NULL, &done);
    int ok = st == ATTN_SUCCESS;
    if (ok) {
        clWaitForEvents(1, &done);
        clReleaseEvent(done);
        clEnqueueReadBuffer(queue, d.o, CL_TRUE, 0, t->o_elems * es, o, 0, NULL, NULL);
        clEnqueueReadBuffer(queue, d.lse, CL_TRUE, 0, t->lse_elems * sizeof(float), lse, 0, NULL,
                            NULL);
        ok = check_outputs(t, o, lse, NULL, line, size);
    } else {
        snprintf(line, size, "%s: %s", attn_status_name(st), attn_last_error(ctx));
    }
    cl_mem mems[7] = {d.q, d.k, d.v, d.o, d.lse, d.bias, d.keep_mask};
    for (int i = 0; i < 7; i++) {
        if (mems[i]) {
            clReleaseMemObject(mems[i]);
        }
    }
    free(o);
    free(lse);
    return ok;
}

static void run_case(attn_context_t ctx, attn_algo algo, const char *text, uint64_t seed) {
    attn_params p;
    test_layout layout;
    float qk;
    int quick;
    if (!parse_case(text, &p, &layout, &qk, &quick)) {
        failures++;
        return;
    }
    if (test_quick() && !quick) {
        return;
    }
    p.algo = algo;
    if (p.varlen) {
        test_varlen_totals(&p, seed);
    }
    test_set_layout(&p, layout);
    const int want_probs = algo == ATTN_ALGO_THREE_KERNEL;
    test_problem t;
    if (test_problem_init(&t, &p, seed, qk, 1, want_probs) != 0) {
        printf("%s  FAIL (reference)\n", text);
        failures++;
        return;
    }

    void *o = test_alloc_output(&t);
    float *lse = test_alloc_sentinel(t.lse_elems * sizeof(float));
    float *probs = want_probs ? test_alloc_sentinel(t.probs_elems * sizeof(float)) : NULL;
    attn_host_tensors host = test_host_tensors(&t, o, lse, probs);
    const double start = test_seconds();
    attn_status st = attn_forward_host(ctx, &t.p, &host);
    const double ms = 1e3 * (test_seconds() - start);
    char host_line[640] = "", device_line[640] = "";
    int ok = st == ATTN_SUCCESS;
    if (ok) {
        ok = check_outputs(&t, o, lse, probs, host_line, sizeof host_line);
    } else {
        snprintf(host_line, sizeof host_line, "%s: %s", attn_status_name(st), attn_last_error(ctx));
    }
    const int device_ok = run_device(ctx, &t, device_line, sizeof device_line);

    char desc[256];
    test_describe(desc, sizeof desc, &t.p, layout);
    printf("%-78s %7.1f ms\n  host:   %s  %s\n  device: %s  %s\n", desc, ms, host_line,
           ok ? "PASS" : "FAIL", device_line, device_ok ? "PASS" : "FAIL");
    fflush(stdout);
    failures += !ok + !device_ok;
    free(o);
    free(lse);
    free(probs);
    test_problem_free(&t);
}

int main(int argc, char **argv) {
    attn_algo algo;
    test_sweep_begin(argc, argv, &algo);
    attn_context_t ctx = test_context_create();
    const double start = test_seconds();
    const size_t count = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < count; i++) {
        run_case(ctx, algo, cases[i], 100 + i);
    }
    attn_context_destroy(ctx);
    printf("%s: %zu case(s) x host and device calls, %d failure(s), %.1f s\n",
           failures ? "FAIL" : "PASS", count, failures, test_seconds() - start);
    return failures ? 1 : 0;
}
