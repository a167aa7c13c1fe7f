/* attn_bench --kvcache: one decoding step over a KV cache (a reused plan's
 * attn_plan_execute_kvcache_device) for each cache length of the sweep,
 * contiguous and paged, next to the bandwidth roof measured in the same run:
 * a kernel that reads the same number of bytes once and sums them. Decoding
 * reads each K and V byte once per step, so its effective bandwidth (K and
 * V bytes / step time) against the roof says how far from the memory bound
 * it is. */
#include "bench_kvcache.h"

#include "bench_report.h"
#include "bench_time.h"

#include <stdlib.h>
#include <string.h>

/* What one pass over the cache costs at best, shaped for the device. On a
 * CPU each work-item (one a work-group, 8 a compute unit) sums a contiguous
 * stripe of float16s; on a GPU (GPU_SHAPE) work-groups of 256 fill every
 * compute unit and neighbouring work-items read neighbouring float16s, so
 * that each of a group's loads is one contiguous span. */
static const char *roof_source =
    "__kernel void stream(__global const float16 *x, ulong n, __global float *out) {\n"
    "    const ulong items = get_global_size(0), id = get_global_id(0);\n"
    "#if GPU_SHAPE\n"
    "    const ulong b = id, e = n, step = items;\n"
    "#else\n"
    "    const ulong per = (n + items - 1) / items, b = id * per, step = 1;\n"
    "    const ulong e = min(b + per, n);\n"
    "#endif\n"
    "    float16 s = 0.0f;\n"
    "    for (ulong i = b; i < e; i += step)\n"
    "        s += x[i];\n"
    "    out[id] = s.s0 + s.s1 + s.s2 + s.s3 + s.s4 + s.s5 + s.s6 + s.s7 + s.s8 + s.s9 +\n"
    "              s.sa + s.sb + s.sc + s.sd + s.se + s.sf;\n"
    "}\n";

#define ROOF_GPU_GROUP 256
#define ROOF_GPU_GROUPS_PER_UNIT 8

typedef struct roof {
    cl_program program;
    cl_kernel kernel;
    cl_mem out;
    size_t items, group;
} roof;

static int roof_init(cl_context cl, cl_device_id device, const attn_device_info *info, roof *r) {
    memset(r, 0, sizeof *r);
    cl_int err;
    r->program = clCreateProgramWithSource(cl, 1, &roof_source, NULL, &err);
    if (err == CL_SUCCESS)
        err = clBuildProgram(r->program, 1, &device,
                             info->is_gpu ? "-DGPU_SHAPE=1" : "-DGPU_SHAPE=0", NULL, NULL);
    if (err == CL_SUCCESS)
        r->kernel = clCreateKernel(r->program, "stream", &err);
    const size_t units = (size_t)(info->compute_units > 0 ? info->compute_units : 1);
    r->group = info->is_gpu ? ROOF_GPU_GROUP : 1;
    r->items = info->is_gpu ? units * ROOF_GPU_GROUPS_PER_UNIT * ROOF_GPU_GROUP : units * 8;
    if (err == CL_SUCCESS)
        r->out = clCreateBuffer(cl, CL_MEM_READ_WRITE, r->items * sizeof(float), NULL, &err);
    if (err != CL_SUCCESS)
        bench_note("attn_bench --kvcache: the roof kernel failed: %s",
                   attn_status_name((attn_status)err));
    return err == CL_SUCCESS ? 0 : -1;
}

static void roof_release(roof *r) {
    if (r->out)
        clReleaseMemObject(r->out);
    if (r->kernel)
        clReleaseKernel(r->kernel);
    if (r->program)
        clReleaseProgram(r->program);
}

/* The median ms of reading `bytes` of `buf` once. */
static double roof_ms(cl_command_queue queue, roof *r, cl_mem buf, size_t bytes, int repeats) {
    const cl_ulong n = bytes / 64;
    clSetKernelArg(r->kernel, 0, sizeof buf, &buf);
    clSetKernelArg(r->kernel, 1, sizeof n, &n);
    clSetKernelArg(r->kernel, 2, sizeof r->out, &r->out);
    double times[64];
    repeats = repeats > 64 ? 64 : repeats;
    for (int i = -1; i < repeats; i++) {
        const double t0 = bench_now_ms();
        if (clEnqueueNDRangeKernel(queue, r->kernel, 1, NULL, &r->items, &r->group, 0, NULL,
                                   NULL) != CL_SUCCESS ||
            clFinish(queue) != CL_SUCCESS)
            return -1.0;
        if (i >= 0)
            times[i] = bench_now_ms() - t0;
    }
    return bench_median(times, (size_t)repeats);
}

/* One step's median ms over `len` cached tokens per sequence, page size
 * `page` (0: contiguous, `cap` tokens a slot), `s_new` query rows (the
 * last s_new keys theirs, under the bottom-right mask); -1 on failure
 * (noted). ks, vs: an int8 cache's scales. *host_us: the median time inside
 * the execute call (enqueue only: checks, argument setting, enqueues). */
static double step_ms(const bench_options *opt, attn_context_t ctx, int32_t len, int32_t cap,
                      int32_t page, int32_t s_new, cl_mem kc, cl_mem vc, cl_mem ks, cl_mem vs,
                      cl_mem q, cl_mem o, int32_t *table, int32_t *lengths, double *host_us) {
    const int32_t b = opt->batch;
    attn_kvcache_params kp;
    attn_kvcache_params_init(&kp, b, opt->heads_q, s_new, cap, opt->head_dim);
    kp.attn.heads_kv = opt->heads_kv;
    kp.attn.head_dim_v = opt->head_dim_v;
    kp.attn.dtype = opt->dtype;
    kp.attn.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
    kp.kv_dtype = opt->kv_dtype;
    if (page > 0) {
        kp.page_size = page;
        kp.max_pages = (len + page - 1) / page;
        kp.num_pages = b * kp.max_pages;
        for (int32_t i = 0; i < kp.num_pages; i++)
            table[i] = i; /* pages in order: the layout of the contiguous cache */
    }
    for (int32_t i = 0; i < b; i++)
        lengths[i] = len;
    attn_plan_t plan = NULL;
    attn_status st = attn_plan_create_kvcache(ctx, &kp, 0, &plan);
    if (st != ATTN_SUCCESS) {
        bench_note("kvcache len %d page %d: %s: %s", (int)len, (int)page, attn_status_name(st),
                   attn_last_error(ctx));
        return -1.0;
    }
    const attn_kvcache_device_tensors t = {.q = q,
                                           .o = o,
                                           .k_cache = kc,
                                           .v_cache = vc,
                                           .cache_seqlens = lengths,
                                           .block_table = page > 0 ? table : NULL,
                                           .k_scale = ks,
                                           .v_scale = vs};
    double times[1000], enqueue[1000];
    const int repeats = opt->repeats > 1000 ? 1000 : opt->repeats;
    double ms = -1.0;
    for (int i = -opt->warmup; i < repeats; i++) {
        cl_event done = NULL;
        const double t0 = bench_now_ms();
        st = attn_plan_execute_kvcache_device(plan, &t, NULL, 0, 0, NULL, &done);
        if (i >= 0)
            enqueue[i] = bench_now_ms() - t0;
        if (st == ATTN_SUCCESS) {
            clWaitForEvents(1, &done);
            clReleaseEvent(done);
        } else {
            bench_note("kvcache len %d page %d: %s: %s", (int)len, (int)page, attn_status_name(st),
                       attn_last_error(ctx));
            break;
        }
        if (i >= 0)
            times[i] = bench_now_ms() - t0;
        if (i == repeats - 1) {
            ms = bench_median(times, (size_t)repeats);
            *host_us = 1e3 * bench_median(enqueue, (size_t)repeats);
        }
    }
    attn_plan_destroy(plan);
    return ms;
}

int bench_kvcache_run(const bench_options *opt, attn_context_t ctx, cl_context cl, FILE *out) {
    attn_device_info info;
    attn_context_device_info(ctx, &info);
    cl_command_queue queue = attn_context_queue(ctx);
    cl_device_id device = NULL;
    clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof device, &device, NULL);
    roof r;
    if (roof_init(cl, device, &info, &r) != 0) {
        roof_release(&r);
        return 1;
    }
    const size_t es = opt->dtype == ATTN_DTYPE_F32 ? 4 : 2;
    /* The cache's storage: Q's, or --kv-dtype's; int8 adds a float scale
     * per token and head to K and to V. */
    static const char *const kv_names[5] = {"", "f32", "f16", "bf16", "int8"};
    const attn_kv_dtype kvt =
        opt->kv_dtype ? opt->kv_dtype : (attn_kv_dtype)(ATTN_KV_DTYPE_F32 + (int)opt->dtype);
    const int int8 = kvt == ATTN_KV_DTYPE_INT8;
    const size_t kes = int8 ? 1 : kvt == ATTN_KV_DTYPE_F32 ? 4 : 2;
    const int32_t pages[4] = {0, 16, 256, 1};
    /* --seq-q N (N > 1): each point also with N query rows (speculative
     * decoding's check of N drafted tokens), and its cost against one row. */
    const int32_t s_max = opt->fixed_seq_q > 1 ? opt->fixed_seq_q : 1;
    fprintf(out, "| batch | cache | KV | page | s_new | ms | tokens/s | KV MB | GB/s | roof GB/s | "
                 "of roof | host us | vs s_new 1 |\n"
                 "| ---: | ---: | :-: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
                 "---: | ---: |\n");
    int failed = 0;
    for (size_t s = 0; s < opt->num_seqs; s++) {
        const int32_t len = opt->seqs[s];
        /* Room for 256-token pages: the cache rounded up. */
        const size_t cap = ((size_t)len + 255) / 256 * 256;
        const size_t kv_rows = (size_t)opt->batch * (size_t)opt->heads_kv * cap;
        const size_t kbytes = kv_rows * (size_t)opt->head_dim * kes;
        const size_t vbytes = kv_rows * (size_t)opt->head_dim_v * kes;
        const size_t sbytes = kv_rows * sizeof(float); /* int8: the scales of K, of V */
        /* The bytes a step reads: K and V rows, and int8's two scales a row. */
        const size_t read = (size_t)opt->batch * (size_t)opt->heads_kv * (size_t)len *
                            ((size_t)(opt->head_dim + opt->head_dim_v) * kes +
                             (int8 ? 2 * sizeof(float) : 0));
        const size_t qbytes =
            (size_t)opt->batch * (size_t)opt->heads_q * (size_t)s_max *
            (size_t)(opt->head_dim > opt->head_dim_v ? opt->head_dim : opt->head_dim_v) * es;
        cl_int err;
        cl_mem kc = clCreateBuffer(cl, CL_MEM_READ_WRITE, kbytes, NULL, &err);
        cl_mem vc =
            err == CL_SUCCESS ? clCreateBuffer(cl, CL_MEM_READ_WRITE, vbytes, NULL, &err) : NULL;
        cl_mem q =
            err == CL_SUCCESS ? clCreateBuffer(cl, CL_MEM_READ_WRITE, qbytes, NULL, &err) : NULL;
        cl_mem o =
            err == CL_SUCCESS ? clCreateBuffer(cl, CL_MEM_READ_WRITE, qbytes, NULL, &err) : NULL;
        cl_mem ks = err == CL_SUCCESS && int8
                        ? clCreateBuffer(cl, CL_MEM_READ_WRITE, sbytes, NULL, &err)
                        : NULL;
        cl_mem vs = err == CL_SUCCESS && int8
                        ? clCreateBuffer(cl, CL_MEM_READ_WRITE, sbytes, NULL, &err)
                        : NULL;
        /* Small finite values everywhere: zero bytes are 0.0 in every type. */
        const cl_uchar zero = 0;
        if (err == CL_SUCCESS)
            err = clEnqueueFillBuffer(queue, kc, &zero, 1, 0, kbytes, 0, NULL, NULL);
        if (err == CL_SUCCESS)
            err = clEnqueueFillBuffer(queue, vc, &zero, 1, 0, vbytes, 0, NULL, NULL);
        if (err == CL_SUCCESS)
            err = clEnqueueFillBuffer(queue, q, &zero, 1, 0, qbytes, 0, NULL, NULL);
        if (err == CL_SUCCESS && int8)
            err = clEnqueueFillBuffer(queue, ks, &zero, 1, 0, sbytes, 0, NULL, NULL);
        if (err == CL_SUCCESS && int8)
            err = clEnqueueFillBuffer(queue, vs, &zero, 1, 0, sbytes, 0, NULL, NULL);
        if (err == CL_SUCCESS)
            err = clFinish(queue);
        int32_t *table = malloc(((size_t)opt->batch * cap + 1) * sizeof(int32_t));
        int32_t *lengths = malloc((size_t)opt->batch * sizeof(int32_t));
        if (err != CL_SUCCESS || !table || !lengths) {
            bench_note("kvcache len %d: cannot allocate the cache (%zu bytes)", (int)len,
                       kbytes + vbytes);
            failed++;
        } else {
            /* The roof streams as many bytes as a step reads, from K. */
            const double roof = roof_ms(queue, &r, kc, read < kbytes ? read : kbytes, opt->repeats);
            const double roof_gbs =
                roof > 0 ? (double)(read < kbytes ? read : kbytes) / roof / 1e6 : 0.0;
            for (int p = 0; p < 4; p++) {
                double one_row_ms = 0.0;
                for (int32_t s_new = 1; s_new <= s_max; s_new = s_new < s_max ? s_max : s_max + 1) {
                    /* Contiguous over the rounded capacity; paged by the length. */
                    double host_us = 0.0;
                    const double ms = step_ms(opt, ctx, len, (int32_t)cap, pages[p], s_new, kc, vc,
                                              ks, vs, q, o, table, lengths, &host_us);
                    if (ms < 0) {
                        failed++;
                        continue;
                    }
                    if (s_new == 1)
                        one_row_ms = ms;
                    const double gbs = (double)read / ms / 1e6;
                    char page[16] = "contig", ratio[16] = "";
                    if (pages[p])
                        snprintf(page, sizeof page, "%d", (int)pages[p]);
                    if (s_new > 1 && one_row_ms > 0)
                        snprintf(ratio, sizeof ratio, "%.2fx", ms / one_row_ms);
                    fprintf(
                        out,
                        "| %d | %d | %s | %s | %d | %.2f | %.0f | %.1f | %.1f | %.1f | %.0f%% | "
                        "%.1f | %s |\n",
                        (int)opt->batch, (int)len, kv_names[kvt], page, (int)s_new, ms,
                        (double)opt->batch * s_new * 1e3 / ms, (double)read / 1e6, gbs, roof_gbs,
                        roof_gbs > 0 ? 100.0 * gbs / roof_gbs : 0.0, host_us, ratio);
                    fflush(out);
                }
            }
        }
        free(table);
        free(lengths);
        cl_mem mems[6] = {kc, vc, q, o, ks, vs};
        for (int i = 0; i < 6; i++)
            if (mems[i])
                clReleaseMemObject(mems[i]);
    }
    roof_release(&r);
    return failed ? 1 : 0;
}
