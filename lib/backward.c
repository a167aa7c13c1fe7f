/* The backward pass (include/attn_cl.h, "Backward"): validation of its
 * tensors, its kernels and their launches, and the host and device
 * one-calls. Two shapes of the dK/dV and dQ kernels, chosen by the tuning
 * table's entry for the device (lib/tuning.h; ATTN_CL_TUNE alike):
 * kernels/backward.cl's cpu shape (a work-item holds a block of rows in
 * private memory, work-groups of one) for the cpu and decode variants, and
 * kernels/backward_gpu.cl's gpu shape (work-groups share tiles in local
 * memory) for the gpu variant, its rows, tile_k and wg the forward's; head
 * dims whose gpu tiles do not fit the device's local memory even halved
 * take the cpu shape. attn_bwd_dot and attn_bwd_dbias serve both.
 *
 * Order on the context's in-order queue: D = rowsum(dO * O) into the
 * workspace, then dK/dV (with the cpu shape, each split of the keys' dQ
 * into its own partial rows too), dQ (the cpu shape adds the splits in
 * order) and dBias, each written by exactly one work-item per row or
 * element, so the result has the same bits run to run and call to call. */
#include "attn_internal.h"
#include "host_copy.h"
#include "tuning.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct backward_state {
    attn_problem pb;
    int want_dbias;
    char options[640];
    int block;                      /* cpu: keys a block of attn_bwd_dkdv */
    int tile;                       /* cpu: query rows a step of attn_bwd_dkdv takes */
    int splits;                     /* cpu: work-items a kv head's keys are split over */
    int gpu;                        /* 1: the gpu shape (kernels/backward_gpu.cl) */
    int own, step, tpo;             /* gpu: rows a work-group owns, rows a tile, items a row */
    cl_kernel dot, dkdv, dq, dbias; /* dq: attn_bwd_dq_sum (cpu) or attn_bwd_dq (gpu); dbias
                                       NULL unless wanted */
} backward_state;

/* Keys a block of the cpu shape holds (its vectors' lanes). 16 at every
 * head dim: each Q/dO row read serves 16 keys, and the private blocks (4 * 16 * (D + Dv) floats, 128 KiB at D = Dv = 512) stay in the
 * cache's reach. Measured on AVX-512 and AVX2 (attn_bench --backward):
 * 16 beat 8 at D = 256 (1.4-1.8x) and 4 at D = 512 (3x). */
static int block_rows(const attn_params *p) {
    (void)p;
    return 16;
}

/* Query rows a step of the cpu shape takes together: each of the
 * work-item's K/V vectors is loaded once per TILE products, and the TILE
 * score vectors stay in registers. */
#ifndef BACKWARD_TILE
#define BACKWARD_TILE 4
#endif

/* The gpu shape's local memory (kernels/backward_gpu.cl's tiles, the larger
 * kernel's) for `own` rows a work-group and `step` rows a tile. */
static size_t gpu_local_bytes(const attn_params *p, size_t own, size_t step) {
    const size_t qk = (size_t)p->head_dim + 1, v = (size_t)p->head_dim_v + 1;
    const size_t rows = (own + step) * (qk + v);
    const size_t dkdv = rows + 3 * step * (own + 1) + 2 * step;
    const size_t dq = rows + 2 * own * (step + 1) + 2 * own;
    return sizeof(float) * (dkdv > dq ? dkdv : dq);
}

/* The gpu shape's tiles from the tuning's gpu entry: `rows` rows a
 * work-group owns, `tile_k` rows of the other side a tile, wg / rows
 * work-items a row (bwd_rows, bwd_tile_k and bwd_wg where set); the tile,
 * then the owned rows, halved until they fit the device's local memory. 0
 * when they do not fit or the group is above the device's limit (the cpu
 * shape serves then). */
static int gpu_tiles(attn_context_t ctx, const attn_params *p, const attn_tuning *t,
                     backward_state *st) {
    size_t max_wg = 0;
    const int rows = t->bwd_rows ? t->bwd_rows : t->rows;
    const int wg = t->bwd_wg ? t->bwd_wg : t->wg;
    if (rows < 1 || wg < rows ||
        clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof max_wg, &max_wg, NULL) !=
            CL_SUCCESS)
        return 0;
    int own = rows, per_tile = t->bwd_tile_k ? t->bwd_tile_k : t->tile_k;
    const int tpo = wg / rows;
    while (gpu_local_bytes(p, (size_t)own, (size_t)per_tile) > ctx->info.local_mem_bytes) {
        if (per_tile > 1)
            per_tile = (per_tile + 1) / 2;
        else if (own > 1)
            own = (own + 1) / 2;
        else
            return 0;
    }
    if ((size_t)own * (size_t)tpo > max_wg)
        return 0;
    st->own = own;
    st->step = per_tile;
    st->tpo = tpo;
    return 1;
}

/* The caller's tensors as the kernels see them (offsets in elements); the
 * forward's tensors and input arrays in `f`. */
typedef struct backward_args {
    attn_device_args f;
    cl_mem dq_part; /* cpu shape: the splits' partial dQ */
    cl_mem dout, dq, dk, dv, dbias;
    size_t dout_offset, dq_offset, dk_offset, dv_offset, dbias_offset;
} backward_args;

static void backward_state_free(backward_state *st) {
    if (!st)
        return;
    cl_kernel kernels[4] = {st->dot, st->dkdv, st->dq, st->dbias};
    for (int i = 0; i < 4; i++)
        if (kernels[i])
            clReleaseKernel(kernels[i]);
    free(st);
}

/* D's floats: one per query row of the tensors. */
static size_t delta_elems(const attn_problem *pb) {
    const attn_params *p = &pb->p;
    const size_t batch = p->varlen ? 1 : (size_t)p->batch;
    const size_t rows = (size_t)(p->varlen ? p->total_q : p->seq_q);
    return batch * (size_t)p->heads_q * rows;
}

/* The cpu shape's partial dQ caps its splits (a bound on memory, not speed). */
#define PARTIAL_DQ_MAX_BYTES ((size_t)256 << 20)

/* The cpu shape's splits of each kv head's keys (attn_bwd_dkdv's work-items
 * a head): enough for 4 work-items a compute unit (the blocks of a split are
 * interleaved, so a causal mask's work spreads evenly over them), no more
 * than the head's key blocks, and fewer while the partial dQ, a float per
 * dQ element a split, would pass PARTIAL_DQ_MAX_BYTES. */
static int key_splits(attn_context_t ctx, const attn_problem *pb, int block) {
    const attn_params *p = &pb->p;
    const int64_t heads = (int64_t)p->batch * p->heads_kv;
    const int64_t want = 4 * (int64_t)(ctx->info.compute_units > 0 ? ctx->info.compute_units : 1);
    const int64_t blocks = ((int64_t)p->seq_k + block - 1) / block;
    int64_t splits = (want + heads - 1) / heads;
    if (splits > blocks)
        splits = blocks;
    const size_t split_bytes = delta_elems(pb) * (size_t)p->head_dim * sizeof(float);
    while (splits > 1 && (size_t)splits * split_bytes > PARTIAL_DQ_MAX_BYTES)
        splits--;
    return splits < 1 ? 1 : (int)splits;
}

/* Options and kernels for `pb`; the caller holds no lock. */
static attn_status backward_state_make(attn_context_t ctx, const attn_problem *pb, int want_dbias,
                                       backward_state **out) {
    *out = NULL;
    backward_state *st = calloc(1, sizeof *st);
    if (!st)
        return attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY, "cannot allocate the backward's state");
    st->pb = *pb;
    st->want_dbias = want_dbias;
    char features[256];
    attn_feature_options(pb, features, sizeof features);
    pthread_mutex_lock(&ctx->lock);
    attn_tuning tuning;
    attn_tuning_origin origin;
    attn_status status = attn_tuning_lookup(ctx, &pb->p, &tuning, &origin);
    /* The tuning's backward keys, 0 where it leaves the defaults. */
    st->block = status == ATTN_SUCCESS && tuning.bwd_block ? tuning.bwd_block : block_rows(&pb->p);
    st->tile = status == ATTN_SUCCESS && tuning.bwd_tile ? tuning.bwd_tile : BACKWARD_TILE;
    snprintf(st->options, sizeof st->options,
             "%s -DHEAD_DIM=%d -DHEAD_DIM_V=%d -DGROUP=%d -DBLOCK=%d -DTILE=%d", features,
             pb->p.head_dim, pb->p.head_dim_v, pb->group, st->block, st->tile);
    if (status == ATTN_SUCCESS && tuning.variant == ATTN_FUSED_GPU)
        st->gpu = gpu_tiles(ctx, &pb->p, &tuning, st);
    char gpu_options[sizeof st->options + 64];
    snprintf(gpu_options, sizeof gpu_options, "%s -DOWN=%d -DPER_TILE=%d -DTPO=%d", st->options,
             st->own, st->step, st->tpo);
    if (!st->gpu)
        st->splits = key_splits(ctx, pb, st->block);
    const char *program = st->gpu ? "backward_gpu" : "backward";
    const char *options = st->gpu ? gpu_options : st->options;
    if (status == ATTN_SUCCESS)
        status = attn_create_kernel(ctx, "backward", "attn_bwd_dot", st->options, &st->dot);
    if (status == ATTN_SUCCESS)
        status = attn_create_kernel(ctx, program, "attn_bwd_dkdv", options, &st->dkdv);
    if (status == ATTN_SUCCESS)
        status = attn_create_kernel(ctx, program, st->gpu ? "attn_bwd_dq" : "attn_bwd_dq_sum",
                                    options, &st->dq);
    if (status == ATTN_SUCCESS && want_dbias)
        status = attn_create_kernel(ctx, "backward", "attn_bwd_dbias", st->options, &st->dbias);
    pthread_mutex_unlock(&ctx->lock);
    if (status != ATTN_SUCCESS) {
        backward_state_free(st);
        return status;
    }
    *out = st;
    return ATTN_SUCCESS;
}

static void arg_common(attn_args *a, const backward_state *st, const backward_args *b) {
    const attn_params *p = &st->pb.p;
    attn_arg_tensor(a, b->f.q, b->f.q_offset, &p->q_strides);
    attn_arg_tensor(a, b->f.k, b->f.k_offset, &p->k_strides);
    attn_arg_tensor(a, b->f.v, b->f.v_offset, &p->v_strides);
    attn_arg_tensor(a, b->dout, b->dout_offset, &p->o_strides);
    attn_arg_tensor(a, b->f.lse, b->f.lse_offset, &p->lse_strides);
    attn_arg_buffer(a, b->f.workspace, b->f.workspace_offset / sizeof(float));
}

/* Enqueues the four kernels after `wait_list`; *done completes with the
 * last. On failure waits for what was enqueued. */
static attn_status backward_run(attn_context_t ctx, const backward_state *st,
                                const backward_args *b, cl_uint num_wait, const cl_event *wait_list,
                                cl_event *done) {
    const attn_problem *pb = &st->pb;
    const attn_params *p = &pb->p;
    if (done)
        *done = NULL;

    attn_args dot, dkdv, dq, dbias;
    attn_args_begin(&dot, ctx, st->dot, "attn_bwd_dot");
    attn_arg_tensor(&dot, b->f.o, b->f.o_offset, &p->o_strides);
    attn_arg_tensor(&dot, b->dout, b->dout_offset, &p->o_strides);
    attn_arg_tensor(&dot, b->f.lse, b->f.lse_offset, &p->lse_strides);
    attn_arg_buffer(&dot, b->f.workspace, b->f.workspace_offset / sizeof(float));
    attn_arg_int(&dot, p->heads_q);
    attn_arg_features(&dot, pb, &b->f);
    attn_status status = attn_args_end(&dot);

    attn_args_begin(&dkdv, ctx, st->dkdv, "attn_bwd_dkdv");
    arg_common(&dkdv, st, b);
    attn_arg_tensor(&dkdv, b->dk, b->dk_offset, &p->k_strides);
    attn_arg_tensor(&dkdv, b->dv, b->dv_offset, &p->v_strides);
    if (!st->gpu) {
        attn_arg_buffer(&dkdv, b->dq_part, 0);
        attn_arg_int(&dkdv, st->splits);
    }
    attn_arg_int(&dkdv, p->heads_q);
    attn_arg_float(&dkdv, p->scale);
    attn_arg_features(&dkdv, pb, &b->f);
    if (status == ATTN_SUCCESS)
        status = attn_args_end(&dkdv);

    const char *dq_name = st->gpu ? "attn_bwd_dq" : "attn_bwd_dq_sum";
    attn_args_begin(&dq, ctx, st->dq, dq_name);
    if (st->gpu) {
        arg_common(&dq, st, b);
        attn_arg_tensor(&dq, b->dq, b->dq_offset, &p->q_strides);
        attn_arg_int(&dq, p->heads_q);
        attn_arg_float(&dq, p->scale);
    } else {
        attn_arg_buffer(&dq, b->dq_part, 0);
        attn_arg_int(&dq, st->splits);
        attn_arg_tensor(&dq, b->dq, b->dq_offset, &p->q_strides);
        attn_arg_int(&dq, p->heads_q);
    }
    attn_arg_features(&dq, pb, &b->f);
    if (status == ATTN_SUCCESS)
        status = attn_args_end(&dq);

    if (st->dbias) {
        attn_args_begin(&dbias, ctx, st->dbias, "attn_bwd_dbias");
        arg_common(&dbias, st, b);
        attn_arg_tensor(&dbias, b->dbias, b->dbias_offset, &p->bias.strides);
        attn_arg_int(&dbias, p->batch);
        attn_arg_int(&dbias, p->heads_q);
        attn_arg_int(&dbias, p->bias.batch);
        attn_arg_int(&dbias, p->bias.heads);
        attn_arg_float(&dbias, p->scale);
        attn_arg_features(&dbias, pb, &b->f);
        if (status == ATTN_SUCCESS)
            status = attn_args_end(&dbias);
    }
    if (status != ATTN_SUCCESS)
        return status;

    /* The queue is in order: each kernel runs after the one before. */
    const size_t one[3] = {1, 1, 1};
    const size_t q_rows[3] = {(size_t)p->seq_q, (size_t)p->heads_q, (size_t)p->batch};
    /* cpu shape: a work-item a split of a kv head's keys, then one a dQ
     * row; gpu: a group of own * tpo work-items a block of own rows. */
    const size_t own = (size_t)st->own, items = st->gpu ? (size_t)(st->own * st->tpo) : 1;
    const size_t group[3] = {items, 1, 1};
    const size_t q_blocks[3] = {st->gpu ? ((size_t)p->seq_q + own - 1) / own * items
                                        : (size_t)p->seq_q,
                                (size_t)p->heads_q, (size_t)p->batch};
    const size_t k_blocks[3] = {st->gpu ? ((size_t)p->seq_k + own - 1) / own * items
                                        : (size_t)st->splits,
                                (size_t)p->heads_kv, (size_t)p->batch};
    const size_t scores[3] = {(size_t)p->seq_k, (size_t)p->seq_q,
                              (size_t)p->bias.batch * (size_t)p->bias.heads};
    status =
        attn_enqueue_kernel(ctx, st->dot, "attn_bwd_dot", q_rows, one, num_wait, wait_list, NULL);
    if (status == ATTN_SUCCESS)
        status =
            attn_enqueue_kernel(ctx, st->dkdv, "attn_bwd_dkdv", k_blocks, group, 0, NULL, NULL);
    if (status == ATTN_SUCCESS)
        status = attn_enqueue_kernel(ctx, st->dq, dq_name, q_blocks, group, 0, NULL,
                                     st->dbias ? NULL : done);
    if (status == ATTN_SUCCESS && st->dbias)
        status = attn_enqueue_kernel(ctx, st->dbias, "attn_bwd_dbias", scores, one, 0, NULL, done);
    if (status != ATTN_SUCCESS) {
        clFinish(ctx->queue);
        if (done && *done) {
            clReleaseEvent(*done);
            *done = NULL;
        }
    }
    return status;
}

/* ---- Validation -------------------------------------------------------------- */

/* The backward has one algorithm, whatever the forward used. */
static attn_status backward_problem(attn_context_t ctx, const attn_params *params,
                                    attn_problem *pb) {
    if (!params)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT, "params is NULL");
    attn_params request = *params;
    request.algo = ATTN_ALGO_AUTO;
    return attn_problem_make(ctx, &request, 1, 0, pb);
}

/* What both calls check of the tensors before any device work: LSE, the
 * operands params ask for, dbias, the input arrays. */
static attn_status check_tensors(attn_context_t ctx, const char *call, const attn_problem *pb,
                                 int has_lse, int has_bias, int has_keep_mask, int has_dbias,
                                 const attn_input_arrays *arrays, unsigned on_device) {
    const attn_params *p = &pb->p;
    if (!has_lse)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT,
                         "%s: lse is NULL; the backward needs the forward's log-sum-exp", call);
    if (p->bias.present && !has_bias)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT, "%s: params ask for a bias, which is NULL",
                         call);
    if (p->keep_mask.present && !has_keep_mask)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT,
                         "%s: params ask for a keep_mask, which is NULL", call);
    if (has_dbias && !p->bias.present)
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                         "%s: dbias is asked for, but params have no bias", call);
    return attn_problem_check_arrays(ctx, pb, arrays, on_device);
}

/* The input arrays: the caller's device buffers, or device copies of the
 * host arrays (written blocking: they are small) in `own`, created once. */
static attn_status arrays_to_device(attn_context_t ctx, const attn_problem *pb,
                                    const attn_input_arrays *host,
                                    const cl_mem on_device[ATTN_INPUT_COUNT],
                                    cl_mem own[ATTN_INPUT_COUNT], cl_mem out[ATTN_INPUT_COUNT]) {
    attn_status status = ATTN_SUCCESS;
    int have_own = 0;
    for (int i = 0; i < ATTN_INPUT_COUNT; i++) {
        out[i] = NULL;
        have_own |= own[i] != NULL;
    }
    if (!have_own)
        status = attn_input_arrays_create(ctx, pb, own);
    for (int i = 0; i < ATTN_INPUT_COUNT && status == ATTN_SUCCESS; i++) {
        const size_t bytes = attn_input_array_bytes(pb, (attn_input_array)i);
        if (!bytes)
            continue;
        if (on_device && on_device[i]) {
            out[i] = on_device[i];
            continue;
        }
        cl_int err =
            clEnqueueWriteBuffer(ctx->queue, own[i], CL_TRUE, 0, bytes,
                                 attn_input_array_host(host, (attn_input_array)i), 0, NULL, NULL);
        if (err != CL_SUCCESS)
            status = attn_fail(ctx, (attn_status)err, "clEnqueueWriteBuffer for %s failed: %s (%d)",
                               attn_input_array_name((attn_input_array)i), attn_cl_error_name(err),
                               (int)err);
        out[i] = own[i];
    }
    return status;
}

/* ---- What executes keep ------------------------------------------------------- */

enum { T_Q, T_K, T_V, T_O, T_DOUT, T_LSE, T_BIAS, T_KEEP, T_DQ, T_DK, T_DV, T_DBIAS, T_COUNT };

/* Device buffers and host staging kept between executes of a plan (a
 * one-call releases them at its end): D, the input arrays' copies, and the
 * host call's tensors and gradients. */
typedef struct backward_kept {
    cl_mem delta;
    cl_mem dq_part; /* cpu shape only */
    cl_mem arrays[ATTN_INPUT_COUNT];
    cl_mem mem[T_COUNT];
    void *staging[4]; /* dQ, dK, dV, dBias */
} backward_kept;

static void kept_release(backward_kept *k) {
    if (k->delta)
        clReleaseMemObject(k->delta);
    if (k->dq_part)
        clReleaseMemObject(k->dq_part);
    attn_input_arrays_release(k->arrays);
    for (int i = 0; i < T_COUNT; i++)
        if (k->mem[i])
            clReleaseMemObject(k->mem[i]);
    for (int i = 0; i < 4; i++)
        free(k->staging[i]);
    memset(k, 0, sizeof *k);
}

/* The workspace: D, and the cpu shape's partial dQ. */
static attn_status kept_workspace(attn_context_t ctx, const backward_state *st, backward_kept *k) {
    attn_status status = ATTN_SUCCESS;
    if (!k->delta)
        status = attn_create_buffer(ctx, "the backward's D", delta_elems(&st->pb) * sizeof(float),
                                    &k->delta);
    if (status == ATTN_SUCCESS && !st->gpu && !k->dq_part)
        status = attn_create_buffer(ctx, "the backward's partial dQ",
                                    (size_t)st->splits * delta_elems(&st->pb) *
                                        (size_t)st->pb.p.head_dim * sizeof(float),
                                    &k->dq_part);
    return status;
}

/* A plan's backward (attn_plan_create with ATTN_PLAN_BACKWARD), its ext. */
typedef struct backward_ext {
    backward_state *st;
    backward_kept kept;
} backward_ext;

static void backward_ext_free(void *ext) {
    backward_ext *e = ext;
    if (!e)
        return;
    kept_release(&e->kept);
    backward_state_free(e->st);
    free(e);
}

attn_status attn_backward_attach(attn_context_t ctx, attn_plan_t plan) {
    backward_ext *e = calloc(1, sizeof *e);
    if (!e)
        return attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY, "cannot allocate a plan's backward");
    attn_problem pb = *attn_plan_problem(plan);
    pb.want_lse = 1;
    pb.want_probs = 0;
    /* dBias may be asked of any execute: its kernel is built with the plan. */
    attn_status status = backward_state_make(ctx, &pb, pb.p.bias.present, &e->st);
    if (status != ATTN_SUCCESS) {
        free(e);
        return status;
    }
    attn_plan_set_ext(plan, e, backward_ext_free);
    return ATTN_SUCCESS;
}

/* ---- Device execute ------------------------------------------------------------- */

static attn_status execute_device(attn_context_t ctx, const char *call, const backward_state *st,
                                  backward_kept *kept, const attn_backward_device_tensors *t,
                                  cl_uint num_wait, const cl_event *wait_list, cl_event *event) {
    if (!t || !t->q || !t->k || !t->v || !t->o || !t->dout || !t->dq || !t->dk || !t->dv)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT,
                         "%s: tensors and their q, k, v, o, dout, dq, dk and dv are required",
                         call);
    if ((num_wait > 0) != (wait_list != NULL))
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                         "wait_list must be NULL exactly when num_wait_events is 0");
    if (t->dbias && !st->dbias && st->pb.p.bias.present)
        return attn_fail(ctx, ATTN_ERR_UNSUPPORTED, "%s: the dBias kernel was not built", call);
    cl_mem on_device[ATTN_INPUT_COUNT] = {
#define DEVICE_ROW(name, type, count, enabled) [ATTN_INPUT_##name] = t->name##_mem,
        ATTN_INPUT_ARRAYS(DEVICE_ROW)
#undef DEVICE_ROW
    };
    unsigned on_device_mask = 0;
    for (int i = 0; i < ATTN_INPUT_COUNT; i++)
        if (on_device[i])
            on_device_mask |= 1u << i;
    const attn_input_arrays host_arrays = attn_input_arrays_of_backward_device(t);
    const attn_problem *pb = &st->pb;
    attn_status status =
        check_tensors(ctx, call, pb, t->lse != NULL, t->bias != NULL, t->keep_mask != NULL,
                      t->dbias != NULL, &host_arrays, on_device_mask);
    if (status != ATTN_SUCCESS)
        return status;

    backward_args b = {.f = {.q = t->q,
                             .k = t->k,
                             .v = t->v,
                             .o = t->o,
                             .lse = t->lse,
                             .bias = pb->p.bias.present ? t->bias : NULL,
                             .keep_mask = pb->p.keep_mask.present ? t->keep_mask : NULL,
                             .callers_outputs = 1},
                       .dout = t->dout,
                       .dq = t->dq,
                       .dk = t->dk,
                       .dv = t->dv,
                       .dbias = t->dbias};
    const size_t es = pb->element_size;
    const attn_mem_range ranges[T_COUNT] = {
        {"Q", t->q, t->q_offset, pb->q_extent, es, &b.f.q_offset},
        {"K", t->k, t->k_offset, pb->k_extent, es, &b.f.k_offset},
        {"V", t->v, t->v_offset, pb->v_extent, es, &b.f.v_offset},
        {"O", t->o, t->o_offset, pb->o_extent, es, &b.f.o_offset},
        {"dO", t->dout, t->dout_offset, pb->o_extent, es, &b.dout_offset},
        {"LSE", t->lse, t->lse_offset, pb->lse_extent, sizeof(float), &b.f.lse_offset},
        {"the bias", b.f.bias, t->bias_offset, pb->bias_extent, sizeof(float), &b.f.bias_offset},
        {"the keep_mask", b.f.keep_mask, t->keep_mask_offset, pb->keep_mask_extent, 1,
         &b.f.keep_mask_offset},
        /* The outputs last: attn_check_disjoint's convention. */
        {"dQ", t->dq, t->dq_offset, pb->q_extent, es, &b.dq_offset},
        {"dK", t->dk, t->dk_offset, pb->k_extent, es, &b.dk_offset},
        {"dV", t->dv, t->dv_offset, pb->v_extent, es, &b.dv_offset},
        {"dBias", t->dbias, t->dbias_offset, pb->bias_extent, sizeof(float), &b.dbias_offset},
    };
    for (int i = 0; i < T_COUNT && status == ATTN_SUCCESS; i++)
        if (ranges[i].mem)
            status = attn_check_device_tensor(ctx, ranges[i].name, ranges[i].mem, ranges[i].offset,
                                              ranges[i].extent, ranges[i].element_size,
                                              ranges[i].element_offset);
    if (status == ATTN_SUCCESS)
        status = attn_check_disjoint(ctx, call, ranges, T_COUNT, T_DQ);
    if (status == ATTN_SUCCESS)
        status = kept_workspace(ctx, st, kept);
    if (status == ATTN_SUCCESS)
        status = arrays_to_device(ctx, pb, &host_arrays, on_device, kept->arrays, b.f.arrays);
    b.f.workspace = kept->delta;
    b.f.workspace_offset = 0;
    b.dq_part = kept->dq_part;
    if (status == ATTN_SUCCESS)
        status = backward_run(ctx, st, &b, num_wait, wait_list, event);
    return status;
}

attn_status attn_backward_device(attn_context_t ctx, const attn_params *params,
                                 const attn_backward_device_tensors *t, cl_uint num_wait,
                                 const cl_event *wait_list, cl_event *event) {
    const char *call = "attn_backward_device";
    if (event)
        *event = NULL;
    if (!ctx)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "%s: ctx is NULL", call);
    if (!t || !t->q || !t->k || !t->v || !t->o || !t->dout || !t->dq || !t->dk || !t->dv)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT,
                         "%s: tensors and their q, k, v, o, dout, dq, dk and dv are required",
                         call);
    attn_problem pb;
    attn_status status = backward_problem(ctx, params, &pb);
    /* The cheap checks before any kernel is built. */
    const attn_input_arrays host_arrays = attn_input_arrays_of_backward_device(t);
    unsigned on_device_mask = 0;
    const cl_mem on_device[ATTN_INPUT_COUNT] = {
#define DEVICE_ROW(name, type, count, enabled) [ATTN_INPUT_##name] = t->name##_mem,
        ATTN_INPUT_ARRAYS(DEVICE_ROW)
#undef DEVICE_ROW
    };
    for (int i = 0; i < ATTN_INPUT_COUNT; i++)
        if (on_device[i])
            on_device_mask |= 1u << i;
    if (status == ATTN_SUCCESS)
        status =
            check_tensors(ctx, call, &pb, t->lse != NULL, t->bias != NULL, t->keep_mask != NULL,
                          t->dbias != NULL, &host_arrays, on_device_mask);
    backward_state *st = NULL;
    if (status == ATTN_SUCCESS)
        status = backward_state_make(ctx, &pb, t->dbias != NULL, &st);
    backward_kept kept = {0};
    if (status == ATTN_SUCCESS)
        status = execute_device(ctx, call, st, &kept, t, num_wait, wait_list, event);
    /* Released now, freed by OpenCL once the enqueued kernels are done. */
    kept_release(&kept);
    backward_state_free(st);
    return status;
}

/* ---- Host execute -------------------------------------------------------------- */

static attn_status execute_host(attn_context_t ctx, const char *call, const backward_state *st,
                                backward_kept *kept, const attn_backward_host_tensors *t) {
    if (!t || !t->q || !t->k || !t->v || !t->o || !t->dout || !t->dq || !t->dk || !t->dv)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT,
                         "%s: tensors and their q, k, v, o, dout, dq, dk and dv are required",
                         call);
    const attn_problem *pb = &st->pb;
    const attn_input_arrays host_arrays = attn_input_arrays_of_backward_host(t);
    attn_status status = check_tensors(ctx, call, pb, t->lse != NULL, t->bias != NULL,
                                       t->keep_mask != NULL, t->dbias != NULL, &host_arrays, 0);
    if (status != ATTN_SUCCESS)
        return status;
    const attn_params *p = &pb->p;
    const size_t es = pb->element_size;

    /* Device copies of every tensor, host staging of the gradients: made on
     * the first execute, kept by a plan. */
    const struct {
        const char *name;
        const void *host;
        size_t bytes;
    } tensors[T_COUNT] = {
        {"Q", t->q, pb->q_extent * es},
        {"K", t->k, pb->k_extent * es},
        {"V", t->v, pb->v_extent * es},
        {"O", t->o, pb->o_extent * es},
        {"dO", t->dout, pb->o_extent * es},
        {"LSE", t->lse, pb->lse_extent * sizeof(float)},
        {"the bias", p->bias.present ? t->bias : NULL, pb->bias_extent * sizeof(float)},
        {"the keep_mask", p->keep_mask.present ? t->keep_mask : NULL, pb->keep_mask_extent},
        {"dQ", NULL, pb->q_extent * es},
        {"dK", NULL, pb->k_extent * es},
        {"dV", NULL, pb->v_extent * es},
        {"dBias", NULL, p->bias.present ? pb->bias_extent * sizeof(float) : 0},
    };
    for (int i = 0; i < T_COUNT && status == ATTN_SUCCESS; i++) {
        const int needed = tensors[i].host || (i >= T_DQ && tensors[i].bytes);
        if (needed && !kept->mem[i])
            status = attn_create_buffer(ctx, tensors[i].name, tensors[i].bytes, &kept->mem[i]);
    }
    for (int i = 0; i < 4 && status == ATTN_SUCCESS; i++) {
        if (!kept->mem[T_DQ + i] || kept->staging[i])
            continue;
        kept->staging[i] = malloc(tensors[T_DQ + i].bytes);
        if (!kept->staging[i])
            status = attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY,
                               "cannot allocate %zu bytes of host staging for %s",
                               tensors[T_DQ + i].bytes, tensors[T_DQ + i].name);
    }
    if (status == ATTN_SUCCESS)
        status = kept_workspace(ctx, st, kept);
    cl_mem *mem = kept->mem;
    backward_args b = {.f = {.q = mem[T_Q],
                             .k = mem[T_K],
                             .v = mem[T_V],
                             .o = mem[T_O],
                             .lse = mem[T_LSE],
                             .bias = mem[T_BIAS],
                             .keep_mask = mem[T_KEEP],
                             .workspace = kept->delta},
                       .dq_part = kept->dq_part,
                       .dout = mem[T_DOUT],
                       .dq = mem[T_DQ],
                       .dk = mem[T_DK],
                       .dv = mem[T_DV],
                       .dbias = t->dbias ? mem[T_DBIAS] : NULL};
    if (status == ATTN_SUCCESS)
        status = arrays_to_device(ctx, pb, &host_arrays, NULL, kept->arrays, b.f.arrays);
    for (int i = 0; i < T_DQ && status == ATTN_SUCCESS; i++)
        if (tensors[i].host)
            status =
                attn_write_buffer(ctx, tensors[i].name, mem[i], tensors[i].bytes, tensors[i].host);
    if (status == ATTN_SUCCESS)
        status = backward_run(ctx, st, &b, 0, NULL, NULL);
    void *dst[4] = {t->dq, t->dk, t->dv, t->dbias};
    for (int i = 0; i < 4 && status == ATTN_SUCCESS; i++)
        if (dst[i])
            status = attn_read_buffer(ctx, tensors[T_DQ + i].name, mem[T_DQ + i],
                                      tensors[T_DQ + i].bytes, kept->staging[i]);
    if (status == ATTN_SUCCESS) {
        /* Only the rows the kernels wrote reach the caller's memory. */
        const int32_t *cu_q = p->varlen ? t->cu_seqlens_q : NULL;
        const int32_t *cu_k = p->varlen ? t->cu_seqlens_k : NULL;
        const int64_t rows_q = p->varlen ? p->total_q : p->seq_q;
        const int64_t rows_k = p->varlen ? p->total_k : p->seq_k;
        /* With varlen, batch counts the sequences. */
        const attn_output_rows rows[4] = {
            {p->batch, p->heads_q, rows_q, p->head_dim, p->q_strides, es, cu_q},
            {p->batch, p->heads_kv, rows_k, p->head_dim, p->k_strides, es, cu_k},
            {p->batch, p->heads_kv, rows_k, p->head_dim_v, p->v_strides, es, cu_k},
            {p->bias.batch, p->bias.heads, p->seq_q, p->seq_k, p->bias.strides, sizeof(float),
             NULL},
        };
        for (int i = 0; i < 4; i++)
            if (dst[i])
                attn_copy_output_rows(dst[i], kept->staging[i], &rows[i]);
    } else {
        clFinish(ctx->queue); /* writes from the caller's memory may be queued */
    }
    return status;
}

attn_status attn_backward_host(attn_context_t ctx, const attn_params *params,
                               const attn_backward_host_tensors *t) {
    const char *call = "attn_backward_host";
    if (!ctx)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "%s: ctx is NULL", call);
    if (!t || !t->q || !t->k || !t->v || !t->o || !t->dout || !t->dq || !t->dk || !t->dv)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT,
                         "%s: tensors and their q, k, v, o, dout, dq, dk and dv are required",
                         call);
    attn_problem pb;
    attn_status status = backward_problem(ctx, params, &pb);
    const attn_input_arrays host_arrays = attn_input_arrays_of_backward_host(t);
    if (status == ATTN_SUCCESS)
        status = check_tensors(ctx, call, &pb, t->lse != NULL, t->bias != NULL,
                               t->keep_mask != NULL, t->dbias != NULL, &host_arrays, 0);
    backward_state *st = NULL;
    if (status == ATTN_SUCCESS)
        status = backward_state_make(ctx, &pb, t->dbias != NULL, &st);
    backward_kept kept = {0};
    if (status == ATTN_SUCCESS)
        status = execute_host(ctx, call, st, &kept, t);
    kept_release(&kept);
    backward_state_free(st);
    return status;
}

/* ---- Plan executes ----------------------------------------------------------------- */

static attn_status plan_backward(attn_plan_t plan, const char *call, backward_ext **out) {
    if (!plan)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "%s: plan is NULL", call);
    if (!(attn_plan_outputs(plan) & ATTN_PLAN_BACKWARD) || attn_plan_problem(plan)->kv.enabled)
        return attn_fail(attn_plan_context(plan), ATTN_ERR_INVALID_VALUE,
                         "%s: the plan was made without ATTN_PLAN_BACKWARD", call);
    *out = attn_plan_ext(plan);
    return ATTN_SUCCESS;
}

attn_status attn_plan_execute_backward_host(attn_plan_t plan,
                                            const attn_backward_host_tensors *tensors) {
    const char *call = "attn_plan_execute_backward_host";
    backward_ext *e = NULL;
    attn_status status = plan_backward(plan, call, &e);
    if (status != ATTN_SUCCESS)
        return status;
    attn_plan_lock(plan);
    status = execute_host(attn_plan_context(plan), call, e->st, &e->kept, tensors);
    attn_plan_unlock(plan);
    return status;
}

attn_status attn_plan_execute_backward_device(attn_plan_t plan,
                                              const attn_backward_device_tensors *tensors,
                                              cl_uint num_wait_events, const cl_event *wait_list,
                                              cl_event *event) {
    const char *call = "attn_plan_execute_backward_device";
    if (event)
        *event = NULL;
    backward_ext *e = NULL;
    attn_status status = plan_backward(plan, call, &e);
    if (status != ATTN_SUCCESS)
        return status;
    attn_plan_lock(plan);
    status = execute_device(attn_plan_context(plan), call, e->st, &e->kept, tensors,
                            num_wait_events, wait_list, event);
    attn_plan_unlock(plan);
    return status;
}
