/* Which memory a device call's tensors share (attn_forward_device). The
 * kernels read the inputs while other work-items write the outputs, in no
 * order, so an output that shares a byte with an input races: refused
 * whenever their byte ranges meet in one buffer, sub-buffers resolved to
 * their parent. O and LSE may interleave (a packed [O | LSE] record): they
 * are refused only when they share an element, since each output element is
 * written once, by one work-item. */
#include "attn_internal.h"

/* A tensor's bytes [first, end) in the buffer that owns the memory. */
typedef struct span {
    const char *name;
    cl_mem root;
    size_t first, end;
} span;

static attn_status mem_info(attn_context_t ctx, const char *name, cl_mem mem, cl_mem_info what,
                            size_t size, void *value) {
    cl_int err = clGetMemObjectInfo(mem, what, size, value, NULL);
    if (err != CL_SUCCESS)
        return attn_fail(ctx, (attn_status)err, "clGetMemObjectInfo(%s) failed: %s (%d)", name,
                         attn_cl_error_name(err), (int)err);
    return ATTN_SUCCESS;
}

/* `bytes` from byte `offset` of `mem`, in the terms of its root buffer
 * (OpenCL 1.2 sub-buffers have a buffer, not a sub-buffer, as parent; the
 * loop does not rely on it). attn_check_device_tensor has checked the
 * range against the size. */
static attn_status span_of(attn_context_t ctx, const char *name, cl_mem mem, size_t offset,
                           size_t bytes, span *out) {
    *out = (span){name, mem, offset, offset + bytes};
    for (int depth = 0; depth < 8; depth++) {
        cl_mem parent = NULL;
        size_t origin = 0;
        attn_status status =
            mem_info(ctx, name, out->root, CL_MEM_ASSOCIATED_MEMOBJECT, sizeof parent, &parent);
        if (status == ATTN_SUCCESS && parent)
            status = mem_info(ctx, name, out->root, CL_MEM_OFFSET, sizeof origin, &origin);
        if (status != ATTN_SUCCESS || !parent)
            return status;
        out->root = parent;
        out->first += origin;
        out->end += origin;
    }
    return ATTN_SUCCESS;
}

static int spans_meet(const span *a, const span *b) {
    return a->root == b->root && a->first < b->end && b->first < a->end;
}

/* Rows of an output: byte `base`, then batch x heads x rows rows of `run`
 * bytes at element strides, dimensions sorted by stride, largest first
 * (dimensions of size 1 dropped). The plan has checked that the rows of an
 * output do not overlap, so each stride steps past all the smaller ones
 * cover. */
typedef struct row_layout {
    size_t base, element_size, run;
    int dims;
    size_t size[3], stride[3];
} row_layout;

/* A tensor [size[0], size[1], size[2], inner] laid out by `s`, as rows of
 * `inner` elements from byte `base`: dimensions of size 1 dropped, the
 * others sorted by stride, largest first. */
static row_layout rows_layout(size_t base, const int64_t size[3], const attn_strides *s,
                              size_t inner, size_t element_size) {
    const int64_t stride[3] = {s->batch, s->head, s->seq};
    row_layout r = {.base = base, .element_size = element_size, .run = inner * element_size};
    for (int d = 0; d < 3; d++) {
        if (size[d] == 1)
            continue;
        int at = r.dims++;
        while (at > 0 && r.stride[at - 1] < (size_t)stride[d]) {
            r.size[at] = r.size[at - 1];
            r.stride[at] = r.stride[at - 1];
            at--;
        }
        r.size[at] = (size_t)size[d];
        r.stride[at] = (size_t)stride[d];
    }
    return r;
}

static row_layout layout_of(const attn_problem *pb, size_t base, const attn_strides *s,
                            size_t inner, size_t element_size) {
    const attn_params *p = &pb->p;
    const int64_t size[3] = {p->varlen ? 1 : p->batch, p->heads_q,
                             p->varlen ? p->total_q : p->seq_q};
    return rows_layout(base, size, s, inner, element_size);
}

/* Whether a row of `r` has a byte in [lo, hi). The last row starting at or
 * before hi - 1 is the only candidate (rows do not overlap); with nested
 * strides, taking the largest index per dimension, largest stride first,
 * finds it. */
static int rows_meet(const row_layout *r, size_t lo, size_t hi) {
    if (hi <= r->base)
        return 0;
    size_t left = (hi - 1 - r->base) / r->element_size, start = 0;
    for (int d = 0; d < r->dims; d++) {
        size_t index = left / r->stride[d];
        if (index > r->size[d] - 1)
            index = r->size[d] - 1;
        start += index * r->stride[d];
        left -= index * r->stride[d];
    }
    return r->base + start * r->element_size + r->run > lo;
}

/* Whether some LSE element of `lse` falls on a row of O. */
static int outputs_share(const attn_problem *pb, const span *o, const span *lse) {
    const attn_params *p = &pb->p;
    const row_layout rows =
        layout_of(pb, o->first, &p->o_strides, (size_t)p->head_dim_v, pb->element_size);
    const row_layout elems = layout_of(pb, lse->first, &p->lse_strides, 1, sizeof(float));
    /* Every LSE element: walk its index space in the plan's order. */
    size_t count = 1;
    for (int d = 0; d < elems.dims; d++)
        count *= elems.size[d];
    for (size_t n = 0; n < count; n++) {
        size_t rest = n, offset = 0;
        for (int d = elems.dims - 1; d >= 0; d--) {
            offset += rest % elems.size[d] * elems.stride[d];
            rest /= elems.size[d];
        }
        const size_t at = elems.base + offset * sizeof(float);
        if (rows_meet(&rows, at, at + sizeof(float)))
            return 1;
    }
    return 0;
}

attn_status attn_check_device_overlap(attn_context_t ctx, const attn_problem *pb,
                                      const attn_device_tensors *t) {
    const size_t es = pb->element_size;
    span in[5], out[2];
    int inputs = 0, outputs = 0;
    attn_status status = span_of(ctx, "Q", t->q, t->q_offset, pb->q_extent * es, &in[inputs++]);
    if (status == ATTN_SUCCESS)
        status = span_of(ctx, "K", t->k, t->k_offset, pb->k_extent * es, &in[inputs++]);
    if (status == ATTN_SUCCESS)
        status = span_of(ctx, "V", t->v, t->v_offset, pb->v_extent * es, &in[inputs++]);
    if (status == ATTN_SUCCESS && pb->p.bias.present)
        status = span_of(ctx, "the bias", t->bias, t->bias_offset, pb->bias_extent * sizeof(float),
                         &in[inputs++]);
    if (status == ATTN_SUCCESS && pb->p.keep_mask.present)
        status = span_of(ctx, "the keep_mask", t->keep_mask, t->keep_mask_offset,
                         pb->keep_mask_extent, &in[inputs++]);
    if (status == ATTN_SUCCESS)
        status = span_of(ctx, "O", t->o, t->o_offset, pb->o_extent * es, &out[outputs++]);
    if (status == ATTN_SUCCESS && t->lse)
        status = span_of(ctx, "LSE", t->lse, t->lse_offset, pb->lse_extent * sizeof(float),
                         &out[outputs++]);
    if (status != ATTN_SUCCESS)
        return status;

    for (int o = 0; o < outputs; o++)
        for (int i = 0; i < inputs; i++)
            if (spans_meet(&out[o], &in[i]))
                return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                                 "attn_forward_device: %s (bytes %zu..%zu of its buffer) overlaps "
                                 "%s (bytes %zu..%zu of the same buffer); an output may not "
                                 "share memory with an input",
                                 out[o].name, out[o].first, out[o].end, in[i].name, in[i].first,
                                 in[i].end);
    if (outputs == 2 && spans_meet(&out[0], &out[1]) && outputs_share(pb, &out[0], &out[1]))
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                         "attn_forward_device: O (from byte %zu) and LSE (from byte %zu) of one "
                         "buffer share an element; they may interleave, not overlap",
                         out[0].first, out[1].first);
    return ATTN_SUCCESS;
}

attn_status attn_check_disjoint(attn_context_t ctx, const char *call, const attn_mem_range *ranges,
                                int count, int first_output) {
    span spans[16];
    if (count > 16)
        return attn_fail(ctx, ATTN_ERR_UNSUPPORTED, "%s: more than 16 tensors", call);
    for (int i = 0; i < count; i++) {
        spans[i] = (span){ranges[i].name, NULL, 0, 0};
        if (!ranges[i].mem)
            continue;
        attn_status status = span_of(ctx, ranges[i].name, ranges[i].mem, ranges[i].offset,
                                     ranges[i].extent * ranges[i].element_size, &spans[i]);
        if (status != ATTN_SUCCESS)
            return status;
    }
    for (int o = first_output; o < count; o++)
        for (int i = 0; i < count; i++)
            if (i != o && spans[o].root && spans[i].root && spans[o].first < spans[o].end &&
                spans[i].first < spans[i].end && spans_meet(&spans[o], &spans[i]))
                return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                                 "%s: %s (bytes %zu..%zu of its buffer) overlaps %s (bytes "
                                 "%zu..%zu of the same buffer); a gradient may not share memory "
                                 "with another tensor",
                                 call, spans[o].name, spans[o].first, spans[o].end, spans[i].name,
                                 spans[i].first, spans[i].end);
    return ATTN_SUCCESS;
}

/* ---- KV-cache calls ----------------------------------------------------------- */

/* Whether a row of `a` shares a byte with a row of `b` (both in one
 * buffer): each row of `a` asked of rows_meet. Run only when their spans
 * meet, i.e. for interleaved layouts (K and V rows of one record, the
 * scales in the cache's rows): linear in a's rows. */
static int layouts_share(const row_layout *a, const row_layout *b) {
    size_t count = 1;
    for (int d = 0; d < a->dims; d++)
        count *= a->size[d];
    for (size_t n = 0; n < count; n++) {
        size_t rest = n, offset = 0;
        for (int d = a->dims - 1; d >= 0; d--) {
            offset += rest % a->size[d] * a->stride[d];
            rest /= a->size[d];
        }
        const size_t at = a->base + offset * a->element_size;
        if (rows_meet(b, at, at + a->run))
            return 1;
    }
    return 0;
}

attn_status attn_check_kvcache_overlap(attn_context_t ctx, const attn_problem *pb,
                                       const attn_kvcache_device_tensors *t) {
    const attn_kvcache_layout *kv = &pb->kv;
    const attn_params *p = &pb->p;
    const size_t es = pb->element_size, kes = kv->kv_element_size;
    const int int8 = kv->kv_dtype == ATTN_KV_DTYPE_INT8;
    /* 0 K_cache, 1 V_cache, 2 k_scale, 3 v_scale: written with append;
     * 4 Q, 5 k_new, 6 v_new: read; 7 O, 8 LSE: written. */
    enum { KC, VC, KS, VS, Q, KN, VN, O, LSE, N };
    const struct {
        const char *name;
        cl_mem mem;
        size_t offset, bytes;
    } tensors[N] = {
        {"K_cache", t->k_cache, t->k_cache_offset, pb->k_extent * kes},
        {"V_cache", t->v_cache, t->v_cache_offset, pb->v_extent * kes},
        {"k_scale", int8 ? t->k_scale : NULL, t->k_scale_offset, kv->k_scale_extent * 4},
        {"v_scale", int8 ? t->v_scale : NULL, t->v_scale_offset, kv->v_scale_extent * 4},
        {"Q", t->q, t->q_offset, pb->q_extent * es},
        {"k_new", kv->append ? t->k_new : NULL, t->k_new_offset, kv->k_new_extent * es},
        {"v_new", kv->append ? t->v_new : NULL, t->v_new_offset, kv->v_new_extent * es},
        {"O", t->o, t->o_offset, pb->o_extent * es},
        {"LSE", t->lse, t->lse_offset, pb->lse_extent * sizeof(float)},
    };
    span s[N];
    for (int i = 0; i < N; i++) {
        s[i] = (span){tensors[i].name, NULL, 0, 0};
        if (!tensors[i].mem)
            continue;
        attn_status status = span_of(ctx, tensors[i].name, tensors[i].mem, tensors[i].offset,
                                     tensors[i].bytes, &s[i]);
        if (status != ATTN_SUCCESS)
            return status;
    }
    /* Byte ranges: what the call writes against what it reads or writes
     * otherwise (O and LSE may interleave: attn_check_device_overlap's). */
    for (int a = 0; a < N; a++)
        for (int b = a + 1; b < N; b++) {
            const int a_written = a <= VS ? kv->append : a >= O;
            const int b_written = b <= VS ? kv->append : b >= O;
            const int cache_pair = a <= VS && b <= VS; /* element-wise below */
            if (!s[a].root || !s[b].root || cache_pair || (b == LSE && a == O) ||
                !(a_written || b_written) || !spans_meet(&s[a], &s[b]))
                continue;
            return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                             "attn_plan_execute_kvcache_device: %s (bytes %zu..%zu of its "
                             "buffer) overlaps %s (bytes %zu..%zu of the same buffer); the "
                             "call writes %s while it reads %s",
                             s[a].name, s[a].first, s[a].end, s[b].name, s[b].first, s[b].end,
                             a_written ? s[a].name : s[b].name, a_written ? s[b].name : s[a].name);
        }
    if (!kv->append)
        return ATTN_SUCCESS;
    /* With append, the cache tensors may interleave (K and V rows of one
     * record, the scales beside the rows) but not share an element. */
    const int64_t size[3] = {kv->slots, p->heads_kv, kv->paged ? kv->page_size : p->seq_k};
    row_layout rows[4];
    rows[KC] = rows_layout(s[KC].first, size, &p->k_strides, (size_t)p->head_dim, kes);
    rows[VC] = rows_layout(s[VC].first, size, &p->v_strides, (size_t)p->head_dim_v, kes);
    rows[KS] = rows_layout(s[KS].first, size, &kv->k_scale_strides, 1, 4);
    rows[VS] = rows_layout(s[VS].first, size, &kv->v_scale_strides, 1, 4);
    for (int a = 0; a <= VS; a++)
        for (int b = a + 1; b <= VS; b++)
            if (s[a].root && s[b].root && spans_meet(&s[a], &s[b]) &&
                (layouts_share(&rows[a], &rows[b]) || layouts_share(&rows[b], &rows[a])))
                return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                                 "attn_plan_execute_kvcache_device: %s and %s share bytes of "
                                 "one buffer (from bytes %zu and %zu); with append the call "
                                 "writes both, so they may interleave but not overlap",
                                 s[a].name, s[b].name, s[a].first, s[b].first);
    return ATTN_SUCCESS;
}
