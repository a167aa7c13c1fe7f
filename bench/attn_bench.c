/* attn_bench: times libattn_cl's forward over a sweep of sequence lengths on
 * one OpenCL device, against the library's CPU reference. See --help. */
#include "attn_cl.h"
#include "bench_args.h"
#include "bench_backward.h"
#include "bench_first_forward.h"
#include "bench_kvcache.h"
#include "bench_overhead.h"
#include "bench_point.h"
#include "bench_report.h"
#include "bench_time.h"
#include "bench_work.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int list_devices(void) {
    size_t count = 0;
    attn_status st = attn_list_devices(NULL, 0, &count);
    if (st != ATTN_SUCCESS) {
        bench_note("attn_bench: cannot list devices: %s: %s", attn_status_name(st),
                   attn_last_error(NULL));
        return 1;
    }
    attn_device_info *devices = calloc(count ? count : 1, sizeof *devices);
    if (!devices) {
        bench_note("attn_bench: out of host memory");
        return 1;
    }
    st = attn_list_devices(devices, count, &count);
    if (st != ATTN_SUCCESS) {
        bench_note("attn_bench: cannot list devices: %s: %s", attn_status_name(st),
                   attn_last_error(NULL));
        free(devices);
        return 1;
    }
    bench_report_devices(devices, count);
    free(devices);
    return 0;
}

/* One execute of the plan, timed from the enqueue to the end of
 * clWaitForEvents, or with `host` (--host, --probs) one blocking
 * attn_plan_execute_host. On failure *why says which call failed. */
static attn_status forward_once(attn_plan_t plan, const attn_device_tensors *tensors,
                                const attn_host_tensors *host, double *ms, const char **why) {
    cl_event done = NULL;
    double t0 = bench_now_ms();
    if (host) {
        attn_status st = attn_plan_execute_host(plan, host);
        *ms = bench_now_ms() - t0;
        if (st != ATTN_SUCCESS)
            *why = attn_last_error(NULL);
        return st;
    }
    attn_status st = attn_plan_execute_device(plan, tensors, NULL, 0, 0, NULL, &done);
    if (st != ATTN_SUCCESS) {
        *why = attn_last_error(NULL);
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
static attn_status time_forwards(const bench_options *opt, attn_plan_t plan,
                                 const attn_device_tensors *tensors, const attn_host_tensors *host,
                                 double *times, int *runs, const char **why) {
    double ms = 0.0;
    for (int r = 0; r < opt->warmup; r++) {
        attn_status st = forward_once(plan, tensors, host, &ms, why);
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
        attn_status st = forward_once(plan, tensors, host, &times[*runs], why);
        if (st != ATTN_SUCCESS) {
            return st;
        }
        spent += times[*runs];
        (*runs)++;
    }
    return ATTN_SUCCESS;
}

/* The probabilities a host call with params' subset returns. */
static size_t probs_elems(const attn_params *p) {
    const int32_t heads =
        (p->probs_heads_end ? p->probs_heads_end : p->heads_q) - p->probs_heads_begin;
    const int32_t rows = (p->probs_rows_end ? p->probs_rows_end : p->seq_q) - p->probs_rows_begin;
    return (size_t)p->batch * (size_t)heads * (size_t)rows * (size_t)p->seq_k;
}

/* --probs-heads / --probs-rows into params.probs_*, negative values counted
 * from the end of this point's heads and rows. */
static void set_probs_subset(const bench_options *opt, attn_params *p) {
    const int32_t counts[2] = {p->heads_q, p->seq_q};
    const int32_t *ranges[2] = {opt->probs_heads, opt->probs_rows};
    int32_t *fields[2][2] = {{&p->probs_heads_begin, &p->probs_heads_end},
                             {&p->probs_rows_begin, &p->probs_rows_end}};
    for (int r = 0; r < 2; r++)
        for (int e = 0; e < 2; e++)
            *fields[r][e] = ranges[r][e] < 0 ? counts[r] + ranges[r][e] : ranges[r][e];
}

/* Measures algorithm `requested` (which attn_check resolved to `algo`) on a
 * prepared point and fills `row`. Returns 0, or -1 after a note. */
static int measure(const bench_options *opt, attn_context_t ctx, cl_command_queue queue,
                   bench_point *pt, attn_algo requested, attn_algo algo, const char *label,
                   bench_row *row) {
    attn_params params = pt->params;
    params.algo = requested;

    /* A plan made once, executed for every timed forward: what a caller
     * running one shape many times does. */
    attn_plan_t plan = NULL;
    double t0 = bench_now_ms();
    attn_status st = attn_plan_create(ctx, &params, opt->probs ? ATTN_PLAN_PROBS : 0u, &plan);
    double build_ms = bench_now_ms() - t0;
    if (st != ATTN_SUCCESS) {
        bench_note("%s %s: skipped: attn_plan_create: %s: %s", label, bench_algo_name(algo),
                   attn_status_name(st), attn_last_error(ctx));
        return -1;
    }
    bench_note("%s %s: build %.1f ms; %d warm-up + %d timed forwards", label, bench_algo_name(algo),
               build_ms, opt->warmup, opt->repeats);

    /* NaN in O beforehand: a forward that leaves part of O unwritten shows up
     * as max_abs_err nan instead of passing on an earlier algorithm's output. */
    const float nan_f32 = NAN;
    const uint16_t nan_f16 = 0x7e00, nan_bf16 = 0x7fc0;
    const void *nan_pattern = params.dtype == ATTN_DTYPE_F16    ? (const void *)&nan_f16
                              : params.dtype == ATTN_DTYPE_BF16 ? (const void *)&nan_bf16
                                                                : (const void *)&nan_f32;
    const size_t es = bench_dtype_size(params.dtype);
    cl_int err =
        clEnqueueFillBuffer(queue, pt->o_buf, nan_pattern, es, 0, pt->o_elems * es, 0, NULL, NULL);
    if (err == CL_SUCCESS) {
        err = clFinish(queue);
    }
    if (err != CL_SUCCESS) {
        bench_note("%s %s: skipped: clearing O: %s", label, bench_algo_name(algo),
                   attn_status_name((attn_status)err));
        attn_plan_destroy(plan);
        return -1;
    }

    const attn_device_tensors tensors = bench_point_tensors(pt);

    double *times = malloc((size_t)opt->repeats * sizeof *times);
    if (!times) {
        bench_note("%s: skipped: out of host memory", label);
        attn_plan_destroy(plan);
        return -1;
    }
    /* --host / --probs: the host call's outputs, O copied to o_buf after. */
    attn_host_tensors host = {.q = pt->q,
                              .k = pt->k,
                              .v = pt->v,
                              .bias = pt->bias,
                              .keep_mask = pt->keep_mask,
                              .key_lengths = pt->key_lengths,
                              .alibi_slopes = pt->alibi_slopes,
                              .cu_seqlens_q = pt->cu_seqlens_q,
                              .cu_seqlens_k = pt->cu_seqlens_k};
    const int use_host = opt->host || opt->probs;
    if (use_host) {
        host.o = malloc(pt->o_elems * es);
        host.probs = opt->probs ? malloc(probs_elems(&params) * sizeof(float)) : NULL;
        if (!host.o || (opt->probs && !host.probs)) {
            bench_note("%s: skipped: out of host memory for the host call's outputs", label);
            free(host.o);
            free(host.probs);
            free(times);
            attn_plan_destroy(plan);
            return -1;
        }
    }
    const char *why = "";
    int runs = 0;
    st = time_forwards(opt, plan, &tensors, use_host ? &host : NULL, times, &runs, &why);
    attn_plan_destroy(plan);
    if (use_host) {
        if (st == ATTN_SUCCESS &&
            clEnqueueWriteBuffer(queue, pt->o_buf, CL_TRUE, 0, pt->o_elems * es, host.o, 0, NULL,
                                 NULL) != CL_SUCCESS)
            bench_note("%s: the host call's O could not be copied for max_abs_err", label);
        free(host.o);
        free(host.probs);
    }
    if (st == ATTN_SUCCESS && runs < opt->repeats) {
        bench_note("%s %s: stopped after %d of %d timed forwards (one takes %.1f s; "
                   "--max-point-seconds %g)",
                   label, bench_algo_name(algo), runs, opt->repeats, times[runs - 1] * 1e-3,
                   opt->max_point_seconds);
    }
    if (st != ATTN_SUCCESS) {
        bench_note("%s %s: failed: %s: %s", label, bench_algo_name(algo), attn_status_name(st),
                   why);
        free(times);
        return -1;
    }

    memset(row, 0, sizeof *row);
    row->params = pt->params;
    row->algo = algo;
    row->build_ms = build_ms;
    row->runs = runs;
    row->ms = bench_median(times, (size_t)runs);
    row->flops = pt->flops;
    row->ref_ms = -1.0;
    free(times);

    if (pt->ref_o) {
        if (bench_point_error(queue, pt, &row->max_abs_err) != 0) {
            bench_note("%s %s: no max_abs_err: reading O back failed", label,
                       bench_algo_name(algo));
        } else {
            row->ref_ms = pt->ref_ms;
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
        bench_note("attn_bench: cannot open the device: %s: %s", attn_status_name(st),
                   attn_last_error(NULL));
        return -1;
    }
    st = attn_context_device_info(*ctx, info);
    if (st != ATTN_SUCCESS) {
        bench_note("attn_bench: cannot query the device: %s: %s", attn_status_name(st),
                   attn_last_error(*ctx));
        return -1;
    }
    /* The bench allocates its buffers in the library's own OpenCL context. */
    cl_int err = clGetCommandQueueInfo(attn_context_queue(*ctx), CL_QUEUE_CONTEXT, sizeof *cl_ctx,
                                       cl_ctx, NULL);
    if (err != CL_SUCCESS) {
        bench_note("attn_bench: clGetCommandQueueInfo(CL_QUEUE_CONTEXT): %s",
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
    if (opt.overhead) {
        bench_note("attn_bench: libattn_cl %s on %s: host cost per call", attn_version_string(),
                   info.device_name);
        rc = bench_overhead_run(ctx, cl_ctx, stdout);
        attn_context_destroy(ctx);
        return rc;
    }
    if (opt.backward) {
        bench_note("attn_bench: libattn_cl %s on %s: backward against forward, B=%d Hq=%d D=%d",
                   attn_version_string(), info.device_name, (int)opt.batch, (int)opt.heads_q,
                   (int)opt.head_dim);
        rc = bench_backward_run(&opt, ctx, cl_ctx, stdout);
        attn_context_destroy(ctx);
        return rc;
    }
    if (opt.kvcache) {
        bench_note("attn_bench: libattn_cl %s on %s: decoding over a KV cache, B=%d Hq=%d Hkv=%d "
                   "D=%d %s",
                   attn_version_string(), info.device_name, (int)opt.batch, (int)opt.heads_q,
                   (int)opt.heads_kv, (int)opt.head_dim, bench_dtype_name(opt.dtype));
        rc = bench_kvcache_run(&opt, ctx, cl_ctx, stdout);
        attn_context_destroy(ctx);
        return rc;
    }
    cl_command_queue queue = attn_context_queue(ctx);
    bench_note("attn_bench: libattn_cl %s on %s (%d:%d); points: %zu lengths x %zu algorithm(s)",
               attn_version_string(), info.device_name, (int)info.platform_index,
               (int)info.device_index, opt.num_seqs, opt.num_algos);
    bench_report_begin(&opt, &info);

    size_t measured = 0, failed = 0;
    if (opt.first_forward) {
        measured = (size_t)bench_first_forward(&opt, ctx, cl_ctx, &info, &failed);
    }
    for (size_t i = 0; !opt.first_forward && i < opt.num_seqs; i++) {
        bench_point pt;
        memset(&pt, 0, sizeof pt);
        int32_t n = opt.seqs[i];
        int32_t seq_q = opt.fixed_seq_q > 0 ? opt.fixed_seq_q : n;
        int32_t seq_k = opt.fixed_seq_k > 0 ? opt.fixed_seq_k : n;
        snprintf(pt.label, sizeof pt.label, "[%zu/%zu] %dx%d", i + 1, opt.num_seqs, (int)seq_q,
                 (int)seq_k);
        if (bench_point_params(&opt, seq_q, seq_k, &pt) != 0) {
            failed += opt.num_algos;
            bench_point_release(&pt);
            continue;
        }

        /* Ask the library first which algorithms can serve this point, so that
         * a point none can serve costs no reference run. */
        set_probs_subset(&opt, &pt.params);
        attn_algo resolved[2];
        size_t servable = 0;
        for (size_t a = 0; a < opt.num_algos; a++) {
            attn_params params = pt.params;
            params.algo = opt.algos[a];
            attn_status st = attn_check(ctx, &params, 0, opt.probs, &resolved[a]);
            if (st == ATTN_SUCCESS) {
                servable++;
            } else {
                resolved[a] = ATTN_ALGO_AUTO;
                failed++;
                bench_note("%s %s: skipped: %s: %s", pt.label, bench_algo_name(opt.algos[a]),
                           attn_status_name(st), attn_last_error(ctx));
            }
        }
        if (servable == 0) {
            bench_point_release(&pt);
            continue;
        }
        if (bench_point_setup(&opt, cl_ctx, &pt) != 0) {
            failed += servable;
            bench_point_release(&pt);
            continue;
        }
        bench_point_reference(&opt, &pt);
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
        bench_point_release(&pt);
    }

    if (failed > 0) {
        bench_note("attn_bench: %zu of %zu points measured; see the notes above for the others",
                   measured, measured + failed);
    }
    attn_context_destroy(ctx);
    return measured > 0 ? 0 : 1;
}
