#include "bench_overhead.h"

#include "bench_report.h"
#include "bench_time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Calls timed per mode; the decode shape's work makes each call longer. */
#define TINY_CALLS 2000
#define DECODE_CALLS 50

typedef struct overhead_shape {
    const char *name;
    int32_t batch, heads_q, heads_kv, seq_q, seq_k, head_dim;
    int calls;
} overhead_shape;

static const overhead_shape shapes[] = {
    {"tiny B=1 H=1 S=1 D=64", 1, 1, 1, 1, 1, 64, TINY_CALLS},
    {"decode Sq=1 Sk=16384 Hq=32 Hkv=8 D=128", 1, 32, 8, 1, 16384, 128, DECODE_CALLS},
};

/* The device buffers of one shape, filled with a constant: the host cost
 * does not depend on the values. */
typedef struct overhead_buffers {
    cl_mem q, k, v, o;
} overhead_buffers;

static cl_mem filled(cl_context cl_ctx, cl_command_queue queue, size_t elems, cl_int *err) {
    if (*err != CL_SUCCESS) {
        return NULL;
    }
    cl_mem buf = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, elems * sizeof(float), NULL, err);
    if (*err == CL_SUCCESS) {
        const float value = 0.25f;
        *err = clEnqueueFillBuffer(queue, buf, &value, sizeof value, 0, elems * sizeof(float), 0,
                                   NULL, NULL);
    }
    return buf;
}

static void release_buffers(overhead_buffers *b) {
    cl_mem *all[] = {&b->q, &b->k, &b->v, &b->o};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (*all[i]) {
            clReleaseMemObject(*all[i]);
            *all[i] = NULL;
        }
    }
}

/* What one mode measured, in microseconds. */
typedef struct overhead_result {
    double in_call_median, in_call_min; /* inside the call: validation, enqueue */
    double wall_median;                 /* call + clWaitForEvents */
    double stream_per_call;             /* back-to-back calls, one clFinish, / calls */
} overhead_result;

/* MODE_BARE_ENQUEUE is the floor under both: one empty kernel enqueued
 * straight through OpenCL, what the device's runtime costs per launch. */
typedef enum { MODE_BARE_ENQUEUE, MODE_FORWARD_DEVICE, MODE_PLAN_EXECUTE, MODES } overhead_mode;

static const char *const mode_names[MODES] = {"empty kernel, clEnqueueNDRangeKernel",
                                              "attn_forward_device", "attn_plan_execute_device"};

static cl_kernel empty_kernel; /* for MODE_BARE_ENQUEUE */

static attn_status call_once(overhead_mode mode, attn_context_t ctx, const attn_params *params,
                             attn_plan_t plan, const attn_device_tensors *t, cl_event *done) {
    if (mode == MODE_BARE_ENQUEUE) {
        const size_t one = 1;
        return (attn_status)clEnqueueNDRangeKernel(attn_context_queue(ctx), empty_kernel, 1, NULL,
                                                   &one, &one, 0, NULL, done);
    }
    if (mode == MODE_FORWARD_DEVICE) {
        return attn_forward_device(ctx, params, t, 0, NULL, done);
    }
    return attn_plan_execute_device(plan, t, NULL, 0, 0, NULL, done);
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int measure_mode(overhead_mode mode, attn_context_t ctx, const attn_params *params,
                        attn_plan_t plan, const attn_device_tensors *t, int calls,
                        overhead_result *r) {
    cl_command_queue queue = attn_context_queue(ctx);
    double *in_call = malloc((size_t)calls * sizeof *in_call);
    double *wall = malloc((size_t)calls * sizeof *wall);
    if (!in_call || !wall) {
        free(in_call);
        free(wall);
        return -1;
    }
    int rc = 0;
    /* Warm: kernels built, the plan's workspace allocated. */
    for (int i = 0; i < 3 && rc == 0; i++) {
        cl_event done = NULL;
        rc = call_once(mode, ctx, params, plan, t, &done) == ATTN_SUCCESS ? 0 : -1;
        if (rc == 0) {
            clWaitForEvents(1, &done);
            clReleaseEvent(done);
        }
    }
    for (int i = 0; i < calls && rc == 0; i++) {
        cl_event done = NULL;
        const double t0 = bench_now_ms();
        if (call_once(mode, ctx, params, plan, t, &done) != ATTN_SUCCESS) {
            rc = -1;
            break;
        }
        const double t1 = bench_now_ms();
        clWaitForEvents(1, &done);
        const double t2 = bench_now_ms();
        clReleaseEvent(done);
        in_call[i] = (t1 - t0) * 1e3;
        wall[i] = (t2 - t0) * 1e3;
    }
    if (rc == 0) {
        const double t0 = bench_now_ms();
        for (int i = 0; i < calls && rc == 0; i++) {
            rc = call_once(mode, ctx, params, plan, t, NULL) == ATTN_SUCCESS ? 0 : -1;
        }
        clFinish(queue);
        r->stream_per_call = (bench_now_ms() - t0) * 1e3 / calls;
        qsort(in_call, (size_t)calls, sizeof *in_call, cmp_double);
        qsort(wall, (size_t)calls, sizeof *wall, cmp_double);
        r->in_call_median = in_call[calls / 2];
        r->in_call_min = in_call[0];
        r->wall_median = wall[calls / 2];
    }
    free(in_call);
    free(wall);
    return rc;
}

static int measure_shape(const overhead_shape *s, attn_context_t ctx, cl_context cl_ctx,
                         FILE *out) {
    attn_params params;
    attn_params_init(&params, s->batch, s->heads_q, s->seq_q, s->seq_k, s->head_dim);
    params.heads_kv = s->heads_kv;
    const size_t rows_q = (size_t)s->batch * s->heads_q * s->seq_q;
    const size_t rows_k = (size_t)s->batch * s->heads_kv * s->seq_k;
    cl_command_queue queue = attn_context_queue(ctx);
    overhead_buffers b = {0};
    cl_int err = CL_SUCCESS;
    b.q = filled(cl_ctx, queue, rows_q * s->head_dim, &err);
    b.k = filled(cl_ctx, queue, rows_k * s->head_dim, &err);
    b.v = filled(cl_ctx, queue, rows_k * s->head_dim, &err);
    b.o = filled(cl_ctx, queue, rows_q * s->head_dim, &err);
    if (err == CL_SUCCESS) {
        err = clFinish(queue);
    }
    if (err != CL_SUCCESS) {
        bench_note("%s: skipped: device buffers: %s", s->name, attn_status_name((attn_status)err));
        release_buffers(&b);
        return -1;
    }
    attn_device_tensors t;
    memset(&t, 0, sizeof t);
    t.q = b.q;
    t.k = b.k;
    t.v = b.v;
    t.o = b.o;

    attn_plan_t plan = NULL;
    attn_status st = attn_plan_create(ctx, &params, 0, &plan);
    if (st != ATTN_SUCCESS) {
        bench_note("%s: skipped: attn_plan_create: %s: %s", s->name, attn_status_name(st),
                   attn_last_error(ctx));
        release_buffers(&b);
        return -1;
    }
    const char *algo = attn_plan_algo(plan) == ATTN_ALGO_FUSED          ? "fused"
                       : attn_plan_algo(plan) == ATTN_ALGO_THREE_KERNEL ? "three-kernel"
                                                                        : "decode";
    int rc = 0;
    for (int m = 0; m < MODES && rc == 0; m++) {
        overhead_result r;
        if (measure_mode((overhead_mode)m, ctx, &params, plan, &t, s->calls, &r) != 0) {
            bench_note("%s: %s failed: %s", s->name, mode_names[m], attn_last_error(NULL));
            rc = -1;
            break;
        }
        fprintf(out, "| %s | %s | %s | %.1f | %.1f | %.1f | %.1f |\n", s->name, algo, mode_names[m],
                r.in_call_median, r.in_call_min, r.wall_median, r.stream_per_call);
        fflush(out);
    }
    attn_plan_destroy(plan);
    release_buffers(&b);
    return rc;
}

/* Builds the empty kernel of MODE_BARE_ENQUEUE; 0 or -1. */
static int build_empty_kernel(attn_context_t ctx, cl_context cl_ctx, cl_program *program) {
    const char *source = "__kernel void empty(void) {}";
    cl_int err;
    *program = clCreateProgramWithSource(cl_ctx, 1, &source, NULL, &err);
    if (err == CL_SUCCESS) {
        cl_device_id device = NULL;
        err = clGetCommandQueueInfo(attn_context_queue(ctx), CL_QUEUE_DEVICE, sizeof device,
                                    &device, NULL);
        if (err == CL_SUCCESS) {
            err = clBuildProgram(*program, 1, &device, "", NULL, NULL);
        }
    }
    if (err == CL_SUCCESS) {
        empty_kernel = clCreateKernel(*program, "empty", &err);
    }
    if (err != CL_SUCCESS) {
        bench_note("attn_bench --overhead: cannot build an empty kernel: %s",
                   attn_status_name((attn_status)err));
        return -1;
    }
    return 0;
}

int bench_overhead_run(attn_context_t ctx, cl_context cl_ctx, FILE *out) {
    cl_program program = NULL;
    if (build_empty_kernel(ctx, cl_ctx, &program) != 0) {
        if (program) {
            clReleaseProgram(program);
        }
        return 1;
    }
    fprintf(out, "| shape | algorithm | call | in call, median µs | in call, min µs | "
                 "call + wait, median µs | back-to-back, µs per call |\n");
    fprintf(out, "| --- | --- | --- | ---: | ---: | ---: | ---: |\n");
    int failed = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        failed += measure_shape(&shapes[i], ctx, cl_ctx, out) != 0;
    }
    clReleaseKernel(empty_kernel);
    empty_kernel = NULL;
    clReleaseProgram(program);
    return failed == 0 ? 0 : 1;
}
