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

/* attn_forward_device on buffers holding the inputs (storage type, bias,
 * keep-mask) and the sentinel-filled outputs, read back into `out`; the
 * per-batch and per-head arrays stay in host memory. */
static attn_status device_call(attn_context_t ctx, const test_problem *t, test_outputs *out,
                               char *why, size_t why_size) {
    cl_command_queue queue = attn_context_queue(ctx);
    cl_context context = NULL;
    cl_int err = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof context, &context, NULL);
    enum { Q, K, V, O, LSE, BIAS, KEEP, COUNT };
    cl_mem mems[COUNT] = {NULL};
    const size_t es = test_dtype_size(t->p.dtype);
    const void *hosts[COUNT] = {t->q_store, t->k_store, t->v_store,    out->o,
                                out->lse,   t->x.bias,  t->x.keep_mask};
    const size_t bytes[COUNT] = {t->q_elems * es,     t->k_elems * es,
                                 t->v_elems * es,     out->o_bytes,
                                 out->lse_bytes,      t->x.bias_elems * sizeof(float),
                                 t->x.keep_mask_elems};
    for (int i = 0; i < COUNT && err == CL_SUCCESS; i++) {
        if (hosts[i]) {
            mems[i] = upload(context, hosts[i], bytes[i], &err);
        }
    }
    attn_status st = (attn_status)err;
    if (err != CL_SUCCESS) {
        snprintf(why, why_size, "setting up device buffers: %d", (int)err);
    } else {
        attn_device_tensors dt = {0};
        dt.q = mems[Q];
        dt.k = mems[K];
        dt.v = mems[V];
        dt.o = mems[O];
        dt.lse = mems[LSE];
        dt.bias = mems[BIAS];
        dt.keep_mask = mems[KEEP];
        dt.key_lengths = t->x.key_lengths;
        dt.alibi_slopes = t->x.alibi_slopes;
        dt.cu_seqlens_q = t->x.cu_seqlens_q;
        dt.cu_seqlens_k = t->x.cu_seqlens_k;
        cl_event done = NULL;
        st = attn_forward_device(ctx, &t->p, &dt, 0, NULL, &done);
        if (st != ATTN_SUCCESS) {
            snprintf(why, why_size, "attn_forward_device: %s: %s", attn_status_name(st),
                     attn_last_error(ctx));
        } else {
            err = clWaitForEvents(1, &done);
            clReleaseEvent(done);
            if (err == CL_SUCCESS) {
                err = clEnqueueReadBuffer(queue, mems[O], CL_TRUE, 0, out->o_bytes, out->o, 0, NULL,
                                          NULL);
            }
            if (err == CL_SUCCESS && out->lse) {
                err = clEnqueueReadBuffer(queue, mems[LSE], CL_TRUE, 0, out->lse_bytes, out->lse, 0,
                                          NULL, NULL);
            }
            if (err != CL_SUCCESS) {
                st = (attn_status)err;
                snprintf(why, why_size, "waiting for or reading the outputs: %d", (int)err);
            }
        }
    }
    for (int i = 0; i < COUNT; i++) {
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
    out->o_bytes = t->o_elems * test_dtype_size(t->p.dtype);
    out->o = test_alloc_output(t);
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
        attn_host_tensors h = test_host_tensors(t, out->o, out->lse, out->probs);
        st = attn_forward_host(ctx, &t->p, &h);
        if (st != ATTN_SUCCESS) {
            snprintf(why, why_size, "attn_forward_host: %s: %s", attn_status_name(st),
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

int test_outputs_check(const test_problem *t, const test_outputs *out, char *line, size_t size) {
    char part[200];
    size_t n = strlen(line);
    test_result r = test_compare_output(t, out->o);
    int ok = r.ok;
    test_format_result(part, sizeof part, "O", &r);
    n += (size_t)snprintf(line + n, n < size ? size - n : 0, "%s", part);
    if (out->lse) {
        r = test_compare(&t->lse_shape, out->lse, t->ref_lse, t->naive_lse, t->lse_elems);
        ok &= r.ok;
        test_format_result(part, sizeof part, " | LSE", &r);
        n += (size_t)snprintf(line + n, n < size ? size - n : 0, "%s", part);
    }
    if (out->probs) {
        r = test_compare(&t->probs_shape, out->probs, t->ref_probs, t->naive_probs, t->probs_elems);
        ok &= r.ok;
        test_format_result(part, sizeof part, " | P", &r);
        snprintf(line + n, n < size ? size - n : 0, "%s", part);
    }
    return ok;
}
