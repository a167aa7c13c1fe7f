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

#define LOG2_E 1.4426950408889634

typedef struct fused_config {
    attn_tuning t;
    attn_tuning_origin origin; /* which of t's keys the caller's overrides set */
    char options[512];
    /* cpu: key tiles in the packed buffers (every kv head has total_tiles:
     * batch * tiles of seq_k, or with varlen at most total_k / tile_k plus
     * one partial tile a sequence), and their sizes. */
    size_t total_tiles;
    size_t packed_k_bytes, packed_v_bytes; /* packed_v_bytes 0: V is read in place */
} fused_config;

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

static attn_status configure(attn_context_t ctx, const attn_plan *plan, fused_config *cfg) {
    const attn_params *p = &plan->p;
    const int head_dim = p->head_dim > p->head_dim_v ? p->head_dim : p->head_dim_v;
    attn_status status = attn_tuning_lookup(ctx, head_dim, &cfg->t, &cfg->origin);
    if (status != ATTN_SUCCESS)
        return status;
    attn_tuning *t = &cfg->t;
    char features[256];
    attn_feature_options(plan, features, sizeof features);

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
        snprintf(cfg->options, sizeof cfg->options,
                 "-w %s -DHEAD_DIM=%d -DHEAD_DIM_V=%d -DHAS_LSE=%d -DROWS=%d -DTILE_K=%d "
                 "-DVEC_V=%d -DUNROLL=%d",
                 features, p->head_dim, p->head_dim_v, plan->want_lse, t->rows, t->tile_k, t->vec,
                 t->unroll);
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
             "-w %s -DHEAD_DIM=%d -DHEAD_DIM_V=%d -DHAS_LSE=%d -DBLOCK_M=%d -DBLOCK_N=%d -DTPR=%d",
             features, p->head_dim, p->head_dim_v, plan->want_lse, t->rows, t->tile_k, per_row);
    return ATTN_SUCCESS;
}

typedef struct fused_kernels {
    cl_kernel pack, main;
} fused_kernels;

static attn_status get_kernels(attn_context_t ctx, const fused_config *cfg, fused_kernels *k) {
    k->pack = NULL;
    if (cfg->t.variant == ATTN_FUSED_CPU) {
        attn_status status =
            attn_get_kernel(ctx, "flash_cpu", "flash_cpu_pack", cfg->options, &k->pack);
        if (status != ATTN_SUCCESS)
            return status;
        return attn_get_kernel(ctx, "flash_cpu", "flash_cpu", cfg->options, &k->main);
    }
    attn_status status = attn_get_kernel(ctx, "flash_gpu", "flash_gpu", cfg->options, &k->main);
    if (status != ATTN_SUCCESS)
        return status;
    /* Registers can cap a kernel's group below the device's limit. */
    size_t kernel_wg = 0;
    cl_int err = clGetKernelWorkGroupInfo(k->main, ctx->device, CL_KERNEL_WORK_GROUP_SIZE,
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

attn_status attn_fused_check(attn_context_t ctx, const attn_plan *plan) {
    fused_config cfg;
    return configure(ctx, plan, &cfg);
}

attn_status attn_fused_prepare(attn_context_t ctx, const attn_plan *plan) {
    fused_config cfg;
    fused_kernels k;
    attn_status status = configure(ctx, plan, &cfg);
    if (status == ATTN_SUCCESS)
        status = get_kernels(ctx, &cfg, &k);
    return status;
}

/* The arguments both variants share: scale * log2(e), kept away from 0 (the
 * kernels multiply -INFINITY scores by its magnitude; a scale below 1e-38
 * gives uniform weights either way). */
static cl_float scale_log2_of(const attn_params *p) {
    cl_float scale_log2 = (cl_float)((double)p->scale * LOG2_E);
    if (fabsf(scale_log2) < FLT_MIN)
        scale_log2 = copysignf(FLT_MIN, scale_log2);
    return scale_log2;
}

static attn_status run_gpu(attn_context_t ctx, const attn_plan *plan, const fused_config *cfg,
                           const fused_kernels *k, const attn_device_args *a, cl_uint num_wait,
                           const cl_event *wait_list, cl_event *done) {
    const attn_params *p = &plan->p;
    const cl_int group = plan->group;
    const cl_float scale = p->scale, scale_log2 = scale_log2_of(p);
    /* HAS_LSE=0 kernels never touch it, but the argument needs a buffer. */
    const cl_mem lse = a->lse ? a->lse : a->o;
    const char *name = "flash_gpu";
    attn_status status =
        attn_set_tensor_args(ctx, k->main, name, 0, a->q, a->q_offset, &p->q_strides);
    if (status == ATTN_SUCCESS)
        status = attn_set_tensor_args(ctx, k->main, name, 5, a->k, a->k_offset, &p->k_strides);
    if (status == ATTN_SUCCESS)
        status = attn_set_tensor_args(ctx, k->main, name, 10, a->v, a->v_offset, &p->v_strides);
    if (status == ATTN_SUCCESS)
        status = attn_set_tensor_args(ctx, k->main, name, 15, a->o, a->o_offset, &p->o_strides);
    if (status == ATTN_SUCCESS)
        status = attn_set_tensor_args(ctx, k->main, name, 20, lse, a->lse_offset, &p->lse_strides);
    if (status == ATTN_SUCCESS)
        status = attn_set_kernel_args(ctx, k->main, name, 25, 3, ATTN_ARG(group), ATTN_ARG(scale),
                                      ATTN_ARG(scale_log2));
    if (status == ATTN_SUCCESS)
        status = attn_set_feature_args(ctx, k->main, name, 28, plan, a);
    if (status != ATTN_SUCCESS)
        return status;
    const size_t rows = (size_t)cfg->t.rows, wg = (size_t)cfg->t.wg;
    const size_t blocks = ((size_t)p->seq_q + rows - 1) / rows;
    const size_t global[3] = {blocks * wg, (size_t)p->heads_q, (size_t)p->batch};
    const size_t local[3] = {wg, 1, 1};
    return attn_enqueue_kernel(ctx, k->main, name, global, local, num_wait, wait_list, done);
}

/* With varlen, where each sequence's packed tiles start: a prefix sum of
 * its tile counts, in a device buffer (NULL otherwise). */
static attn_status upload_tile_bases(attn_context_t ctx, const attn_plan *plan,
                                     const attn_device_args *a, int tile_k, cl_mem *out) {
    const attn_params *p = &plan->p;
    *out = NULL;
    if (!p->varlen)
        return ATTN_SUCCESS;
    int32_t *bases = malloc((size_t)p->batch * sizeof *bases);
    if (!bases)
        return attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY, "cannot allocate %d tile bases",
                         p->batch);
    int32_t next = 0;
    for (int32_t b = 0; b < p->batch; b++) {
        bases[b] = next;
        const int32_t len = a->meta.cu_seqlens_k[b + 1] - a->meta.cu_seqlens_k[b];
        next += (len + tile_k - 1) / tile_k;
    }
    cl_int err;
    *out = clCreateBuffer(ctx->context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                          (size_t)p->batch * sizeof *bases, bases, &err);
    free(bases);
    if (err != CL_SUCCESS) {
        *out = NULL;
        return attn_fail(ctx, (attn_status)err, "clCreateBuffer for the tile bases failed: %s (%d)",
                         attn_cl_error_name(err), (int)err);
    }
    return ATTN_SUCCESS;
}

static attn_status run_cpu(attn_context_t ctx, const attn_plan *plan, const fused_config *cfg,
                           const fused_kernels *k, const attn_device_args *a, cl_uint num_wait,
                           const cl_event *wait_list, cl_event *done) {
    const attn_params *p = &plan->p;
    cl_mem temps[3] = {NULL, NULL, NULL}; /* packed K, packed V, tile bases */
    const size_t bytes[2] = {cfg->packed_k_bytes, cfg->packed_v_bytes};
    attn_status status = ATTN_SUCCESS;
    for (int t = 0; t < 2 && status == ATTN_SUCCESS; t++) {
        if (!bytes[t])
            continue;
        cl_int err;
        temps[t] = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, bytes[t], NULL, &err);
        if (err != CL_SUCCESS) {
            temps[t] = NULL;
            status = attn_fail(ctx, (attn_status)err,
                               "clCreateBuffer for the fused path's packed %s (%zu bytes) failed: "
                               "%s (%d)",
                               t ? "V" : "K", bytes[t], attn_cl_error_name(err), (int)err);
        }
    }
    if (status == ATTN_SUCCESS)
        status = upload_tile_bases(ctx, plan, a, cfg->t.tile_k, &temps[2]);

    const cl_mem kp = temps[0], vp = temps[1] ? temps[1] : temps[0];
    const cl_mem bases = temps[2] ? temps[2] : a->q;
    const cl_mem lse = a->lse ? a->lse : a->o;
    const cl_int group = plan->group, total_tiles = (cl_int)cfg->total_tiles;
    const cl_float scale = p->scale, scale_log2 = scale_log2_of(p);
    const char *pack = "flash_cpu_pack", *name = "flash_cpu";
    if (status == ATTN_SUCCESS)
        status = attn_set_tensor_args(ctx, k->pack, pack, 0, a->k, a->k_offset, &p->k_strides);
    if (status == ATTN_SUCCESS)
        status = attn_set_tensor_args(ctx, k->pack, pack, 5, a->v, a->v_offset, &p->v_strides);
    if (status == ATTN_SUCCESS)
        status = attn_set_kernel_args(ctx, k->pack, pack, 10, 4, ATTN_ARG(kp), ATTN_ARG(vp),
                                      ATTN_ARG(total_tiles), ATTN_ARG(bases));
    if (status == ATTN_SUCCESS)
        status = attn_set_feature_args(ctx, k->pack, pack, 14, plan, a);

    if (status == ATTN_SUCCESS)
        status = attn_set_tensor_args(ctx, k->main, name, 0, a->q, a->q_offset, &p->q_strides);
    if (status == ATTN_SUCCESS)
        status = attn_set_kernel_args(ctx, k->main, name, 5, 1, ATTN_ARG(kp));
    if (status == ATTN_SUCCESS)
        status = attn_set_tensor_args(ctx, k->main, name, 6, a->v, a->v_offset, &p->v_strides);
    if (status == ATTN_SUCCESS)
        status = attn_set_kernel_args(ctx, k->main, name, 11, 1, ATTN_ARG(vp));
    if (status == ATTN_SUCCESS)
        status = attn_set_tensor_args(ctx, k->main, name, 12, a->o, a->o_offset, &p->o_strides);
    if (status == ATTN_SUCCESS)
        status = attn_set_tensor_args(ctx, k->main, name, 17, lse, a->lse_offset, &p->lse_strides);
    if (status == ATTN_SUCCESS)
        status =
            attn_set_kernel_args(ctx, k->main, name, 22, 5, ATTN_ARG(group), ATTN_ARG(total_tiles),
                                 ATTN_ARG(bases), ATTN_ARG(scale), ATTN_ARG(scale_log2));
    if (status == ATTN_SUCCESS)
        status = attn_set_feature_args(ctx, k->main, name, 27, plan, a);

    cl_event packed_ready = NULL;
    if (status == ATTN_SUCCESS) {
        const size_t tile = (size_t)cfg->t.tile_k;
        const size_t global[3] = {((size_t)p->seq_k + tile - 1) / tile, (size_t)p->heads_kv,
                                  (size_t)p->batch};
        const size_t local[3] = {1, 1, 1};
        status = attn_enqueue_kernel(ctx, k->pack, pack, global, local, num_wait, wait_list,
                                     &packed_ready);
    }
    if (status == ATTN_SUCCESS) {
        const size_t rows = (size_t)cfg->t.rows;
        const size_t global[3] = {((size_t)p->seq_q + rows - 1) / rows, (size_t)p->heads_q,
                                  (size_t)p->batch};
        const size_t local[3] = {1, 1, 1};
        status = attn_enqueue_kernel(ctx, k->main, name, global, local, 1, &packed_ready, done);
        if (status != ATTN_SUCCESS)
            clFinish(ctx->queue); /* the packing kernel still uses the buffers */
    }
    if (packed_ready)
        clReleaseEvent(packed_ready);
    for (int t = 0; t < 3; t++) /* freed once the enqueued kernels complete */
        if (temps[t])
            clReleaseMemObject(temps[t]);
    return status;
}

attn_status attn_fused_run(attn_context_t ctx, const attn_plan *plan, const attn_device_args *a,
                           cl_uint num_wait, const cl_event *wait_list, cl_event *done) {
    fused_config cfg;
    fused_kernels k;
    if (done)
        *done = NULL;
    attn_status status = configure(ctx, plan, &cfg);
    if (status == ATTN_SUCCESS)
        status = get_kernels(ctx, &cfg, &k);
    if (status != ATTN_SUCCESS)
        return status;
    return cfg.t.variant == ATTN_FUSED_GPU
               ? run_gpu(ctx, plan, &cfg, &k, a, num_wait, wait_list, done)
               : run_cpu(ctx, plan, &cfg, &k, a, num_wait, wait_list, done);
}
