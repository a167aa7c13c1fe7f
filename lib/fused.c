/* The fused path: FlashAttention-style tile-by-tile online softmax in one
 * kernel, O(seq) memory. Two kernel shapes (tuning.c picks one per device):
 * the cpu variant (kernels/flash_cpu.cl) packs K into key tiles in a
 * temporary buffer and runs one work-item per block of query rows; the gpu
 * variant (kernels/flash_gpu.cl) runs one work-group per block of query rows
 * with its tiles in local memory. */
#include "attn_internal.h"
#include "tuning.h"

#include <float.h>
#include <math.h>
#include <stdio.h>

#define LOG2_E 1.4426950408889634

typedef struct fused_config {
    attn_tuning t;
    char options[256];
    size_t k_tiles;      /* cpu: key tiles per head */
    size_t packed_bytes; /* cpu: the packed K buffer */
} fused_config;

/* Bytes of local memory the gpu variant declares (kernels/flash_gpu.cl). */
static size_t gpu_local_bytes(const attn_params *p, const attn_tuning *t) {
    const size_t kv_width = (size_t)(p->head_dim > p->head_dim_v ? p->head_dim : p->head_dim_v);
    const size_t floats = (size_t)t->rows * ((size_t)p->head_dim + 1) +
                          (size_t)t->tile_k * (kv_width + 1) +
                          (size_t)t->rows * ((size_t)t->tile_k + 1) + (size_t)t->wg;
    return floats * sizeof(float);
}

static attn_status configure(attn_context_t ctx, const attn_plan *plan, fused_config *cfg) {
    const attn_params *p = &plan->p;
    const int head_dim = p->head_dim > p->head_dim_v ? p->head_dim : p->head_dim_v;
    attn_status status = attn_tuning_lookup(ctx, head_dim, &cfg->t);
    if (status != ATTN_SUCCESS)
        return status;
    attn_tuning *t = &cfg->t;
    char text[160];
    attn_tuning_format(t, text, sizeof text);

    if (t->variant == ATTN_FUSED_CPU) {
        cfg->k_tiles = ((size_t)p->seq_k + (size_t)t->tile_k - 1) / (size_t)t->tile_k;
        /* B * Hkv * tiles * tile_k * D floats; plan.c bounds each factor. */
        const size_t per_head = cfg->k_tiles * (size_t)t->tile_k * (size_t)p->head_dim;
        const size_t heads = (size_t)p->batch * (size_t)p->heads_kv;
        if (per_head > SIZE_MAX / sizeof(float) / heads)
            return attn_fail(ctx, ATTN_ERR_SIZE_OVERFLOW,
                             "the fused path's packed K (%zu heads x %zu floats) overflows size_t",
                             heads, per_head);
        cfg->packed_bytes = heads * per_head * sizeof(float);
        if (ctx->info.max_alloc_bytes && cfg->packed_bytes > ctx->info.max_alloc_bytes)
            return attn_fail(ctx, ATTN_ERR_DEVICE_OUT_OF_MEMORY,
                             "the fused cpu variant packs K into %zu bytes, above the device's "
                             "largest allocation (%llu); ATTN_CL_TUNE=variant=gpu needs none",
                             cfg->packed_bytes, (unsigned long long)ctx->info.max_alloc_bytes);
        snprintf(cfg->options, sizeof cfg->options,
                 "-w -DHEAD_DIM=%d -DHEAD_DIM_V=%d -DMASK_MODE=%d -DHAS_LSE=%d -DROWS=%d "
                 "-DTILE_K=%d -DVEC_V=%d -DUNROLL=%d",
                 p->head_dim, p->head_dim_v, (int)p->mask, plan->want_lse, t->rows, t->tile_k,
                 t->vec, t->unroll);
        return ATTN_SUCCESS;
    }

    size_t max_wg = 0;
    cl_int err =
        clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof max_wg, &max_wg, NULL);
    if (err != CL_SUCCESS)
        return attn_fail_cl(ctx, err, "clGetDeviceInfo(CL_DEVICE_MAX_WORK_GROUP_SIZE)");
    if ((size_t)t->wg > max_wg)
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                         "fused tuning %s: wg is above the device's %zu work-items a group", text,
                         max_wg);
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
    if (gpu_local_bytes(p, t) > ctx->info.local_mem_bytes) {
        attn_tuning_format(t, text, sizeof text);
        return attn_fail(ctx, ATTN_ERR_UNSUPPORTED,
                         "fused tuning %s: head_dim %d / head_dim_v %d need %zu bytes of local "
                         "memory even for one row; the device has %llu",
                         text, p->head_dim, p->head_dim_v, gpu_local_bytes(p, t),
                         (unsigned long long)ctx->info.local_mem_bytes);
    }
    snprintf(cfg->options, sizeof cfg->options,
             "-w -DHEAD_DIM=%d -DHEAD_DIM_V=%d -DMASK_MODE=%d -DHAS_LSE=%d -DBLOCK_M=%d "
             "-DBLOCK_N=%d -DTPR=%d",
             p->head_dim, p->head_dim_v, (int)p->mask, plan->want_lse, t->rows, t->tile_k, per_row);
    return ATTN_SUCCESS;
}

typedef struct fused_kernels {
    cl_kernel pack, main;
} fused_kernels;

static attn_status get_kernels(attn_context_t ctx, const fused_config *cfg, fused_kernels *k) {
    k->pack = NULL;
    if (cfg->t.variant == ATTN_FUSED_CPU) {
        attn_status status =
            attn_get_kernel(ctx, "flash_cpu", "flash_cpu_pack_k", cfg->options, &k->pack);
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
    if ((size_t)cfg->t.wg > kernel_wg) {
        char text[160];
        attn_tuning_format(&cfg->t, text, sizeof text);
        return attn_fail(ctx, ATTN_ERR_UNSUPPORTED,
                         "fused tuning %s: flash_gpu runs at most %zu work-items a group on this "
                         "device; set a smaller wg (ATTN_CL_TUNE)",
                         text, kernel_wg);
    }
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

attn_status attn_fused_run(attn_context_t ctx, const attn_plan *plan, const attn_device_args *a,
                           cl_uint num_wait, const cl_event *wait_list, cl_event *done) {
    const attn_params *p = &plan->p;
    fused_config cfg;
    fused_kernels k;
    if (done)
        *done = NULL;
    attn_status status = configure(ctx, plan, &cfg);
    if (status == ATTN_SUCCESS)
        status = get_kernels(ctx, &cfg, &k);
    if (status != ATTN_SUCCESS)
        return status;

    const cl_ulong q_off = a->q_offset, k_off = a->k_offset, v_off = a->v_offset,
                   o_off = a->o_offset, lse_off = a->lse_offset;
    const cl_long q_sb = p->q_strides.batch, q_sh = p->q_strides.head, q_ss = p->q_strides.seq;
    const cl_long k_sb = p->k_strides.batch, k_sh = p->k_strides.head, k_ss = p->k_strides.seq;
    const cl_long v_sb = p->v_strides.batch, v_sh = p->v_strides.head, v_ss = p->v_strides.seq;
    const cl_long o_sb = p->o_strides.batch, o_sh = p->o_strides.head, o_ss = p->o_strides.seq;
    const cl_long l_sb = p->lse_strides.batch, l_sh = p->lse_strides.head,
                  l_ss = p->lse_strides.seq;
    const cl_int seq_q = p->seq_q, seq_k = p->seq_k, group = plan->group, heads_kv = p->heads_kv;
    /* The kernels multiply -INFINITY scores by |scale_log2|: keep it from
     * rounding to 0 (a scale below 1e-38 gives uniform weights either way). */
    cl_float scale_log2 = (cl_float)((double)p->scale * LOG2_E);
    if (fabsf(scale_log2) < FLT_MIN)
        scale_log2 = copysignf(FLT_MIN, scale_log2);
    /* HAS_LSE=0 kernels never touch it, but the argument needs a buffer. */
    const cl_mem lse = a->lse ? a->lse : a->o;
    const size_t rows = (size_t)cfg.t.rows;
    const size_t blocks = ((size_t)p->seq_q + rows - 1) / rows;

    if (cfg.t.variant == ATTN_FUSED_GPU) {
        status = attn_set_kernel_args(
            ctx, k.main, "flash_gpu", 29, ATTN_ARG(a->q), ATTN_ARG(q_off), ATTN_ARG(q_sb),
            ATTN_ARG(q_sh), ATTN_ARG(q_ss), ATTN_ARG(a->k), ATTN_ARG(k_off), ATTN_ARG(k_sb),
            ATTN_ARG(k_sh), ATTN_ARG(k_ss), ATTN_ARG(a->v), ATTN_ARG(v_off), ATTN_ARG(v_sb),
            ATTN_ARG(v_sh), ATTN_ARG(v_ss), ATTN_ARG(a->o), ATTN_ARG(o_off), ATTN_ARG(o_sb),
            ATTN_ARG(o_sh), ATTN_ARG(o_ss), ATTN_ARG(lse), ATTN_ARG(lse_off), ATTN_ARG(l_sb),
            ATTN_ARG(l_sh), ATTN_ARG(l_ss), ATTN_ARG(seq_q), ATTN_ARG(seq_k), ATTN_ARG(group),
            ATTN_ARG(scale_log2));
        if (status != ATTN_SUCCESS)
            return status;
        const size_t wg = (size_t)cfg.t.wg;
        const size_t global[3] = {blocks * wg, (size_t)p->heads_q, (size_t)p->batch};
        const size_t local[3] = {wg, 1, 1};
        return attn_enqueue_kernel(ctx, k.main, "flash_gpu", global, local, num_wait, wait_list,
                                   done);
    }

    cl_int err;
    cl_mem packed = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, cfg.packed_bytes, NULL, &err);
    if (err != CL_SUCCESS)
        return attn_fail(ctx, (attn_status)err,
                         "clCreateBuffer for the fused path's packed K (%zu bytes) failed: %s (%d)",
                         cfg.packed_bytes, attn_cl_error_name(err), (int)err);
    status = attn_set_kernel_args(ctx, k.pack, "flash_cpu_pack_k", 8, ATTN_ARG(a->k),
                                  ATTN_ARG(k_off), ATTN_ARG(k_sb), ATTN_ARG(k_sh), ATTN_ARG(k_ss),
                                  ATTN_ARG(packed), ATTN_ARG(seq_k), ATTN_ARG(heads_kv));
    if (status == ATTN_SUCCESS)
        status = attn_set_kernel_args(
            ctx, k.main, "flash_cpu", 25, ATTN_ARG(a->q), ATTN_ARG(q_off), ATTN_ARG(q_sb),
            ATTN_ARG(q_sh), ATTN_ARG(q_ss), ATTN_ARG(packed), ATTN_ARG(a->v), ATTN_ARG(v_off),
            ATTN_ARG(v_sb), ATTN_ARG(v_sh), ATTN_ARG(v_ss), ATTN_ARG(a->o), ATTN_ARG(o_off),
            ATTN_ARG(o_sb), ATTN_ARG(o_sh), ATTN_ARG(o_ss), ATTN_ARG(lse), ATTN_ARG(lse_off),
            ATTN_ARG(l_sb), ATTN_ARG(l_sh), ATTN_ARG(l_ss), ATTN_ARG(seq_q), ATTN_ARG(seq_k),
            ATTN_ARG(group), ATTN_ARG(scale_log2));
    cl_event packed_ready = NULL;
    if (status == ATTN_SUCCESS) {
        const size_t global[3] = {cfg.k_tiles, (size_t)p->heads_kv, (size_t)p->batch};
        const size_t local[3] = {1, 1, 1};
        status = attn_enqueue_kernel(ctx, k.pack, "flash_cpu_pack_k", global, local, num_wait,
                                     wait_list, &packed_ready);
    }
    if (status == ATTN_SUCCESS) {
        const size_t global[3] = {blocks, (size_t)p->heads_q, (size_t)p->batch};
        const size_t local[3] = {1, 1, 1};
        status =
            attn_enqueue_kernel(ctx, k.main, "flash_cpu", global, local, 1, &packed_ready, done);
        if (status != ATTN_SUCCESS)
            clFinish(ctx->queue); /* the packing kernel still uses the buffer */
    }
    if (packed_ready)
        clReleaseEvent(packed_ready);
    clReleaseMemObject(packed); /* freed once the enqueued kernels complete */
    return status;
}
