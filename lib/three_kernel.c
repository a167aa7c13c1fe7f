/* The three-kernel path: S = Q·Kᵀ into a score buffer, scale + mask +
 * softmax in place, O = P·V. It holds seq_q·seq_k floats per head, so heads
 * are processed in chunks sized to the device's allocation limits; it is the
 * path that can hand the probabilities back. The scores live in the plan's
 * workspace.
 *
 * When O and LSE are the caller's buffers and more than one command would
 * write them (several chunks, or LSE from softmax and O from P·V), they are
 * staged in the workspace and copied by one last command
 * (kernels/commit.cl): a failure part-way leaves the caller's outputs
 * untouched.
 *
 * Two kernel shapes, chosen by the tuning table's variant (lib/tuning.c) as
 * the fused path's are: the gpu shape (qk_scores.cl, softmax.cl, pv.cl)
 * stages tiles in work-group local memory; the cpu shape
 * (three_kernel_cpu.cl) packs K into float tiles once (into the workspace,
 * after the scores) and runs one work-item a group on explicit vectors,
 * with the table's rows, tile_k and vec. */
#include "attn_internal.h"
#include "tuning.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct three_kernel_shape {
    int cpu;                             /* three_kernel_cpu.cl's kernels */
    size_t qk_tile, pv_tile, softmax_wg; /* gpu */
    int rows, tile_k, vec;               /* cpu: the tuning's */
} three_kernel_shape;

/* The three-kernel path's decisions for one problem (attn_algo_state). */
struct attn_algo_state {
    attn_problem pb;
    three_kernel_shape shape;
    size_t chunk;  /* heads whose scores are held at once */
    int stageable; /* whether the device call stages its outputs (needs_staging) */
    cl_kernel qk, softmax, pv;
    cl_kernel pack;      /* cpu shape only */
    cl_kernel commit;    /* NULL unless stageable */
    size_t total_tiles;  /* cpu: packed key tiles a kv head */
    size_t packed_bytes; /* cpu: the packed K */
};

/* The tuning table's variant picks the shape: cpu, or the decode variant on
 * a CPU device (its entry's rows and tile_k are the cpu ones), take the cpu
 * shape; everything else the gpu one. */
static attn_status choose_shape(attn_context_t ctx, const attn_problem *pb,
                                three_kernel_shape *shape) {
    const attn_params *p = &pb->p;
    attn_tuning t;
    attn_tuning_origin origin;
    attn_status status = attn_tuning_lookup(ctx, p, &t, &origin);
    if (status != ATTN_SUCCESS)
        return status;
    shape->cpu =
        t.variant == ATTN_FUSED_CPU || (t.variant == ATTN_FUSED_DECODE && !ctx->info.is_gpu);
    if (shape->cpu) {
        const unsigned bad =
            (t.rows > 8 ? ATTN_TUNE_ROWS : 0u) |
            (t.tile_k != 4 && t.tile_k != 8 && t.tile_k != 16 ? ATTN_TUNE_TILE_K : 0u) |
            (t.vec != 4 && t.vec != 8 && t.vec != 16 ? ATTN_TUNE_VEC : 0u);
        if (bad)
            return attn_tuning_refuse(ctx, &t, &origin, bad | ATTN_TUNE_VARIANT,
                                      "the three-kernel path's cpu shape takes rows 1..8, tile_k "
                                      "and vec 4, 8 or 16");
        shape->rows = t.rows;
        shape->tile_k = t.tile_k;
        shape->vec = t.vec;
        return ATTN_SUCCESS;
    }
    size_t max_wg = 0;
    cl_int err =
        clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof max_wg, &max_wg, NULL);
    if (err != CL_SUCCESS)
        return attn_fail_cl(ctx, err, "clGetDeviceInfo(CL_DEVICE_MAX_WORK_GROUP_SIZE)");
    /* 16x16 tiles where the device allows 256 work-items a group, else 8x8. */
    shape->qk_tile = max_wg >= 256 ? 16 : 8;
    shape->pv_tile = shape->qk_tile;
    shape->softmax_wg = max_wg >= 64 ? 64 : 16;
    return ATTN_SUCCESS;
}

static attn_status build_gpu_kernels(attn_context_t ctx, attn_algo_state *st,
                                     const char *features) {
    const attn_params *p = &st->pb.p;
    char options[512];
    snprintf(options, sizeof options, "%s -DHEAD_DIM=%d -DQK_TILE=%zu", features, p->head_dim,
             st->shape.qk_tile);
    attn_status status = attn_create_kernel(ctx, "qk_scores", "qk_scores", options, &st->qk);
    if (status != ATTN_SUCCESS)
        return status;
    snprintf(options, sizeof options, "%s -DHAS_LSE=%d -DSOFTMAX_WG=%zu", features, st->pb.want_lse,
             st->shape.softmax_wg);
    status = attn_create_kernel(ctx, "softmax", "softmax_rows", options, &st->softmax);
    if (status != ATTN_SUCCESS)
        return status;
    snprintf(options, sizeof options, "%s -DHEAD_DIM_V=%d -DPV_TILE=%zu", features, p->head_dim_v,
             st->shape.pv_tile);
    return attn_create_kernel(ctx, "pv", "pv", options, &st->pv);
}

static attn_status build_kernels(attn_context_t ctx, attn_algo_state *st) {
    const attn_problem *pb = &st->pb;
    const attn_params *p = &pb->p;
    char features[256], options[512];
    attn_feature_options(pb, features, sizeof features);
    if (st->shape.cpu) {
        /* One program: the four kernels share the tile parameters. */
        snprintf(options, sizeof options,
                 "%s -DHEAD_DIM=%d -DHEAD_DIM_V=%d -DHAS_LSE=%d -DROWS=%d -DTILE_K=%d -DVEC_V=%d",
                 features, p->head_dim, p->head_dim_v, pb->want_lse, st->shape.rows,
                 st->shape.tile_k, st->shape.vec);
        const char *names[4] = {"three_cpu_pack", "qk_scores_cpu", "softmax_rows_cpu", "pv_cpu"};
        cl_kernel *kernels[4] = {&st->pack, &st->qk, &st->softmax, &st->pv};
        for (int i = 0; i < 4; i++) {
            attn_status status =
                attn_create_kernel(ctx, "three_kernel_cpu", names[i], options, kernels[i]);
            if (status != ATTN_SUCCESS)
                return status;
        }
    } else {
        attn_status status = build_gpu_kernels(ctx, st, features);
        if (status != ATTN_SUCCESS)
            return status;
    }
    if (!st->stageable)
        return ATTN_SUCCESS;
    snprintf(options, sizeof options, "%s -DHEAD_DIM_V=%d -DHAS_LSE=%d", features, p->head_dim_v,
             pb->want_lse);
    return attn_create_kernel(ctx, "commit", "commit_outputs", options, &st->commit);
}

/* The staged O and LSE have the tensors' logical shape, packed:
 * [batch][heads_q][rows] rows of head_dim_v (varlen: batch 1 and the packed
 * total of rows). */
static void staging_shape(const attn_problem *pb, uint64_t *batch, uint64_t *rows) {
    const attn_params *p = &pb->p;
    *batch = p->varlen ? 1u : (uint64_t)p->batch;
    *rows = p->varlen ? (uint64_t)p->total_q : (uint64_t)p->seq_q;
}

/* Bytes of the staged O and LSE (see the top of this file). */
static uint64_t staging_bytes(const attn_problem *pb) {
    uint64_t batch, rows;
    staging_shape(pb, &batch, &rows);
    const uint64_t all = batch * (uint64_t)pb->p.heads_q * rows;
    return all *
           ((uint64_t)pb->p.head_dim_v * pb->element_size + (pb->want_lse ? sizeof(float) : 0u));
}

/* The workspace: the scores of `chunk` heads, then the cpu shape's packed K
 * (packed_bytes, 0 for the gpu shape), then (when staged) O and LSE
 * staging, each from a multiple of ATTN_WORKSPACE_ALIGN bytes. */
typedef struct workspace_layout {
    size_t scores_bytes, packed_at, o_at, lse_at, total;
} workspace_layout;

static workspace_layout layout_of(const attn_problem *pb, size_t chunk, size_t packed_bytes,
                                  int staged) {
    const attn_params *p = &pb->p;
    uint64_t batch, rows;
    staging_shape(pb, &batch, &rows);
    const size_t all = (size_t)(batch * (uint64_t)p->heads_q * rows);
    workspace_layout w = {0};
    w.scores_bytes = chunk * (size_t)p->seq_q * (size_t)p->seq_k * sizeof(float);
    w.total = w.scores_bytes;
    if (packed_bytes) {
        w.packed_at = attn_round_up(w.total, ATTN_WORKSPACE_ALIGN);
        w.total = w.packed_at + packed_bytes;
    }
    if (staged) {
        w.o_at = attn_round_up(w.total, ATTN_WORKSPACE_ALIGN);
        w.total = w.o_at + all * (size_t)p->head_dim_v * pb->element_size;
        w.lse_at = attn_round_up(w.total, ATTN_WORKSPACE_ALIGN);
        if (pb->want_lse)
            w.total = w.lse_at + all * sizeof(float);
    }
    return w;
}

/* How many heads' scores fit at once: within one allocation beside the
 * staged outputs (counted whether or not a call stages, so that every call
 * of a plan fits), within global memory beside the tensors, and within
 * ATTN_CL_SCRATCH_LIMIT when set (a cap for testing the chunked path on
 * small shapes). */
static attn_status heads_per_chunk(attn_context_t ctx, const attn_problem *pb, size_t packed_bytes,
                                   size_t *out) {
    const attn_params *p = &pb->p;
    const size_t total_heads = (size_t)p->batch * (size_t)p->heads_q;
    const size_t seq_q = (size_t)p->seq_q, seq_k = (size_t)p->seq_k;
    if (seq_k > SIZE_MAX / sizeof(float) / seq_q ||
        seq_q * seq_k > SIZE_MAX / sizeof(float) / total_heads ||
        (pb->want_probs && !pb->probs_elems))
        return attn_fail(ctx, ATTN_ERR_SIZE_OVERFLOW,
                         "batch*heads*seq_q*seq_k scores need more bytes than size_t counts");
    const size_t per_head = seq_q * seq_k * sizeof(float);

    const uint64_t staging = staging_bytes(pb) + packed_bytes + 3 * ATTN_WORKSPACE_ALIGN;
    uint64_t limit = ctx->info.max_alloc_bytes > staging ? ctx->info.max_alloc_bytes - staging : 0;
    const uint64_t tensors =
        (uint64_t)(pb->q_extent + pb->k_extent + pb->v_extent + pb->o_extent) * pb->element_size +
        (uint64_t)pb->bias_extent * sizeof(float) + pb->keep_mask_extent + staging;
    const uint64_t free_mem =
        ctx->info.global_mem_bytes > tensors ? ctx->info.global_mem_bytes - tensors : 0;
    if (free_mem < limit)
        limit = free_mem;
    const char *cap = getenv("ATTN_CL_SCRATCH_LIMIT");
    if (cap && *cap) {
        unsigned long long value = strtoull(cap, NULL, 10);
        if (value < limit)
            limit = value;
    }
    const uint64_t heads = limit / per_head;
    if (heads == 0)
        return attn_fail(ctx, ATTN_ERR_DEVICE_OUT_OF_MEMORY,
                         "the three-kernel path needs %zu bytes of scores for one head "
                         "(seq_q %zu x seq_k %zu), but only %llu bytes can be allocated (the "
                         "tensors take %llu of the device's %llu bytes); use ATTN_ALGO_FUSED, "
                         "which needs no score matrix",
                         per_head, seq_q, seq_k, (unsigned long long)limit,
                         (unsigned long long)tensors,
                         (unsigned long long)ctx->info.global_mem_bytes);
    *out = heads < total_heads ? (size_t)heads : total_heads;
    return ATTN_SUCCESS;
}

/* Whether a device call (whose outputs are the caller's) stages them: when
 * more than one command would write them. */
static int needs_staging(const attn_problem *pb, size_t chunk) {
    return pb->want_lse || chunk < (size_t)pb->p.batch * (size_t)pb->p.heads_q;
}

/* Where softmax writes LSE and P·V writes O: the forward's own tensors, or
 * the staging in the workspace. */
typedef struct output_target {
    cl_mem o, lse;         /* lse NULL when not wanted */
    size_t o_off, lse_off; /* elements */
    attn_strides o_strides, lse_strides;
} output_target;

/* Enqueues the three kernels for heads [head_base, head_base + heads). */
static attn_status run_chunk(attn_context_t ctx, const attn_algo_state *st,
                             const attn_device_args *a, const output_target *out,
                             const workspace_layout *w, int head_base, int heads, cl_uint num_wait,
                             const cl_event *wait_list, cl_event *done) {
    const attn_problem *pb = &st->pb;
    const attn_params *p = &pb->p;
    const three_kernel_shape *shape = &st->shape;
    const size_t scores_off = a->workspace_offset / sizeof(float);
    /* An unused LSE argument still needs a valid buffer. */
    const cl_mem lse = out->lse ? out->lse : a->workspace;

    /* cpu: one work-item a group, over blocks of rows (qk, pv) or rows. */
    const size_t blocks = shape->cpu ? ((size_t)p->seq_q + shape->rows - 1) / shape->rows : 0;
    const size_t one[3] = {1, 1, 1};
    const char *qk_name = shape->cpu ? "qk_scores_cpu" : "qk_scores";
    const char *sm_name = shape->cpu ? "softmax_rows_cpu" : "softmax_rows";
    const char *pv_name = shape->cpu ? "pv_cpu" : "pv";

    attn_args qk;
    attn_args_begin(&qk, ctx, st->qk, qk_name);
    attn_arg_tensor(&qk, a->q, a->q_offset, &p->q_strides);
    if (shape->cpu) {
        attn_arg_buffer(&qk, a->workspace, (a->workspace_offset + w->packed_at) / sizeof(float));
        attn_arg_int(&qk, (cl_int)st->total_tiles);
    } else {
        attn_arg_tensor(&qk, a->k, a->k_offset, &p->k_strides);
    }
    attn_arg_buffer(&qk, a->workspace, scores_off);
    attn_arg_int(&qk, p->heads_q);
    attn_arg_int(&qk, pb->group);
    attn_arg_int(&qk, head_base);
    attn_arg_features(&qk, pb, a);
    attn_status status = attn_args_end(&qk);
    size_t qk_global[3] = {blocks, (size_t)heads, 1};
    const size_t qk_local[3] = {shape->qk_tile, shape->qk_tile, 1};
    if (!shape->cpu) {
        qk_global[0] = attn_round_up((size_t)p->seq_k, shape->qk_tile);
        qk_global[1] = attn_round_up((size_t)p->seq_q, shape->qk_tile);
        qk_global[2] = (size_t)heads;
    }
    if (status == ATTN_SUCCESS)
        status = attn_enqueue_kernel(ctx, st->qk, qk_name, qk_global, shape->cpu ? one : qk_local,
                                     num_wait, wait_list, NULL);

    attn_args sm;
    attn_args_begin(&sm, ctx, st->softmax, sm_name);
    attn_arg_buffer(&sm, a->workspace, scores_off);
    attn_arg_float(&sm, p->scale);
    attn_arg_int(&sm, p->heads_q);
    attn_arg_int(&sm, head_base);
    attn_arg_tensor(&sm, lse, out->lse_off, &out->lse_strides);
    attn_arg_features(&sm, pb, a);
    if (status == ATTN_SUCCESS)
        status = attn_args_end(&sm);
    const size_t rows = (size_t)heads * (size_t)p->seq_q;
    const size_t sm_global[3] = {shape->cpu ? rows : shape->softmax_wg, shape->cpu ? 1 : rows, 1};
    const size_t sm_local[3] = {shape->cpu ? 1 : shape->softmax_wg, 1, 1};
    if (status == ATTN_SUCCESS)
        status = attn_enqueue_kernel(ctx, st->softmax, sm_name, sm_global, sm_local, 0, NULL, NULL);

    attn_args pv;
    attn_args_begin(&pv, ctx, st->pv, pv_name);
    attn_arg_buffer(&pv, a->workspace, scores_off);
    attn_arg_tensor(&pv, a->v, a->v_offset, &p->v_strides);
    attn_arg_tensor(&pv, out->o, out->o_off, &out->o_strides);
    attn_arg_int(&pv, p->heads_q);
    attn_arg_int(&pv, pb->group);
    attn_arg_int(&pv, head_base);
    attn_arg_features(&pv, pb, a);
    if (status == ATTN_SUCCESS)
        status = attn_args_end(&pv);
    size_t pv_global[3] = {blocks, (size_t)heads, 1};
    const size_t pv_local[3] = {shape->pv_tile, shape->pv_tile, 1};
    if (!shape->cpu) {
        pv_global[0] = attn_round_up((size_t)p->head_dim_v, shape->pv_tile);
        pv_global[1] = attn_round_up((size_t)p->seq_q, shape->pv_tile);
        pv_global[2] = (size_t)heads;
    }
    if (status == ATTN_SUCCESS)
        status = attn_enqueue_kernel(ctx, st->pv, pv_name, pv_global, shape->cpu ? one : pv_local,
                                     0, NULL, done);
    return status;
}

/* The staging target in the workspace: packed strides (the kernels step
 * b * batch stride: 0 with varlen, batch 1). */
static output_target staging_target(const attn_problem *pb, const attn_device_args *a,
                                    const workspace_layout *w) {
    const attn_params *p = &pb->p;
    uint64_t batch, rows;
    staging_shape(pb, &batch, &rows);
    const int64_t heads = p->heads_q, r = (int64_t)rows, dv = p->head_dim_v;
    output_target out = {
        .o = a->workspace,
        .lse = pb->want_lse ? a->workspace : NULL,
        .o_off = (a->workspace_offset + w->o_at) / pb->element_size,
        .lse_off = (a->workspace_offset + w->lse_at) / sizeof(float),
        .o_strides = {p->varlen ? 0 : heads * r * dv, r * dv, dv},
        .lse_strides = {p->varlen ? 0 : heads * r, r, 1},
    };
    return out;
}

/* Enqueues commit_outputs: from the staging in `from` to the caller's O and LSE. */
static attn_status commit(attn_context_t ctx, const attn_algo_state *st, const attn_device_args *a,
                          const output_target *from, cl_event *done) {
    const attn_problem *pb = &st->pb;
    const attn_params *p = &pb->p;
    uint64_t batch, rows;
    staging_shape(pb, &batch, &rows);
    /* Without LSE the kernel never touches these; they still need buffers. */
    const cl_mem lse_stage = from->lse ? from->lse : from->o, lse = a->lse ? a->lse : a->o;
    attn_args c;
    attn_args_begin(&c, ctx, st->commit, "commit_outputs");
    attn_arg_buffer(&c, from->o, from->o_off);
    attn_arg_tensor(&c, a->o, a->o_offset, &p->o_strides);
    attn_arg_buffer(&c, lse_stage, from->lse_off);
    attn_arg_tensor(&c, lse, a->lse_offset, &p->lse_strides);
    attn_arg_int(&c, (cl_int)rows);
    attn_arg_features(&c, pb, a);
    attn_status status = attn_args_end(&c);
    if (status != ATTN_SUCCESS)
        return status;
    const size_t global[3] = {(size_t)p->seq_q, (size_t)p->heads_q, (size_t)p->batch};
    return attn_enqueue_kernel(ctx, st->commit, "commit_outputs", global, NULL, 0, NULL, done);
}

/* The probabilities of the chunk of heads [base, base + heads), which the
 * scores now hold (the next chunk reuses them), into the host output: the
 * chunk at once when every probability is wanted, else each wanted head's
 * wanted rows (contiguous in the scores and in the output). */
static attn_status read_probs(attn_context_t ctx, const attn_problem *pb, const attn_device_args *a,
                              size_t base, size_t heads) {
    const attn_params *p = &pb->p;
    const size_t seq_k = (size_t)p->seq_k, head_elems = (size_t)p->seq_q * seq_k;
    const size_t row_bytes = seq_k * sizeof(float);
    cl_int err = CL_SUCCESS;
    if (pb->probs_heads == p->heads_q && pb->probs_rows == p->seq_q) {
        err = clEnqueueReadBuffer(ctx->queue, a->workspace, CL_TRUE, a->workspace_offset,
                                  heads * head_elems * sizeof(float),
                                  a->probs_host + base * head_elems, 0, NULL, NULL);
    } else {
        for (size_t c = 0; c < heads && err == CL_SUCCESS; c++) {
            const size_t bh = base + c, b = bh / (size_t)p->heads_q;
            const int64_t h = (int64_t)(bh % (size_t)p->heads_q) - pb->probs_head0;
            if (h < 0 || h >= pb->probs_heads)
                continue;
            const size_t from = (c * (size_t)p->seq_q + (size_t)pb->probs_row0) * row_bytes;
            const size_t to =
                ((b * (size_t)pb->probs_heads + (size_t)h) * (size_t)pb->probs_rows) * seq_k;
            err = clEnqueueReadBuffer(ctx->queue, a->workspace, CL_TRUE, a->workspace_offset + from,
                                      (size_t)pb->probs_rows * row_bytes, a->probs_host + to, 0,
                                      NULL, NULL);
        }
    }
    return err == CL_SUCCESS ? ATTN_SUCCESS
                             : attn_fail_cl(ctx, err, "clEnqueueReadBuffer (probabilities)");
}

/* Enqueues three_cpu_pack: every kv head's K into the workspace's packed
 * tiles. */
static attn_status pack_k(attn_context_t ctx, const attn_algo_state *st, const attn_device_args *a,
                          const workspace_layout *w, cl_uint num_wait, const cl_event *wait_list) {
    const attn_problem *pb = &st->pb;
    const attn_params *p = &pb->p;
    attn_args pack;
    attn_args_begin(&pack, ctx, st->pack, "three_cpu_pack");
    attn_arg_tensor(&pack, a->k, a->k_offset, &p->k_strides);
    attn_arg_buffer(&pack, a->workspace, (a->workspace_offset + w->packed_at) / sizeof(float));
    attn_arg_int(&pack, (cl_int)st->total_tiles);
    attn_arg_features(&pack, pb, a);
    attn_status status = attn_args_end(&pack);
    const size_t tile = (size_t)st->shape.tile_k;
    const size_t global[3] = {((size_t)p->seq_k + tile - 1) / tile, (size_t)p->heads_kv,
                              (size_t)p->batch};
    const size_t local[3] = {1, 1, 1};
    if (status == ATTN_SUCCESS)
        status = attn_enqueue_kernel(ctx, st->pack, "three_cpu_pack", global, local, num_wait,
                                     wait_list, NULL);
    return status;
}

static attn_status three_kernel_run(attn_context_t ctx, const attn_algo_state *st,
                                    const attn_device_args *args, cl_uint num_wait,
                                    const cl_event *wait_list, cl_event *done) {
    const attn_problem *pb = &st->pb;
    const attn_params *p = &pb->p;
    if (done)
        *done = NULL;
    const int staged = args->callers_outputs && st->stageable;
    const workspace_layout w = layout_of(pb, st->chunk, st->packed_bytes, st->stageable);
    const output_target target = staged ? staging_target(pb, args, &w)
                                        : (output_target){.o = args->o,
                                                          .lse = args->lse,
                                                          .o_off = args->o_offset,
                                                          .lse_off = args->lse_offset,
                                                          .o_strides = p->o_strides,
                                                          .lse_strides = p->lse_strides};
    const size_t total = (size_t)p->batch * (size_t)p->heads_q;
    attn_status status = ATTN_SUCCESS;
    int enqueued = 0;
    if (st->shape.cpu) {
        /* K is packed once for every chunk; the queue orders the rest after it. */
        status = pack_k(ctx, st, args, &w, num_wait, wait_list);
        enqueued = 1;
        num_wait = 0;
        wait_list = NULL;
    }
    for (size_t base = 0; base < total && status == ATTN_SUCCESS; base += st->chunk) {
        const size_t heads = total - base < st->chunk ? total - base : st->chunk;
        const int last = base + heads == total && !staged;
        status =
            run_chunk(ctx, st, args, &target, &w, (int)base, (int)heads, base == 0 ? num_wait : 0,
                      base == 0 ? wait_list : NULL, last ? done : NULL);
        enqueued = 1;
        if (status == ATTN_SUCCESS && args->probs_host)
            status = read_probs(ctx, pb, args, base, heads);
    }
    if (status == ATTN_SUCCESS && staged)
        status = commit(ctx, st, args, &target, done);
    if (status != ATTN_SUCCESS && done && *done) {
        clReleaseEvent(*done);
        *done = NULL;
    }
    if (status != ATTN_SUCCESS && enqueued)
        clFinish(ctx->queue);
    return status;
}

/* ---- The attn_algorithm interface ------------------------------------------ */

/* The cpu shape's packed K: every kv head's key tiles (flash_cpu.cl's
 * layout: a sequence's tiles from its tile base), HEAD_DIM x TILE_K floats
 * each. */
static attn_status packed_k_size(attn_context_t ctx, const attn_problem *pb, attn_algo_state *st) {
    const attn_params *p = &pb->p;
    const size_t tile = (size_t)st->shape.tile_k, heads = (size_t)p->heads_kv;
    st->total_tiles = p->varlen ? (size_t)p->total_k / tile + (size_t)p->batch
                                : (size_t)p->batch * (((size_t)p->seq_k + tile - 1) / tile);
    const size_t tile_floats = tile * (size_t)p->head_dim;
    if (st->total_tiles > SIZE_MAX / heads ||
        heads * st->total_tiles > SIZE_MAX / sizeof(float) / tile_floats)
        return attn_fail(ctx, ATTN_ERR_SIZE_OVERFLOW,
                         "the three-kernel path's packed K (%zu heads x %zu tiles) overflows "
                         "size_t",
                         heads, st->total_tiles);
    st->packed_bytes = heads * st->total_tiles * tile_floats * sizeof(float);
    return ATTN_SUCCESS;
}

static attn_status three_kernel_configure(attn_context_t ctx, const attn_problem *pb,
                                          attn_algo_state **state) {
    attn_algo_state *st = calloc(1, sizeof *st);
    if (!st)
        return attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY,
                         "cannot allocate the three-kernel path's state");
    st->pb = *pb;
    attn_status status = choose_shape(ctx, pb, &st->shape);
    if (status == ATTN_SUCCESS && st->shape.cpu)
        status = packed_k_size(ctx, pb, st);
    if (status == ATTN_SUCCESS)
        status = heads_per_chunk(ctx, pb, st->packed_bytes, &st->chunk);
    if (status != ATTN_SUCCESS) {
        free(st);
        return status;
    }
    st->stageable = needs_staging(pb, st->chunk);
    *state = st;
    return ATTN_SUCCESS;
}

static size_t three_kernel_workspace_bytes(const attn_algo_state *st) {
    return layout_of(&st->pb, st->chunk, st->packed_bytes, st->stageable).total;
}

static void three_kernel_destroy(attn_algo_state *st) {
    if (!st)
        return;
    cl_kernel kernels[5] = {st->qk, st->softmax, st->pv, st->pack, st->commit};
    for (int i = 0; i < 5; i++)
        if (kernels[i])
            clReleaseKernel(kernels[i]);
    free(st);
}

const attn_algorithm attn_three_kernel_algorithm = {
    .id = ATTN_ALGO_THREE_KERNEL,
    .name = "three-kernel",
    .configure = three_kernel_configure,
    .build = build_kernels,
    .workspace_bytes = three_kernel_workspace_bytes,
    .run = three_kernel_run,
    .destroy = three_kernel_destroy,
};
