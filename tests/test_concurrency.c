/* The threading contract of include/attn_cl.h, checked as it is stated
 * there: a context may be shared by several threads, calls on one context
 * are serialized, results do not depend on the calling thread, and each
 * thread reads error messages no other thread's failure can rewrite:
 *
 *   shared     THREADS threads run every request ITERATIONS times on one
 *              fresh context, so that they also race to build its kernels:
 *              both algorithms, the host and the device-memory call, with
 *              attn_check beside each forward. Every result must equal the
 *              single-threaded result bit for bit.
 *   separate   the same with one context per thread, created and destroyed
 *              by the threads themselves.
 *   tuning     attn_context_set_tuning switches a shared context between
 *              two specs while other threads run fused forwards on it: each
 *              forward must run wholly under one spec (its bits equal that
 *              spec's single-threaded result).
 *   errors     threads fail calls with distinct sizes at once, with and
 *              without the shared context: each thread's
 *              attn_last_error(NULL) names its own latest failure, and
 *              attn_last_error(ctx), read while the others fail on ctx, is
 *              always one whole message of the failures made on ctx.
 *
 * Run under ThreadSanitizer too (scripts/test.sh, build-tsan). */
#include "test_runs.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define THREADS 4
#define ITERATIONS 3

#define NONE ATTN_MASK_NONE
#define TL ATTN_MASK_CAUSAL_TOP_LEFT
#define BR ATTN_MASK_CAUSAL_BOTTOM_RIGHT
#define FUSED ATTN_ALGO_FUSED
#define THREE ATTN_ALGO_THREE_KERNEL
#define HOST TEST_CALL_HOST
#define DEVICE TEST_CALL_DEVICE

typedef struct request {
    int32_t batch, heads_q, heads_kv, seq_q, seq_k, head_dim, head_dim_v;
    attn_mask mask;
    attn_algo algo;
    test_layout layout;
    test_call call;
    int lse, probs;
} request;

/* clang-format off */
static const request requests[] = {
    /* B  Hq Hkv  Sq  Sk   D  Dv  mask  algo   layout       call    lse probs */
    {2, 4, 2,  33, 40, 32,  0, BR,   FUSED, TEST_BHSD,   HOST,   1, 0},
    {1, 2, 2,  17, 33, 16,  0, TL,   THREE, TEST_BHSD,   HOST,   1, 1},
    {1, 3, 3,  40, 40, 64,  0, NONE, FUSED, TEST_BHSD,   DEVICE, 1, 0},
    {2, 2, 1,   7, 33,  8,  0, BR,   THREE, TEST_BSHD,   DEVICE, 1, 0},
    {1, 2, 1,  64, 17, 31,  8, TL,   FUSED, TEST_PADDED, HOST,   0, 0},
    {1, 2, 2,  33, 33, 16, 24, NONE, THREE, TEST_PADDED, HOST,   0, 0},
};
/* clang-format on */

#define REQUESTS (sizeof requests / sizeof requests[0])

static test_problem problems[REQUESTS];
static test_outputs baseline[REQUESTS];
static int failures;

static void report(int ok, const char *what, const char *detail) {
    printf("%-66s %-50s %s\n", what, detail, ok ? "PASS" : "FAIL");
    fflush(stdout);
    failures += !ok;
}

static void describe(char *buf, size_t size, size_t r) {
    const request *q = &requests[r];
    char shape[128];
    test_describe(shape, sizeof shape, &problems[r].p, q->layout);
    snprintf(buf, size, "%s %s %s%s%s", q->algo == FUSED ? "fused" : "three-kernel",
             test_call_name(q->call), shape, q->lse ? " lse" : "", q->probs ? " probs" : "");
}

static int make_problems(void) {
    for (size_t r = 0; r < REQUESTS; r++) {
        const request *q = &requests[r];
        attn_params p;
        attn_params_init(&p, q->batch, q->heads_q, q->seq_q, q->seq_k, q->head_dim);
        p.heads_kv = q->heads_kv;
        p.head_dim_v = q->head_dim_v;
        p.mask = q->mask;
        p.algo = q->algo;
        test_set_layout(&p, q->layout);
        if (test_problem_init(&problems[r], &p, 100 + r, 1.0f, q->lse, q->probs) != 0) {
            return 0;
        }
    }
    return 1;
}

/* ---- Shared and separate contexts --------------------------------------- */

typedef struct worker {
    int id;
    attn_context_t ctx; /* NULL: the thread makes its own */
    int forwards, mismatches, errors;
    char first_error[256];
} worker;

static void note_error(worker *w, const char *what) {
    if (!w->errors++) {
        snprintf(w->first_error, sizeof w->first_error, "%s", what);
    }
}

static void *run_requests(void *arg) {
    worker *w = arg;
    attn_context_t ctx = w->ctx;
    if (!ctx && attn_context_create(NULL, &ctx) != ATTN_SUCCESS) {
        note_error(w, attn_last_error(NULL)); /* this thread's own message */
        return NULL;
    }
    for (int it = 0; it < ITERATIONS; it++) {
        for (size_t j = 0; j < REQUESTS; j++) {
            /* Threads start at different requests so that different
             * kernels are built and run at the same moment. */
            const size_t r = (j + (size_t)w->id) % REQUESTS;
            const request *q = &requests[r];
            attn_algo chosen = ATTN_ALGO_AUTO;
            if (attn_check(ctx, &problems[r].p, q->lse, q->probs, &chosen) != ATTN_SUCCESS ||
                chosen != q->algo) {
                note_error(w, "attn_check refused or chose another algorithm");
                continue;
            }
            test_outputs out;
            char why[256];
            if (test_run_forward(ctx, &problems[r], q->call, q->lse, q->probs, &out, why,
                                 sizeof why) != ATTN_SUCCESS) {
                note_error(w, why);
                continue;
            }
            w->forwards++;
            w->mismatches += !test_outputs_equal(&out, &baseline[r]);
            test_outputs_free(&out);
        }
    }
    if (!w->ctx) {
        attn_context_destroy(ctx);
    }
    return NULL;
}

static void run_workers(const char *phase, attn_context_t shared) {
    pthread_t threads[THREADS];
    worker workers[THREADS];
    for (int t = 0; t < THREADS; t++) {
        workers[t] = (worker){.id = t, .ctx = shared};
        if (pthread_create(&threads[t], NULL, run_requests, &workers[t]) != 0) {
            printf("FAIL: pthread_create\n");
            exit(1);
        }
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
    }
    for (int t = 0; t < THREADS; t++) {
        const worker *w = &workers[t];
        char what[96], detail[320];
        snprintf(what, sizeof what, "%s: thread %d", phase, t);
        const int ok =
            w->errors == 0 && w->mismatches == 0 && w->forwards == ITERATIONS * (int)REQUESTS;
        if (w->errors) {
            snprintf(detail, sizeof detail, "%d error(s), first: %s", w->errors, w->first_error);
        } else {
            snprintf(detail, sizeof detail, "%d forwards, %d differ from single-threaded",
                     w->forwards, w->mismatches);
        }
        report(ok, what, detail);
    }
}

/* ---- Tuning switched under running forwards ----------------------------- */

static const char *const tuning_specs[2] = {
    "", /* the device's table entry */
    "variant=cpu,rows=1,tile_k=4,wg=1,vec=4,unroll=4",
};
#define TUNED_REQUEST 0 /* a fused request */
static test_outputs tuned_baseline[2];
static atomic_int tuning_workers_left;

typedef struct tuning_worker {
    attn_context_t ctx;
    int forwards, matched[2], mismatches, errors, switches;
} tuning_worker;

static void *switch_tuning(void *arg) {
    tuning_worker *w = arg;
    /* A pause between switches, so that the forwards get the lock too. */
    const struct timespec pause = {0, 200 * 1000};
    for (int i = 0; atomic_load(&tuning_workers_left) > 0; i++) {
        w->errors += attn_context_set_tuning(w->ctx, tuning_specs[i % 2]) != ATTN_SUCCESS;
        w->switches++;
        nanosleep(&pause, NULL);
    }
    return NULL;
}

static void *run_tuned(void *arg) {
    tuning_worker *w = arg;
    const request *q = &requests[TUNED_REQUEST];
    for (int it = 0; it < 2 * ITERATIONS; it++) {
        test_outputs out;
        char why[256];
        if (test_run_forward(w->ctx, &problems[TUNED_REQUEST], q->call, q->lse, q->probs, &out, why,
                             sizeof why) != ATTN_SUCCESS) {
            w->errors++;
            continue;
        }
        w->forwards++;
        if (test_outputs_equal(&out, &tuned_baseline[0])) {
            w->matched[0]++;
        } else if (test_outputs_equal(&out, &tuned_baseline[1])) {
            w->matched[1]++;
        } else {
            w->mismatches++;
        }
        test_outputs_free(&out);
    }
    atomic_fetch_sub(&tuning_workers_left, 1);
    return NULL;
}

static void tuning_phase(attn_context_t base) {
    const request *q = &requests[TUNED_REQUEST];
    for (int s = 0; s < 2; s++) {
        char why[256];
        if (attn_context_set_tuning(base, tuning_specs[s]) != ATTN_SUCCESS ||
            test_run_forward(base, &problems[TUNED_REQUEST], q->call, q->lse, q->probs,
                             &tuned_baseline[s], why, sizeof why) != ATTN_SUCCESS) {
            report(0, "tuning: single-threaded baselines", attn_last_error(base));
            return;
        }
    }
    attn_context_set_tuning(base, NULL);
    /* The two specs must give different bits, or this phase could not tell
     * a forward that mixed them from one that did not. */
    const int distinct = !test_outputs_equal(&tuned_baseline[0], &tuned_baseline[1]);

    attn_context_t ctx = NULL;
    if (attn_context_create(NULL, &ctx) != ATTN_SUCCESS) {
        report(0, "tuning: attn_context_create", attn_last_error(NULL));
        return;
    }
    pthread_t threads[THREADS];
    tuning_worker workers[THREADS];
    atomic_store(&tuning_workers_left, THREADS - 1);
    for (int t = 0; t < THREADS; t++) {
        workers[t] = (tuning_worker){.ctx = ctx};
        pthread_create(&threads[t], NULL, t == 0 ? switch_tuning : run_tuned, &workers[t]);
    }
    int forwards = 0, matched[2] = {0, 0}, mismatches = 0, errors = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        forwards += workers[t].forwards;
        matched[0] += workers[t].matched[0];
        matched[1] += workers[t].matched[1];
        mismatches += workers[t].mismatches;
        errors += workers[t].errors;
    }
    char detail[200];
    snprintf(detail, sizeof detail,
             "%d switches; %d forwards: %d table, %d narrow, %d neither; %d error(s)",
             workers[0].switches, forwards, matched[0], matched[1], mismatches, errors);
    report(distinct && mismatches == 0 && errors == 0 && forwards == (THREADS - 1) * 2 * ITERATIONS,
           "tuning: set_tuning races fused forwards", distinct ? detail : "the specs agree");
    attn_context_destroy(ctx);
    test_outputs_free(&tuned_baseline[0]);
    test_outputs_free(&tuned_baseline[1]);
}

/* ---- Error messages ----------------------------------------------------- */

typedef struct error_worker {
    int id;
    attn_context_t ctx;
    char (*expected)[512]; /* the message each thread's failure on ctx records */
    int own_message_seen, own_ctx_message_seen, whole_ctx_message_seen, calls;
} error_worker;

/* A request whose only fault is its batch, so that the message names it. */
static attn_params bad_request(int batch) {
    attn_params p;
    attn_params_init(&p, batch, 1, 1, 1, 8);
    return p;
}

static void *fail_calls(void *arg) {
    error_worker *w = arg;
    float buf[8] = {0};
    char own[32], own_ctx[32];
    snprintf(own, sizeof own, "batch %d,", -1 - w->id);
    snprintf(own_ctx, sizeof own_ctx, "batch %d,", -100 - w->id);
    for (int it = 0; it < 20 * ITERATIONS; it++) {
        attn_params mine = bad_request(-1 - w->id), on_ctx = bad_request(-100 - w->id);
        attn_reference(&mine, buf, buf, buf, buf, NULL, NULL);
        w->own_message_seen += strstr(attn_last_error(NULL), own) != NULL;
        attn_forward(w->ctx, &on_ctx, buf, buf, buf, buf, NULL, NULL);
        w->own_ctx_message_seen += strstr(attn_last_error(NULL), own_ctx) != NULL;
        /* The other threads keep failing on ctx: what this one reads is
         * still one whole message, never a mix. */
        const char *shared = attn_last_error(w->ctx);
        for (int t = 0; t < THREADS; t++) {
            if (strcmp(shared, w->expected[t]) == 0) {
                w->whole_ctx_message_seen++;
                break;
            }
        }
        w->calls++;
    }
    return NULL;
}

static void errors_phase(attn_context_t ctx) {
    char expected[THREADS][512];
    float buf[8] = {0};
    for (int t = 0; t < THREADS; t++) {
        /* The message the forward on ctx will record, made here without a
         * context: validation words it the same way for both. */
        attn_params p = bad_request(-100 - t);
        attn_reference(&p, buf, buf, buf, buf, NULL, NULL);
        snprintf(expected[t], sizeof expected[t], "%s", attn_last_error(NULL));
    }
    pthread_t threads[THREADS];
    error_worker workers[THREADS];
    for (int t = 0; t < THREADS; t++) {
        workers[t] = (error_worker){.id = t, .ctx = ctx, .expected = expected};
        pthread_create(&threads[t], NULL, fail_calls, &workers[t]);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
    }
    for (int t = 0; t < THREADS; t++) {
        char what[96], detail[96];
        snprintf(what, sizeof what, "errors: thread %d attn_last_error(NULL)", t);
        snprintf(detail, sizeof detail, "own message after %d of %d failures",
                 workers[t].own_message_seen, workers[t].calls);
        report(workers[t].own_message_seen == workers[t].calls, what, detail);
        snprintf(what, sizeof what, "errors: thread %d, its failure on ctx", t);
        snprintf(detail, sizeof detail, "own message after %d of %d failures",
                 workers[t].own_ctx_message_seen, workers[t].calls);
        report(workers[t].own_ctx_message_seen == workers[t].calls, what, detail);
        snprintf(what, sizeof what, "errors: thread %d reads attn_last_error(ctx)", t);
        snprintf(detail, sizeof detail, "a whole message %d of %d times",
                 workers[t].whole_ctx_message_seen, workers[t].calls);
        report(workers[t].whole_ctx_message_seen == workers[t].calls, what, detail);
    }
    const char *last = attn_last_error(ctx);
    int whole = 0;
    for (int t = 0; t < THREADS; t++) {
        whole |= strcmp(last, expected[t]) == 0;
    }
    report(whole, "errors: attn_last_error(ctx) after the threads", last);
}

int main(void) {
    unsetenv("ATTN_CL_TUNE"); /* the tuning phase sets the specs itself */
    unsetenv("ATTN_CL_SCRATCH_LIMIT");
    if (!make_problems()) {
        printf("FAIL: reference\n");
        return 1;
    }
    attn_context_t base = test_context_create();
    printf("%d threads, %d iterations over %zu requests\n", THREADS, ITERATIONS, REQUESTS);
    for (size_t r = 0; r < REQUESTS; r++) {
        char what[200], why[256];
        describe(what, sizeof what, r);
        const request *q = &requests[r];
        attn_status st = test_run_forward(base, &problems[r], q->call, q->lse, q->probs,
                                          &baseline[r], why, sizeof why);
        report(st == ATTN_SUCCESS, what, st == ATTN_SUCCESS ? "single-threaded result" : why);
        if (st != ATTN_SUCCESS) {
            return 1;
        }
    }

    attn_context_t shared = NULL;
    if (!test_ok(NULL, attn_context_create(NULL, &shared), "attn_context_create")) {
        return 1;
    }
    run_workers("shared context", shared);
    attn_context_destroy(shared);
    run_workers("separate contexts", NULL);
    tuning_phase(base);
    errors_phase(base);

    attn_context_destroy(base);
    for (size_t r = 0; r < REQUESTS; r++) {
        test_outputs_free(&baseline[r]);
        test_problem_free(&problems[r]);
    }
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
