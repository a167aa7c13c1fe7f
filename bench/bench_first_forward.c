/* attn_bench --first-forward: what a new context's first forward costs with
 * the on-disk kernel cache off, empty and warm. Each round wraps the bench's
 * OpenCL context in a new libattn_cl context (an empty in-memory program
 * cache, as in a new process) three times, one per cache state, and times
 * its first attn_forward_device + clWaitForEvents; the rounds interleave the
 * states so that drift on a shared machine hits them alike. */
#include "bench_first_forward.h"

#include "bench_report.h"
#include "bench_time.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { CACHE_OFF, CACHE_EMPTY, CACHE_WARM, CACHE_STATES };

static const char *const state_names[CACHE_STATES] = {"off", "empty", "warm"};

/* Empties and removes a cache directory this run made (entries only: the
 * library writes nothing else there). */
static void remove_cache_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
                continue;
            }
            char path[4400];
            if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < sizeof path) {
                unlink(path);
            }
        }
        closedir(d);
    }
    rmdir(dir);
}

/* O filled with NaN, so that a forward that leaves part of it unwritten
 * shows as max_abs_err nan. */
static int clear_output(cl_command_queue queue, const bench_point *pt) {
    const float nan_f32 = NAN;
    const uint16_t nan_f16 = 0x7e00, nan_bf16 = 0x7fc0;
    const attn_dtype dtype = pt->params.dtype;
    const void *pattern = dtype == ATTN_DTYPE_F16    ? (const void *)&nan_f16
                          : dtype == ATTN_DTYPE_BF16 ? (const void *)&nan_bf16
                                                     : (const void *)&nan_f32;
    const size_t es = bench_dtype_size(dtype);
    cl_int err =
        clEnqueueFillBuffer(queue, pt->o_buf, pattern, es, 0, pt->o_elems * es, 0, NULL, NULL);
    return err == CL_SUCCESS && clFinish(queue) == CL_SUCCESS ? 0 : -1;
}

/* One forward on `ctx`, timed to the end of its event; -1 after a note. */
static int timed_forward(attn_context_t ctx, const attn_params *params,
                         const attn_device_tensors *tensors, const char *label, double *ms) {
    cl_event done = NULL;
    const double t0 = bench_now_ms();
    attn_status st = attn_forward_device(ctx, params, tensors, 0, NULL, &done);
    if (st != ATTN_SUCCESS) {
        bench_note("%s: attn_forward_device: %s: %s", label, attn_status_name(st),
                   attn_last_error(ctx));
        return -1;
    }
    cl_int err = clWaitForEvents(1, &done);
    *ms = bench_now_ms() - t0;
    clReleaseEvent(done);
    if (err != CL_SUCCESS) {
        bench_note("%s: clWaitForEvents: %s", label, attn_status_name((attn_status)err));
        return -1;
    }
    return 0;
}

/* A new libattn_cl context on the bench's OpenCL objects. */
static attn_context_t new_context(cl_context cl_ctx, cl_command_queue queue) {
    cl_device_id device = NULL;
    if (clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof device, &device, NULL) != CL_SUCCESS) {
        return NULL;
    }
    attn_context_t ctx = NULL;
    if (attn_context_create_from_cl(cl_ctx, device, queue, &ctx) != ATTN_SUCCESS) {
        bench_note("attn_context_create_from_cl: %s", attn_last_error(NULL));
        return NULL;
    }
    return ctx;
}

typedef struct state_times {
    double *first;  /* per round */
    double *steady; /* forwards after the first, warm state only */
    int rounds, steady_runs;
    double max_abs_err; /* the worst first forward's; NaN beats all */
    int have_err;
} state_times;

/* One round's first forward in state `s`, with the cache in `dir` (NULL:
 * off); in the warm state also the forwards after it. 0, or -1 after a
 * note. */
static int run_state(const bench_options *opt, cl_context cl_ctx, cl_command_queue queue,
                     bench_point *pt, const attn_params *params, int s, const char *dir,
                     state_times *t) {
    if (setenv("ATTN_CL_CACHE_DIR", dir ? dir : "", 1) != 0 || clear_output(queue, pt) != 0) {
        bench_note("%s: cannot set up the %s state", pt->label, state_names[s]);
        return -1;
    }
    attn_context_t ctx = new_context(cl_ctx, queue);
    if (!ctx) {
        return -1;
    }
    const attn_device_tensors tensors = bench_point_tensors(pt);
    char label[96];
    snprintf(label, sizeof label, "%s cache %s", pt->label, state_names[s]);
    int rc = timed_forward(ctx, params, &tensors, label, &t->first[t->rounds]);
    if (rc == 0) {
        t->rounds++;
        double err = 0.0;
        if (pt->ref_o && bench_point_error(queue, pt, &err) == 0) {
            if (!t->have_err || isnan(err) || err > t->max_abs_err) {
                t->max_abs_err = err;
            }
            t->have_err = 1;
        }
    }
    for (int r = 0; rc == 0 && s == CACHE_WARM && r < opt->repeats; r++) {
        rc = timed_forward(ctx, params, &tensors, label, &t->steady[t->steady_runs]);
        t->steady_runs += rc == 0;
    }
    attn_context_destroy(ctx);
    return rc;
}

/* Every round of one point and algorithm; fills rows[CACHE_STATES]. */
static int measure_point(const bench_options *opt, cl_context cl_ctx, cl_command_queue queue,
                         bench_point *pt, attn_algo requested, attn_algo algo,
                         bench_row rows[CACHE_STATES]) {
    attn_params params = pt->params;
    params.algo = requested;
    state_times t[CACHE_STATES];
    memset(t, 0, sizeof t);
    int rc = 0;
    for (int s = 0; s < CACHE_STATES; s++) {
        t[s].first = calloc((size_t)opt->repeats, sizeof(double));
        t[s].steady = calloc((size_t)opt->repeats * (size_t)opt->repeats, sizeof(double));
        if (!t[s].first || !t[s].steady) {
            rc = -1;
        }
    }
    const char *tmp = getenv("TMPDIR");
    for (int round = 0; rc == 0 && round < opt->repeats; round++) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/attn_bench_cache.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir)) {
            bench_note("%s: cannot make a cache directory under %s", pt->label,
                       tmp && *tmp ? tmp : "/tmp");
            rc = -1;
            break;
        }
        rc = run_state(opt, cl_ctx, queue, pt, &params, CACHE_OFF, NULL, &t[CACHE_OFF]);
        if (rc == 0) {
            rc = run_state(opt, cl_ctx, queue, pt, &params, CACHE_EMPTY, dir, &t[CACHE_EMPTY]);
        }
        if (rc == 0) {
            rc = run_state(opt, cl_ctx, queue, pt, &params, CACHE_WARM, dir, &t[CACHE_WARM]);
        }
        remove_cache_dir(dir);
        bench_note("%s %s: round %d of %d", pt->label, bench_algo_name(algo), round + 1,
                   opt->repeats);
    }
    const double steady =
        rc == 0 ? bench_median(t[CACHE_WARM].steady, (size_t)t[CACHE_WARM].steady_runs) : 0.0;
    for (int s = 0; rc == 0 && s < CACHE_STATES; s++) {
        bench_row *row = &rows[s];
        memset(row, 0, sizeof *row);
        row->params = pt->params;
        row->algo = algo;
        row->runs = t[s].rounds;
        row->ms = bench_median(t[s].first, (size_t)t[s].rounds);
        row->flops = pt->flops;
        row->ref_ms = t[s].have_err ? pt->ref_ms : -1.0;
        row->max_abs_err = t[s].max_abs_err;
        row->cache = state_names[s];
        row->steady_ms = steady;
    }
    for (int s = 0; s < CACHE_STATES; s++) {
        free(t[s].first);
        free(t[s].steady);
    }
    return rc;
}

int bench_first_forward(const bench_options *opt, attn_context_t ctx, cl_context cl_ctx,
                        const attn_device_info *info, size_t *failed) {
    cl_command_queue queue = attn_context_queue(ctx);
    /* The caller's setting comes back afterwards. */
    const char *saved = getenv("ATTN_CL_CACHE_DIR");
    char *saved_copy = saved ? strdup(saved) : NULL;
    size_t measured = 0;
    for (size_t i = 0; i < opt->num_seqs; i++) {
        bench_point pt;
        memset(&pt, 0, sizeof pt);
        const int32_t n = opt->seqs[i];
        const int32_t seq_q = opt->fixed_seq_q > 0 ? opt->fixed_seq_q : n;
        const int32_t seq_k = opt->fixed_seq_k > 0 ? opt->fixed_seq_k : n;
        snprintf(pt.label, sizeof pt.label, "[%zu/%zu] %dx%d", i + 1, opt->num_seqs, (int)seq_q,
                 (int)seq_k);
        if (bench_point_params(opt, seq_q, seq_k, &pt) != 0 ||
            bench_point_setup(opt, cl_ctx, &pt) != 0) {
            *failed += opt->num_algos;
            bench_point_release(&pt);
            continue;
        }
        bench_point_reference(opt, &pt);
        for (size_t a = 0; a < opt->num_algos; a++) {
            attn_params params = pt.params;
            params.algo = opt->algos[a];
            attn_algo algo = ATTN_ALGO_AUTO;
            attn_status st = attn_check(ctx, &params, 0, 0, &algo);
            bench_row rows[CACHE_STATES];
            if (st != ATTN_SUCCESS) {
                bench_note("%s %s: skipped: %s: %s", pt.label, bench_algo_name(opt->algos[a]),
                           attn_status_name(st), attn_last_error(ctx));
                (*failed)++;
            } else if (measure_point(opt, cl_ctx, queue, &pt, opt->algos[a], algo, rows) != 0) {
                (*failed)++;
            } else {
                for (int s = 0; s < CACHE_STATES; s++) {
                    bench_report_row(opt, info, &rows[s]);
                }
                measured++;
            }
        }
        bench_point_release(&pt);
    }
    if (saved_copy) {
        setenv("ATTN_CL_CACHE_DIR", saved_copy, 1);
    } else {
        unsetenv("ATTN_CL_CACHE_DIR");
    }
    free(saved_copy);
    return (int)measured;
}
