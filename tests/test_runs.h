/* One forward of a prepared problem through the host call or the
 * device-memory call, with every byte of its outputs captured (buffers of
 * the tensors' extents, sentinel-filled before the call), so that runs can
 * be compared bit for bit: the concurrency and determinism tests. Safe to
 * call from several threads at once, on one context or on several. */
#ifndef ATTN_TEST_RUNS_H
#define ATTN_TEST_RUNS_H

#include "test_util.h"

typedef enum test_call {
    TEST_CALL_HOST,   /* attn_forward_host */
    TEST_CALL_DEVICE, /* attn_forward_device on buffers of the context's cl_context */
} test_call;

const char *test_call_name(test_call call);

typedef struct test_outputs {
    void *o;            /* o_elems of the storage type */
    float *lse, *probs; /* NULL when not asked for */
    size_t o_bytes, lse_bytes, probs_bytes;
} test_outputs;

/* Runs `t` (its p as passed to the library, its inputs in the storage type,
 * its extra inputs) through `call`, asking for LSE and probabilities as
 * given (probabilities only exist on the host call). On success fills
 * `out`; on failure returns the status, leaves `out` empty and writes why
 * into `why`. */
attn_status test_run_forward(attn_context_t ctx, const test_problem *t, test_call call,
                             int want_lse, int want_probs, test_outputs *out, char *why,
                             size_t why_size);

/* Whether two runs' outputs are identical byte for byte (and have the same
 * outputs present). */
int test_outputs_equal(const test_outputs *a, const test_outputs *b);

/* out's O, LSE and probabilities against t's reference (test_util.h's
 * bound); appends one verdict per output to `line`, returns whether all
 * passed. */
int test_outputs_check(const test_problem *t, const test_outputs *out, char *line, size_t size);

void test_outputs_free(test_outputs *out);

#endif
