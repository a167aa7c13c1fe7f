/* Every failure point of a forward, walked one at a time with the library's
 * fault-injection build (lib/fault_injection.h): the N-th call of each
 * OpenCL function or host allocation fails, for every N the call makes. Each
 * failing call must
 *   - return the injected OpenCL code (ATTN_ERR_HOST_OUT_OF_MEMORY for a host
 *     allocation) with a message, or absorb the fault and still be right;
 *   - leave the caller's outputs (host, and device buffers) untouched;
 *   - release every OpenCL object it created: the scenarios run on a wrapped
 *     context of this test's, whose reference count must come back once the
 *     library's context is destroyed;
 *   - leave the context usable: the same forward, unarmed, then succeeds.
 * Host memory leaks are the memcheck run's to find. Creating a context
 * (attn_context_create, attn_context_create_from_cl) is walked the same way:
 * the status, *ctx NULL, the caller's objects not retained. */
#include "fault_injection.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures;
static cl_platform_id platform;
static cl_device_id device;

/* The injected code per call: a build failure where that is what the call
 * reports, otherwise an error every call may return. */
static cl_int injected_error(attn_fault_kind kind) {
    return kind == ATTN_FAULT_BUILD_PROGRAM ? CL_BUILD_PROGRAM_FAILURE : CL_OUT_OF_RESOURCES;
}

static attn_status expected_status(attn_fault_kind kind) {
    return kind == ATTN_FAULT_HOST_ALLOC ? ATTN_ERR_HOST_OUT_OF_MEMORY
                                         : (attn_status)injected_error(kind);
}

static cl_uint context_refs(cl_context c) {
    cl_uint n = 0;
    clGetContextInfo(c, CL_CONTEXT_REFERENCE_COUNT, sizeof n, &n, NULL);
    return n;
}

/* The driver drops the references of retired commands a little after they
 * complete: within milliseconds on an idle machine, seconds on a loaded one
 * (seen past 3 s beside a valgrind run). The poll ends as soon as the count
 * is back to `want`; a real leak never returns and waits the whole 30 s.
 * A count below `want` passes: the baseline was taken while commands of the
 * run before still held references (seen under ASan on a loaded machine),
 * which is no leak of this call's. walk() checks the exact count once the
 * whole walk is done, from a baseline with nothing in flight. */
static int refs_return(cl_context c, cl_uint want) {
    for (int tries = 0; tries < 3000 && context_refs(c) > want; tries++) {
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    return context_refs(c) <= want;
}

/* ---- Scenarios ----------------------------------------------------------- */

typedef enum scenario_kind {
    HOST_THREE_KERNEL,   /* attn_forward, lse + probs, heads in chunks */
    HOST_FUSED,          /* attn_forward, ATTN_ALGO_FUSED, lse */
    DEVICE_THREE_KERNEL, /* attn_forward_device, lse, heads in chunks */
    DEVICE_FUSED,        /* attn_forward_device, ATTN_ALGO_FUSED, lse */
    PREPARE,             /* attn_prepare builds the kernels */
    HOST_FUSED_PROBS,    /* attn_forward, ATTN_ALGO_FUSED, lse + probs, slices in chunks */
} scenario_kind;

static const char *scenario_name(scenario_kind s) {
    switch (s) {
    case HOST_THREE_KERNEL:
        return "attn_forward three-kernel";
    case HOST_FUSED:
        return "attn_forward fused";
    case DEVICE_THREE_KERNEL:
        return "attn_forward_device three-kernel";
    case DEVICE_FUSED:
        return "attn_forward_device fused";
    case PREPARE:
        return "attn_prepare";
    case HOST_FUSED_PROBS:
        return "attn_forward fused with probabilities";
    }
    return "?";
}

typedef struct scenario {
    scenario_kind kind;
    attn_params p;
    test_problem t;
    cl_context context; /* this test's; the library wraps it */
    cl_command_queue queue;
    cl_mem q, k, v, o, lse; /* for the device call */
    float *o_host, *lse_host, *probs_host;
} scenario;

static void scenario_init(scenario *s, scenario_kind kind, cl_context context,
                          cl_command_queue queue) {
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->context = context;
    s->queue = queue;
    attn_params_init(&s->p, 2, 4, 7, 9, 16);
    s->p.heads_kv = 2;
    s->p.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
    const int device_call = kind == DEVICE_THREE_KERNEL || kind == DEVICE_FUSED;
    const int probs = kind == HOST_THREE_KERNEL || kind == HOST_FUSED_PROBS;
    s->p.algo = kind == HOST_FUSED || kind == DEVICE_FUSED || kind == HOST_FUSED_PROBS
                    ? ATTN_ALGO_FUSED
                    : ATTN_ALGO_THREE_KERNEL;
    if (test_problem_init(&s->t, &s->p, 7, 1.0f, 1, probs) != 0) {
        exit(1);
    }
    s->o_host = test_alloc_sentinel(s->t.o_elems * sizeof(float));
    s->lse_host = test_alloc_sentinel(s->t.lse_elems * sizeof(float));
    s->probs_host = test_alloc_sentinel(s->t.probs_elems * sizeof(float));
    if (device_call) {
        cl_int err;
        s->q = clCreateBuffer(context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                              s->t.q_elems * sizeof(float), s->t.q, &err);
        s->k = clCreateBuffer(context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                              s->t.k_elems * sizeof(float), s->t.k, &err);
        s->v = clCreateBuffer(context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                              s->t.v_elems * sizeof(float), s->t.v, &err);
        s->o = clCreateBuffer(context, CL_MEM_READ_WRITE, s->t.o_elems * sizeof(float), NULL, &err);
        s->lse =
            clCreateBuffer(context, CL_MEM_READ_WRITE, s->t.lse_elems * sizeof(float), NULL, &err);
        if (!s->q || !s->k || !s->v || !s->o || !s->lse) {
            printf("FAIL: creating the device tensors\n");
            exit(1);
        }
    }
}

static void scenario_free(scenario *s) {
    cl_mem mems[5] = {s->q, s->k, s->v, s->o, s->lse};
    for (int i = 0; i < 5; i++) {
        if (mems[i]) {
            clReleaseMemObject(mems[i]);
        }
    }
    free(s->o_host);
    free(s->lse_host);
    free(s->probs_host);
    test_problem_free(&s->t);
}

static void fill_sentinel(scenario *s, cl_mem mem, size_t bytes) {
    void *host = test_alloc_sentinel(bytes);
    clEnqueueWriteBuffer(s->queue, mem, CL_TRUE, 0, bytes, host, 0, NULL, NULL);
    free(host);
}

/* Puts the sentinel in every output. */
static void reset_outputs(scenario *s) {
    memset(s->o_host, TEST_SENTINEL_BYTE, s->t.o_elems * sizeof(float));
    memset(s->lse_host, TEST_SENTINEL_BYTE, s->t.lse_elems * sizeof(float));
    memset(s->probs_host, TEST_SENTINEL_BYTE, s->t.probs_elems * sizeof(float));
    if (s->o) {
        fill_sentinel(s, s->o, s->t.o_elems * sizeof(float));
        fill_sentinel(s, s->lse, s->t.lse_elems * sizeof(float));
    }
}

/* Brings the device outputs into the host arrays. */
static void download(scenario *s) {
    if (s->o) {
        clEnqueueReadBuffer(s->queue, s->o, CL_TRUE, 0, s->t.o_elems * sizeof(float), s->o_host, 0,
                            NULL, NULL);
        clEnqueueReadBuffer(s->queue, s->lse, CL_TRUE, 0, s->t.lse_elems * sizeof(float),
                            s->lse_host, 0, NULL, NULL);
    }
}

static attn_status scenario_run(scenario *s, attn_context_t ctx) {
    switch (s->kind) {
    case HOST_THREE_KERNEL:
    case HOST_FUSED_PROBS:
        return attn_forward(ctx, &s->p, s->t.q, s->t.k, s->t.v, s->o_host, s->lse_host,
                            s->probs_host);
    case HOST_FUSED:
        return attn_forward(ctx, &s->p, s->t.q, s->t.k, s->t.v, s->o_host, s->lse_host, NULL);
    case DEVICE_THREE_KERNEL:
    case DEVICE_FUSED: {
        attn_device_tensors dt = {.q = s->q, .k = s->k, .v = s->v, .o = s->o, .lse = s->lse};
        cl_event done = NULL;
        attn_status st = attn_forward_device(ctx, &s->p, &dt, 0, NULL, &done);
        if (done) {
            clWaitForEvents(1, &done);
            clReleaseEvent(done);
        }
        clFinish(s->queue);
        return st;
    }
    case PREPARE:
        return attn_prepare(ctx, &s->p, 1, 0);
    }
    return ATTN_ERR_INVALID_VALUE;
}

static int outputs_untouched(scenario *s) {
    download(s);
    return test_is_sentinel(s->o_host, s->t.o_elems * sizeof(float)) &&
           test_is_sentinel(s->lse_host, s->t.lse_elems * sizeof(float)) &&
           test_is_sentinel(s->probs_host, s->t.probs_elems * sizeof(float));
}

static int outputs_right(scenario *s) {
    if (s->kind == PREPARE) {
        return 1;
    }
    download(s);
    int ok =
        test_compare(&s->t.o_shape, s->o_host, s->t.ref_o, s->t.naive_o, s->t.o_elems).ok &&
        test_compare(&s->t.lse_shape, s->lse_host, s->t.ref_lse, s->t.naive_lse, s->t.lse_elems).ok;
    if (s->kind == HOST_THREE_KERNEL || s->kind == HOST_FUSED_PROBS) {
        ok &= test_compare(&s->t.probs_shape, s->probs_host, s->t.ref_probs, s->t.naive_probs,
                           s->t.probs_elems)
                  .ok;
    }
    return ok;
}

/* Calls made only while a context builds its kernels: failing them needs a
 * context that has not built them yet. Host allocations happen there too. */
static int needs_fresh_context(attn_fault_kind kind) {
    return kind == ATTN_FAULT_CREATE_PROGRAM || kind == ATTN_FAULT_CREATE_PROGRAM_BINARY ||
           kind == ATTN_FAULT_BUILD_PROGRAM || kind == ATTN_FAULT_CREATE_KERNEL ||
           kind == ATTN_FAULT_HOST_ALLOC;
}

static attn_context_t wrap(scenario *s) {
    attn_context_t ctx = NULL;
    if (attn_context_create_from_cl(s->context, device, s->queue, &ctx) != ATTN_SUCCESS) {
        printf("FAIL: attn_context_create_from_cl\n");
        exit(1);
    }
    return ctx;
}

/* One failure point, on `warm` (a context that has run the scenario before)
 * or, when that is NULL, on a fresh wrapped context: the fault armed, the
 * call, then the same call unarmed. */
static void walk_one(scenario *s, attn_context_t warm, attn_fault_kind kind, long nth,
                     int *all_ok) {
    clFinish(s->queue);
    const cl_uint refs0 = context_refs(s->context);
    attn_context_t ctx = warm ? warm : wrap(s);
    reset_outputs(s);
    attn_fault_reset();
    attn_fault_arm(kind, nth, injected_error(kind));
    attn_status st = scenario_run(s, ctx);
    const int fired = attn_fault_fired();
    attn_fault_reset();
    char message[256];
    snprintf(message, sizeof message, "%s", attn_last_error(ctx));

    int ok;
    const char *what;
    if (st == ATTN_SUCCESS) {
        ok = outputs_right(s);
        what = ok ? "absorbed, result right" : "absorbed, RESULT WRONG";
    } else {
        int untouched = outputs_untouched(s);
        ok = st == expected_status(kind) && untouched && message[0];
        what = !untouched ? "OUTPUTS WRITTEN" : st != expected_status(kind) ? "WRONG STATUS" : "ok";
    }
    /* The context must still work. */
    reset_outputs(s);
    attn_status again = scenario_run(s, ctx);
    int recovers = again == ATTN_SUCCESS && outputs_right(s);
    /* Everything the call created is released: once the library's context
     * is gone, or for a warm one, once the rerun has finished. */
    if (!warm) {
        attn_context_destroy(ctx);
    }
    int released = refs_return(s->context, refs0);
    ok &= recovers && released && fired;

    if (!ok) {
        printf("  %-34s %-26s #%-3ld %s -> %s  %s%s\n", scenario_name(s->kind),
               attn_fault_call_name(kind), nth, fired ? "fired" : "DID NOT FIRE",
               attn_status_name(st), what,
               !recovers   ? ", CONTEXT BROKEN AFTERWARDS"
               : !released ? ", OPENCL OBJECTS LEAKED"
                           : "");
        printf("    message: %s\n", message);
    }
    *all_ok &= ok;
}

/* Which of a kind's `count` calls to fail. Every one up to 24; beyond that
 * (clSetKernelArg: one helper sets every argument of every chunk) the first
 * two, the last, and one in every count/16, which still lands in each chunk.
 * Under memcheck only the first and the last. */
static int walk_point(long n, long count) {
    if (n == 1 || n == count) {
        return 1;
    }
    if (test_quick()) {
        return 0;
    }
    return count <= 24 || n == 2 || n % (count / 16) == 0;
}

/* Calls of each kind one clean run makes on `ctx`. */
static int count_calls(scenario *s, attn_context_t ctx, long counts[ATTN_FAULT_KIND_COUNT]) {
    reset_outputs(s);
    attn_fault_reset();
    attn_status st = scenario_run(s, ctx);
    for (int k = 0; k < ATTN_FAULT_KIND_COUNT; k++) {
        counts[k] = attn_fault_count((attn_fault_kind)k);
    }
    int ok = st == ATTN_SUCCESS && outputs_right(s);
    if (!ok) {
        printf("%-34s clean run: %s: %s  FAIL\n", scenario_name(s->kind), attn_status_name(st),
               attn_last_error(ctx));
    }
    return ok;
}

static void walk(scenario_kind kind, cl_context context, cl_command_queue queue) {
    /* Nothing of the library is alive here and the walk before has waited
     * for its references: the exact count every walk must return to. */
    const cl_uint refs_before_walk = context_refs(context);
    scenario s;
    scenario_init(&s, kind, context, queue);

    /* A fresh context builds its kernels; a warm one only runs them. */
    long fresh[ATTN_FAULT_KIND_COUNT], warm_counts[ATTN_FAULT_KIND_COUNT];
    attn_context_t warm = wrap(&s);
    int clean = count_calls(&s, warm, fresh) && count_calls(&s, warm, warm_counts);
    failures += !clean;

    for (int k = 0; clean && k < ATTN_FAULT_KIND_COUNT; k++) {
        const int on_fresh = needs_fresh_context((attn_fault_kind)k);
        const long count = on_fresh ? fresh[k] : warm_counts[k];
        if (count == 0) {
            continue;
        }
        int all_ok = 1;
        long points = 0;
        for (long n = 1; n <= count; n++) {
            if (walk_point(n, count)) {
                walk_one(&s, on_fresh ? NULL : warm, (attn_fault_kind)k, n, &all_ok);
                points++;
            }
        }
        printf("%-34s %-26s %3ld call(s), %3ld failure point(s) walked  %s\n", scenario_name(kind),
               attn_fault_call_name((attn_fault_kind)k), count, points, all_ok ? "PASS" : "FAIL");
        failures += !all_ok;
    }
    attn_context_destroy(warm);
    scenario_free(&s);
    if (!refs_return(context, refs_before_walk)) {
        printf(
            "%-34s OPENCL OBJECTS LEAKED over the walk: context references %u, %u before  FAIL\n",
            scenario_name(kind), context_refs(context), refs_before_walk);
        failures++;
    }
}

/* attn_context_create: each failure gives its status, *ctx NULL, and the
 * next create works. */
static void walk_create(void) {
    attn_fault_reset();
    attn_context_t ctx = NULL;
    attn_status st = attn_context_create(NULL, &ctx);
    long counts[ATTN_FAULT_KIND_COUNT];
    for (int k = 0; k < ATTN_FAULT_KIND_COUNT; k++) {
        counts[k] = attn_fault_count((attn_fault_kind)k);
    }
    attn_context_destroy(ctx);
    if (st != ATTN_SUCCESS) {
        printf("attn_context_create clean run: %s  FAIL\n", attn_status_name(st));
        failures++;
        return;
    }
    for (int k = 0; k < ATTN_FAULT_KIND_COUNT; k++) {
        int all_ok = 1;
        for (long n = 1; n <= counts[k]; n++) {
            attn_fault_reset();
            attn_fault_arm((attn_fault_kind)k, n, injected_error((attn_fault_kind)k));
            ctx = (attn_context_t)&failures; /* must be overwritten */
            st = attn_context_create(NULL, &ctx);
            attn_fault_reset();
            int ok = st == ATTN_SUCCESS ? ctx != NULL && ctx != (attn_context_t)&failures
                                        : st == expected_status((attn_fault_kind)k) &&
                                              ctx == NULL && *attn_last_error(NULL);
            if (st == ATTN_SUCCESS && ok) {
                attn_context_destroy(ctx);
            }
            if (!ok) {
                printf("  attn_context_create %s #%ld -> %s, ctx %s\n",
                       attn_fault_call_name((attn_fault_kind)k), n, attn_status_name(st),
                       ctx ? "NOT NULL" : "NULL");
            }
            all_ok &= ok;
        }
        if (counts[k]) {
            printf("%-34s %-26s %3ld call(s) walked                      %s\n",
                   "attn_context_create", attn_fault_call_name((attn_fault_kind)k), counts[k],
                   all_ok ? "PASS" : "FAIL");
            failures += !all_ok;
        }
    }
}

/* attn_context_create_from_cl: each failure gives its status, *ctx NULL,
 * and leaves the caller's context and queue with the references they had. */
static void walk_create_from_cl(cl_context context, cl_command_queue queue) {
    attn_fault_reset();
    attn_context_t ctx = NULL;
    attn_status st = attn_context_create_from_cl(context, device, queue, &ctx);
    long counts[ATTN_FAULT_KIND_COUNT];
    for (int k = 0; k < ATTN_FAULT_KIND_COUNT; k++) {
        counts[k] = attn_fault_count((attn_fault_kind)k);
    }
    attn_context_destroy(ctx);
    if (st != ATTN_SUCCESS) {
        printf("attn_context_create_from_cl clean run: %s  FAIL\n", attn_status_name(st));
        failures++;
        return;
    }
    for (int k = 0; k < ATTN_FAULT_KIND_COUNT; k++) {
        int all_ok = 1;
        for (long n = 1; n <= counts[k]; n++) {
            const cl_uint refs0 = context_refs(context);
            cl_uint queue_refs0 = 0;
            clGetCommandQueueInfo(queue, CL_QUEUE_REFERENCE_COUNT, sizeof queue_refs0, &queue_refs0,
                                  NULL);
            attn_fault_reset();
            attn_fault_arm((attn_fault_kind)k, n, injected_error((attn_fault_kind)k));
            ctx = (attn_context_t)&failures; /* must be overwritten */
            st = attn_context_create_from_cl(context, device, queue, &ctx);
            attn_fault_reset();
            int ok = st == ATTN_SUCCESS ? ctx != NULL && ctx != (attn_context_t)&failures
                                        : st == expected_status((attn_fault_kind)k) &&
                                              ctx == NULL && *attn_last_error(NULL);
            if (st == ATTN_SUCCESS && ok) {
                attn_context_destroy(ctx);
            }
            cl_uint queue_refs = 0;
            clGetCommandQueueInfo(queue, CL_QUEUE_REFERENCE_COUNT, sizeof queue_refs, &queue_refs,
                                  NULL);
            const int released = context_refs(context) == refs0 && queue_refs == queue_refs0;
            if (!ok || !released) {
                printf("  attn_context_create_from_cl %s #%ld -> %s, ctx %s%s\n",
                       attn_fault_call_name((attn_fault_kind)k), n, attn_status_name(st),
                       ctx ? "NOT NULL" : "NULL", released ? "" : ", REFERENCES KEPT");
            }
            all_ok &= ok && released;
        }
        if (counts[k]) {
            printf("%-34s %-26s %3ld call(s) walked                      %s\n",
                   "attn_context_create_from_cl", attn_fault_call_name((attn_fault_kind)k),
                   counts[k], all_ok ? "PASS" : "FAIL");
            failures += !all_ok;
        }
    }
}

int main(void) {
    /* Fresh contexts must build from source, or the build calls the walk
     * counted on the first would turn into loads from the on-disk kernel
     * cache (test_binary_cache walks those): the cache is off here even
     * when the test runs outside meson's setups. */
    setenv("ATTN_CL_CACHE_DIR", "", 1);
    cl_int err = clGetPlatformIDs(1, &platform, NULL);
    if (err == CL_SUCCESS) {
        err = clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 1, &device, NULL);
    }
    if (err != CL_SUCCESS) {
        printf("SKIP: no OpenCL device\n");
        return TEST_SKIP;
    }
    cl_context context = clCreateContext(NULL, 1, &device, NULL, NULL, &err);
    cl_command_queue queue = clCreateCommandQueue(context, device, 0, &err);
    if (err != CL_SUCCESS) {
        printf("FAIL: creating an OpenCL context and queue: %d\n", (int)err);
        return 1;
    }
    /* Three heads' scores at a time: 8 heads go through in three chunks, so
     * that failures land between chunks too. */
    char limit[32];
    snprintf(limit, sizeof limit, "%d", 3 * 7 * 9 * (int)sizeof(float));
    setenv("ATTN_CL_SCRATCH_LIMIT", limit, 1);

    walk_create();
    walk_create_from_cl(context, queue);
    if (!test_quick()) { /* its build path is the forward's: spare memcheck */
        walk(PREPARE, context, queue);
    }
    walk(HOST_THREE_KERNEL, context, queue);
    walk(HOST_FUSED, context, queue);
    /* The fused path's probabilities need its cpu kernels (not decode's). */
    const char *tune = getenv("ATTN_CL_TUNE");
    if (!tune || !strstr(tune, "variant=") || strstr(tune, "variant=cpu")) {
        walk(HOST_FUSED_PROBS, context, queue);
    }
    walk(DEVICE_THREE_KERNEL, context, queue);
    walk(DEVICE_FUSED, context, queue);

    clReleaseCommandQueue(queue);
    clReleaseContext(context);
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
