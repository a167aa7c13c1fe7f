/* attn_forward_device on the caller's cl_mem buffers: non-zero byte offsets,
 * a wait list that holds the forward back until the caller releases it, and
 * the returned event. O and LSE must equal attn_forward's bit for bit (same
 * kernels, same data) and stay within the reference bound; the bytes around
 * each tensor must be left alone. */
#include "test_util.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int failures;

static void check(int ok, const char *what) {
    printf("%-72s %s\n", what, ok ? "PASS" : "FAIL");
    failures += !ok;
}

/* A forward that blocks on its own wait list would hang the test: turn that
 * into a failure. */
static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "FAIL: timed out (a call blocked on an incomplete event?)\n";
    ssize_t ignored = write(1, msg, sizeof msg - 1);
    (void)ignored;
    _exit(1);
}

/* A buffer of `pad + bytes + pad` bytes: sentinel padding, then `data` (or
 * sentinel when NULL) at byte offset `pad`. */
static cl_mem make_buffer(cl_context context, cl_command_queue queue, size_t pad, size_t bytes,
                          const void *data, cl_event *written) {
    cl_int err;
    cl_mem mem = clCreateBuffer(context, CL_MEM_READ_WRITE, pad + bytes + pad, NULL, &err);
    if (err != CL_SUCCESS) {
        printf("FAIL: clCreateBuffer (%zu bytes): %d\n", pad + bytes + pad, (int)err);
        exit(1);
    }
    unsigned char *host = test_alloc_sentinel(pad + bytes + pad);
    if (data) {
        memcpy(host + pad, data, bytes);
    }
    /* Non-blocking, so that the forward's wait list has real work in it. */
    err = clEnqueueWriteBuffer(queue, mem, CL_FALSE, 0, pad + bytes + pad, host, 0, NULL, written);
    if (err == CL_SUCCESS) {
        err = clWaitForEvents(1, written); /* host must outlive the copy */
    }
    free(host);
    if (err != CL_SUCCESS) {
        printf("FAIL: clEnqueueWriteBuffer: %d\n", (int)err);
        exit(1);
    }
    return mem;
}

static unsigned char *read_all(cl_command_queue queue, cl_mem mem, size_t bytes) {
    unsigned char *host = test_alloc_sentinel(bytes);
    cl_int err = clEnqueueReadBuffer(queue, mem, CL_TRUE, 0, bytes, host, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
        printf("FAIL: clEnqueueReadBuffer: %d\n", (int)err);
        exit(1);
    }
    return host;
}

static void run(attn_context_t ctx, const attn_params *p, test_layout layout, uint64_t seed) {
    char desc[128];
    test_describe(desc, sizeof desc, p, layout);
    printf("-- %s\n", desc);

    cl_command_queue queue = attn_context_queue(ctx);
    cl_context context = NULL;
    cl_int err = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof context, &context, NULL);
    if (err != CL_SUCCESS || !context) {
        printf("FAIL: clGetCommandQueueInfo(CL_QUEUE_CONTEXT): %d\n", (int)err);
        exit(1);
    }

    test_problem t;
    if (test_problem_init(&t, p, seed, 1.0f, 1, 0) != 0) {
        failures++;
        return;
    }
    const size_t qb = t.q_elems * 4, kb = t.k_elems * 4, vb = t.v_elems * 4;
    const size_t ob = t.o_elems * 4, lb = t.lse_elems * 4;

    /* The host call first: the device call must reproduce it exactly. */
    float *host_o = test_alloc_sentinel(ob);
    float *host_lse = test_alloc_sentinel(lb);
    attn_status st = attn_forward(ctx, p, t.q, t.k, t.v, host_o, host_lse, NULL);
    check(st == ATTN_SUCCESS, "attn_forward (the result to match)");

    /* Different offset per tensor, all multiples of 4 bytes, none of 16. */
    const size_t pad_q = 4, pad_k = 12, pad_v = 36, pad_o = 20, pad_l = 44;
    cl_event writes[5];
    attn_device_tensors dt = {0};
    dt.q = make_buffer(context, queue, pad_q, qb, t.q, &writes[0]);
    dt.k = make_buffer(context, queue, pad_k, kb, t.k, &writes[1]);
    dt.v = make_buffer(context, queue, pad_v, vb, t.v, &writes[2]);
    dt.o = make_buffer(context, queue, pad_o, ob, NULL, &writes[3]);
    dt.lse = make_buffer(context, queue, pad_l, lb, NULL, &writes[4]);
    dt.q_offset = pad_q;
    dt.k_offset = pad_k;
    dt.v_offset = pad_v;
    dt.o_offset = pad_o;
    dt.lse_offset = pad_l;

    /* A user event holds the forward back: until it completes, neither may
     * the forward's event. */
    cl_event gate = clCreateUserEvent(context, &err);
    check(err == CL_SUCCESS, "clCreateUserEvent");
    cl_event wait_list[6] = {writes[0], writes[1], writes[2], writes[3], writes[4], gate};
    cl_event done = NULL;
    alarm(300); /* generous: memcheck runs ~50x slower */
    st = attn_forward_device(ctx, p, &dt, 6, wait_list, &done);
    check(st == ATTN_SUCCESS && done != NULL, "attn_forward_device returns without blocking");
    if (st != ATTN_SUCCESS) {
        printf("   %s: %s\n", attn_status_name(st), attn_last_error(ctx));
    }
    if (done) {
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
        cl_int exec = CL_COMPLETE;
        clGetEventInfo(done, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof exec, &exec, NULL);
        check(exec != CL_COMPLETE && exec >= 0, "event still pending while the wait list is");
    }
    clSetUserEventStatus(gate, CL_COMPLETE);
    if (done) {
        err = clWaitForEvents(1, &done);
        cl_int exec = -1;
        clGetEventInfo(done, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof exec, &exec, NULL);
        check(err == CL_SUCCESS && exec == CL_COMPLETE, "returned event completes");
        clReleaseEvent(done);
    }
    /* Read back without clFinish: the event alone must have covered O and
     * LSE. The reads go on the same in-order queue, so they would be ordered
     * anyway; the status above is what tests the event. */
    unsigned char *dev_o = read_all(queue, dt.o, pad_o + ob + pad_o);
    unsigned char *dev_l = read_all(queue, dt.lse, pad_l + lb + pad_l);
    alarm(0);

    check(test_is_sentinel(dev_o, pad_o) && test_is_sentinel(dev_o + pad_o + ob, pad_o) &&
              test_is_sentinel(dev_l, pad_l) && test_is_sentinel(dev_l + pad_l + lb, pad_l),
          "bytes before the offsets and after the tensors untouched");
    check(st == ATTN_SUCCESS && memcmp(dev_o + pad_o, host_o, ob) == 0 &&
              memcmp(dev_l + pad_l, host_lse, lb) == 0,
          "O and LSE equal attn_forward's, bit for bit");

    test_result r =
        test_compare(&t.o_shape, (const float *)(dev_o + pad_o), t.ref_o, t.naive_o, t.o_elems);
    char line[256];
    test_format_result(line, sizeof line, "O vs reference:", &r);
    check(r.ok, line);
    r = test_compare(&t.lse_shape, (const float *)(dev_l + pad_l), t.ref_lse, t.naive_lse,
                     t.lse_elems);
    test_format_result(line, sizeof line, "LSE vs reference:", &r);
    check(r.ok, line);

    /* Without LSE, without a wait list, without an event. */
    cl_mem lse_mem = dt.lse;
    dt.lse = NULL;
    st = attn_forward_device(ctx, p, &dt, 0, NULL, NULL);
    err = clFinish(queue);
    free(dev_o);
    dev_o = read_all(queue, dt.o, pad_o + ob + pad_o);
    check(st == ATTN_SUCCESS && err == CL_SUCCESS && memcmp(dev_o + pad_o, host_o, ob) == 0,
          "no LSE, no wait list, no event: same O");

    for (int i = 0; i < 5; i++) {
        clReleaseEvent(writes[i]);
    }
    clReleaseEvent(gate);
    clReleaseMemObject(dt.q);
    clReleaseMemObject(dt.k);
    clReleaseMemObject(dt.v);
    clReleaseMemObject(dt.o);
    clReleaseMemObject(lse_mem);
    free(dev_o);
    free(dev_l);
    free(host_o);
    free(host_lse);
    test_problem_free(&t);
}

/* ---- O and LSE interleaved in one buffer ---------------------------------- */

/* A packed record per query row: [O (RECORD_DV floats) | LSE | one spare
 * float]. No element is shared, so the layout is legal; the forward must
 * write exactly the O and LSE elements of rows that exist and leave every
 * spare float, and with varlen every row past the last sequence, as it was. */
enum { RECORD_DV = 16, RECORD = RECORD_DV + 2 };
#define RECORD_FILL (-7.0f)

/* The expected buffer: RECORD_FILL, with the reference's O and LSE in the
 * rows the forward writes. */
static float *record_expected(const test_problem *t, size_t floats) {
    float *want = malloc(floats * sizeof *want);
    for (size_t i = 0; i < floats; i++) {
        want[i] = RECORD_FILL;
    }
    const attn_params *r = &t->r;
    for (int32_t b = 0; b < r->batch; b++) {
        const int32_t first = r->varlen ? t->x.cu_seqlens_q[b] : 0;
        const int32_t end = r->varlen ? t->x.cu_seqlens_q[b + 1] : r->seq_q;
        const int64_t tb = r->varlen ? 0 : b;
        for (int32_t h = 0; h < r->heads_q; h++) {
            for (int32_t s = first; s < end; s++) {
                const size_t o = (size_t)(tb * r->o_strides.batch + h * r->o_strides.head +
                                          s * r->o_strides.seq);
                const size_t l = (size_t)(tb * r->lse_strides.batch + h * r->lse_strides.head +
                                          s * r->lse_strides.seq);
                memcpy(want + o, t->ref_o + o, RECORD_DV * sizeof(float));
                want[RECORD_DV + l] = t->ref_lse[l];
            }
        }
    }
    return want;
}

/* Every element as expected: RECORD_FILL exactly, results within 1e-5
 * relative (a handful of fp32 roundings on these sizes). */
static int record_matches(const float *got, const float *want, size_t floats, char *detail,
                          size_t size) {
    for (size_t i = 0; i < floats; i++) {
        const int ok = want[i] == RECORD_FILL
                           ? got[i] == RECORD_FILL
                           : got[i] == want[i] || fabs((double)got[i] - (double)want[i]) <=
                                                      1e-5 * fmax(1.0, fabs((double)want[i]));
        if (!ok) {
            snprintf(detail, size, "float %zu (row %zu, +%zu): %g, want %g", i, i / RECORD,
                     i % RECORD, (double)got[i], (double)want[i]);
            return 0;
        }
    }
    snprintf(detail, size, "%zu floats as expected", floats);
    return 1;
}

/* One path (tuning spec, or NULL for the three-kernel path) on the record
 * layout, through the host call and, without varlen, the device call. */
static void record_case(attn_context_t ctx, int varlen, const char *spec) {
    attn_params p;
    attn_params_init(&p, varlen ? 3 : 2, 2, 5, 9, RECORD_DV);
    p.heads_kv = 1;
    p.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
    p.algo = spec ? ATTN_ALGO_FUSED : ATTN_ALGO_THREE_KERNEL;
    int64_t rows = p.seq_q;
    if (varlen) {
        p.varlen = 1;
        test_varlen_totals(&p, 11);
        p.total_q += 2; /* two rows no sequence owns */
        rows = p.total_q;
    }
    const int64_t head = rows * RECORD;
    p.o_strides = p.lse_strides = (attn_strides){p.heads_q * head, head, RECORD};
    test_problem t;
    if (test_problem_init(&t, &p, 11, 1.0f, 1, 0) != 0) {
        failures++;
        return;
    }
    const size_t floats = (size_t)(varlen ? 1 : p.batch) * (size_t)p.heads_q * (size_t)head;
    float *want = record_expected(&t, floats);
    float *rec = malloc(floats * sizeof *rec);
    for (size_t i = 0; i < floats; i++) {
        rec[i] = RECORD_FILL;
    }
    attn_context_set_tuning(ctx, spec);
    attn_host_tensors h = test_host_tensors(&t, rec, rec + RECORD_DV, NULL);
    attn_status st = attn_forward_host(ctx, &t.p, &h);
    char label[160], detail[160];
    snprintf(label, sizeof label, "[O | LSE] record%s, %s: attn_forward_host",
             varlen ? ", varlen" : "", spec ? spec : "three-kernel");
    if (st != ATTN_SUCCESS) {
        snprintf(detail, sizeof detail, "%s: %s", attn_status_name(st), attn_last_error(ctx));
    }
    check(st == ATTN_SUCCESS && record_matches(rec, want, floats, detail, sizeof detail), label);
    printf("   %s\n", detail);

    if (!varlen) {
        /* The device call on the same layout: O at byte 0 and LSE at byte
         * 4 * RECORD_DV of one buffer; the same bits as the host call. */
        cl_command_queue queue = attn_context_queue(ctx);
        cl_context context = NULL;
        clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof context, &context, NULL);
        const size_t qb = t.q_elems * 4, kb = t.k_elems * 4, vb = t.v_elems * 4;
        attn_device_tensors dt = {0};
        cl_event written[4];
        float *fill = malloc(floats * sizeof *fill);
        for (size_t i = 0; i < floats; i++) {
            fill[i] = RECORD_FILL;
        }
        dt.q = make_buffer(context, queue, 0, qb, t.q, &written[0]);
        dt.k = make_buffer(context, queue, 0, kb, t.k, &written[1]);
        dt.v = make_buffer(context, queue, 0, vb, t.v, &written[2]);
        dt.o = dt.lse = make_buffer(context, queue, 0, floats * 4, fill, &written[3]);
        dt.lse_offset = RECORD_DV * sizeof(float);
        st = attn_forward_device(ctx, &t.p, &dt, 0, NULL, NULL);
        clFinish(queue);
        float *dev = (float *)read_all(queue, dt.o, floats * 4);
        snprintf(label, sizeof label, "[O | LSE] record, %s: attn_forward_device = host call",
                 spec ? spec : "three-kernel");
        check(st == ATTN_SUCCESS && memcmp(dev, rec, floats * 4) == 0, label);
        if (st != ATTN_SUCCESS) {
            printf("   %s: %s\n", attn_status_name(st), attn_last_error(ctx));
        }
        for (int i = 0; i < 4; i++) {
            clReleaseEvent(written[i]);
        }
        clReleaseMemObject(dt.q);
        clReleaseMemObject(dt.k);
        clReleaseMemObject(dt.v);
        clReleaseMemObject(dt.o);
        free(dev);
        free(fill);
    }
    attn_context_set_tuning(ctx, NULL);
    free(rec);
    free(want);
    test_problem_free(&t);
}

/* The three-kernel path and both fused kernel shapes. Under memcheck only
 * the table's fused shape, whose kernels the case above has built. */
static void interleaved_outputs(attn_context_t ctx) {
    static const char *const specs[3] = {"variant=cpu", "variant=gpu,rows=4,tile_k=12,wg=12", NULL};
    for (int i = 0; i < (test_quick() ? 1 : 3); i++) {
        record_case(ctx, 0, i == 0 && test_quick() ? "" : specs[i]);
        if (!test_quick()) {
            record_case(ctx, 1, specs[i]);
        }
    }
}

int main(void) {
    signal(SIGALRM, on_alarm);
    attn_context_t ctx = test_context_create();

    attn_params p;
    attn_params_init(&p, 2, 4, 33, 70, 16);
    p.heads_kv = 2;
    p.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
    run(ctx, &p, TEST_BHSD, 1);

    if (!test_quick()) {
        attn_params_init(&p, 1, 3, 100, 7, 16);
        p.head_dim_v = 40;
        p.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT; /* fully masked rows */
        test_set_layout(&p, TEST_PADDED);
        run(ctx, &p, TEST_PADDED, 2);
    }
    interleaved_outputs(ctx);

    attn_context_destroy(ctx);
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
