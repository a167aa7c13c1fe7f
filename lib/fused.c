/* The fused path: FlashAttention-style tile-by-tile online softmax in one
 * kernel, O(seq) memory. Two kernel shapes (tuning.c picks one per device):
 * the cpu variant (kernels/flash_cpu.cl) packs K (and V, for 16-bit storage)
 * into float key tiles in temporary buffers and runs one work-item per block
 * of query rows; the gpu variant (kernels/flash_gpu.cl) runs one work-group
 * per block of query rows with its tiles in local memory. Either way the
 * caller's O and LSE are written only by the last kernel. */
#include "attn_internal.h"
#include "tuning.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* The fused path's decisions for one problem (attn_algo_state). */
struct attn_algo_state {
    attn_problem pb;
    attn_tuning t;
    attn_tuning_origin origin; /* which of t's keys the caller's overrides set */
    char options[512];
    /* cpu: key tiles in the packed copies (every kv head has total_tiles:
     * batch * tiles of seq_k, or with varlen at most total_k / tile_k plus
     * one partial tile a sequence), and their sizes in the workspace. */
    size_t total_tiles;
    size_t packed_k_bytes, packed_v_bytes; /* packed_v_bytes 0: V is read in place */
    size_t v_finite_bytes; /* with dropout: an int a tile, whether its V is finite */
    cl_kernel pack, main;                  /* pack NULL for the gpu variant */
};
typedef struct attn_algo_state fused_config;

/* Bytes of local memory the gpu variant declares (kernels/flash_gpu.cl). */
static size_t gpu_local_bytes(const attn_params *p, const attn_tuning *t) {
    const size_t kv_width = (size_t)(p->head_dim > p->head_dim_v ? p->head_dim : p->head_dim_v);
    const size_t floats = (size_t)t->rows * ((size_t)p->head_dim + 1) +
                          (size_t)t->tile_k * (kv_width + 1) +
                          (size_t)t->rows * ((size_t)t->tile_k + 1) + (size_t)t->wg;
    return floats * sizeof(float);
}

/* heads * tiles * tile floats * 4 bytes, refused past the device's largest
 * allocation. */
static attn_status packed_size(attn_context_t ctx, const char *what, size_t heads, size_t tiles,
                               size_t tile_floats, size_t *bytes) {
    if (tiles > SIZE_MAX / heads || heads * tiles > SIZE_MAX / sizeof(float) / tile_floats)
        return attn_fail(ctx, ATTN_ERR_SIZE_OVERFLOW,
                         "the fused path's packed %s (%zu heads x %zu tiles) overflows size_t",
                         what, heads, tiles);
    *bytes = heads * tiles * tile_floats * sizeof(float);
    if (ctx->info.max_alloc_bytes && *bytes > ctx->info.max_alloc_bytes)
        return attn_fail(ctx, ATTN_ERR_DEVICE_OUT_OF_MEMORY,
                         "the fused cpu variant packs %s into %zu bytes, above the device's "
                         "largest allocation (%llu); ATTN_CL_TUNE=variant=gpu needs none",
                         what, *bytes, (unsigned long long)ctx->info.max_alloc_bytes);
    return ATTN_SUCCESS;
}

static size_t fused_workspace_bytes(const attn_algo_state *state);

static attn_status configure(attn_context_t ctx, const attn_problem *pb, fused_config *cfg) {
    if (pb->want_probs)
        return attn_fail(ctx, ATTN_ERR_UNSUPPORTED,
                         "the fused path does not materialize probabilities; use "
                         "ATTN_ALGO_THREE_KERNEL or ATTN_ALGO_AUTO");
    const attn_params *p = &pb->p;
    attn_status status = attn_tuning_lookup(ctx, p, &cfg->t, &cfg->origin);
    if (status != ATTN_SUCCESS)
        return status;
    attn_tuning *t = &cfg->t;
    if (t->variant == ATTN_FUSED_DECODE) /* dispatch.c sends these to decode.c */
        return attn_fail(ctx, ATTN_ERR_UNSUPPORTED, "the fused path has no decode variant");
    if (pb->want_row_stats && t->variant != ATTN_FUSED_CPU) {
        /* Only the cpu shape writes the row statistics the probabilities
         * need; it runs on any device. An override's other choice stands. */
        const unsigned shape_keys = ATTN_TUNE_VARIANT | ATTN_TUNE_ROWS | ATTN_TUNE_TILE_K |
                                    ATTN_TUNE_WG | ATTN_TUNE_VEC | ATTN_TUNE_UNROLL;
        if ((cfg->origin.context | cfg->origin.env) & ATTN_TUNE_VARIANT)
            return attn_tuning_refuse(ctx, t, &cfg->origin, ATTN_TUNE_VARIANT,
                                      "the fused path's probabilities need its cpu variant");
        attn_tuning_take_cpu_shape(t, p->head_dim > p->head_dim_v ? p->head_dim : p->head_dim_v);
        cfg->origin.context &= ~shape_keys;
        cfg->origin.env &= ~shape_keys;
    }
    char features[256];
    attn_feature_options(pb, features, sizeof features);

    if (t->variant == ATTN_FUSED_CPU) {
        const size_t tile = (size_t)t->tile_k;
        cfg->total_tiles = p->varlen ? (size_t)p->total_k / tile + (size_t)p->batch
                                     : (size_t)p->batch * (((size_t)p->seq_k + tile - 1) / tile);
        status = packed_size(ctx, "K", (size_t)p->heads_kv, cfg->total_tiles,
                             tile * (size_t)p->head_dim, &cfg->packed_k_bytes);
        cfg->packed_v_bytes = 0;
        if (status == ATTN_SUCCESS && p->dtype != ATTN_DTYPE_F32)
            status = packed_size(ctx, "V", (size_t)p->heads_kv, cfg->total_tiles,
                                 tile * (size_t)p->head_dim_v, &cfg->packed_v_bytes);
        if (status != ATTN_SUCCESS)
            return status;
        /* Fits: the packed K's floats, at least one a tile, do. */
        cfg->v_finite_bytes =
            p->dropout_p > 0.0f ? (size_t)p->heads_kv * cfg->total_tiles * sizeof(cl_int) : 0;
        /* Both copies (and the flags) share one workspace buffer. */
        const size_t workspace = fused_workspace_bytes(cfg);
        if (ctx->info.max_alloc_bytes && workspace > ctx->info.max_alloc_bytes)
            return attn_fail(ctx, ATTN_ERR_DEVICE_OUT_OF_MEMORY,
                             "the fused cpu variant packs K and V into %zu bytes, above the "
                             "device's largest allocation (%llu); ATTN_CL_TUNE=variant=gpu needs "
                             "none",
                             workspace, (unsigned long long)ctx->info.max_alloc_bytes);
        snprintf(cfg->options, sizeof cfg->options,
                 "%s -DHEAD_DIM=%d -DHEAD_DIM_V=%d -DHAS_LSE=%d -DROWS=%d -DTILE_K=%d "
                 "-DVEC_V=%d -DUNROLL=%d%s",
                 features, p->head_dim, p->head_dim_v, pb->want_lse, t->rows, t->tile_k, t->vec,
                 t->unroll, pb->want_row_stats ? " -DHAS_ROW_STATS=1" : "");
        return ATTN_SUCCESS;
    }

    size_t max_wg = 0;
    cl_int err =
        clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof max_wg, &max_wg, NULL);
    if (err != CL_SUCCESS)
        return attn_fail_cl(ctx, err, "clGetDeviceInfo(CL_DEVICE_MAX_WORK_GROUP_SIZE)");
    if ((size_t)t->wg > max_wg)
        return attn_tuning_refuse(ctx, t, &cfg->origin, ATTN_TUNE_VARIANT | ATTN_TUNE_WG,
                                  "wg is above the device's %zu work-items a group", max_wg);
    /* Halve the key tile, then the row block (and the group with it), until
     * the tiles fit the device's local memory: OpenCL guarantees 32 KiB,
     * which one row of every head_dim fits. */
    const int per_row = t->wg / t->rows;
    while (gpu_local_bytes(p, t) > ctx->info.local_mem_bytes) {
        if (t->tile_k / 2 >= per_row && (t->tile_k / 2) % per_row == 0) {
            t->tile_k /= 2;
        } else if (t->rows > 1) {
            t->rows = (t->rows + 1) / 2;
            t->wg = t->rows * per_row;
        } else {
            break;
        }
    }
    if (gpu_local_bytes(p, t) > ctx->info.local_mem_bytes)
        return attn_tuning_refuse(
            ctx, t, &cfg->origin,
            ATTN_TUNE_VARIANT | ATTN_TUNE_ROWS | ATTN_TUNE_TILE_K | ATTN_TUNE_WG,
            "head_dim %d / head_dim_v %d need %zu bytes of local memory, after halving the key "
            "tile and the row block as far as they go; the device has %llu",
            p->head_dim, p->head_dim_v, gpu_local_bytes(p, t),
            (unsigned long long)ctx->info.local_mem_bytes);
    snprintf(cfg->options, sizeof cfg->options,
             "%s -DHEAD_DIM=%d -DHEAD_DIM_V=%d -DHAS_LSE=%d -DBLOCK_M=%d -DBLOCK_N=%d -DTPR=%d",
             features, p->head_dim, p->head_dim_v, pb->want_lse, t->rows, t->tile_k, per_row);
    return ATTN_SUCCESS;
}

/* Builds the state's kernels; the gpu variant's group must also fit what
 * its registers allow on this device. */
static attn_status build(attn_context_t ctx, fused_config *cfg) {
    if (cfg->t.variant == ATTN_FUSED_CPU) {
        attn_status status =
            attn_create_kernel(ctx, "flash_cpu", "flash_cpu_pack", cfg->options, &cfg->pack);
        if (status != ATTN_SUCCESS)
            return status;
        return attn_create_kernel(ctx, "flash_cpu", "flash_cpu", cfg->options, &cfg->main);
    }
    attn_status status =
        attn_create_kernel(ctx, "flash_gpu", "flash_gpu", cfg->options, &cfg->main);
    if (status != ATTN_SUCCESS)
        return status;
    size_t kernel_wg = 0;
    cl_int err = clGetKernelWorkGroupInfo(cfg->main, ctx->device, CL_KERNEL_WORK_GROUP_SIZE,
                                          sizeof kernel_wg, &kernel_wg, NULL);
    if (err != CL_SUCCESS)
        return attn_fail_cl(ctx, err, "clGetKernelWorkGroupInfo(flash_gpu)");
    if ((size_t)cfg->t.wg > kernel_wg)
        return attn_tuning_refuse(
            ctx, &cfg->t, &cfg->origin,
            ATTN_TUNE_VARIANT | ATTN_TUNE_ROWS | ATTN_TUNE_TILE_K | ATTN_TUNE_WG,
            "flash_gpu runs at most %zu work-items a group on this device", kernel_wg);
    return ATTN_SUCCESS;
}

/* The arguments both variants share after the scale: the softmax
 * exponent's factors (attn_softmax_exponent_of). The kernels fold a
 * negative scale's sign into Q and need only its magnitude. */
void attn_arg_exponent(attn_args *args, const attn_params *p) {
    const int modifiers = p->softcap > 0.0f || p->alibi || p->bias.present;
    const attn_softmax_exponent e = attn_softmax_exponent_of(p, modifiers);
    attn_arg_float(args, e.hi);
    attn_arg_float(args, e.lo);
}

static attn_status run_gpu(attn_context_t ctx, const fused_config *cfg, const attn_device_args *a,
                           cl_uint num_wait, const cl_event *wait_list, cl_event *done) {
    const attn_problem *pb = &cfg->pb;
    const attn_params *p = &pb->p;
    /* HAS_LSE=0 kernels never touch it, but the argument needs a buffer. */
    const cl_mem lse = a->lse ? a->lse : a->o;
    attn_args args;
    attn_args_begin(&args, ctx, cfg->main, "flash_gpu");
    attn_arg_tensor(&args, a->q, a->q_offset, &p->q_strides);
    attn_arg_tensor(&args, a->k, a->k_offset, &p->k_strides);
    attn_arg_tensor(&args, a->v, a->v_offset, &p->v_strides);
    attn_arg_tensor(&args, a->o, a->o_offset, &p->o_strides);
    attn_arg_tensor(&args, lse, a->lse_offset, &p->lse_strides);
    attn_arg_int(&args, pb->group);
    attn_arg_float(&args, p->scale);
    attn_arg_exponent(&args, p);
    attn_arg_features(&args, pb, a);
    attn_status status = attn_args_end(&args);
    if (status != ATTN_SUCCESS)
        return status;
    const size_t rows = (size_t)cfg->t.rows, wg = (size_t)cfg->t.wg;
    const size_t blocks = ((size_t)p->seq_q + rows - 1) / rows;
    const size_t global[3] = {blocks * wg, (size_t)p->heads_q, (size_t)p->batch};
    const size_t local[3] = {wg, 1, 1};
    return attn_enqueue_kernel(ctx, cfg->main, "flash_gpu", global, local, num_wait, wait_list,
                               done);
}

/* Where the packed V starts in the workspace, in bytes from its start. */
static size_t packed_v_at(const fused_config *cfg) {
    return attn_round_up(cfg->packed_k_bytes, ATTN_WORKSPACE_ALIGN);
}

/* Where the V-finite flags start (after both packed copies). */
static size_t v_finite_at(const fused_config *cfg) {
    return attn_round_up(packed_v_at(cfg) + cfg->packed_v_bytes, ATTN_WORKSPACE_ALIGN);
}

static attn_status run_cpu(attn_context_t ctx, const fused_config *cfg, const attn_device_args *a,
                           cl_uint num_wait, const cl_event *wait_list, cl_event *done) {
    const attn_problem *pb = &cfg->pb;
    const attn_params *p = &pb->p;
    const size_t kp_off = a->workspace_offset / sizeof(float);
    /* Without a packed V the kernels never read vp; it still needs a buffer. */
    const size_t vp_off =
        cfg->packed_v_bytes ? (a->workspace_offset + packed_v_at(cfg)) / sizeof(float) : kp_off;
    const cl_mem lse = a->lse ? a->lse : a->o;
    const cl_int total_tiles = (cl_int)cfg->total_tiles;
    /* Without dropout the kernels never read the flags (in ints); K's
     * copy stands in. */
    const size_t vf_off = cfg->v_finite_bytes
                              ? (a->workspace_offset + v_finite_at(cfg)) / sizeof(cl_int)
                              : kp_off;

    attn_args pack;
    attn_args_begin(&pack, ctx, cfg->pack, "flash_cpu_pack");
    attn_arg_tensor(&pack, a->k, a->k_offset, &p->k_strides);
    attn_arg_tensor(&pack, a->v, a->v_offset, &p->v_strides);
    attn_arg_buffer(&pack, a->workspace, kp_off);
    attn_arg_buffer(&pack, a->workspace, vp_off);
    attn_arg_buffer(&pack, a->workspace, vf_off);
    attn_arg_int(&pack, total_tiles);
    attn_arg_features(&pack, pb, a);
    attn_status status = attn_args_end(&pack);

    attn_args main;
    attn_args_begin(&main, ctx, cfg->main, "flash_cpu");
    attn_arg_tensor(&main, a->q, a->q_offset, &p->q_strides);
    attn_arg_buffer(&main, a->workspace, kp_off);
    attn_arg_tensor(&main, a->v, a->v_offset, &p->v_strides);
    attn_arg_buffer(&main, a->workspace, vp_off);
    attn_arg_buffer(&main, a->workspace, vf_off);
    attn_arg_tensor(&main, a->o, a->o_offset, &p->o_strides);
    attn_arg_tensor(&main, lse, a->lse_offset, &p->lse_strides);
    if (pb->want_row_stats)
        attn_arg_buffer(&main, a->row_stats, a->row_stats_offset);
    attn_arg_int(&main, pb->group);
    attn_arg_int(&main, total_tiles);
    attn_arg_float(&main, p->scale);
    attn_arg_exponent(&main, p);
    attn_arg_features(&main, pb, a);
    if (status == ATTN_SUCCESS)
        status = attn_args_end(&main);

    cl_event packed_ready = NULL;
    if (status == ATTN_SUCCESS) {
        const size_t tile = (size_t)cfg->t.tile_k;
        const size_t global[3] = {((size_t)p->seq_k + tile - 1) / tile, (size_t)p->heads_kv,
                                  (size_t)p->batch};
        const size_t local[3] = {1, 1, 1};
        status = attn_enqueue_kernel(ctx, cfg->pack, "flash_cpu_pack", global, local, num_wait,
                                     wait_list, &packed_ready);
    }
    if (status == ATTN_SUCCESS) {
        const size_t rows = (size_t)cfg->t.rows;
        const size_t global[3] = {((size_t)p->seq_q + rows - 1) / rows, (size_t)p->heads_q,
                                  (size_t)p->batch};
        const size_t local[3] = {1, 1, 1};
        status =
            attn_enqueue_kernel(ctx, cfg->main, "flash_cpu", global, local, 1, &packed_ready, done);
        if (status != ATTN_SUCCESS)
            clFinish(ctx->queue); /* the packing kernel still uses the workspace */
    }
    if (packed_ready)
        clReleaseEvent(packed_ready);
    return status;
}

attn_fused_cpu_layout attn_fused_cpu_layout_of(const attn_algo_state *state) {
    const attn_fused_cpu_layout l = {
        .options = state->options, .rows = state->t.rows, .total_tiles = state->total_tiles};
    return l;
}

/* ---- The attn_algorithm interface ------------------------------------------ */

static attn_status fused_configure(attn_context_t ctx, const attn_problem *pb,
                                   attn_algo_state **state) {
    fused_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY,
                         "cannot allocate the fused path's state");
    cfg->pb = *pb;
    attn_status status = configure(ctx, &cfg->pb, cfg);
    if (status != ATTN_SUCCESS) {
        free(cfg);
        return status;
    }
    *state = cfg;
    return ATTN_SUCCESS;
}

static attn_status fused_build(attn_context_t ctx, attn_algo_state *state) {
    return build(ctx, state);
}

static size_t fused_workspace_bytes(const attn_algo_state *state) {
    if (state->t.variant != ATTN_FUSED_CPU)
        return 0;
    if (state->v_finite_bytes)
        return v_finite_at(state) + state->v_finite_bytes;
    return state->packed_v_bytes ? packed_v_at(state) + state->packed_v_bytes
                                 : state->packed_k_bytes;
}

static attn_status fused_run(attn_context_t ctx, const attn_algo_state *state,
                             const attn_device_args *args, cl_uint num_wait,
                             const cl_event *wait_list, cl_event *done) {
    if (done)
        *done = NULL;
    return state->t.variant == ATTN_FUSED_GPU
               ? run_gpu(ctx, state, args, num_wait, wait_list, done)
               : run_cpu(ctx, state, args, num_wait, wait_list, done);
}

static void fused_destroy(attn_algo_state *state) {
    if (!state)
        return;
    if (state->pack)
        clReleaseKernel(state->pack);
    if (state->main)
        clReleaseKernel(state->main);
    free(state);
}

const attn_algorithm attn_fused_algorithm = {
    .id = ATTN_ALGO_FUSED,
    .name = "fused",
    .configure = fused_configure,
    .build = fused_build,
    .workspace_bytes = fused_workspace_bytes,
    .run = fused_run,
    .destroy = fused_destroy,
};
