#include "test_runs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *test_call_name(test_call call) {
    return call == TEST_CALL_HOST ? "host" : "device";
}

void test_outputs_free(test_outputs *out) {
    free(out->o);
    free(out->lse);
    free(out->probs);
    memset(out, 0, sizeof *out);
}

int test_outputs_equal(const test_outputs *a, const test_outputs *b) {
    if (a->o_bytes != b->o_bytes || a->lse_bytes != b->lse_bytes ||
        a->probs_bytes != b->probs_bytes || !a->o != !b->o || !a->lse != !b->lse ||
        !a->probs != !b->probs) {
        return 0;
    }
    return (!a->o || memcmp(a->o, b->o, a->o_bytes) == 0) &&
           (!a->lse || memcmp(a->lse, b->lse, a->lse_bytes) == 0) &&
           (!a->probs || memcmp(a->probs, b->probs, a->probs_bytes) == 0);
}

static cl_mem upload(cl_context context, const void *host, size_t bytes, cl_int *err) {
    return clCreateBuffer(context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes,
                          (void *)(uintptr_t)host, err);
}

/* attn_forward_device on buffers holding Q, K, V and the sentinel-filled
 * outputs, read back into `out`. */
static attn_status device_call(attn_context_t ctx, const test_problem *t, test_outputs *out,
                               char *why, size_t why_size) {
    cl_command_queue queue = attn_context_queue(ctx);
    cl_context context = NULL;
    cl_int err = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof context, &context, NULL);
    cl_mem mems[5] = {NULL, NULL, NULL, NULL, NULL};
    const void *hosts[5] = {t->q, t->k, t->v, out->o, out->lse};
    const size_t bytes[5] = {t->q_elems * sizeof(float), t->k_elems * sizeof(float),
                             t->v_elems * sizeof(float), out->o_bytes, out->lse_bytes};
    for (int i = 0; i < 5 && err == CL_SUCCESS; i++) {
        if (hosts[i]) {
            mems[i] = upload(context, hosts[i], bytes[i], &err);
        }
    }
    attn_status st = (attn_status)err;
    if (err != CL_SUCCESS) {
        snprintf(why, why_size, "setting up device buffers: %d", (int)err);
    } else {
        attn_device_tensors dt = {0};
        dt.q = mems[0];
        dt.k = mems[1];
        dt.v = mems[2];
        dt.o = mems[3];
        dt.lse = mems[4];
        cl_event done = NULL;
        st = attn_forward_device(ctx, &t->p, &dt, 0, NULL, &done);
        if (st != ATTN_SUCCESS) {
            snprintf(why, why_size, "attn_forward_device: %s: %s", attn_status_name(st),
                     attn_last_error(ctx));
        } else {
            err = clWaitForEvents(1, &done);
            clReleaseEvent(done);
            if (err == CL_SUCCESS) {
                err = clEnqueueReadBuffer(queue, mems[3], CL_TRUE, 0, out->o_bytes, out->o, 0, NULL,
                                          NULL);
            }
            if (err == CL_SUCCESS && out->lse) {
                err = clEnqueueReadBuffer(queue, mems[4], CL_TRUE, 0, out->lse_bytes, out->lse, 0,
                                          NULL, NULL);
            }
            if (err != CL_SUCCESS) {
                st = (attn_status)err;
                snprintf(why, why_size, "waiting for or reading the outputs: %d", (int)err);
            }
        }
    }
    for (int i = 0; i < 5; i++) {
        if (mems[i]) {
            clReleaseMemObject(mems[i]);
        }
    }
    return st;
}

attn_status test_run_forward(attn_context_t ctx, const test_problem *t, test_call call,
                             int want_lse, int want_probs, test_outputs *out, char *why,
                             size_t why_size) {
    memset(out, 0, sizeof *out);
    out->o_bytes = t->o_elems * sizeof(float);
    out->o = test_alloc_sentinel(out->o_bytes);
    if (want_lse) {
        out->lse_bytes = t->lse_elems * sizeof(float);
        out->lse = test_alloc_sentinel(out->lse_bytes);
    }
    if (want_probs && call == TEST_CALL_HOST) {
        out->probs_bytes = t->probs_elems * sizeof(float);
        out->probs = test_alloc_sentinel(out->probs_bytes);
    }
    attn_status st;
    if (call == TEST_CALL_HOST) {
        st = attn_forward(ctx, &t->p, t->q, t->k, t->v, out->o, out->lse, out->probs);
        if (st != ATTN_SUCCESS) {
            snprintf(why, why_size, "attn_forward: %s: %s", attn_status_name(st),
                     attn_last_error(ctx));
        }
    } else {
        st = device_call(ctx, t, out, why, why_size);
    }
    if (st != ATTN_SUCCESS) {
        test_outputs_free(out);
    }
    return st;
}
