/* Decoding over a KV cache (include/attn_cl.h, "Decoding over a KV cache"):
 * the cache's validation into an attn_problem whose K and V are the cache
 * (attn_kvcache_layout), the checks of its small arrays, and its plans. The
 * decode algorithm (lib/decode.c, kernels/flash_decode.cl built with
 * KVCACHE) serves it; the reference is lib/reference_kvcache.c.
 *
 * The cache is appended to by the one command that also writes O and LSE,
 * so a call that fails anywhere leaves both untouched. */
#include "attn_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void attn_kvcache_params_init(attn_kvcache_params *params, int32_t batch, int32_t heads,
                              int32_t seq_new, int32_t capacity, int32_t head_dim) {
    if (!params)
        return;
    *params = (attn_kvcache_params){0};
    params->struct_size = sizeof *params;
    attn_params_init(&params->attn, batch, heads, seq_new, capacity, head_dim);
    params->capacity = capacity;
}

/* ---- Validation ---------------------------------------------------------------- */

/* Elements a cache tensor [blocks, heads, rows, inner] spans with `s`
 * (packed when all zero), without wrapping. */
static attn_status cache_extent(attn_context_t ctx, const char *name, int64_t blocks, int64_t heads,
                                int64_t rows, int64_t inner, attn_strides *s, size_t *extent) {
    if (s->batch == 0 && s->head == 0 && s->seq == 0) {
        s->seq = inner;
        s->head = rows * inner; /* each factor below 2^31: fits */
        if (heads > INT64_MAX / s->head)
            return attn_fail(ctx, ATTN_ERR_SIZE_OVERFLOW, "%s spans more elements than fit", name);
        s->batch = heads * s->head;
    }
    if (s->batch < 0 || s->head < 0 || s->seq < 0)
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE, "%s has a negative stride", name);
    const int64_t size[3] = {blocks, heads, rows};
    const int64_t stride[3] = {s->batch, s->head, s->seq};
    size_t last = (size_t)inner;
    for (int d = 0; d < 3; d++) {
        const size_t step = (size_t)stride[d], n = (size_t)(size[d] - 1);
        if (step != 0 && n > (SIZE_MAX - last) / step)
            return attn_fail(ctx, ATTN_ERR_SIZE_OVERFLOW,
                             "%s spans more elements than size_t can count", name);
        last += n * step;
    }
    if (last > SIZE_MAX / sizeof(float))
        return attn_fail(ctx, ATTN_ERR_SIZE_OVERFLOW, "%s needs more bytes than size_t counts",
                         name);
    *extent = last;
    return ATTN_SUCCESS;
}

/* The parameters into a problem whose K and V are the cache. */
static attn_status kvcache_problem_make(attn_context_t ctx, const attn_kvcache_params *kp,
                                        int want_lse, attn_problem *pb) {
    if (!kp)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT, "params is NULL");
    if (kp->struct_size != sizeof(attn_kvcache_params))
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                         "params->struct_size is %u, but this library's attn_kvcache_params has "
                         "%zu bytes: initialize params with attn_kvcache_params_init",
                         (unsigned)kp->struct_size, sizeof(attn_kvcache_params));
    const attn_params *a = &kp->attn;
    if (a->varlen || a->key_padding || a->bias.present || a->keep_mask.present)
        return attn_fail(ctx, ATTN_ERR_UNSUPPORTED,
                         "a KV cache takes no varlen, key padding, bias or keep-mask: the cache "
                         "lengths say which keys each sequence has");
    if (!(a->dropout_p == 0.0f)) /* NaN included */
        return attn_fail(ctx, ATTN_ERR_UNSUPPORTED,
                         "a KV cache takes no dropout (dropout_p %g): the decode kernels have "
                         "none",
                         (double)a->dropout_p);
    const int paged = kp->page_size != 0;
    if (kp->page_size < 0)
        return attn_fail(ctx, ATTN_ERR_INVALID_SIZE, "page_size %d: 0 (contiguous) or >= 1",
                         kp->page_size);
    int32_t capacity = kp->capacity, slots = kp->cache_slots;
    if (paged) {
        if (kp->num_pages <= 0 || kp->max_pages <= 0)
            return attn_fail(ctx, ATTN_ERR_INVALID_SIZE,
                             "a paged cache needs num_pages (%d) and max_pages (%d) >= 1",
                             kp->num_pages, kp->max_pages);
        if (kp->batch_idx)
            return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                             "batch_idx is for contiguous caches; a paged one has a block table");
        if ((int64_t)kp->max_pages * kp->page_size > INT32_MAX)
            return attn_fail(ctx, ATTN_ERR_INVALID_SIZE,
                             "max_pages %d x page_size %d tokens exceed INT32_MAX", kp->max_pages,
                             kp->page_size);
        capacity = kp->max_pages * kp->page_size;
        slots = kp->num_pages;
    } else {
        if (slots == 0)
            slots = a->batch;
        if (capacity <= 0 || slots <= 0)
            return attn_fail(ctx, ATTN_ERR_INVALID_SIZE,
                             "a contiguous cache needs capacity (%d) and cache_slots (%d) >= 1",
                             capacity, slots);
        if (!kp->batch_idx && slots < a->batch)
            return attn_fail(ctx, ATTN_ERR_INVALID_SIZE,
                             "cache_slots %d < batch %d without batch_idx", slots, a->batch);
    }
    if (kp->rotary_dim != 0) {
        if (kp->rotary_dim < 0 || kp->rotary_dim % 2 != 0 || kp->rotary_dim > a->head_dim)
            return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                             "rotary_dim %d: even and 2..head_dim (%d), or 0 for none",
                             kp->rotary_dim, a->head_dim);
        if (kp->rotary_positions <= 0)
            return attn_fail(ctx, ATTN_ERR_INVALID_SIZE,
                             "rotary_positions %d: the rotary tables need a row or more",
                             kp->rotary_positions);
        if ((int64_t)kp->rotary_positions * (kp->rotary_dim / 2) > INT32_MAX)
            return attn_fail(ctx, ATTN_ERR_INVALID_SIZE,
                             "rotary tables of %d x %d entries exceed INT32_MAX",
                             kp->rotary_positions, kp->rotary_dim / 2);
    }
    if ((unsigned)kp->kv_dtype > ATTN_KV_DTYPE_INT8)
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE, "kv_dtype %d is not an attn_kv_dtype",
                         (int)kp->kv_dtype);
    if (kp->append && a->seq_q > capacity)
        return attn_fail(ctx, ATTN_ERR_INVALID_SIZE, "%d new rows cannot fit a cache of %d tokens",
                         a->seq_q, capacity);

    /* Q, O, LSE and the new rows validate as a forward over seq_q keys. */
    attn_params p = *a;
    p.seq_k = p.seq_q;
    if (!kp->append)
        p.k_strides = p.v_strides = (attn_strides){0};
    attn_problem out;
    attn_status status = attn_problem_make(ctx, &p, want_lse, 0, &out);
    if (status != ATTN_SUCCESS)
        return status;
    attn_kvcache_layout *kv = &out.kv;
    kv->enabled = 1;
    kv->paged = paged;
    kv->append = kp->append != 0;
    kv->batch_idx = !paged && kp->batch_idx != 0;
    kv->slots = slots;
    kv->page_size = paged ? kp->page_size : 0;
    kv->max_pages = paged ? kp->max_pages : 0;
    kv->k_new_strides = out.p.k_strides;
    kv->v_new_strides = out.p.v_strides;
    kv->k_new_extent = kv->append ? out.k_extent : 0;
    kv->v_new_extent = kv->append ? out.v_extent : 0;
    kv->rotary_dim = kp->rotary_dim;
    kv->rotary_interleaved = kp->rotary_dim && kp->rotary_interleaved != 0;
    kv->rotary_positions = kp->rotary_dim ? kp->rotary_positions : 0;
    /* Q's type as a kv_dtype is its attn_dtype + 1. */
    kv->kv_dtype = kp->kv_dtype == ATTN_KV_DTYPE_SAME ? (attn_kv_dtype)(a->dtype + 1) : kp->kv_dtype;
    kv->kv_element_size = attn_kv_element_size(kv->kv_dtype);
    kv->convert = kv->kv_dtype != (attn_kv_dtype)(a->dtype + 1);
    out.p.seq_k = capacity;
    out.p.k_strides = kp->k_cache_strides;
    out.p.v_strides = kp->v_cache_strides;
    const int64_t rows = paged ? kp->page_size : capacity;
    status = cache_extent(ctx, "K_cache", slots, out.p.heads_kv, rows, out.p.head_dim,
                          &out.p.k_strides, &out.k_extent);
    if (status == ATTN_SUCCESS)
        status = cache_extent(ctx, "V_cache", slots, out.p.heads_kv, rows, out.p.head_dim_v,
                              &out.p.v_strides, &out.v_extent);
    if (status == ATTN_SUCCESS && kv->kv_dtype == ATTN_KV_DTYPE_INT8) {
        kv->k_scale_strides = kp->k_scale_strides;
        kv->v_scale_strides = kp->v_scale_strides;
        status = cache_extent(ctx, "k_scale", slots, out.p.heads_kv, rows, 1, &kv->k_scale_strides,
                              &kv->k_scale_extent);
        if (status == ATTN_SUCCESS)
            status = cache_extent(ctx, "v_scale", slots, out.p.heads_kv, rows, 1,
                                  &kv->v_scale_strides, &kv->v_scale_extent);
    }
    if (status != ATTN_SUCCESS)
        return status;
    out.probs_elems = 0;
    *pb = out;
    return ATTN_SUCCESS;
}

/* The small arrays, each in host memory or (dev[i], the device call) in a
 * device buffer: lengths, slots, block table, ALiBi slopes. */
enum { KV_LENGTHS, KV_SLOTS, KV_PAGES, KV_SLOPES, KV_COS, KV_SIN, KV_ARRAYS };
static const char *const kv_array_names[KV_ARRAYS] = {
    "cache_seqlens", "cache_batch_idx", "block_table", "alibi_slopes", "rotary_cos", "rotary_sin"};

/* Entries of each rotary table. */
static size_t rotary_entries(const attn_problem *pb) {
    return (size_t)pb->kv.rotary_positions * (size_t)(pb->kv.rotary_dim / 2);
}

/* Each array the problem uses given one way, not both; device buffers large
 * enough. */
static attn_status check_array_presence(attn_context_t ctx, const attn_problem *pb,
                                        const void *const host[KV_ARRAYS],
                                        const cl_mem dev[KV_ARRAYS]) {
    const attn_params *p = &pb->p;
    const int rotary = pb->kv.rotary_dim != 0;
    const int used[KV_ARRAYS] = {1, pb->kv.batch_idx, pb->kv.paged, p->alibi, rotary, rotary};
    const size_t count[KV_ARRAYS] = {
        (size_t)p->batch,   (size_t)p->batch,   (size_t)p->batch * (size_t)pb->kv.max_pages,
        (size_t)p->heads_q, rotary_entries(pb), rotary_entries(pb)};
    for (int i = 0; i < KV_ARRAYS; i++) {
        const int on_device = dev && dev[i];
        if (used[i] && !host[i] && !on_device)
            return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT, "the problem needs %s: NULL",
                             kv_array_names[i]);
        if (host[i] && on_device)
            return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                             "%s is given both in host memory and as a device buffer",
                             kv_array_names[i]);
        size_t unused;
        if (used[i] && on_device) {
            attn_status status =
                attn_check_device_tensor(ctx, kv_array_names[i], dev[i], 0, count[i], 4, &unused);
            if (status != ATTN_SUCCESS)
                return status;
        }
    }
    return ATTN_SUCCESS;
}

/* The host arrays' values. `marks` (kv->slots bytes, zeroed here) finds a
 * slot or page that one sequence appends into and another (or the same one
 * at another entry) uses; that needs the lengths and the slots or block
 * table in host memory (device arrays are the caller's to get right: the
 * kernels clamp every index, so they never reach outside the cache). */
static attn_status check_kvcache_arrays(attn_context_t ctx, const attn_problem *pb,
                                        const void *const host[KV_ARRAYS],
                                        const cl_mem dev[KV_ARRAYS], unsigned char *marks) {
    const attn_params *p = &pb->p;
    const attn_kvcache_layout *kv = &pb->kv;
    const int32_t *lengths = host[KV_LENGTHS], *slot_idx = host[KV_SLOTS], *table = host[KV_PAGES];
    const float *slopes = host[KV_SLOPES];
    attn_status presence = check_array_presence(ctx, pb, host, dev);
    if (presence != ATTN_SUCCESS)
        return presence;
    for (int i = KV_COS; i <= KV_SIN && kv->rotary_dim; i++) {
        const float *table_values = host[i];
        for (size_t e = 0; table_values && e < rotary_entries(pb); e++)
            if (!isfinite(table_values[e]))
                return attn_fail(ctx, ATTN_ERR_INVALID_VALUE, "%s[%zu] is not finite",
                                 kv_array_names[i], e);
    }

    if (p->alibi && slopes) {
        attn_input_arrays m = {.alibi_slopes = slopes};
        attn_status status = attn_problem_check_arrays(ctx, pb, &m, 0);
        if (status != ATTN_SUCCESS)
            return status;
    }
    if (!lengths || (kv->batch_idx && !slot_idx) || (kv->paged && !table))
        return ATTN_SUCCESS;
    const int32_t room = p->seq_k - (kv->append ? p->seq_q : 0);
    for (int32_t b = 0; b < p->batch; b++)
        if (lengths[b] < 0 || lengths[b] > room)
            return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                             "cache_seqlens[%d] = %d: outside 0..%d (capacity %d%s)", b, lengths[b],
                             room, p->seq_k, kv->append ? " less the new rows" : "");
    memset(marks, 0, (size_t)kv->slots);
    /* marks: bit 1 used, 2 appended into, 4 used more than once; a block
     * appended into and used more than once is refused. */
    for (int pass = 0; pass < 2; pass++) {
        for (int32_t b = 0; b < p->batch; b++) {
            const int64_t used = (int64_t)lengths[b] + (kv->append ? p->seq_q : 0);
            const int64_t entries = kv->paged ? (used + kv->page_size - 1) / kv->page_size : 1;
            const int64_t first_new = kv->paged ? lengths[b] / kv->page_size : 0;
            for (int64_t e = 0; e < entries; e++) {
                int32_t block = b;
                const char *what = "cache slot";
                if (kv->paged) {
                    block = table[(int64_t)b * kv->max_pages + e];
                    what = "page";
                } else if (kv->batch_idx) {
                    block = slot_idx[b];
                }
                if (block < 0 || block >= kv->slots)
                    return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                                     "%s %d of sequence %d is %d: outside 0..%d",
                                     kv->paged ? "block_table entry" : "cache_batch_idx", (int)e, b,
                                     block, kv->slots - 1);
                const int appends = kv->append && e >= first_new;
                if (pass == 0) {
                    if (marks[block] & 1)
                        marks[block] |= 4; /* used more than once */
                    marks[block] |= 1;
                    if (appends)
                        marks[block] |= 2;
                } else if ((marks[block] & 6) == 6) {
                    return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                                     "%s %d is appended into by a sequence of this call and "
                                     "used again (sequence %d): the appends would race with "
                                     "its reads",
                                     what, block, b);
                }
            }
        }
    }
    return ATTN_SUCCESS;
}

/* ---- Plans ------------------------------------------------------------------------ */

/* What a KV-cache plan keeps beside the plan's own (plan.c): the small
 * arrays' device copies and staging, the host call's device copies. */
typedef struct kvcache_ext {
    unsigned char *marks;          /* check_kvcache_arrays' */
    cl_mem arrays[KV_ARRAYS];      /* device copies of the host arrays */
    size_t array_bytes[KV_ARRAYS]; /* 0: the problem does not use it */
    unsigned char *staging;        /* the arrays, written without blocking from here */
    cl_event staged;               /* the last write from staging */
    cl_mem q, o, lse, k_cache, v_cache, k_new, v_new;
    cl_mem k_scale, v_scale; /* the host call's copies of an int8 cache's scales */
    void *o_host;
    float *lse_host;
    void *rotated_k; /* the host call's rotated k_new, with rotary embedding and append */
} kvcache_ext;

static void free_staging(cl_event event, cl_int status, void *host) {
    (void)event;
    (void)status;
    free(host);
}

static void kvcache_ext_free(void *p) {
    kvcache_ext *x = p;
    if (!x)
        return;
    if (x->staged) {
        if (clSetEventCallback(x->staged, CL_COMPLETE, free_staging, x->staging) == CL_SUCCESS)
            x->staging = NULL;
        else
            clWaitForEvents(1, &x->staged);
        clReleaseEvent(x->staged);
    }
    free(x->staging);
    cl_mem mems[7] = {x->q, x->o, x->lse, x->k_cache, x->v_cache, x->k_new, x->v_new};
    for (int i = 0; i < 7; i++)
        if (mems[i])
            clReleaseMemObject(mems[i]);
    for (int i = 0; i < KV_ARRAYS; i++)
        if (x->arrays[i])
            clReleaseMemObject(x->arrays[i]);
    if (x->k_scale)
        clReleaseMemObject(x->k_scale);
    if (x->v_scale)
        clReleaseMemObject(x->v_scale);
    free(x->marks);
    free(x->o_host);
    free(x->lse_host);
    free(x->rotated_k);
    free(x);
}

attn_status attn_plan_create_kvcache(attn_context_t ctx, const attn_kvcache_params *params,
                                     uint32_t outputs, attn_plan_t *out) {
    if (out)
        *out = NULL;
    if (!ctx)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "attn_plan_create_kvcache: ctx is NULL");
    if (!out)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT, "attn_plan_create_kvcache: plan is NULL");
    if (outputs & ~(uint32_t)ATTN_PLAN_LSE)
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                         "attn_plan_create_kvcache: outputs 0x%x: only ATTN_PLAN_LSE applies",
                         (unsigned)outputs);
    attn_problem pb;
    attn_status status = kvcache_problem_make(ctx, params, (outputs & ATTN_PLAN_LSE) != 0, &pb);
    if (status != ATTN_SUCCESS)
        return status;
    kvcache_ext *x = calloc(1, sizeof *x);
    if (x)
        x->marks = malloc((size_t)pb.kv.slots);
    if (!x || !x->marks) {
        kvcache_ext_free(x);
        return attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY, "cannot allocate a KV-cache plan");
    }
    const attn_params *p = &pb.p;
    x->array_bytes[KV_LENGTHS] = (size_t)p->batch * sizeof(int32_t);
    x->array_bytes[KV_SLOTS] = pb.kv.batch_idx ? (size_t)p->batch * sizeof(int32_t) : 0;
    x->array_bytes[KV_PAGES] =
        pb.kv.paged ? (size_t)p->batch * (size_t)pb.kv.max_pages * sizeof(int32_t) : 0;
    x->array_bytes[KV_SLOPES] = p->alibi ? (size_t)p->heads_q * sizeof(float) : 0;
    x->array_bytes[KV_COS] = x->array_bytes[KV_SIN] = rotary_entries(&pb) * sizeof(float);
    attn_plan_t plan = NULL;
    status = attn_plan_create_problem(ctx, &pb, outputs, &plan);
    if (status != ATTN_SUCCESS) {
        kvcache_ext_free(x);
        return status;
    }
    attn_plan_set_ext(plan, x, kvcache_ext_free);
    *out = plan;
    return ATTN_SUCCESS;
}

static kvcache_ext *kvcache_of(attn_plan_t plan, const char *call) {
    const attn_problem *pb = attn_plan_problem(plan);
    if (!pb->kv.enabled) {
        attn_fail(attn_plan_context(plan), ATTN_ERR_INVALID_VALUE,
                  "%s: the plan was not made by attn_plan_create_kvcache", call);
        return NULL;
    }
    return attn_plan_ext(plan);
}

/* The arrays into the plan's device copies (made on first use), without
 * blocking; points `d` at them. The caller holds the plan's lock. */
static attn_status write_kvcache_arrays(attn_plan_t plan, kvcache_ext *x,
                                        const void *const host[KV_ARRAYS],
                                        const cl_mem dev[KV_ARRAYS], attn_device_args *d) {
    attn_context_t ctx = attn_plan_context(plan);
    const size_t *bytes = x->array_bytes;
    size_t at[KV_ARRAYS], total = 0;
    for (int i = 0; i < KV_ARRAYS; i++) {
        at[i] = total;
        total += attn_round_up(bytes[i], 8);
    }
    attn_status status = ATTN_SUCCESS;
    if (!x->staging) {
        for (int i = 0; i < KV_ARRAYS && status == ATTN_SUCCESS; i++)
            if (bytes[i])
                status = attn_create_buffer(ctx, kv_array_names[i], bytes[i], &x->arrays[i]);
        if (status == ATTN_SUCCESS) {
            x->staging = malloc(total);
            if (!x->staging)
                status = attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY,
                                   "cannot allocate %zu bytes of staging", total);
        }
        if (status != ATTN_SUCCESS) {
            for (int i = 0; i < KV_ARRAYS; i++)
                if (x->arrays[i]) {
                    clReleaseMemObject(x->arrays[i]);
                    x->arrays[i] = NULL;
                }
            return status;
        }
    }
    /* The previous execute's writes must have read the staging first. */
    if (x->staged) {
        cl_int err = clWaitForEvents(1, &x->staged);
        clReleaseEvent(x->staged);
        x->staged = NULL;
        if (err != CL_SUCCESS)
            return attn_fail_cl(ctx, err, "clWaitForEvents (KV-cache arrays)");
    }
    cl_mem use[KV_ARRAYS];
    for (int i = 0; i < KV_ARRAYS; i++) {
        use[i] = dev && dev[i] && bytes[i] ? dev[i] : x->arrays[i];
        if (!bytes[i] || !host[i])
            continue;
        memcpy(x->staging + at[i], host[i], bytes[i]);
        cl_event written = NULL;
        cl_int err = clEnqueueWriteBuffer(ctx->queue, x->arrays[i], CL_FALSE, 0, bytes[i],
                                          x->staging + at[i], 0, NULL, &written);
        if (err != CL_SUCCESS)
            return attn_fail(ctx, (attn_status)err, "clEnqueueWriteBuffer for %s failed: %s (%d)",
                             kv_array_names[i], attn_cl_error_name(err), (int)err);
        if (x->staged)
            clReleaseEvent(x->staged);
        x->staged = written;
    }
    d->kv_lengths = use[KV_LENGTHS];
    d->kv_slots = use[KV_SLOTS];
    d->kv_pages = use[KV_PAGES];
    d->arrays[ATTN_INPUT_alibi_slopes] = use[KV_SLOPES];
    d->rotary_cos = use[KV_COS];
    d->rotary_sin = use[KV_SIN];
    return ATTN_SUCCESS;
}

static attn_status check_plan_lse(attn_plan_t plan, const char *call, int has_lse) {
    const int wanted = (attn_plan_outputs(plan) & ATTN_PLAN_LSE) != 0;
    if (has_lse == wanted)
        return ATTN_SUCCESS;
    return attn_fail(attn_plan_context(plan), ATTN_ERR_INVALID_VALUE,
                     "%s: the plan was made %s ATTN_PLAN_LSE, but the tensors %s an lse", call,
                     wanted ? "with" : "without", has_lse ? "have" : "lack");
}

/* ---- Device execute ---------------------------------------------------------------- */

attn_status attn_plan_execute_kvcache_device(attn_plan_t plan, const attn_kvcache_device_tensors *t,
                                             cl_mem workspace, size_t workspace_offset,
                                             cl_uint num_wait, const cl_event *wait_list,
                                             cl_event *event) {
    if (event)
        *event = NULL;
    const char *call = "attn_plan_execute_kvcache_device";
    if (!plan)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "%s: plan is NULL", call);
    attn_context_t ctx = attn_plan_context(plan);
    kvcache_ext *x = kvcache_of(plan, call);
    if (!x)
        return ATTN_ERR_INVALID_VALUE;
    const attn_problem *pb = attn_plan_problem(plan);
    if (!t || !t->q || !t->o || !t->k_cache || !t->v_cache)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT,
                         "%s: tensors and their q, o, k_cache and v_cache are required", call);
    if (pb->kv.append && (!t->k_new || !t->v_new))
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT, "%s: append needs k_new and v_new", call);
    const int int8 = pb->kv.kv_dtype == ATTN_KV_DTYPE_INT8;
    if (int8 && (!t->k_scale || !t->v_scale))
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT, "%s: an int8 cache needs k_scale and v_scale",
                         call);
    if ((num_wait > 0) != (wait_list != NULL))
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                         "wait_list must be NULL exactly when num_wait_events is 0");
    attn_status status = check_plan_lse(plan, call, t->lse != NULL);
    if (status != ATTN_SUCCESS)
        return status;

    attn_device_args d = {.q = t->q,
                          .k = t->k_cache,
                          .v = t->v_cache,
                          .o = t->o,
                          .lse = t->lse,
                          .k_new = pb->kv.append ? t->k_new : NULL,
                          .v_new = pb->kv.append ? t->v_new : NULL,
                          .k_scale = int8 ? t->k_scale : NULL,
                          .v_scale = int8 ? t->v_scale : NULL,
                          .callers_outputs = 1};
    const size_t es = pb->element_size, kes = pb->kv.kv_element_size;
    const struct {
        const char *name;
        cl_mem mem;
        size_t offset, extent, element_size;
        size_t *element_offset;
    } tensors[9] = {
        {"Q", t->q, t->q_offset, pb->q_extent, es, &d.q_offset},
        {"K_cache", t->k_cache, t->k_cache_offset, pb->k_extent, kes, &d.k_offset},
        {"V_cache", t->v_cache, t->v_cache_offset, pb->v_extent, kes, &d.v_offset},
        {"k_scale", d.k_scale, t->k_scale_offset, pb->kv.k_scale_extent, 4, &d.k_scale_offset},
        {"v_scale", d.v_scale, t->v_scale_offset, pb->kv.v_scale_extent, 4, &d.v_scale_offset},
        {"O", t->o, t->o_offset, pb->o_extent, es, &d.o_offset},
        {"LSE", t->lse, t->lse_offset, pb->lse_extent, sizeof(float), &d.lse_offset},
        {"k_new", d.k_new, t->k_new_offset, pb->kv.k_new_extent, es, &d.k_new_offset},
        {"v_new", d.v_new, t->v_new_offset, pb->kv.v_new_extent, es, &d.v_new_offset},
    };
    for (int i = 0; i < 9 && status == ATTN_SUCCESS; i++)
        if (tensors[i].mem)
            status = attn_check_device_tensor(ctx, tensors[i].name, tensors[i].mem,
                                              tensors[i].offset, tensors[i].extent,
                                              tensors[i].element_size, tensors[i].element_offset);
    if (status == ATTN_SUCCESS && workspace && attn_plan_workspace_size(plan)) {
        size_t unused;
        if (workspace_offset % ATTN_WORKSPACE_ALIGN != 0)
            status = attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                               "the workspace offset %zu is not a multiple of %d", workspace_offset,
                               ATTN_WORKSPACE_ALIGN);
        else
            status = attn_check_device_tensor(ctx, "the workspace", workspace, workspace_offset,
                                              attn_plan_workspace_size(plan), 1, &unused);
    }
    if (status == ATTN_SUCCESS) {
        /* O and LSE against Q and the cache, as a forward's against Q, K, V
         * (a cache of another element size as the elements of Q's size
         * that cover its bytes). */
        attn_problem as_q = *pb;
        as_q.k_extent = (pb->k_extent * kes + es - 1) / es;
        as_q.v_extent = (pb->v_extent * kes + es - 1) / es;
        const attn_device_tensors as_forward = {.q = t->q,
                                                .k = t->k_cache,
                                                .v = t->v_cache,
                                                .o = t->o,
                                                .lse = t->lse,
                                                .q_offset = t->q_offset,
                                                .k_offset = t->k_cache_offset,
                                                .v_offset = t->v_cache_offset,
                                                .o_offset = t->o_offset,
                                                .lse_offset = t->lse_offset};
        status = attn_check_device_overlap(ctx, &as_q, &as_forward);
    }
    if (status == ATTN_SUCCESS)
        status = attn_check_kvcache_overlap(ctx, pb, t);
    if (status != ATTN_SUCCESS)
        return status;

    attn_plan_lock(plan);
    const void *const host[KV_ARRAYS] = {t->cache_seqlens, t->cache_batch_idx, t->block_table,
                                         t->alibi_slopes,  t->rotary_cos,      t->rotary_sin};
    const cl_mem dev[KV_ARRAYS] = {t->cache_seqlens_mem, t->cache_batch_idx_mem, t->block_table_mem,
                                   t->alibi_slopes_mem,  t->rotary_cos_mem,      t->rotary_sin_mem};
    status = check_kvcache_arrays(ctx, pb, host, dev, x->marks);
    if (status == ATTN_SUCCESS)
        status = write_kvcache_arrays(plan, x, host, dev, &d);
    if (status == ATTN_SUCCESS)
        status =
            attn_plan_run_locked(plan, &d, workspace, workspace_offset, num_wait, wait_list, event);
    attn_plan_unlock(plan);
    return status;
}

/* ---- Host execute ------------------------------------------------------------------ */

/* Row `row` of head h of sequence b in a tensor laid out by `s`. */
static size_t row_at(const attn_strides *s, int64_t b, int64_t h, int64_t row) {
    return (size_t)b * (size_t)s->batch + (size_t)h * (size_t)s->head +
           (size_t)row * (size_t)s->seq;
}

/* The new rows into the caller's cache: the bytes the device wrote into its
 * copy (the same storage elements, converted nowhere); with rotary
 * embedding, k_new rotated (into `rotated_k`, k_new's packed size) first. */
static void append_host(const attn_problem *pb, const attn_kvcache_host_tensors *t,
                        void *rotated_k) {
    if (!pb->kv.rotary_dim) {
        attn_kvcache_append_host(pb, t);
        return;
    }
    attn_problem packed = *pb;
    const int64_t dim = pb->p.head_dim;
    attn_rotary_rows_host(pb, t, t->k_new, &pb->kv.k_new_strides, pb->p.heads_kv, rotated_k);
    packed.kv.k_new_strides =
        (attn_strides){pb->p.heads_kv * pb->p.seq_q * dim, pb->p.seq_q * dim, dim};
    attn_kvcache_host_tensors rotated = *t;
    rotated.k_new = rotated_k;
    attn_kvcache_append_host(&packed, &rotated);
}

void attn_kvcache_append_host(const attn_problem *pb, const attn_kvcache_host_tensors *t) {
    const attn_params *p = &pb->p;
    const attn_kvcache_layout *kv = &pb->kv;
    const size_t es = pb->element_size;
    const int int8 = kv->kv_dtype == ATTN_KV_DTYPE_INT8;
    for (int64_t b = 0; b < p->batch; b++)
        for (int64_t h = 0; h < p->heads_kv; h++)
            for (int64_t i = 0; i < p->seq_q; i++) {
                const int64_t key = (int64_t)t->cache_seqlens[b] + i;
                int64_t block = kv->batch_idx ? t->cache_batch_idx[b] : b, row = key;
                if (kv->paged) {
                    block = t->block_table[b * kv->max_pages + key / kv->page_size];
                    row = key % kv->page_size;
                }
                if (kv->convert) { /* lib/kv_storage.c, kernels/kv_convert.cl's bits */
                    float ks = 0.0f, vs = 0.0f;
                    attn_kv_store_row(t->k_new, row_at(&kv->k_new_strides, b, h, i), p->dtype,
                                      p->head_dim, t->k_cache, row_at(&p->k_strides, block, h, row),
                                      kv->kv_dtype, &ks);
                    attn_kv_store_row(t->v_new, row_at(&kv->v_new_strides, b, h, i), p->dtype,
                                      p->head_dim_v, t->v_cache,
                                      row_at(&p->v_strides, block, h, row), kv->kv_dtype, &vs);
                    if (int8) {
                        t->k_scale[row_at(&kv->k_scale_strides, block, h, row)] = ks;
                        t->v_scale[row_at(&kv->v_scale_strides, block, h, row)] = vs;
                    }
                    continue;
                }
                memcpy((char *)t->k_cache + row_at(&p->k_strides, block, h, row) * es,
                       (const char *)t->k_new + row_at(&kv->k_new_strides, b, h, i) * es,
                       (size_t)p->head_dim * es);
                memcpy((char *)t->v_cache + row_at(&p->v_strides, block, h, row) * es,
                       (const char *)t->v_new + row_at(&kv->v_new_strides, b, h, i) * es,
                       (size_t)p->head_dim_v * es);
            }
}

/* The host call's device copies and output staging, made on its first execute. */
static attn_status own_host_buffers(attn_context_t ctx, const attn_problem *pb, kvcache_ext *x) {
    if (x->q)
        return ATTN_SUCCESS;
    const size_t es = pb->element_size, kes = pb->kv.kv_element_size;
    const size_t o_bytes = pb->o_extent * es, lse_bytes = pb->lse_extent * sizeof(float);
    attn_status status = attn_create_buffer(ctx, "Q", pb->q_extent * es, &x->q);
    if (status == ATTN_SUCCESS)
        status = attn_create_buffer(ctx, "K_cache", pb->k_extent * kes, &x->k_cache);
    if (status == ATTN_SUCCESS)
        status = attn_create_buffer(ctx, "V_cache", pb->v_extent * kes, &x->v_cache);
    if (status == ATTN_SUCCESS && pb->kv.kv_dtype == ATTN_KV_DTYPE_INT8)
        status = attn_create_buffer(ctx, "k_scale", pb->kv.k_scale_extent * 4, &x->k_scale);
    if (status == ATTN_SUCCESS && pb->kv.kv_dtype == ATTN_KV_DTYPE_INT8)
        status = attn_create_buffer(ctx, "v_scale", pb->kv.v_scale_extent * 4, &x->v_scale);
    if (status == ATTN_SUCCESS)
        status = attn_create_buffer(ctx, "O", o_bytes, &x->o);
    if (status == ATTN_SUCCESS && pb->want_lse)
        status = attn_create_buffer(ctx, "LSE", lse_bytes, &x->lse);
    if (status == ATTN_SUCCESS && pb->kv.append)
        status = attn_create_buffer(ctx, "k_new", pb->kv.k_new_extent * es, &x->k_new);
    if (status == ATTN_SUCCESS && pb->kv.append)
        status = attn_create_buffer(ctx, "v_new", pb->kv.v_new_extent * es, &x->v_new);
    if (status == ATTN_SUCCESS) {
        x->o_host = malloc(o_bytes);
        if (pb->want_lse)
            x->lse_host = malloc(lse_bytes);
        if (!x->o_host || (pb->want_lse && !x->lse_host))
            status = attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY,
                               "cannot allocate host staging for the outputs");
    }
    if (status != ATTN_SUCCESS) {
        cl_mem *mems[9] = {&x->q,   &x->k_cache, &x->v_cache, &x->o,      &x->lse,
                           &x->k_new, &x->v_new, &x->k_scale, &x->v_scale};
        for (int i = 0; i < 9; i++) {
            if (*mems[i])
                clReleaseMemObject(*mems[i]);
            *mems[i] = NULL;
        }
        free(x->o_host);
        free(x->lse_host);
        x->o_host = NULL;
        x->lse_host = NULL;
    }
    return status;
}

/* The staged rows of a [batch, heads, rows, inner] output into the caller's
 * memory, only the elements the call wrote. */
static void copy_rows(void *dst, const void *src, const attn_strides *s, int64_t batch,
                      int64_t heads, int64_t rows, size_t row_bytes, size_t es) {
    for (int64_t b = 0; b < batch; b++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t i = 0; i < rows; i++) {
                const size_t at = row_at(s, b, h, i) * es;
                memcpy((char *)dst + at, (const char *)src + at, row_bytes);
            }
}

static attn_status execute_host_locked(attn_plan_t plan, kvcache_ext *x,
                                       const attn_kvcache_host_tensors *t) {
    attn_context_t ctx = attn_plan_context(plan);
    const attn_problem *pb = attn_plan_problem(plan);
    const attn_params *p = &pb->p;
    const size_t es = pb->element_size;
    const void *const host[KV_ARRAYS] = {t->cache_seqlens, t->cache_batch_idx, t->block_table,
                                         t->alibi_slopes,  t->rotary_cos,      t->rotary_sin};
    attn_status status = check_kvcache_arrays(ctx, pb, host, NULL, x->marks);
    if (status == ATTN_SUCCESS)
        status = attn_kv_check_int8_host(ctx, pb, t);
    if (status == ATTN_SUCCESS && pb->kv.rotary_dim && pb->kv.append && !x->rotated_k) {
        x->rotated_k = malloc((size_t)p->batch * (size_t)p->heads_kv * (size_t)p->seq_q *
                              (size_t)p->head_dim * es);
        if (!x->rotated_k)
            status =
                attn_fail(ctx, ATTN_ERR_HOST_OUT_OF_MEMORY, "cannot allocate the rotated k_new");
    }
    if (status == ATTN_SUCCESS)
        status = own_host_buffers(ctx, pb, x);
    if (status != ATTN_SUCCESS)
        return status;
    attn_device_args d = {.q = x->q,
                          .k = x->k_cache,
                          .v = x->v_cache,
                          .o = x->o,
                          .lse = t->lse ? x->lse : NULL,
                          .k_new = x->k_new,
                          .v_new = x->v_new,
                          .k_scale = x->k_scale,
                          .v_scale = x->v_scale};
    const size_t kes = pb->kv.kv_element_size;
    status = attn_write_buffer(ctx, "Q", x->q, pb->q_extent * es, t->q);
    if (status == ATTN_SUCCESS)
        status = attn_write_buffer(ctx, "K_cache", x->k_cache, pb->k_extent * kes, t->k_cache);
    if (status == ATTN_SUCCESS)
        status = attn_write_buffer(ctx, "V_cache", x->v_cache, pb->v_extent * kes, t->v_cache);
    if (status == ATTN_SUCCESS && x->k_scale)
        status = attn_write_buffer(ctx, "k_scale", x->k_scale, pb->kv.k_scale_extent * 4, t->k_scale);
    if (status == ATTN_SUCCESS && x->v_scale)
        status = attn_write_buffer(ctx, "v_scale", x->v_scale, pb->kv.v_scale_extent * 4, t->v_scale);
    if (status == ATTN_SUCCESS && pb->kv.append)
        status = attn_write_buffer(ctx, "k_new", x->k_new, pb->kv.k_new_extent * es, t->k_new);
    if (status == ATTN_SUCCESS && pb->kv.append)
        status = attn_write_buffer(ctx, "v_new", x->v_new, pb->kv.v_new_extent * es, t->v_new);
    if (status == ATTN_SUCCESS)
        status = write_kvcache_arrays(plan, x, host, NULL, &d);
    if (status == ATTN_SUCCESS)
        status = attn_plan_run_locked(plan, &d, NULL, 0, 0, NULL, NULL);
    if (status == ATTN_SUCCESS)
        status = attn_read_buffer(ctx, "O", x->o, pb->o_extent * es, x->o_host);
    if (status == ATTN_SUCCESS && t->lse)
        status = attn_read_buffer(ctx, "LSE", x->lse, pb->lse_extent * sizeof(float), x->lse_host);
    if (status != ATTN_SUCCESS) {
        clFinish(ctx->queue); /* writes from the caller's memory may still be queued */
        return status;
    }
    copy_rows(t->o, x->o_host, &p->o_strides, p->batch, p->heads_q, p->seq_q,
              (size_t)p->head_dim_v * es, es);
    if (t->lse)
        copy_rows(t->lse, x->lse_host, &p->lse_strides, p->batch, p->heads_q, p->seq_q,
                  sizeof(float), sizeof(float));
    if (pb->kv.append)
        append_host(pb, t, x->rotated_k);
    return ATTN_SUCCESS;
}

attn_status attn_plan_execute_kvcache_host(attn_plan_t plan, const attn_kvcache_host_tensors *t) {
    const char *call = "attn_plan_execute_kvcache_host";
    if (!plan)
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "%s: plan is NULL", call);
    attn_context_t ctx = attn_plan_context(plan);
    kvcache_ext *x = kvcache_of(plan, call);
    if (!x)
        return ATTN_ERR_INVALID_VALUE;
    const attn_problem *pb = attn_plan_problem(plan);
    if (!t || !t->q || !t->o || !t->k_cache || !t->v_cache)
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT,
                         "%s: tensors and their q, o, k_cache and v_cache are required", call);
    if (pb->kv.append && (!t->k_new || !t->v_new))
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT, "%s: append needs k_new and v_new", call);
    if (pb->kv.kv_dtype == ATTN_KV_DTYPE_INT8 && (!t->k_scale || !t->v_scale))
        return attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT, "%s: an int8 cache needs k_scale and v_scale",
                         call);
    attn_status status = check_plan_lse(plan, call, t->lse != NULL);
    if (status != ATTN_SUCCESS)
        return status;
    attn_plan_lock(plan);
    status = execute_host_locked(plan, x, t);
    attn_plan_unlock(plan);
    return status;
}

/* ---- For the reference ----------------------------------------------------------- */

attn_status attn_kvcache_validate(const attn_kvcache_params *params,
                                  const attn_kvcache_host_tensors *t, attn_problem *pb) {
    attn_status status = kvcache_problem_make(NULL, params, t->lse != NULL, pb);
    if (status != ATTN_SUCCESS)
        return status;
    if (pb->kv.append && (!t->k_new || !t->v_new))
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "append needs k_new and v_new");
    if (pb->kv.kv_dtype == ATTN_KV_DTYPE_INT8 && (!t->k_scale || !t->v_scale))
        return attn_fail(NULL, ATTN_ERR_NULL_ARGUMENT, "an int8 cache needs k_scale and v_scale");
    unsigned char *marks = malloc((size_t)pb->kv.slots);
    if (!marks)
        return attn_fail(NULL, ATTN_ERR_HOST_OUT_OF_MEMORY, "cannot allocate %d marks",
                         (int)pb->kv.slots);
    const void *const host[KV_ARRAYS] = {t->cache_seqlens, t->cache_batch_idx, t->block_table,
                                         t->alibi_slopes,  t->rotary_cos,      t->rotary_sin};
    status = check_kvcache_arrays(NULL, pb, host, NULL, marks);
    free(marks);
    if (status == ATTN_SUCCESS)
        status = attn_kv_check_int8_host(NULL, pb, t);
    return status;
}
