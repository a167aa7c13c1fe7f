/* The plan API: a plan executed many times gives the one-call forward's
 * bits on the host and device calls, with its own workspace or the caller's,
 * with the input arrays in host or device memory; repeated executes make no
 * allocation (counted by the fault-injection build's call counters); bad
 * executes are refused with the outputs untouched. */
#include "fault_injection.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

static void check(int ok, const char *what) {
    printf("%-76s %s\n", what, ok ? "PASS" : "FAIL");
    failures += !ok;
}

static cl_context context_of(attn_context_t ctx) {
    cl_context context = NULL;
    clGetCommandQueueInfo(attn_context_queue(ctx), CL_QUEUE_CONTEXT, sizeof context, &context,
                          NULL);
    return context;
}

/* A device buffer of `bytes` holding `data` (or zeros), at byte `offset`. */
static cl_mem upload(attn_context_t ctx, const void *data, size_t bytes, size_t offset) {
    cl_int err;
    const size_t size = offset + bytes > 0 ? offset + bytes : 1;
    cl_mem mem = clCreateBuffer(context_of(ctx), CL_MEM_READ_WRITE, size, NULL, &err);
    if (err != CL_SUCCESS) {
        printf("FAIL: clCreateBuffer: %d\n", (int)err);
        exit(1);
    }
    unsigned char *host = calloc(1, size);
    if (data)
        memcpy(host + offset, data, bytes);
    err = clEnqueueWriteBuffer(attn_context_queue(ctx), mem, CL_TRUE, 0, size, host, 0, NULL, NULL);
    free(host);
    if (err != CL_SUCCESS) {
        printf("FAIL: clEnqueueWriteBuffer: %d\n", (int)err);
        exit(1);
    }
    return mem;
}

static void download(attn_context_t ctx, cl_mem mem, size_t offset, void *out, size_t bytes) {
    cl_int err = clEnqueueReadBuffer(attn_context_queue(ctx), mem, CL_TRUE, offset, bytes, out, 0,
                                     NULL, NULL);
    if (err != CL_SUCCESS) {
        printf("FAIL: clEnqueueReadBuffer: %d\n", (int)err);
        exit(1);
    }
}

/* Allocations (device buffers and host memory) the library makes from now
 * on. */
static long allocations(void) {
    return attn_fault_count(ATTN_FAULT_CREATE_BUFFER) + attn_fault_count(ATTN_FAULT_HOST_ALLOC);
}

/* One problem through every kind of execute; `name` says which. */
static void run_case(attn_context_t ctx, const char *name, const attn_params *params) {
    printf("-- %s\n", name);
    test_problem t;
    if (test_problem_init(&t, params, 11, 4.0f, 1, 0) != 0) {
        check(0, "test problem");
        return;
    }
    const size_t o_bytes = t.o_elems * test_dtype_size(t.p.dtype);
    const size_t lse_bytes = t.lse_elems * sizeof(float);
    void *o_once = test_alloc_output(&t);
    float *lse_once = calloc(t.lse_elems, sizeof(float));
    attn_host_tensors once = test_host_tensors(&t, o_once, lse_once, NULL);
    attn_status st = attn_forward_host(ctx, &t.p, &once);
    check(test_ok(ctx, st, "attn_forward_host") && test_compare_output(&t, o_once).ok,
          "one-call forward within the reference bound");

    attn_plan_t plan = NULL;
    st = attn_plan_create(ctx, &t.p, ATTN_PLAN_LSE, &plan);
    check(test_ok(ctx, st, "attn_plan_create") && plan != NULL, "attn_plan_create");
    if (!plan) {
        test_problem_free(&t);
        free(o_once);
        free(lse_once);
        return;
    }
    check(attn_plan_algo(plan) != ATTN_ALGO_AUTO, "attn_plan_algo resolves AUTO");

    /* Host executes: the same bits every time, the second one allocating nothing. */
    void *o = test_alloc_output(&t);
    float *lse = calloc(t.lse_elems, sizeof(float));
    attn_host_tensors ht = test_host_tensors(&t, o, lse, NULL);
    int same = 1;
    long allocated = 0;
    for (int rep = 0; rep < 3; rep++) {
        memset(o, 0, o_bytes);
        attn_fault_reset();
        st = attn_plan_execute_host(plan, &ht);
        if (rep > 0)
            allocated += allocations();
        same &= st == ATTN_SUCCESS && memcmp(o, o_once, o_bytes) == 0 &&
                memcmp(lse, lse_once, lse_bytes) == 0;
    }
    check(same, "host executes x3: the one-call forward's O and LSE, bit for bit");
    check(allocated == 0, "host executes after the first allocate nothing");

    /* Device executes, own workspace and the caller's (at an offset). */
    const size_t es = test_dtype_size(t.p.dtype);
    cl_mem q = upload(ctx, t.q_store, t.q_elems * es, 0);
    cl_mem k = upload(ctx, t.k_store, t.k_elems * es, 0);
    cl_mem v = upload(ctx, t.v_store, t.v_elems * es, 0);
    cl_mem od = upload(ctx, NULL, o_bytes, 0), ld = upload(ctx, NULL, lse_bytes, 0);
    cl_mem bias = t.x.bias ? upload(ctx, t.x.bias, t.x.bias_elems * sizeof(float), 0) : NULL;
    cl_mem keep = t.x.keep_mask ? upload(ctx, t.x.keep_mask, t.x.keep_mask_elems, 0) : NULL;
    attn_device_tensors dt = {.q = q,
                              .k = k,
                              .v = v,
                              .o = od,
                              .lse = ld,
                              .bias = bias,
                              .keep_mask = keep,
                              .key_lengths = t.x.key_lengths,
                              .alibi_slopes = t.x.alibi_slopes,
                              .cu_seqlens_q = t.x.cu_seqlens_q,
                              .cu_seqlens_k = t.x.cu_seqlens_k};
    const size_t ws_bytes = attn_plan_workspace_size(plan);
    cl_mem ws = upload(ctx, NULL, ws_bytes + 512, 0);
    same = 1;
    allocated = 0;
    for (int rep = 0; rep < 4; rep++) {
        attn_fault_reset();
        cl_event done = NULL;
        st = attn_plan_execute_device(plan, &dt, rep % 2 ? ws : NULL, rep % 2 ? 512 : 0, 0, NULL,
                                      &done);
        if (rep > 1)
            allocated += allocations();
        if (done) {
            clWaitForEvents(1, &done);
            clReleaseEvent(done);
        }
        memset(o, 0, o_bytes);
        download(ctx, od, 0, o, o_bytes);
        download(ctx, ld, 0, lse, lse_bytes);
        same &= st == ATTN_SUCCESS && memcmp(o, o_once, o_bytes) == 0 &&
                memcmp(lse, lse_once, lse_bytes) == 0;
    }
    check(same, "device executes, own and caller's workspace: the same bits");
    check(allocated == 0, "device executes after the first allocate nothing");

    /* The input arrays from device memory instead. */
    cl_mem arrays[4] = {NULL, NULL, NULL, NULL};
    if (t.x.key_lengths)
        dt.key_lengths_mem = arrays[0] =
            upload(ctx, t.x.key_lengths, (size_t)t.p.batch * sizeof(int32_t), 0);
    if (t.x.alibi_slopes)
        dt.alibi_slopes_mem = arrays[1] =
            upload(ctx, t.x.alibi_slopes, (size_t)t.p.heads_q * sizeof(float), 0);
    if (t.x.cu_seqlens_q) {
        dt.cu_seqlens_q_mem = arrays[2] =
            upload(ctx, t.x.cu_seqlens_q, (size_t)(t.p.batch + 1) * sizeof(int32_t), 0);
        dt.cu_seqlens_k_mem = arrays[3] =
            upload(ctx, t.x.cu_seqlens_k, (size_t)(t.p.batch + 1) * sizeof(int32_t), 0);
    }
    if (arrays[0] || arrays[1] || arrays[2]) {
        dt.key_lengths = NULL;
        dt.alibi_slopes = NULL;
        dt.cu_seqlens_q = dt.cu_seqlens_k = NULL;
        st = attn_plan_execute_device(plan, &dt, NULL, 0, 0, NULL, NULL);
        memset(o, 0, o_bytes);
        download(ctx, od, 0, o, o_bytes);
        check(test_ok(ctx, st, "execute with device arrays") && memcmp(o, o_once, o_bytes) == 0,
              "input arrays in device memory: the same bits");
    }

    /* Refusals leave O untouched. */
    memset(o, 0x5a, o_bytes);
    void *o_before = malloc(o_bytes);
    memcpy(o_before, o, o_bytes);
    attn_host_tensors no_lse = ht;
    no_lse.lse = NULL;
    st = attn_plan_execute_host(plan, &no_lse);
    check(st == ATTN_ERR_INVALID_VALUE && memcmp(o, o_before, o_bytes) == 0,
          "a plan with LSE refuses tensors without one");
    if (ws_bytes > 0) {
        cl_mem small = upload(ctx, NULL, ws_bytes - 1, 0);
        cl_event ev = (cl_event)1;
        st = attn_plan_execute_device(plan, &dt, small, 0, 0, NULL, &ev);
        check(st == ATTN_ERR_BUFFER_TOO_SMALL && ev == NULL,
              "a workspace one byte short: BUFFER_TOO_SMALL, event NULL");
        clReleaseMemObject(small);
        st = attn_plan_execute_device(plan, &dt, ws, 100, 0, NULL, NULL);
        check(st == ATTN_ERR_INVALID_VALUE, "a workspace offset not a multiple of 256");
    }
    st = attn_plan_execute_host(NULL, &ht);
    check(st == ATTN_ERR_NULL_ARGUMENT, "execute of a NULL plan");

    attn_plan_destroy(plan);
    cl_mem mems[12] = {q, k, v, od, ld, bias, keep, ws, arrays[0], arrays[1], arrays[2], arrays[3]};
    for (int i = 0; i < 12; i++)
        if (mems[i])
            clReleaseMemObject(mems[i]);
    free(o_before);
    free(o);
    free(lse);
    free(o_once);
    free(lse_once);
    test_problem_free(&t);
}

static void check_create_refusals(attn_context_t ctx) {
    printf("-- creation\n");
    attn_params p;
    attn_params_init(&p, 1, 2, 5, 7, 8);
    attn_plan_t plan = (attn_plan_t)1;
    attn_status st = attn_plan_create(ctx, &p, 8, &plan);
    check(st == ATTN_ERR_INVALID_VALUE && plan == NULL, "unknown output flag: INVALID_VALUE");
    p.struct_size = sizeof p - 8;
    st = attn_plan_create(ctx, &p, 0, &plan);
    check(st == ATTN_ERR_INVALID_VALUE && strstr(attn_last_error(ctx), "struct_size") != NULL,
          "a struct_size of another version: INVALID_VALUE naming it");
    attn_params_init(&p, 1, 2, 5, 7, 8);
    p.algo = ATTN_ALGO_FUSED;
    attn_context_set_tuning(ctx, "variant=gpu"); /* its probabilities need the cpu kernels */
    st = attn_plan_create(ctx, &p, ATTN_PLAN_PROBS, &plan);
    check((st == ATTN_ERR_INVALID_VALUE || st == ATTN_ERR_UNSUPPORTED) && plan == NULL,
          "fused with probabilities under variant=gpu: refused");
    attn_context_set_tuning(ctx, NULL);
    st = attn_plan_create(NULL, &p, 0, &plan);
    check(st == ATTN_ERR_NULL_ARGUMENT, "NULL context");
    attn_plan_destroy(NULL);
}

/* A decode shape under AUTO (on a CPU device lib/decode.c, reported as
 * ATTN_ALGO_FUSED) against the fused cpu shape: both within the reference
 * bound, and within that bound of each other. */
static void check_decode_matches_fused(attn_context_t ctx) {
    printf("-- decode shape under AUTO vs the fused cpu shape\n");
    attn_params p;
    attn_params_init(&p, 1, 8, 1, 1000, 64);
    p.heads_kv = 2;
    test_problem t;
    if (test_problem_init(&t, &p, 5, 4.0f, 1, 0) != 0) {
        check(0, "test problem");
        return;
    }
    void *o_auto = test_alloc_output(&t), *o_fused = test_alloc_output(&t);
    float *lse = calloc(t.lse_elems, sizeof(float));
    attn_plan_t plan = NULL;
    attn_status st = attn_plan_create(ctx, &t.p, ATTN_PLAN_LSE, &plan);
    check(test_ok(ctx, st, "attn_plan_create") && attn_plan_algo(plan) == ATTN_ALGO_FUSED,
          "AUTO on a decode shape reports ATTN_ALGO_FUSED");
    attn_host_tensors ht = test_host_tensors(&t, o_auto, lse, NULL);
    st = attn_plan_execute_host(plan, &ht);
    const test_result ra = test_compare_output(&t, o_auto);
    check(test_ok(ctx, st, "execute (AUTO)") && ra.ok, "AUTO within the reference bound");
    attn_plan_destroy(plan);

    /* The fused cpu shape: a named variant turns the decode choice off. */
    test_ok(ctx, attn_context_set_tuning(ctx, "variant=cpu"), "attn_context_set_tuning");
    t.p.algo = ATTN_ALGO_FUSED;
    ht = test_host_tensors(&t, o_fused, lse, NULL);
    st = attn_forward_host(ctx, &t.p, &ht);
    const test_result rf = test_compare_output(&t, o_fused);
    check(test_ok(ctx, st, "forward (fused cpu)") && rf.ok, "fused cpu within the reference bound");
    attn_context_set_tuning(ctx, "");

    float *a = malloc(t.o_elems * sizeof(float)), *f = malloc(t.o_elems * sizeof(float));
    test_from_storage(t.p.dtype, o_auto, a, t.o_elems);
    test_from_storage(t.p.dtype, o_fused, f, t.o_elems);
    double diff = 0.0;
    for (size_t i = 0; i < t.o_elems; i++)
        diff = fmax(diff, fabs((double)a[i] - f[i]));
    printf("   max|auto - fused| %.2e, bound %.2e\n", diff, ra.bound);
    check(diff <= ra.bound, "AUTO and the fused cpu shape agree within the bound");
    free(a);
    free(f);
    free(o_auto);
    free(o_fused);
    free(lse);
    test_problem_free(&t);
}

int main(int argc, char **argv) {
    attn_algo algo;
    test_sweep_begin(argc, argv, &algo);
    attn_context_t ctx = test_context_create();
    if (!ctx)
        return TEST_SKIP;
    check_create_refusals(ctx);

    attn_params p;
    attn_params_init(&p, 2, 4, 37, 45, 24);
    p.algo = algo;
    run_case(ctx, "B2 H4 37x45 d24", &p);

    attn_params_init(&p, 2, 4, 9, 21, 16);
    p.algo = algo;
    p.heads_kv = 2;
    p.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
    p.dtype = ATTN_DTYPE_F16;
    p.alibi = 1;
    p.key_padding = 1;
    run_case(ctx, "GQA, f16, causal, ALiBi, key padding", &p);

    attn_params_init(&p, 3, 2, 13, 17, 8);
    p.algo = algo;
    p.varlen = 1;
    p.bias.present = 1;
    p.bias.heads = 2;
    run_case(ctx, "varlen with a bias", &p);

    /* Decode shapes: one query row over many keys, GQA. */
    attn_params_init(&p, 1, 8, 1, 1000, 64);
    p.algo = algo;
    p.heads_kv = 2;
    p.window.enabled = 1;
    p.window.left = 700;
    p.window.right = -1;
    p.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
    run_case(ctx, "decode: Sq1 Sk1000 H8 Hkv2, causal, window", &p);
    check_decode_matches_fused(ctx);

    attn_context_destroy(ctx);
    printf("%s\n", failures ? "FAIL" : "PASS");
    return failures ? 1 : 0;
}
