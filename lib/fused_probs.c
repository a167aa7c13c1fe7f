/* Probabilities through the fused path: the fused forward (lib/fused.c, cpu
 * variant) writes O and LSE as always and, beside them, each row's softmax
 * shift m and sum l; then flash_cpu_probs (kernels/flash_cpu.cl) recomputes
 * the scores tile by tile from the forward's packed K and writes each
 * wanted probability exp2((s - m) * c) / l, which is exp(s - lse) in the
 * forward's own exponent convention (lib/softmax_exponent.c). No second
 * softmax pass and no score matrix: the workspace holds the forward's
 * packed copies, the row statistics and the probabilities of as many
 * (sequence, head) slices of the subset as one allocation takes, read back
 * into the host output slice by slice. Its cost is the forward's plus
 * what the subset asks for (params.probs_*).
 *
 * The caller's O and LSE are written by the forward's last command only,
 * as on the fused path; the probabilities exist on host executes only
 * (args->probs_host), so a device execute of such a plan runs the forward
 * alone. */
#include "attn_internal.h"

#include <stdlib.h>

struct attn_algo_state {
    attn_problem pb;
    attn_algo_state *forward; /* attn_fused_algorithm's, for pb with want_row_stats */
    attn_fused_cpu_layout cpu;
    /* The workspace: the forward's, then the row statistics, then the
     * probabilities of `chunk` slices; offsets in bytes from its start. */
    size_t stats_at, probs_at, total;
    size_t slices, chunk, slice_elems;
    cl_kernel probs;
};

/* Bytes of the row statistics: an (m, l) pair per row of every head. */
static size_t stats_bytes(const attn_problem *pb) {
    const attn_params *p = &pb->p;
    const size_t batch = p->varlen ? 1u : (size_t)p->batch;
    const size_t rows = p->varlen ? (size_t)p->total_q : (size_t)p->seq_q;
    return batch * (size_t)p->heads_q * rows * 2 * sizeof(float);
}

/* The slices one launch writes: within the device's largest allocation
 * beside the forward's workspace and the statistics, and within
 * ATTN_CL_SCRATCH_LIMIT when set (a cap for testing the chunked path on
 * small shapes, as on the three-kernel path). */
static attn_status slices_per_chunk(attn_context_t ctx, attn_algo_state *st) {
    const attn_problem *pb = &st->pb;
    const size_t slice_bytes = st->slice_elems * sizeof(float);
    const uint64_t before = attn_round_up(st->probs_at, ATTN_WORKSPACE_ALIGN);
    uint64_t limit = ctx->info.max_alloc_bytes > before ? ctx->info.max_alloc_bytes - before : 0;
    const char *cap = getenv("ATTN_CL_SCRATCH_LIMIT");
    if (cap && *cap) {
        unsigned long long value = strtoull(cap, NULL, 10);
        if (value < limit)
            limit = value;
    }
    const uint64_t chunk = limit / slice_bytes;
    if (chunk == 0)
        return attn_fail(ctx, ATTN_ERR_DEVICE_OUT_OF_MEMORY,
                         "the fused path's probabilities need %zu bytes for one head's wanted "
                         "rows (%d x seq_k %d) beside %llu bytes of workspace, but only %llu "
                         "can be allocated; ask for fewer rows (params.probs_rows_*)",
                         slice_bytes, pb->probs_rows, pb->p.seq_k, (unsigned long long)before,
                         (unsigned long long)limit);
    st->chunk = chunk < st->slices ? (size_t)chunk : st->slices;
    return ATTN_SUCCESS;
}

static attn_status probs_configure(attn_context_t ctx, const attn_problem *pb,
                                   attn_algo_state **state) {
    if (!pb->want_probs)
        return attn_fail(ctx, ATTN_ERR_UNSUPPORTED,
                         "the fused probabilities path serves requests for probabilities");
    if (pb->probs_elems == 0)
        return attn_fail(ctx, ATTN_ERR_SIZE_OVERFLOW,
                         "batch*heads*rows*seq_k probabilities need more bytes than size_t counts");
    attn_algo_state *st = calloc(1, sizeof *st);
    if (!st)
        return attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY,
                         "cannot allocate the fused probabilities path's state");
    st->pb = *pb;
    attn_problem forward = *pb;
    forward.want_probs = 0;
    forward.want_row_stats = 1;
    attn_status status = attn_fused_algorithm.configure(ctx, &forward, &st->forward);
    if (status != ATTN_SUCCESS) {
        free(st);
        return status;
    }
    st->cpu = attn_fused_cpu_layout_of(st->forward);
    st->stats_at =
        attn_round_up(attn_fused_algorithm.workspace_bytes(st->forward), ATTN_WORKSPACE_ALIGN);
    st->probs_at = attn_round_up(st->stats_at + stats_bytes(pb), ATTN_WORKSPACE_ALIGN);
    st->slices = (size_t)pb->p.batch * (size_t)pb->probs_heads;
    st->slice_elems = (size_t)pb->probs_rows * (size_t)pb->p.seq_k;
    status = slices_per_chunk(ctx, st);
    if (status != ATTN_SUCCESS) {
        attn_fused_algorithm.destroy(st->forward);
        free(st);
        return status;
    }
    st->total = st->probs_at + st->chunk * st->slice_elems * sizeof(float);
    *state = st;
    return ATTN_SUCCESS;
}

static attn_status probs_build(attn_context_t ctx, attn_algo_state *st) {
    attn_status status = attn_fused_algorithm.build(ctx, st->forward);
    if (status != ATTN_SUCCESS)
        return status;
    return attn_create_kernel(ctx, "flash_cpu", "flash_cpu_probs", st->cpu.options, &st->probs);
}

static size_t probs_workspace_bytes(const attn_algo_state *st) {
    return st->total;
}

/* Enqueues flash_cpu_probs for slices [base, base + n). */
static attn_status enqueue_probs(attn_context_t ctx, const attn_algo_state *st,
                                 const attn_device_args *a, size_t base, size_t n) {
    const attn_problem *pb = &st->pb;
    const attn_params *p = &pb->p;
    attn_args k;
    attn_args_begin(&k, ctx, st->probs, "flash_cpu_probs");
    attn_arg_tensor(&k, a->q, a->q_offset, &p->q_strides);
    attn_arg_buffer(&k, a->workspace, a->workspace_offset / sizeof(float));
    attn_arg_buffer(&k, a->workspace, (a->workspace_offset + st->stats_at) / sizeof(float));
    attn_arg_buffer(&k, a->workspace, (a->workspace_offset + st->probs_at) / sizeof(float));
    attn_arg_int(&k, pb->group);
    attn_arg_int(&k, (cl_int)st->cpu.total_tiles);
    attn_arg_int(&k, p->heads_q);
    attn_arg_int(&k, pb->probs_head0);
    attn_arg_int(&k, pb->probs_heads);
    attn_arg_int(&k, pb->probs_row0);
    attn_arg_int(&k, pb->probs_rows);
    attn_arg_int(&k, (cl_int)base);
    attn_arg_float(&k, p->scale);
    attn_arg_exponent(&k, p);
    attn_arg_features(&k, pb, a);
    attn_status status = attn_args_end(&k);
    if (status != ATTN_SUCCESS)
        return status;
    const size_t rows = (size_t)st->cpu.rows;
    const size_t global[3] = {((size_t)pb->probs_rows + rows - 1) / rows, n, 1};
    const size_t local[3] = {1, 1, 1};
    return attn_enqueue_kernel(ctx, st->probs, "flash_cpu_probs", global, local, 0, NULL, NULL);
}

static attn_status probs_run(attn_context_t ctx, const attn_algo_state *st,
                             const attn_device_args *args, cl_uint num_wait,
                             const cl_event *wait_list, cl_event *done) {
    if (done)
        *done = NULL;
    attn_device_args d = *args;
    d.row_stats = args->workspace;
    d.row_stats_offset = (args->workspace_offset + st->stats_at) / sizeof(float);
    attn_status status = attn_fused_algorithm.run(ctx, st->forward, &d, num_wait, wait_list, done);
    if (status != ATTN_SUCCESS || !args->probs_host)
        return status;
    for (size_t base = 0; base < st->slices && status == ATTN_SUCCESS; base += st->chunk) {
        const size_t n = st->slices - base < st->chunk ? st->slices - base : st->chunk;
        status = enqueue_probs(ctx, st, &d, base, n);
        if (status == ATTN_SUCCESS) {
            /* Blocking: the next chunk reuses the buffer. */
            cl_int err = clEnqueueReadBuffer(
                ctx->queue, args->workspace, CL_TRUE, args->workspace_offset + st->probs_at,
                n * st->slice_elems * sizeof(float), args->probs_host + base * st->slice_elems, 0,
                NULL, NULL);
            if (err != CL_SUCCESS)
                status = attn_fail_cl(ctx, err, "clEnqueueReadBuffer (probabilities)");
        }
    }
    if (status != ATTN_SUCCESS) {
        clFinish(ctx->queue);
        if (done && *done) {
            clReleaseEvent(*done);
            *done = NULL;
        }
    }
    return status;
}

static void probs_destroy(attn_algo_state *st) {
    if (!st)
        return;
    attn_fused_algorithm.destroy(st->forward);
    if (st->probs)
        clReleaseKernel(st->probs);
    free(st);
}

const attn_algorithm attn_fused_probs_algorithm = {
    .id = ATTN_ALGO_FUSED,
    .name = "fused+probabilities",
    .configure = probs_configure,
    .build = probs_build,
    .workspace_bytes = probs_workspace_bytes,
    .run = probs_run,
    .destroy = probs_destroy,
};
