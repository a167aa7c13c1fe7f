/* The decode algorithm: few query rows over many keys. It reads K and V in
 * place, once for all the query rows of a kv head, where the fused cpu
 * shape would pack all of K on every call. Two kernel shapes, by the
 * tuning's decode_wg: the cpu shape (kernels/flash_decode.cl, decode_wg 1)
 * runs one work-item a block of rows; the gpu shape
 * (kernels/flash_decode_gpu.cl) a work-group, its work-items across the
 * keys and then across head_dim_v. When batch * heads_kv blocks cannot
 * fill the device's compute units, the keys are split and a second kernel merges the splits'
 * partials from the workspace; that kernel is then the only one writing the
 * caller's O and LSE.
 *
 * It is internal: attn_plan_algo reports ATTN_ALGO_FUSED (it is a fused,
 * O(seq)-memory kernel with the fused path's results); dispatch.c chooses it
 * for decode shapes, or for any problem with the fused tuning's
 * variant=decode. */
#include "attn_internal.h"
#include "tuning.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_ROWS 16 /* rows a work-item holds (flash_decode.cl's ROWS) */
#define MAX_SPLITS 64
#define MIN_SPLIT_KEYS 256 /* fewer keys a split and the merge costs more than it saves */
/* A GPU's compute unit hides its memory's latency only with many groups in
 * flight: on an NVIDIA H200 (132 units) the gpu shape read 8 sequences of
 * 16384 f32 tokens in 12.56 ms as 64 groups (splits=1) and 4.22 ms as 192
 * (3 splits, one group and a half a unit), time falling as fast as the
 * groups grew. Automatic splits there aim at this many groups a unit: 8
 * sequences of 16384 f16 tokens 3.59 -> 1.13 ms, and with the kernel's
 * later shape as fast as the best fixed splits (attn_tune --algo decode:
 * 0.58 against 0.57 ms for 4). */
#define GPU_GROUPS_PER_UNIT 8

struct attn_algo_state {
    attn_problem pb;
    int rows;   /* query rows per block (a work-item, or a group) */
    int blocks; /* blocks of rows per kv head */
    int splits; /* key ranges per block */
    int wg;     /* work-items a group: 1 the cpu shape, more the gpu shape */
    const char *kernel; /* its program and main kernel: flash_decode[_gpu] */
    size_t workspace;
    /* With rotary embedding: the rotated Q and k_new, packed
     * [batch, heads, seq_q, head_dim] in the storage type, at these byte
     * offsets into the workspace (after the partials). */
    size_t rotated_q_at, rotated_k_at;
    /* With a cache of another storage type than Q's and append: k_new and
     * v_new in the cache's type, packed, and (int8) their scales, at these
     * byte offsets into the workspace (kernels/kv_convert.cl). */
    size_t converted_k_at, converted_v_at, new_scales_at;
    char options[512];
    cl_kernel main, merge; /* merge NULL with one split */
    cl_kernel rotary;      /* NULL without rotary embedding */
    cl_kernel convert;     /* NULL unless the new rows change storage type */
};
typedef struct attn_algo_state decode_config;

/* The widest vector (a power of two up to max_vec) dividing a row of dim
 * elements, and the least power of two >= n, at most cap: as
 * kernels/decode_rows.cl's VD and flash_decode_gpu.cl's POW2_16/32. */
static int row_vector(int dim, int max_vec) {
    int w = max_vec;
    while (w > 1 && dim % w != 0)
        w /= 2;
    return w;
}
static int pow2_at_least(int n, int cap) {
    int p = 1;
    while (p < n && p < cap)
        p *= 2;
    return p;
}

/* The gpu shape's local memory (kernels/flash_decode_gpu.cl): the block's
 * Q rows, the tile's weights, the trees' scratch and the scratch holding
 * the tile's partial products, then the V sets' accumulators; each array
 * rounded up to 64 bytes, room for a compiler that aligns them. The
 * partial products (KEY_LANES + 1 floats a key a row) dominate: with
 * decode_wg 256 and head_dim 128, 48 KiB hold 2 rows a block. */
static size_t gpu_local_bytes(const attn_params *p, int rows, int wg, int max_vec) {
    const int nd = p->head_dim / row_vector(p->head_dim, max_vec);
    int key_lanes = pow2_at_least(nd, 16);
    key_lanes = key_lanes < wg ? key_lanes : wg;
    const int vc = p->head_dim_v % 4 == 0 ? 4 : p->head_dim_v % 2 == 0 ? 2 : 1;
    int val_lanes = pow2_at_least(p->head_dim_v / vc, 32);
    val_lanes = val_lanes < wg ? val_lanes : wg;
    const size_t parts = (size_t)rows * (size_t)wg * (size_t)(key_lanes + 1);
    const size_t sets = (size_t)(wg / val_lanes) * (size_t)rows * (size_t)p->head_dim_v;
    const size_t scratch = parts > sets ? parts : sets;
    const size_t q = (size_t)rows * (size_t)p->head_dim, tile = (size_t)rows * (size_t)wg;
    return (attn_round_up(q * sizeof(float), 64) + 2 * attn_round_up(tile * sizeof(float), 64) +
            attn_round_up(scratch * sizeof(float), 64));
}

/* The most rows a gpu-shape block may hold: MAX_ROWS, halved until its
 * local memory fits the device's; refused when the group is above the
 * device's limit or one row does not fit. */
static attn_status gpu_shape_rows(attn_context_t ctx, const attn_params *p, const attn_tuning *t,
                                  const attn_tuning_origin *origin, int max_vec,
                                  int *max_rows) {
    size_t max_wg = 0;
    cl_int err =
        clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof max_wg, &max_wg, NULL);
    if (err != CL_SUCCESS)
        return attn_fail_cl(ctx, err, "clGetDeviceInfo(CL_DEVICE_MAX_WORK_GROUP_SIZE)");
    if ((size_t)t->decode_wg > max_wg)
        return attn_tuning_refuse(ctx, t, origin, ATTN_TUNE_DECODE_WG,
                                  "decode_wg is above the device's %zu work-items a group",
                                  max_wg);
    const unsigned long long local_bytes = ctx->info.local_mem_bytes;
    int rows = MAX_ROWS;
    while (rows > 1 && gpu_local_bytes(p, rows, t->decode_wg, max_vec) > local_bytes)
        rows /= 2;
    if (gpu_local_bytes(p, rows, t->decode_wg, max_vec) > local_bytes)
        return attn_tuning_refuse(ctx, t, origin, ATTN_TUNE_DECODE_WG,
                                  "the decode gpu shape's one row of head_dim %d with decode_wg "
                                  "%d needs %zu bytes of local memory; the device has %llu",
                                  p->head_dim, t->decode_wg,
                                  gpu_local_bytes(p, 1, t->decode_wg, max_vec), local_bytes);
    *max_rows = rows;
    return ATTN_SUCCESS;
}

static attn_status decode_configure(attn_context_t ctx, const attn_problem *pb,
                                    attn_algo_state **state) {
    if (pb->want_probs)
        return attn_fail(ctx, ATTN_ERR_UNSUPPORTED,
                         "the decode path does not materialize probabilities; use "
                         "ATTN_ALGO_THREE_KERNEL or ATTN_ALGO_AUTO");
    /* dispatch.c sends dropout to the fused kernels; only a KV cache or an
     * explicit variant=decode gets here with it. */
    if (pb->p.dropout_p > 0.0f)
        return attn_fail(ctx, ATTN_ERR_UNSUPPORTED,
                         "the decode path (KV-cache calls, variant=decode) has no dropout; "
                         "dropout_p %g needs attn_forward* with the fused or three-kernel path",
                         (double)pb->p.dropout_p);
    attn_tuning t;
    attn_tuning_origin origin;
    const attn_params *p = &pb->p;
    attn_status status = attn_tuning_lookup(ctx, p, &t, &origin);
    if (status != ATTN_SUCCESS)
        return status;
    decode_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY,
                         "cannot allocate the decode path's state");
    cfg->pb = *pb;
    cfg->wg = t.decode_wg > 1 ? t.decode_wg : 1; /* a table entry left at 0: the cpu shape */
    cfg->kernel = cfg->wg > 1 ? "flash_decode_gpu" : "flash_decode";
    /* The widest vector across head_dim: an override's vec; 16 in the cpu
     * shape; in the gpu shape 16 bytes of a key row a work-item, its
     * neighbours the next ones (vec 4 of f32, 8 of f16, 16 of int8). On an
     * NVIDIA H200 (f32, attn_tune --algo decode) 16 bytes beat 32 and 64 by
     * 1.2-1.9x at every decode_wg. */
    const size_t key_bytes = pb->kv.enabled ? pb->kv.kv_element_size : pb->element_size;
    const int gpu_vec = key_bytes >= 4 ? 4 : key_bytes == 2 ? 8 : 16;
    const int max_vec =
        (origin.context | origin.env) & ATTN_TUNE_VEC ? t.vec : cfg->wg > 1 ? gpu_vec : 16;
    if (max_vec != 4 && max_vec != 8 && max_vec != 16) {
        /* tuning.c checks it under variant=decode; here a KV cache or a
         * decode shape under another variant's vec */
        free(cfg);
        return attn_tuning_refuse(ctx, &t, &origin, ATTN_TUNE_VEC,
                                  "the decode kernels take vec 4, 8 or 16, not %d", max_vec);
    }
    int max_rows = MAX_ROWS;
    if (cfg->wg > 1) {
        status = gpu_shape_rows(ctx, p, &t, &origin, max_vec, &max_rows);
        if (status != ATTN_SUCCESS) {
            free(cfg);
            return status;
        }
    }
    /* The fewest blocks of at most max_rows rows, split evenly: 20 rows are
     * two blocks of 10, not 16 and 4 (a block's rows past the end still
     * cost their share of each tile). */
    const int64_t rows = (int64_t)pb->group * p->seq_q;
    const int64_t fewest = (rows + max_rows - 1) / max_rows;
    cfg->rows = (int)((rows + fewest - 1) / fewest);
    const int64_t blocks = (rows + cfg->rows - 1) / cfg->rows;
    if (blocks > INT32_MAX / MAX_SPLITS) {
        free(cfg);
        return attn_fail(ctx, ATTN_ERR_UNSUPPORTED,
                         "the decode path takes at most %d blocks of query rows, not %lld",
                         INT32_MAX / MAX_SPLITS, (long long)blocks);
    }
    cfg->blocks = (int)blocks;

    /* Splits: enough work-items (groups on a GPU, GPU_GROUPS_PER_UNIT a
     * unit) for every compute unit, each split with MIN_SPLIT_KEYS keys or
     * more. */
    const int64_t items = (int64_t)p->batch * p->heads_kv * cfg->blocks;
    int64_t splits = t.splits;
    if (splits == 0) {
        const int64_t units = (ctx->info.compute_units > 0 ? ctx->info.compute_units : 1) *
                              (ctx->info.is_gpu ? GPU_GROUPS_PER_UNIT : 1);
        splits = items >= units ? 1 : (units + items - 1) / items;
        const int64_t by_keys = p->seq_k / MIN_SPLIT_KEYS;
        if (splits > by_keys)
            splits = by_keys > 1 ? by_keys : 1;
        if (splits > MAX_SPLITS)
            splits = MAX_SPLITS;
    }
    cfg->splits = (int)splits;

    /* Partials: batch * heads_q * seq_q rows of splits x (m, l, head_dim_v). */
    if (cfg->splits > 1) {
        const size_t part = (size_t)cfg->splits * ((size_t)p->head_dim_v + 2) * sizeof(float);
        const size_t slots = (size_t)p->batch * (size_t)p->heads_q; /* fits: O's extent does */
        if ((size_t)p->seq_q > SIZE_MAX / slots || slots * (size_t)p->seq_q > SIZE_MAX / part) {
            free(cfg);
            return attn_fail(ctx, ATTN_ERR_SIZE_OVERFLOW,
                             "the decode path's partials overflow size_t");
        }
        cfg->workspace = slots * (size_t)p->seq_q * part;
        if (ctx->info.max_alloc_bytes && cfg->workspace > ctx->info.max_alloc_bytes) {
            const size_t bytes = cfg->workspace;
            free(cfg);
            return attn_fail(ctx, ATTN_ERR_DEVICE_OUT_OF_MEMORY,
                             "the decode path's partials take %zu bytes, above the device's "
                             "largest allocation (%llu); ATTN_CL_TUNE=splits=1 needs none",
                             bytes, (unsigned long long)ctx->info.max_alloc_bytes);
        }
    }
    if (pb->kv.rotary_dim) {
        /* Fits: Q's and k_new's extents do, in elements of this size. */
        const size_t q_bytes = (size_t)p->batch * (size_t)p->heads_q * (size_t)p->seq_q *
                               (size_t)p->head_dim * pb->element_size;
        const size_t k_bytes = pb->kv.append
                                   ? (size_t)p->batch * (size_t)p->heads_kv * (size_t)p->seq_q *
                                         (size_t)p->head_dim * pb->element_size
                                   : 0;
        cfg->rotated_q_at = attn_round_up(cfg->workspace, ATTN_WORKSPACE_ALIGN);
        cfg->rotated_k_at = attn_round_up(cfg->rotated_q_at + q_bytes, ATTN_WORKSPACE_ALIGN);
        cfg->workspace = cfg->rotated_k_at + k_bytes;
    }
    if (pb->kv.append && pb->kv.convert) {
        /* Fits: the cache's elements are at most Q's size times 2. */
        const size_t rows = (size_t)p->batch * (size_t)p->heads_kv * (size_t)p->seq_q;
        const size_t kes = pb->kv.kv_element_size;
        cfg->converted_k_at = attn_round_up(cfg->workspace, ATTN_WORKSPACE_ALIGN);
        cfg->converted_v_at =
            attn_round_up(cfg->converted_k_at + rows * (size_t)p->head_dim * kes, ATTN_WORKSPACE_ALIGN);
        cfg->new_scales_at =
            attn_round_up(cfg->converted_v_at + rows * (size_t)p->head_dim_v * kes, ATTN_WORKSPACE_ALIGN);
        cfg->workspace = cfg->new_scales_at + 2 * rows * sizeof(float);
    }
    char features[256];
    attn_feature_options(pb, features, sizeof features);
    snprintf(cfg->options, sizeof cfg->options,
             "%s -DHEAD_DIM=%d -DHEAD_DIM_V=%d -DHAS_LSE=%d -DROWS=%d -DPARTIALS=%d -DMAX_VEC=%d "
             "-DKVCACHE=%d -DPAGED=%d -DBATCH_IDX=%d -DAPPEND=%d -DKV_PAGE_SIZE=%d -DKV_DTYPE=%d "
             "-DDECODE_WG=%d",
             features, p->head_dim, p->head_dim_v, pb->want_lse, cfg->rows, cfg->splits > 1,
             max_vec, pb->kv.enabled,
             pb->kv.paged, pb->kv.batch_idx, pb->kv.append, pb->kv.page_size,
             /* attn_kv_dtype - 1 is kernels/common.cl's code */
             pb->kv.enabled ? (int)pb->kv.kv_dtype - 1 : (int)p->dtype, cfg->wg);
    *state = cfg;
    return ATTN_SUCCESS;
}

static attn_status decode_build(attn_context_t ctx, attn_algo_state *cfg) {
    attn_status status =
        attn_create_kernel(ctx, cfg->kernel, cfg->kernel, cfg->options, &cfg->main);
    if (status == ATTN_SUCCESS && cfg->splits > 1)
        status =
            attn_create_kernel(ctx, cfg->kernel, "flash_decode_merge", cfg->options, &cfg->merge);
    if (status == ATTN_SUCCESS && cfg->pb.kv.rotary_dim) {
        char options[600];
        snprintf(options, sizeof options, "%s -DROTARY_DIM=%d -DROTARY_INTERLEAVED=%d",
                 cfg->options, cfg->pb.kv.rotary_dim, cfg->pb.kv.rotary_interleaved != 0);
        status = attn_create_kernel(ctx, "rotary", "rotary_rows", options, &cfg->rotary);
    }
    if (status == ATTN_SUCCESS && cfg->pb.kv.append && cfg->pb.kv.convert) {
        /* The quantizer's division rounded as the host's. */
        char options[600];
        snprintf(options, sizeof options, "%s -cl-fp32-correctly-rounded-divide-sqrt",
                 cfg->options);
        status = attn_create_kernel(ctx, "kv_convert", "kv_convert_rows", options, &cfg->convert);
    }
    return status;
}

/* Enqueues the rotation of Q and k_new into the workspace (rotary.cl) and
 * points `r` (a copy of the run's arguments) and `pb` (of its problem) at
 * the rotated rows. */
static attn_status rotate_new_rows(attn_context_t ctx, const decode_config *cfg,
                                   attn_device_args *r, attn_problem *pb, cl_uint num_wait,
                                   const cl_event *wait_list, cl_event *rotated) {
    const attn_params *p = &pb->p;
    const size_t es = pb->element_size;
    const size_t q_at = r->workspace_offset + cfg->rotated_q_at;
    const size_t k_at = r->workspace_offset + cfg->rotated_k_at;
    const int heads_kv = pb->kv.append ? p->heads_kv : 0;
    attn_args a;
    attn_args_begin(&a, ctx, cfg->rotary, "rotary_rows");
    attn_arg_tensor(&a, r->q, r->q_offset, &p->q_strides);
    attn_arg_buffer(&a, r->workspace, q_at / es);
    attn_arg_tensor(&a, r->k_new ? r->k_new : r->q, r->k_new_offset, &pb->kv.k_new_strides);
    attn_arg_buffer(&a, r->workspace, k_at / es);
    attn_arg_mem(&a, r->rotary_cos);
    attn_arg_mem(&a, r->rotary_sin);
    attn_arg_mem(&a, r->kv_lengths);
    attn_arg_int(&a, p->seq_q);
    attn_arg_int(&a, p->seq_k);
    attn_arg_int(&a, p->heads_q);
    attn_arg_int(&a, heads_kv);
    attn_arg_int(&a, pb->kv.rotary_positions);
    attn_status status = attn_args_end(&a);
    if (status != ATTN_SUCCESS)
        return status;
    const size_t rows[3] = {(size_t)p->seq_q, (size_t)p->heads_q + (size_t)heads_kv,
                            (size_t)p->batch};
    status = attn_enqueue_kernel(ctx, cfg->rotary, "rotary_rows", rows, NULL, num_wait, wait_list,
                                 rotated);
    if (status != ATTN_SUCCESS)
        return status;
    /* From here on Q and k_new are the rotated, packed copies. */
    const int64_t dim = p->head_dim;
    r->q = r->workspace;
    r->q_offset = q_at / es;
    pb->p.q_strides = (attn_strides){p->heads_q * p->seq_q * dim, p->seq_q * dim, dim};
    if (pb->kv.append) {
        r->k_new = r->workspace;
        r->k_new_offset = k_at / es;
        pb->kv.k_new_strides = (attn_strides){p->heads_kv * p->seq_q * dim, p->seq_q * dim, dim};
    }
    return ATTN_SUCCESS;
}

/* Enqueues the conversion of k_new and v_new into the cache's storage type
 * in the workspace (kv_convert.cl) and points `r` and `pb` at the
 * converted rows and their scales. */
static attn_status convert_new_rows(attn_context_t ctx, const decode_config *cfg,
                                    attn_device_args *r, attn_problem *pb, cl_uint num_wait,
                                    const cl_event *wait_list, cl_event *converted) {
    const attn_params *p = &pb->p;
    const size_t kes = pb->kv.kv_element_size;
    const size_t k_at = r->workspace_offset + cfg->converted_k_at;
    const size_t v_at = r->workspace_offset + cfg->converted_v_at;
    const size_t scales_at = (r->workspace_offset + cfg->new_scales_at) / sizeof(float);
    const size_t rows = (size_t)p->batch * (size_t)p->heads_kv * (size_t)p->seq_q;
    attn_args a;
    attn_args_begin(&a, ctx, cfg->convert, "kv_convert_rows");
    attn_arg_tensor(&a, r->k_new, r->k_new_offset, &pb->kv.k_new_strides);
    attn_arg_tensor(&a, r->v_new, r->v_new_offset, &pb->kv.v_new_strides);
    attn_arg_buffer(&a, r->workspace, k_at / kes);
    attn_arg_buffer(&a, r->workspace, v_at / kes);
    attn_arg_mem(&a, r->workspace);
    attn_arg_ulong(&a, scales_at);
    attn_arg_ulong(&a, scales_at + rows);
    attn_arg_int(&a, p->seq_q);
    attn_arg_int(&a, p->heads_kv);
    attn_status status = attn_args_end(&a);
    if (status != ATTN_SUCCESS)
        return status;
    const size_t global[3] = {(size_t)p->seq_q, 2 * (size_t)p->heads_kv, (size_t)p->batch};
    status = attn_enqueue_kernel(ctx, cfg->convert, "kv_convert_rows", global, NULL, num_wait,
                                 wait_list, converted);
    if (status != ATTN_SUCCESS)
        return status;
    const int64_t hk = p->heads_kv, sq = p->seq_q, dk = p->head_dim, dv = p->head_dim_v;
    r->k_new = r->v_new = r->workspace;
    r->k_new_offset = k_at / kes;
    r->v_new_offset = v_at / kes;
    pb->kv.k_new_strides = (attn_strides){hk * sq * dk, sq * dk, dk};
    pb->kv.v_new_strides = (attn_strides){hk * sq * dv, sq * dv, dv};
    if (pb->kv.kv_dtype == ATTN_KV_DTYPE_INT8) {
        r->kn_scale = r->vn_scale = r->workspace;
        r->kn_scale_offset = scales_at;
        r->vn_scale_offset = scales_at + rows;
    }
    return ATTN_SUCCESS;
}

static size_t decode_workspace_bytes(const attn_algo_state *cfg) {
    return cfg->workspace;
}

static attn_status decode_enqueue(attn_context_t ctx, const decode_config *cfg,
                                  const attn_problem *pb, const attn_device_args *a,
                                  cl_uint num_wait, const cl_event *wait_list, cl_event *done);

static attn_status decode_run(attn_context_t ctx, const attn_algo_state *cfg,
                              const attn_device_args *args, cl_uint num_wait,
                              const cl_event *wait_list, cl_event *done) {
    if (done)
        *done = NULL;
    attn_problem rotated_pb = cfg->pb;
    attn_device_args rotated_args = *args;
    cl_event rotated = NULL, converted = NULL;
    attn_status status = ATTN_SUCCESS;
    if (cfg->rotary) {
        status =
            rotate_new_rows(ctx, cfg, &rotated_args, &rotated_pb, num_wait, wait_list, &rotated);
        num_wait = 1;
        wait_list = &rotated;
    }
    if (status == ATTN_SUCCESS && cfg->convert) {
        status = convert_new_rows(ctx, cfg, &rotated_args, &rotated_pb, num_wait, wait_list,
                                  &converted);
        num_wait = 1;
        wait_list = &converted;
    }
    if (status == ATTN_SUCCESS)
        status = decode_enqueue(ctx, cfg, &rotated_pb, &rotated_args, num_wait, wait_list, done);
    if (status != ATTN_SUCCESS && (rotated || converted))
        clFinish(ctx->queue); /* the rotation or conversion still writes the workspace */
    if (rotated)
        clReleaseEvent(rotated);
    if (converted)
        clReleaseEvent(converted);
    return status;
}

/* The decode kernels after `wait_list`, on `pb` (the plan's problem, or with
 * rotary embedding its copy pointing at the rotated rows). */
static attn_status decode_enqueue(attn_context_t ctx, const decode_config *cfg,
                                  const attn_problem *pb, const attn_device_args *a,
                                  cl_uint num_wait, const cl_event *wait_list, cl_event *done) {
    const attn_params *p = &pb->p;
    /* Buffers the kernel is built not to touch still need one. */
    const cl_mem lse = a->lse ? a->lse : a->o;
    const cl_mem part = cfg->splits > 1 ? a->workspace : a->o;
    const size_t part_off = cfg->splits > 1 ? a->workspace_offset / sizeof(float) : 0;
    /* Without modifiers the scores stay q.k with Q's sign folded in and the
     * scale goes into the exponent's factors; with them a score unit is 1. */
    const int modifiers = p->softcap > 0.0f || p->alibi || p->bias.present;
    const attn_softmax_exponent e = attn_softmax_exponent_of(p, modifiers);
    const cl_float sign = modifiers || p->scale >= 0.0f ? 1.0f : -1.0f;

    const char *name = cfg->kernel;
    attn_args main;
    attn_args_begin(&main, ctx, cfg->main, name);
    attn_arg_tensor(&main, a->q, a->q_offset, &p->q_strides);
    attn_arg_tensor(&main, a->k, a->k_offset, &p->k_strides);
    attn_arg_tensor(&main, a->v, a->v_offset, &p->v_strides);
    attn_arg_tensor(&main, a->o, a->o_offset, &p->o_strides);
    attn_arg_tensor(&main, lse, a->lse_offset, &p->lse_strides);
    attn_arg_buffer(&main, part, part_off);
    attn_arg_int(&main, pb->group);
    attn_arg_int(&main, p->heads_q);
    attn_arg_int(&main, cfg->splits);
    attn_arg_float(&main, p->scale);
    attn_arg_float(&main, e.hi);
    attn_arg_float(&main, e.lo);
    attn_arg_float(&main, sign);
    if (pb->kv.enabled)
        attn_arg_kvcache(&main, pb, a);
    attn_arg_features(&main, pb, a);
    attn_status status = attn_args_end(&main);

    if (status == ATTN_SUCCESS && cfg->merge) {
        attn_args merge;
        attn_args_begin(&merge, ctx, cfg->merge, "flash_decode_merge");
        attn_arg_buffer(&merge, part, part_off);
        attn_arg_tensor(&merge, a->o, a->o_offset, &p->o_strides);
        attn_arg_tensor(&merge, lse, a->lse_offset, &p->lse_strides);
        attn_arg_int(&merge, p->heads_q);
        attn_arg_int(&merge, cfg->splits);
        attn_arg_float(&merge, e.hi);
        attn_arg_float(&merge, e.lo);
        attn_arg_float(&merge, e.unit);
        if (pb->kv.enabled) {
            attn_arg_tensor(&merge, a->k, a->k_offset, &p->k_strides);
            attn_arg_tensor(&merge, a->v, a->v_offset, &p->v_strides);
            attn_arg_kvcache(&merge, pb, a);
        }
        attn_arg_features(&merge, pb, a);
        status = attn_args_end(&merge);
    }
    if (status != ATTN_SUCCESS)
        return status;

    const size_t local[3] = {(size_t)cfg->wg, 1, 1};
    const size_t global[3] = {(size_t)cfg->splits * (size_t)cfg->blocks * (size_t)cfg->wg,
                              (size_t)p->heads_kv, (size_t)p->batch};
    if (!cfg->merge)
        return attn_enqueue_kernel(ctx, cfg->main, name, global, local, num_wait, wait_list, done);
    cl_event partials_ready = NULL;
    status = attn_enqueue_kernel(ctx, cfg->main, name, global, local, num_wait, wait_list,
                                 &partials_ready);
    if (status == ATTN_SUCCESS) {
        const size_t rows[3] = {(size_t)p->seq_q, (size_t)p->heads_q, (size_t)p->batch};
        status = attn_enqueue_kernel(ctx, cfg->merge, "flash_decode_merge", rows, NULL, 1,
                                     &partials_ready, done);
        if (status != ATTN_SUCCESS)
            clFinish(ctx->queue); /* the first kernel still uses the workspace */
    }
    if (partials_ready)
        clReleaseEvent(partials_ready);
    return status;
}

void attn_arg_kvcache(attn_args *a, const attn_problem *pb, const attn_device_args *d) {
    const attn_kvcache_layout *kv = &pb->kv;
    /* Arrays the kernel is built without still need a buffer. */
    attn_arg_mem(a, d->kv_lengths);
    attn_arg_mem(a, d->kv_slots ? d->kv_slots : d->kv_lengths);
    attn_arg_mem(a, d->kv_pages ? d->kv_pages : d->kv_lengths);
    attn_arg_int(a, kv->slots);
    attn_arg_int(a, kv->paged ? kv->page_size : 1);
    attn_arg_int(a, kv->paged ? kv->max_pages : 0);
    attn_arg_int(a, pb->p.heads_kv);
    attn_arg_tensor(a, d->k_new ? d->k_new : d->q, d->k_new_offset, &kv->k_new_strides);
    attn_arg_tensor(a, d->v_new ? d->v_new : d->q, d->v_new_offset, &kv->v_new_strides);
    if (kv->kv_dtype == ATTN_KV_DTYPE_INT8) {
        /* Without append the new rows' scales are never read: any buffer. */
        const attn_strides packed = {(int64_t)pb->p.heads_kv * pb->p.seq_q, pb->p.seq_q, 1};
        attn_arg_tensor(a, d->k_scale, d->k_scale_offset, &kv->k_scale_strides);
        attn_arg_tensor(a, d->v_scale, d->v_scale_offset, &kv->v_scale_strides);
        attn_arg_tensor(a, d->kn_scale ? d->kn_scale : d->k_scale, d->kn_scale_offset, &packed);
        attn_arg_tensor(a, d->vn_scale ? d->vn_scale : d->v_scale, d->vn_scale_offset, &packed);
    }
}

static void decode_destroy(attn_algo_state *cfg) {
    if (!cfg)
        return;
    if (cfg->main)
        clReleaseKernel(cfg->main);
    if (cfg->merge)
        clReleaseKernel(cfg->merge);
    if (cfg->rotary)
        clReleaseKernel(cfg->rotary);
    if (cfg->convert)
        clReleaseKernel(cfg->convert);
    free(cfg);
}

const attn_algorithm attn_decode_algorithm = {
    .id = ATTN_ALGO_FUSED, /* what attn_plan_algo reports; see the top */
    .name = "decode",
    .configure = decode_configure,
    .build = decode_build,
    .workspace_bytes = decode_workspace_bytes,
    .run = decode_run,
    .destroy = decode_destroy,
};
