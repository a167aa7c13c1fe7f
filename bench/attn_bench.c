/* attn_bench: times libattn_cl's forward over a sweep of sequence lengths on
 * one OpenCL device, against the library's CPU reference. See --help. */
#include "attn_cl.h"
#include "bench_args.h"
#include "bench_data.h"
#include "bench_report.h"
#include "bench_time.h"
#include "bench_work.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Everything one sequence length needs, shared by the algorithms run on it. */
typedef struct bench_point {
    attn_params params; /* algo AUTO; heads_kv and head_dim_v resolved */
    size_t q_elems, k_elems, v_elems, o_elems;
    float *q, *k, *v;
    float *ref_o;  /* the reference output; NULL when it did not run */
    float *dev_o;  /* the device output read back, for max_abs_err */
    double ref_ms; /* < 0: no reference */
    cl_mem q_buf, k_buf, v_buf, o_buf;
    char label[64]; /* "[3/7] 512x512" for progress lines */
} bench_point;

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Progress and notes: stderr only, so stdout stays the table or the CSV. */
static void note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

static int list_devices(void) {
    size_t count = 0;
    attn_status st = attn_list_devices(NULL, 0, &count);
    if (st != ATTN_SUCCESS) {
        note("attn_bench: cannot list devices: %s: %s", attn_status_name(st),
             attn_last_error(NULL));
        return 1;
    }
    attn_device_info *devices = calloc(count ? count : 1, sizeof *devices);
    if (!devices) {
        note("attn_bench: out of host memory");
        return 1;
    }
    st = attn_list_devices(devices, count, &count);
    if (st != ATTN_SUCCESS) {
        note("attn_bench: cannot list devices: %s: %s", attn_status_name(st),
             attn_last_error(NULL));
        free(devices);
        return 1;
    }
    bench_report_devices(devices, count);
    free(devices);
    return 0;
}

static int reference_wanted(const bench_options *opt, const attn_params *p) {
    if (!opt->reference) {
        return 0;
    }
    if (opt->ref_max_seq > 0) {
        return p->seq_q <= opt->ref_max_seq && p->seq_k <= opt->ref_max_seq;
    }
    return bench_flops(p) <= opt->ref_max_gflop * 1e9;
}

static void point_release(bench_point *pt) {
    cl_mem *bufs[] = {&pt->q_buf, &pt->k_buf, &pt->v_buf, &pt->o_buf};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if (*bufs[i]) {
            clReleaseMemObject(*bufs[i]);
            *bufs[i] = NULL;
        }
    }
    free(pt->q);
    free(pt->k);
    free(pt->v);
    free(pt->ref_o);
    free(pt->dev_o);
    pt->q = pt->k = pt->v = pt->ref_o = pt->dev_o = NULL;
}

static cl_mem upload(cl_context cl_ctx, const float *host, size_t elems, cl_int *err) {
    return clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, elems * sizeof(float),
                          (void *)host, err);
}

/* Runs attn_reference once, timed, into pt->ref_o; leaves pt->ref_o NULL when
 * it is not wanted or fails. */
static void run_reference(const bench_options *opt, bench_point *pt) {
    const attn_params *p = &pt->params;
    if (!reference_wanted(opt, p)) {
        return;
    }
    pt->ref_o = malloc(pt->o_elems * sizeof(float));
    if (!pt->ref_o) {
        note("%s: no reference: out of host memory", pt->label);
        return;
    }
    note("%s: CPU reference (%.2f GFLOP, one thread) ...", pt->label, bench_flops(p) * 1e-9);
    double t0 = bench_now_ms();
    attn_status st = attn_reference(p, pt->q, pt->k, pt->v, pt->ref_o, NULL, NULL);
    double t1 = bench_now_ms();
    if (st != ATTN_SUCCESS) {
        note("%s: no reference: %s: %s", pt->label, attn_status_name(st), attn_last_error(NULL));
        free(pt->ref_o);
        pt->ref_o = NULL;
        return;
    }
    pt->ref_ms = t1 - t0;
    note("%s: CPU reference took %.1f ms", pt->label, pt->ref_ms);
}

/* Host inputs, the device buffers, and the reference output when it is
 * wanted (last: no reference time is spent on a point the device cannot hold).
 * Returns 0, or -1 after a note (the point is then skipped). */
static int point_setup(const bench_options *opt, cl_context cl_ctx, bench_point *pt) {
    const attn_params *p = &pt->params;
    pt->ref_ms = -1.0;
    pt->q_elems = bench_elements(p->batch, p->heads_q, p->seq_q, p->head_dim);
    pt->k_elems = bench_elements(p->batch, p->heads_kv, p->seq_k, p->head_dim);
    pt->v_elems = bench_elements(p->batch, p->heads_kv, p->seq_k, p->head_dim_v);
    pt->o_elems = bench_elements(p->batch, p->heads_q, p->seq_q, p->head_dim_v);
    if (!pt->q_elems || !pt->k_elems || !pt->v_elems || !pt->o_elems) {
        note("%s: skipped: the tensors do not fit this machine's address space", pt->label);
        return -1;
    }
    pt->q = malloc(pt->q_elems * sizeof(float));
    pt->k = malloc(pt->k_elems * sizeof(float));
    pt->v = malloc(pt->v_elems * sizeof(float));
    pt->dev_o = malloc(pt->o_elems * sizeof(float));
    if (!pt->q || !pt->k || !pt->v || !pt->dev_o) {
        note("%s: skipped: out of host memory for the inputs", pt->label);
        return -1;
    }
    /* The same seed for every point: a length's inputs do not depend on
     * which other lengths the sweep holds. */
    uint64_t state = opt->seed;
    bench_fill_random(pt->q, pt->q_elems, &state);
    bench_fill_random(pt->k, pt->k_elems, &state);
    bench_fill_random(pt->v, pt->v_elems, &state);

    cl_int err = CL_SUCCESS;
    pt->q_buf = upload(cl_ctx, pt->q, pt->q_elems, &err);
    if (err == CL_SUCCESS) {
        pt->k_buf = upload(cl_ctx, pt->k, pt->k_elems, &err);
    }
    if (err == CL_SUCCESS) {
        pt->v_buf = upload(cl_ctx, pt->v, pt->v_elems, &err);
    }
    if (err == CL_SUCCESS) {
        pt->o_buf =
            clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, pt->o_elems * sizeof(float), NULL, &err);
    }
    if (err != CL_SUCCESS) {
        note("%s: skipped: cannot create the Q/K/V/O device buffers (%.1f MiB): %s", pt->label,
             (double)(pt->q_elems + pt->k_elems + pt->v_elems + pt->o_elems) * 4.0 / 1048576.0,
             attn_status_name((attn_status)err));
        return -1;
    }
    run_reference(opt, pt);
    return 0;
}

/* One forward, timed from the enqueue to the end of clWaitForEvents. On
 * failure *why says which call failed. */
static attn_status forward_once(attn_context_t ctx, const attn_params *params,
                                const attn_device_tensors *tensors, double *ms, const char **why) {
    cl_event done = NULL;
    double t0 = bench_now_ms();
    attn_status st = attn_forward_device(ctx, params, tensors, 0, NULL, &done);
    if (st != ATTN_SUCCESS) {
        *why = attn_last_error(ctx);
        return st;
    }
    cl_int err = clWaitForEvents(1, &done);
    double t1 = bench_now_ms();
    cl_int exec = CL_COMPLETE;
    if (err == CL_SUCCESS) {
        err = clGetEventInfo(done, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof exec, &exec, NULL);
    }
    clReleaseEvent(done);
    if (err != CL_SUCCESS || exec < 0) {
        *why = "the forward's event did not complete";
        return (attn_status)(err != CL_SUCCESS ? err : exec);
    }
    *ms = t1 - t0;
    return ATTN_SUCCESS;
}

/* --warmup untimed forwards, then up to --repeats timed ones into times[],
 * fewer when the next would pass --max-point-seconds (judged by the last). */
static attn_status time_forwards(const bench_options *opt, attn_context_t ctx,
                                 const attn_params *params, const attn_device_tensors *tensors,
                                 double *times, int *runs, const char **why) {
    double ms = 0.0;
    for (int r = 0; r < opt->warmup; r++) {
        attn_status st = forward_once(ctx, params, tensors, &ms, why);
        if (st != ATTN_SUCCESS) {
            return st;
        }
    }
    const double cap_ms = opt->max_point_seconds * 1e3;
    double spent = 0.0;
    *runs = 0;
    while (*runs < opt->repeats) {
        if (*runs > 0 && spent + times[*runs - 1] > cap_ms) {
            break;
        }
        attn_status st = forward_once(ctx, params, tensors, &times[*runs], why);
        if (st != ATTN_SUCCESS) {
            return st;
        }
        spent += times[*runs];
        (*runs)++;
    }
    return ATTN_SUCCESS;
}

/* Measures algorithm `requested` (which attn_check resolved to `algo`) on a
 * prepared point and fills `row`. Returns 0, or -1 after a note. */
static int measure(const bench_options *opt, attn_context_t ctx, cl_command_queue queue,
                   bench_point *pt, attn_algo requested, attn_algo algo, const char *label,
                   bench_row *row) {
    attn_params params = pt->params;
    params.algo = requested;

    double t0 = bench_now_ms();
    attn_status st = attn_prepare(ctx, &params, 0, 0);
    double build_ms = bench_now_ms() - t0;
    if (st != ATTN_SUCCESS) {
        note("%s %s: skipped: attn_prepare: %s: %s", label, bench_algo_name(algo),
             attn_status_name(st), attn_last_error(ctx));
        return -1;
    }
    note("%s %s: build %.1f ms; %d warm-up + %d timed forwards", label, bench_algo_name(algo),
         build_ms, opt->warmup, opt->repeats);

    /* NaN in O beforehand: a forward that leaves part of O unwritten shows up
     * as max_abs_err nan instead of passing on an earlier algorithm's output. */
    const float nan_pattern = NAN;
    cl_int err = clEnqueueFillBuffer(queue, pt->o_buf, &nan_pattern, sizeof nan_pattern, 0,
                                     pt->o_elems * sizeof(float), 0, NULL, NULL);
    if (err == CL_SUCCESS) {
        err = clFinish(queue);
    }
    if (err != CL_SUCCESS) {
        note("%s %s: skipped: clearing O: %s", label, bench_algo_name(algo),
             attn_status_name((attn_status)err));
        return -1;
    }

    attn_device_tensors tensors;
    memset(&tensors, 0, sizeof tensors);
    tensors.q = pt->q_buf;
    tensors.k = pt->k_buf;
    tensors.v = pt->v_buf;
    tensors.o = pt->o_buf;

    double *times = malloc((size_t)opt->repeats * sizeof *times);
    if (!times) {
        note("%s: skipped: out of host memory", label);
        return -1;
    }
    const char *why = "";
    int runs = 0;
    st = time_forwards(opt, ctx, &params, &tensors, times, &runs, &why);
    if (st == ATTN_SUCCESS && runs < opt->repeats) {
        note("%s %s: stopped after %d of %d timed forwards (one takes %.1f s; "
             "--max-point-seconds %g)",
             label, bench_algo_name(algo), runs, opt->repeats, times[runs - 1] * 1e-3,
             opt->max_point_seconds);
    }
    if (st != ATTN_SUCCESS) {
        note("%s %s: failed: %s: %s", label, bench_algo_name(algo), attn_status_name(st), why);
        free(times);
        return -1;
    }

    memset(row, 0, sizeof *row);
    row->params = pt->params;
    row->algo = algo;
    row->build_ms = build_ms;
    row->runs = runs;
    row->ms = bench_median(times, (size_t)runs);
    row->ref_ms = -1.0;
    free(times);

    if (pt->ref_o) {
        err = clEnqueueReadBuffer(queue, pt->o_buf, CL_TRUE, 0, pt->o_elems * sizeof(float),
                                  pt->dev_o, 0, NULL, NULL);
        if (err != CL_SUCCESS) {
            note("%s %s: no max_abs_err: reading O back: %s", label, bench_algo_name(algo),
                 attn_status_name((attn_status)err));
        } else {
            row->ref_ms = pt->ref_ms;
            row->max_abs_err = bench_max_abs_diff(pt->dev_o, pt->ref_o, pt->o_elems);
        }
    }
    return 0;
}

static int open_context(const bench_options *opt, attn_context_t *ctx, attn_device_info *info,
                        cl_context *cl_ctx) {
    attn_context_options options;
    attn_context_options_init(&options);
    options.platform_index = opt->platform_index;
    options.device_index = opt->device_index;
    attn_status st = attn_context_create(&options, ctx);
    if (st != ATTN_SUCCESS) {
        note("attn_bench: cannot open the device: %s: %s", attn_status_name(st),
             attn_last_error(NULL));
        return -1;
    }
    st = attn_context_device_info(*ctx, info);
    if (st != ATTN_SUCCESS) {
        note("attn_bench: cannot query the device: %s: %s", attn_status_name(st),
             attn_last_error(*ctx));
        return -1;
    }
    /* The bench allocates its buffers in the library's own OpenCL context. */
    cl_int err = clGetCommandQueueInfo(attn_context_queue(*ctx), CL_QUEUE_CONTEXT, sizeof *cl_ctx,
                                       cl_ctx, NULL);
    if (err != CL_SUCCESS) {
        note("attn_bench: clGetCommandQueueInfo(CL_QUEUE_CONTEXT): %s",
             attn_status_name((attn_status)err));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    bench_options opt;
    int rc = bench_parse_args(argc, argv, &opt);
    if (rc != 0) {
        return rc;
    }
    if (opt.help) {
        bench_print_help(stdout, "attn_bench");
        return 0;
    }
    if (opt.list_devices) {
        return list_devices();
    }

    attn_context_t ctx = NULL;
    attn_device_info info;
    cl_context cl_ctx = NULL;
    if (open_context(&opt, &ctx, &info, &cl_ctx) != 0) {
        attn_context_destroy(ctx);
        return 1;
    }
    cl_command_queue queue = attn_context_queue(ctx);
    note("attn_bench: libattn_cl %s on %s (%d:%d); points: %zu lengths x %zu algorithm(s)",
         attn_version_string(), info.device_name, (int)info.platform_index, (int)info.device_index,
         opt.num_seqs, opt.num_algos);
    bench_report_begin(&opt, &info);

    size_t measured = 0, failed = 0;
    for (size_t i = 0; i < opt.num_seqs; i++) {
        bench_point pt;
        memset(&pt, 0, sizeof pt);
        int32_t n = opt.seqs[i];
        int32_t seq_q = opt.fixed_seq_q > 0 ? opt.fixed_seq_q : n;
        int32_t seq_k = opt.fixed_seq_k > 0 ? opt.fixed_seq_k : n;
        attn_params_init(&pt.params, opt.batch, opt.heads_q, seq_q, seq_k, opt.head_dim);
        pt.params.heads_kv = opt.heads_kv;
        pt.params.head_dim_v = opt.head_dim_v;
        pt.params.mask = opt.mask;
        snprintf(pt.label, sizeof pt.label, "[%zu/%zu] %dx%d", i + 1, opt.num_seqs, (int)seq_q,
                 (int)seq_k);

        /* Ask the library first which algorithms can serve this point, so that
         * a point none can serve costs no reference run. */
        attn_algo resolved[2];
        size_t servable = 0;
        for (size_t a = 0; a < opt.num_algos; a++) {
            attn_params params = pt.params;
            params.algo = opt.algos[a];
            attn_status st = attn_check(ctx, &params, 0, 0, &resolved[a]);
            if (st == ATTN_SUCCESS) {
                servable++;
            } else {
                resolved[a] = ATTN_ALGO_AUTO;
                failed++;
                note("%s %s: skipped: %s: %s", pt.label, bench_algo_name(opt.algos[a]),
                     attn_status_name(st), attn_last_error(ctx));
            }
        }
        if (servable == 0) {
            continue;
        }
        if (point_setup(&opt, cl_ctx, &pt) != 0) {
            failed += servable;
            point_release(&pt);
            continue;
        }
        for (size_t a = 0; a < opt.num_algos; a++) {
            bench_row row;
            if (resolved[a] == ATTN_ALGO_AUTO) {
                continue;
            }
            if (measure(&opt, ctx, queue, &pt, opt.algos[a], resolved[a], pt.label, &row) == 0) {
                bench_report_row(&opt, &info, &row);
                measured++;
            } else {
                failed++;
            }
        }
        point_release(&pt);
    }

    if (failed > 0) {
        note("attn_bench: %zu of %zu points measured; see the notes above for the others", measured,
             measured + failed);
    }
    attn_context_destroy(ctx);
    return measured > 0 ? 0 : 1;
}
