/* Every kernel of the library on tiny edge-tile shapes, small enough to run
 * under a device-side checker: tests/oclgrind_check.sh runs this program
 * under oclgrind (out-of-bounds accesses, data races, uninitialized values,
 * API misuse), one meson test per path and fused kernel variant.
 *
 * argv[1] names the path:
 *   three-kernel  qk_scores, softmax_rows and pv through the host call, and
 *                 commit_outputs through the device-memory call (with LSE,
 *                 and in head chunks under ATTN_CL_SCRATCH_LIMIT);
 *   fused         flash_cpu_pack_k + flash_cpu, or flash_gpu: whichever
 *                 ATTN_CL_TUNE selects (the meson tests name each variant:
 *                 oclgrind's device claims to be a CPU, a GPU and an
 *                 accelerator at once, so the table alone picks one).
 *
 * The cases cover each mask, lengths 1, 7, 33 and 40 with Sq != Sk both
 * ways, head dims 1, 8, 31 and 64 (and head_dim_v != head_dim), GQA, the
 * strided layouts, and LSE on and off. Each case runs twice, through the
 * host call and through the device-memory call, and each run is compared
 * with attn_reference under test_util.h's bound (gaps between strided rows
 * must keep their bytes).
 *
 * Usage: test_kernels_checked PATH [--count | --run N]. Without an option
 * every run goes in this process; --count prints the number of runs and
 * --run N does run N alone. The checker needs one forward per process:
 * oclgrind 21.10's uninitialized-value plugin keeps the shadow state of a
 * released buffer and hands it to the next buffer that reuses its index,
 * so a second forward in one process reads stale shadow (false reports,
 * and a crash when the new buffer is larger).
 *
 * ATTN_TEST_REQUIRE_PLATFORM=name fails the run unless the chosen device's
 * platform name contains `name`, so that a checker run cannot silently fall
 * back to another OpenCL device. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NONE ATTN_MASK_NONE
#define TL ATTN_MASK_CAUSAL_TOP_LEFT
#define BR ATTN_MASK_CAUSAL_BOTTOM_RIGHT

typedef struct checked_case {
    int32_t batch, heads_q, heads_kv, seq_q, seq_k, head_dim, head_dim_v;
    attn_mask mask;
    test_layout layout;
    int lse;
} checked_case;

/* clang-format off */
static const checked_case cases[] = {
    /* B  Hq Hkv  Sq  Sk   D  Dv  mask  layout      lse */
    {1, 1, 1,   1,  1,  1,  0, NONE, TEST_BHSD,   1},
    {1, 1, 1,   1,  1,  8,  0, TL,   TEST_BHSD,   0},
    {1, 2, 2,   7,  7,  8,  0, TL,   TEST_BHSD,   1},
    {1, 2, 1,   7,  7, 31,  0, BR,   TEST_BSHD,   0},
    {1, 2, 1,  33, 33, 31,  0, BR,   TEST_BSHD,   1},
    {1, 1, 1,  33, 33, 64,  0, NONE, TEST_PADDED, 0},
    /* Sq < Sk: partial last key tile, causal diagonal off the corner. */
    {1, 1, 1,   7, 33, 64,  0, TL,   TEST_BHSD,   1},
    {1, 1, 1,   7, 33, 31,  0, BR,   TEST_PADDED, 0},
    {1, 1, 1,   1, 40,  8, 64, BR,   TEST_BHSD,   1},
    {1, 2, 2,   7, 40,  1,  0, NONE, TEST_HBSD,   1},
    /* Sq > Sk: bottom-right masks whole rows (O 0, LSE -inf). */
    {1, 2, 2,  33,  7,  8,  0, BR,   TEST_BHSD,   1},
    {2, 1, 1,  33,  7,  1,  0, TL,   TEST_HBSD,   1},
    {1, 1, 1,  40,  1, 31,  8, NONE, TEST_BHSD,   0},
    {1, 1, 1,  40, 33, 64, 31, TL,   TEST_BSHD,   0},
    {2, 2, 1,  33,  1,  8,  1, BR,   TEST_PADDED, 1},
};
/* clang-format on */

static attn_algo algo;

typedef enum call_kind { CALL_HOST, CALL_DEVICE } call_kind;

/* One run: a case through one of the two calls. */
typedef struct checked_run {
    const checked_case *c;
    call_kind call;
    int probs;         /* also the probabilities (three-kernel host call) */
    int chunk_by_head; /* ATTN_CL_SCRATCH_LIMIT = one head's scores */
} checked_run;

/* Three-kernel cases run again with one head's scores a chunk: the host
 * call writes O chunk by chunk; the device-memory call stages and commits
 * (without LSE in the first, with it in the second). */
/* clang-format off */
static const checked_case chunked_cases[] = {
    {2, 2, 1,   7, 33,  8,  0, BR,   TEST_BSHD,   0},
    {1, 3, 3,  33,  7, 31,  8, TL,   TEST_PADDED, 1},
};
/* clang-format on */

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Run `index` of the path's list; returns 0 past the end. */
static int get_run(size_t index, checked_run *run) {
    const size_t plain = 2 * COUNT(cases);
    const size_t chunked = algo == ATTN_ALGO_THREE_KERNEL ? 2 * COUNT(chunked_cases) : 0;
    if (index < plain) {
        *run = (checked_run){&cases[index / 2], index % 2 ? CALL_DEVICE : CALL_HOST,
                             (index / 2) % 3 == 0, 0};
        return 1;
    }
    if (index < plain + chunked) {
        index -= plain;
        *run = (checked_run){&chunked_cases[index / 2], index % 2 ? CALL_DEVICE : CALL_HOST, 0, 1};
        return 1;
    }
    return 0;
}

static cl_mem upload(cl_context context, const void *host, size_t bytes) {
    cl_int err;
    cl_mem mem = clCreateBuffer(context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes,
                                (void *)(uintptr_t)host, &err);
    if (err != CL_SUCCESS) {
        printf("FAIL: clCreateBuffer (%zu bytes): %d\n", bytes, (int)err);
        exit(1);
    }
    return mem;
}

/* attn_forward_device on buffers holding Q, K, V and the sentinel-filled
 * `o` / `lse`, which receive the results. */
static attn_status device_call(attn_context_t ctx, const test_problem *t, float *o, float *lse) {
    cl_command_queue queue = attn_context_queue(ctx);
    cl_context context = NULL;
    cl_int err = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof context, &context, NULL);
    if (err != CL_SUCCESS) {
        printf("FAIL: clGetCommandQueueInfo: %d\n", (int)err);
        exit(1);
    }
    const size_t ob = t->o_elems * sizeof(float), lb = t->lse_elems * sizeof(float);
    attn_device_tensors dt = {0};
    dt.q = upload(context, t->q, t->q_elems * sizeof(float));
    dt.k = upload(context, t->k, t->k_elems * sizeof(float));
    dt.v = upload(context, t->v, t->v_elems * sizeof(float));
    dt.o = upload(context, o, ob);
    dt.lse = lse ? upload(context, lse, lb) : NULL;

    cl_event done = NULL;
    attn_status st = attn_forward_device(ctx, &t->p, &dt, 0, NULL, &done);
    if (st == ATTN_SUCCESS) {
        err = clWaitForEvents(1, &done);
        if (err == CL_SUCCESS) {
            err = clEnqueueReadBuffer(queue, dt.o, CL_TRUE, 0, ob, o, 0, NULL, NULL);
        }
        if (err == CL_SUCCESS && lse) {
            err = clEnqueueReadBuffer(queue, dt.lse, CL_TRUE, 0, lb, lse, 0, NULL, NULL);
        }
        clReleaseEvent(done);
        if (err != CL_SUCCESS) {
            printf("FAIL: waiting for or reading the device call's outputs: %d\n", (int)err);
            exit(1);
        }
    }
    cl_mem mems[5] = {dt.q, dt.k, dt.v, dt.o, dt.lse};
    for (int i = 0; i < 5; i++) {
        if (mems[i]) {
            clReleaseMemObject(mems[i]);
        }
    }
    return st;
}

/* Appends " | NAME err ... <= ..." for one output; returns whether it passed. */
static int compare_output(char *detail, size_t size, const char *name, const test_shape *shape,
                          const float *out, const float *ref, const float *naive, size_t elems) {
    test_result r = test_compare(shape, out, ref, naive, elems);
    size_t n = strlen(detail);
    if (n + 3 < size) {
        snprintf(detail + n, size - n, "%s", n ? " | " : "");
        n = strlen(detail);
        test_format_result(detail + n, size - n, name, &r);
    }
    return r.ok;
}

/* Runs one forward and compares it with the reference; prints one line and
 * returns whether it passed. */
static int do_run(attn_context_t ctx, const checked_run *run, uint64_t seed) {
    const checked_case *c = run->c;
    attn_params p;
    attn_params_init(&p, c->batch, c->heads_q, c->seq_q, c->seq_k, c->head_dim);
    p.heads_kv = c->heads_kv;
    p.head_dim_v = c->head_dim_v;
    p.mask = c->mask;
    p.algo = algo;
    test_set_layout(&p, c->layout);
    const int want_probs = run->probs && run->call == CALL_HOST && algo == ATTN_ALGO_THREE_KERNEL;

    char what[200];
    test_describe(what, sizeof what, &p, c->layout);
    snprintf(what + strlen(what), sizeof what - strlen(what), "%s%s%s", c->lse ? " lse" : "",
             want_probs ? " probs" : "", run->chunk_by_head ? " 1-head chunks" : "");
    const char *call = run->call == CALL_HOST ? "[host]  " : "[device]";

    if (run->chunk_by_head) {
        char limit[32];
        snprintf(limit, sizeof limit, "%zu", (size_t)c->seq_q * (size_t)c->seq_k * sizeof(float));
        setenv("ATTN_CL_SCRATCH_LIMIT", limit, 1);
    } else {
        unsetenv("ATTN_CL_SCRATCH_LIMIT");
    }
    test_problem t;
    if (test_problem_init(&t, &p, seed, 1.0f, c->lse, want_probs) != 0) {
        printf("%s %-60s reference failed  FAIL\n", call, what);
        return 0;
    }
    float *o = test_alloc_sentinel(t.o_elems * sizeof(float));
    float *lse = c->lse ? test_alloc_sentinel(t.lse_elems * sizeof(float)) : NULL;
    float *pr = want_probs ? test_alloc_sentinel(t.probs_elems * sizeof(float)) : NULL;
    attn_status st = run->call == CALL_HOST ? attn_forward(ctx, &p, t.q, t.k, t.v, o, lse, pr)
                                            : device_call(ctx, &t, o, lse);
    char detail[600] = "";
    int ok = st == ATTN_SUCCESS;
    if (!ok) {
        snprintf(detail, sizeof detail, "%s: %s", attn_status_name(st), attn_last_error(ctx));
    } else {
        ok &= compare_output(detail, sizeof detail, "O", &t.o_shape, o, t.ref_o, t.naive_o,
                             t.o_elems);
        if (lse) {
            ok &= compare_output(detail, sizeof detail, "LSE", &t.lse_shape, lse, t.ref_lse,
                                 t.naive_lse, t.lse_elems);
        }
        if (pr) {
            ok &= compare_output(detail, sizeof detail, "P", &t.probs_shape, pr, t.ref_probs,
                                 t.naive_probs, t.probs_elems);
        }
    }
    printf("%s %-60s %s  %s\n", call, what, detail, ok ? "PASS" : "FAIL");
    fflush(stdout);
    unsetenv("ATTN_CL_SCRATCH_LIMIT");
    free(o);
    free(lse);
    free(pr);
    test_problem_free(&t);
    return ok;
}

static void require_platform(attn_context_t ctx) {
    const char *want = getenv("ATTN_TEST_REQUIRE_PLATFORM");
    if (!want || !*want) {
        return;
    }
    attn_device_info info;
    int ok = attn_context_device_info(ctx, &info) == ATTN_SUCCESS &&
             strstr(info.platform_name, want) != NULL;
    if (!ok) {
        printf("FAIL: the device's platform \"%s\" is not the required \"%s\"\n",
               info.platform_name, want);
        exit(1);
    }
}

static int usage(const char *argv0) {
    fprintf(stderr, "usage: %s three-kernel|fused [--count | --run N]\n", argv0);
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "three-kernel") != 0 && strcmp(argv[1], "fused") != 0)) {
        return usage(argv[0]);
    }
    algo = strcmp(argv[1], "fused") == 0 ? ATTN_ALGO_FUSED : ATTN_ALGO_THREE_KERNEL;
    size_t total = 0;
    checked_run run;
    while (get_run(total, &run)) {
        total++;
    }
    size_t first = 0, last = total;
    if (argc == 3 && strcmp(argv[2], "--count") == 0) {
        printf("%zu\n", total);
        return 0;
    }
    if (argc == 4 && strcmp(argv[2], "--run") == 0) {
        char *end;
        first = strtoul(argv[3], &end, 10);
        if (*end || first >= total) {
            return usage(argv[0]);
        }
        last = first + 1;
    } else if (argc != 2) {
        return usage(argv[0]);
    }

    attn_context_t ctx = test_context_create();
    require_platform(ctx);
    const char *tune = getenv("ATTN_CL_TUNE");
    printf("algorithm %s%s%s\n", argv[1], tune && *tune ? ", ATTN_CL_TUNE=" : "",
           tune && *tune ? tune : "");
    int failures = 0;
    for (size_t i = first; i < last; i++) {
        get_run(i, &run);
        /* The host and device runs of a case share its data. */
        failures += !do_run(ctx, &run, 1 + i / 2);
    }
    attn_context_destroy(ctx);
    if (last - first > 1) {
        printf("%s: %zu run(s), %d failure(s)\n", failures ? "FAIL" : "PASS", last - first,
               failures);
    }
    return failures ? 1 : 0;
}
