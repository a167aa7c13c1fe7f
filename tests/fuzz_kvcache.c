/* The fuzz target's KV-cache requests (attn_plan_create_kvcache and its
 * host and device executes, attn_reference_kvcache): a request whose
 * kvcache byte (fuzz_request.h) is nonzero takes its sizes, mask, storage
 * type, scale, softcap, window and ALiBi from the request's fields (forced
 * into the ranges a cache takes) and the rest from the bytes that follow:
 *
 *   layout  bits 0-2 page size (0, 1: contiguous; 2..7: 1, 2, 3, 5, 16, 7),
 *           bit 3 head-major pages/slots, bit 4 batch_idx, bit 5 append,
 *           bit 6 the device call (else the host call), bit 7 LSE
 *   s_new   b % 6: 0..5 new rows (0 must be refused)
 *   room    contiguous capacity 1 + b % 24; paged max_pages 1 + b % 6
 *   lengths b & 3: 0 random, 1 all at capacity less the new rows, 2 all 0,
 *           3 alternating full / a page boundary - 1
 *   rotary  b & 3: 0 none, 1 halves, 2 interleaved, 3 a bad rotary_dim;
 *           b >> 2 picks rotary_dim (even, <= D) and the table rows (the
 *           position clamp included)
 *   kv      b % 6: the cache's storage (0 Q's, f32, f16, bf16, int8; 5 an
 *           unknown attn_kv_dtype)
 *   fault   b % 16: 0 none; see enum kv_fault
 *   dims    b % 3: (D, Dv) of kv_dims
 *
 * Oracle: attn_check-free, since the cache calls have no check of their own.
 * The plan, the execute and attn_reference_kvcache answer one status
 * (ATTN_SUCCESS or one of the library's codes, with a message); a failed
 * call leaves O, LSE, the cache and its scales untouched byte for byte; a
 * successful one appends exactly the bytes attn_reference_kvcache appends
 * and gives O (and LSE) within test_util.h's bound of the double reference
 * over the keys as stored (gathered densely from the reference's appended
 * cache, Q turned by the header's rotary rule), the bound set by
 * naive_fp32 on the same keys. The device call reads no array values it
 * has in device memory and no scale or k_new on the host: a fault only the
 * host sees (a NaN scale, an infinite k_new) must be refused by the host
 * call and the reference, and is not compared after a device call. */
#include "fuzz_request.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum kv_fault {
    KVF_NONE,
    KVF_LENGTH_NEGATIVE,
    KVF_LENGTH_OVER,    /* one past the room the new rows leave */
    KVF_TABLE_NEGATIVE, /* paged: an entry a sequence uses */
    KVF_TABLE_OVER,     /* paged: an entry == num_pages */
    KVF_SHARED_BLOCK,   /* sequence 1 appends into sequence 0's page or slot */
    KVF_SLOT_OVER,      /* batch_idx: a slot == cache_slots */
    KVF_K_SCALE_NAN,    /* int8, host-only: a scale the call reads */
    KVF_V_SCALE_NEGATIVE,
    KVF_K_NEW_INF,      /* int8 and append, host-only */
    KVF_NO_TABLE,       /* paged: block_table NULL */
    KVF_NO_SCALES,      /* int8: v_scale NULL */
    KVF_SCALE_ON_O,     /* device, int8: k_scale inside O's buffer */
    KVF_SCALE_ON_CACHE, /* device, int8 and append: v_scale inside V_cache's buffer */
    KVF_COUNT_USED,
};

static const int32_t kv_dims[3][2] = {{8, 8}, {16, 8}, {4, 4}};
static const int32_t page_sizes[8] = {0, 0, 1, 2, 3, 5, 16, 7};

static uint8_t next_u8(reader *r) {
    if (!r->n)
        return 0;
    r->n--;
    return *r->p++;
}

typedef struct kv_request {
    attn_kvcache_params kp;
    int device, lse, head_major, fault;
    int shape; /* kv_shapes[shape]: the decode kernels' shape */
    int blocks, rows; /* slots or pages; tokens a slot or page holds */
    attn_kv_dtype kvt;
    size_t kes, es;
} kv_request;

typedef struct kv_inputs {
    size_t q_elems, o_elems, lse_elems, kc_elems, vc_elems, kn_elems, vn_elems, ks_elems, vs_elems;
    void *q, *kc, *vc, *kn, *vn; /* stored */
    float *ks, *vs;              /* int8 */
    int32_t *lengths, *slots, *table;
    float *slopes, *cos, *sin;
} kv_inputs;

static void kv_inputs_free(kv_inputs *in) {
    void *all[] = {in->q,       in->kc,    in->vc,    in->kn,     in->vn,  in->ks, in->vs,
                   in->lengths, in->slots, in->table, in->slopes, in->cos, in->sin};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
}

static size_t span(int64_t n0, int64_t n1, int64_t n2, int64_t inner, const attn_strides *s) {
    return (size_t)((n0 - 1) * s->batch + (n1 - 1) * s->head + (n2 - 1) * s->seq + inner);
}

/* include/attn_cl.h's int8 rule: scale = amax / 127, q = x / scale rounded
 * to nearest even, in -127..127. */
static float quantize_row(const float *x, int n, int8_t *q) {
    float amax = 0.0f;
    for (int i = 0; i < n; i++)
        amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    const float scale = amax / 127.0f;
    for (int i = 0; i < n; i++) {
        const float v = scale == 0.0f ? 0.0f : rintf(x[i] / scale);
        q[i] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
    }
    return scale;
}

/* The decode kernels' shapes a request may run with (tests/meson.build
 * runs the same): the table's (the cpu shape on PoCL), the gpu shape with
 * one key range and with three merged. Set on the context for the plan's
 * creation, which fixes them. */
static const char *const kv_shapes[4] = {NULL, "decode_wg=8,splits=1", "decode_wg=4,splits=3",
                                         NULL};

/* The request's fields forced into what a cache takes; the KV bytes. */
static void decode_kv(reader *r, const request *q, kv_request *k) {
    memset(k, 0, sizeof *k);
    const attn_params *p = &q->p;
    const uint8_t layout = next_u8(r), snew = next_u8(r), room = next_u8(r);
    const uint8_t lengths = next_u8(r), rotary = next_u8(r), kv = next_u8(r);
    const uint8_t fault = next_u8(r), dims = next_u8(r);
    (void)lengths; /* read again by make_inputs */
    const int32_t batch = p->batch >= 1 && p->batch <= MAX_BATCH ? p->batch : 2;
    int32_t hq = p->heads_q >= 1 && p->heads_q <= 3 ? p->heads_q : 2;
    int32_t hkv = p->heads_kv >= 0 && p->heads_kv <= 3 ? p->heads_kv : 0;
    if (hkv && hq % hkv)
        hkv = 1;
    const int32_t D = kv_dims[dims % 3][0], Dv = kv_dims[dims % 3][1];
    const int32_t page = page_sizes[layout & 7];
    const int32_t max_pages = 1 + room % 6;
    const int32_t capacity = page ? max_pages * page : 1 + room % 24;
    attn_kvcache_params *kp = &k->kp;
    attn_kvcache_params_init(kp, batch, hq, snew % 6, capacity, D);
    attn_params *a = &kp->attn;
    a->heads_kv = hkv;
    a->head_dim_v = Dv;
    a->mask = (unsigned)p->mask <= ATTN_MASK_CAUSAL_BOTTOM_RIGHT ? p->mask : ATTN_MASK_NONE;
    a->dtype = dtype_ok(p->dtype) ? p->dtype : ATTN_DTYPE_F32;
    a->scale = isfinite(p->scale) && fabsf(p->scale) <= 2.0f ? p->scale : 0.0f;
    a->softcap = isfinite(p->softcap) && p->softcap > 0.0f && p->softcap <= 50.0f ? p->softcap : 0;
    a->window = p->window;
    a->alibi = p->alibi;
    kp->page_size = page;
    kp->max_pages = page ? max_pages : 0;
    kp->append = (layout >> 5) & 1;
    kp->batch_idx = (layout >> 4) & 1; /* paged: refused */
    k->head_major = (layout >> 3) & 1;
    k->device = (layout >> 6) & 1;
    k->lse = (layout >> 7) & 1;
    k->blocks = page ? batch * max_pages + 2 : batch + (kp->batch_idx ? 2 : 0);
    k->rows = page ? page : capacity;
    if (page)
        kp->num_pages = k->blocks;
    else
        kp->cache_slots = k->blocks;
    const int32_t hk = hkv ? hkv : hq;
    for (int t = 0; t < 2; t++) {
        const int64_t inner = t == 0 ? D : Dv, rows = k->rows;
        *(t == 0 ? &kp->k_cache_strides : &kp->v_cache_strides) =
            k->head_major ? (attn_strides){hk * rows * inner, rows * inner, inner}
                          : (attn_strides){hk * rows * inner, inner, hk * inner};
    }
    const int kind = rotary & 3, pick = rotary >> 2;
    if (kind == 1 || kind == 2) {
        kp->rotary_dim = 2 * (1 + pick % (D / 2));
        kp->rotary_interleaved = kind == 2;
        kp->rotary_positions = 1 + (pick >> 3) % (capacity + 2); /* below capacity: clamped */
    } else if (kind == 3) {
        const int32_t bad[4] = {3, D + 2, -2, 2};
        kp->rotary_dim = bad[pick & 3];
        kp->rotary_positions = (pick & 3) == 3 ? 0 : capacity;
    }
    kp->kv_dtype = kv % 6 == 5 ? (attn_kv_dtype)9 : (attn_kv_dtype)(kv % 6);
    k->kvt = kp->kv_dtype == ATTN_KV_DTYPE_SAME ? (attn_kv_dtype)(a->dtype + 1) : kp->kv_dtype;
    k->kes = k->kvt == ATTN_KV_DTYPE_INT8  ? 1
             : k->kvt == ATTN_KV_DTYPE_F32 ? 4
             : (unsigned)k->kvt <= 4       ? 2
                                           : 4;
    k->es = elem_size(a->dtype);
    if (k->kvt == ATTN_KV_DTYPE_INT8)
        for (int t = 0; t < 2; t++)
            *(t == 0 ? &kp->k_scale_strides : &kp->v_scale_strides) =
                k->head_major ? (attn_strides){hk * k->rows, k->rows, 1}
                              : (attn_strides){hk * k->rows, 1, hk};
    k->fault = fault % 16 < KVF_COUNT_USED ? fault % 16 : KVF_NONE;
    k->shape = (fault >> 4) & 3;
}

/* Values in [-1, 1) rounded to `dtype`, stored. */
static void *stored_values(test_rng *rng, attn_dtype dtype, size_t n) {
    float *x = malloc((n ? n : 1) * sizeof *x);
    test_fill_uniform(rng, x, n, -1.0f, 1.0f);
    void *s = test_to_storage(dtype, x, n);
    free(x);
    return s;
}

static void make_inputs(const request *q, const kv_request *k, uint8_t lengths_mode,
                        kv_inputs *in) {
    memset(in, 0, sizeof *in);
    const attn_kvcache_params *kp = &k->kp;
    const attn_params *a = &kp->attn;
    test_rng rng = rng_for(q, 77);
    const int64_t B = a->batch, hq = a->heads_q, hk = a->heads_kv ? a->heads_kv : hq;
    const int64_t sq = a->seq_q > 0 ? a->seq_q : 1, D = a->head_dim, Dv = a->head_dim_v;
    in->q_elems = (size_t)(B * hq * sq * D);
    in->o_elems = (size_t)(B * hq * sq * Dv);
    in->lse_elems = (size_t)(B * hq * sq);
    in->kn_elems = (size_t)(B * hk * sq * D);
    in->vn_elems = (size_t)(B * hk * sq * Dv);
    in->kc_elems = span(k->blocks, hk, k->rows, D, &kp->k_cache_strides);
    in->vc_elems = span(k->blocks, hk, k->rows, Dv, &kp->v_cache_strides);
    in->q = stored_values(&rng, a->dtype, in->q_elems);
    in->kn = stored_values(&rng, a->dtype, in->kn_elems);
    in->vn = stored_values(&rng, a->dtype, in->vn_elems);
    for (int t = 0; t < 2; t++) {
        const size_t n = t == 0 ? in->kc_elems : in->vc_elems;
        const int64_t inner = t == 0 ? D : Dv;
        float *x = malloc(n * sizeof *x);
        test_fill_uniform(&rng, x, n, -1.0f, 1.0f);
        void *stored;
        if (k->kvt == ATTN_KV_DTYPE_INT8) {
            const attn_strides *cs = t == 0 ? &kp->k_cache_strides : &kp->v_cache_strides;
            const attn_strides *ss = t == 0 ? &kp->k_scale_strides : &kp->v_scale_strides;
            const size_t ns = span(k->blocks, hk, k->rows, 1, ss);
            int8_t *q8 = calloc(n, 1);
            float *scales = calloc(ns, sizeof *scales);
            for (int64_t b = 0; b < k->blocks; b++)
                for (int64_t h = 0; h < hk; h++)
                    for (int64_t i = 0; i < k->rows; i++) {
                        const size_t at = (size_t)(b * cs->batch + h * cs->head + i * cs->seq);
                        scales[b * ss->batch + h * ss->head + i * ss->seq] =
                            quantize_row(x + at, (int)inner, q8 + at);
                    }
            stored = q8;
            *(t == 0 ? &in->ks : &in->vs) = scales;
            *(t == 0 ? &in->ks_elems : &in->vs_elems) = ns;
        } else {
            /* An unknown kv_dtype: float bytes (the plan must refuse). */
            const attn_dtype st = (unsigned)k->kvt <= 4 ? (attn_dtype)(k->kvt - 1) : ATTN_DTYPE_F32;
            stored = test_to_storage(st, x, n);
        }
        free(x);
        *(t == 0 ? &in->kc : &in->vc) = stored;
    }
    const int32_t capacity = kp->page_size ? kp->max_pages * kp->page_size : kp->capacity;
    int32_t room = capacity - (kp->append ? a->seq_q : 0);
    room = room < 0 ? 0 : room;
    const int32_t page = kp->page_size ? kp->page_size : 4;
    in->lengths = malloc((size_t)B * sizeof(int32_t));
    for (int64_t b = 0; b < B; b++) {
        int32_t l;
        switch (lengths_mode & 3) {
        case 0:
            l = draw(&rng, 0, room);
            break;
        case 1:
            l = room;
            break;
        case 2:
            l = 0;
            break;
        default:
            l = b % 2 ? page - 1 : room;
            break;
        }
        in->lengths[b] = l < 0 ? 0 : l > room ? room : l;
    }
    in->slots = malloc((size_t)B * sizeof(int32_t));
    for (int64_t b = 0; b < B; b++)
        in->slots[b] = (int32_t)(k->blocks - 1 - b); /* reversed */
    const int64_t entries = B * (kp->max_pages ? kp->max_pages : 1);
    in->table = malloc((size_t)entries * sizeof(int32_t));
    {
        /* Every page at most once, shuffled. */
        int32_t *perm = malloc((size_t)k->blocks * sizeof *perm);
        for (int i = 0; i < k->blocks; i++)
            perm[i] = i;
        for (int i = k->blocks - 1; i > 0; i--) {
            const int j = draw(&rng, 0, i);
            const int32_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        for (int64_t e = 0; e < entries; e++)
            in->table[e] = kp->page_size ? perm[e % k->blocks] : 0;
        free(perm);
    }
    in->slopes = malloc((size_t)hq * sizeof(float));
    for (int64_t h = 0; h < hq; h++)
        in->slopes[h] = powf(2.0f, -8.0f * (float)(h + 1) / (float)hq);
    if (kp->rotary_dim > 0 && kp->rotary_positions > 0 && kp->rotary_dim % 2 == 0) {
        const int half = kp->rotary_dim / 2;
        const size_t n = (size_t)kp->rotary_positions * (size_t)half;
        in->cos = malloc(n * sizeof(float));
        in->sin = malloc(n * sizeof(float));
        for (int pos = 0; pos < kp->rotary_positions; pos++)
            for (int f = 0; f < half; f++) {
                const double angle = pos * pow(10000.0, -2.0 * f / kp->rotary_dim);
                in->cos[pos * half + f] = (float)cos(angle);
                in->sin[pos * half + f] = (float)sin(angle);
            }
    }
}

/* The fault into the inputs; 1 when only the host sees it. */
static int apply_fault(kv_request *k, kv_inputs *in) {
    const attn_kvcache_params *kp = &k->kp;
    const int32_t B = kp->attn.batch;
    const int32_t capacity = kp->page_size ? kp->max_pages * kp->page_size : kp->capacity;
    const int int8 = k->kvt == ATTN_KV_DTYPE_INT8;
    switch (k->fault) {
    case KVF_LENGTH_NEGATIVE:
        in->lengths[B - 1] = -1;
        return 0;
    case KVF_LENGTH_OVER:
        in->lengths[0] = capacity - (kp->append ? kp->attn.seq_q : 0) + 1;
        return 0;
    case KVF_TABLE_NEGATIVE:
        in->table[0] = -1 - (int32_t)in->table[0];
        return 0;
    case KVF_TABLE_OVER:
        in->table[0] = kp->num_pages;
        return 0;
    case KVF_SHARED_BLOCK:
        if (B >= 2) {
            in->slots[1] = in->slots[0];
            if (kp->page_size && kp->max_pages >= 1) {
                in->lengths[0] = in->lengths[1] = 0;
                in->table[kp->max_pages] = in->table[0];
            }
        }
        return 0;
    case KVF_SLOT_OVER:
        in->slots[0] = k->blocks;
        return 0;
    case KVF_K_SCALE_NAN:
    case KVF_V_SCALE_NEGATIVE:
        if (int8 && in->lengths[0] > 0) {
            /* Sequence 0's first key, kv head 0. */
            const attn_strides *s =
                k->fault == KVF_K_SCALE_NAN ? &kp->k_scale_strides : &kp->v_scale_strides;
            const int64_t block = kp->page_size ? in->table[0] : kp->batch_idx ? in->slots[0] : 0;
            if (block >= 0 && block < k->blocks)
                (k->fault == KVF_K_SCALE_NAN ? in->ks : in->vs)[block * s->batch] =
                    k->fault == KVF_K_SCALE_NAN ? NAN : -0.5f;
            return 1;
        }
        return 0;
    case KVF_K_NEW_INF:
        if (int8 && kp->append && kp->attn.seq_q > 0) {
            const float inf = INFINITY;
            const attn_dtype dt = kp->attn.dtype;
            void *one = test_to_storage(dt, &inf, 1);
            memcpy(in->kn, one, k->es);
            free(one);
            return 1;
        }
        return 0;
    default:
        return 0;
    }
}

/* ---- Calls ------------------------------------------------------------------ */

typedef struct kv_state {
    void *o;
    float *lse;
    void *kc, *vc;
    float *ks, *vs;
} kv_state;

static size_t bytes_of(const kv_request *k, const kv_inputs *in, int which) {
    switch (which) {
    case 0:
        return in->o_elems * k->es;
    case 1:
        return in->lse_elems * sizeof(float);
    case 2:
        return in->kc_elems * k->kes;
    case 3:
        return in->vc_elems * k->kes;
    case 4:
        return in->ks_elems * sizeof(float);
    default:
        return in->vs_elems * sizeof(float);
    }
}

static void *dup_or_null(const void *x, size_t n) {
    if (!x)
        return NULL;
    void *y = malloc(n ? n : 1);
    memcpy(y, x, n);
    return y;
}

/* O and LSE sentinel-filled; the cache and scales copies of the inputs. */
static void state_init(const kv_request *k, const kv_inputs *in, kv_state *s) {
    s->o = test_alloc_sentinel(bytes_of(k, in, 0));
    s->lse = test_alloc_sentinel(bytes_of(k, in, 1));
    s->kc = dup_or_null(in->kc, bytes_of(k, in, 2));
    s->vc = dup_or_null(in->vc, bytes_of(k, in, 3));
    s->ks = dup_or_null(in->ks, bytes_of(k, in, 4));
    s->vs = dup_or_null(in->vs, bytes_of(k, in, 5));
}

static void state_free(kv_state *s) {
    free(s->o);
    free(s->lse);
    free(s->kc);
    free(s->vc);
    free(s->ks);
    free(s->vs);
}

static void *part(const kv_state *s, int which) {
    void *const all[6] = {s->o, s->lse, s->kc, s->vc, s->ks, s->vs};
    return all[which];
}

static const char *const part_names[6] = {"O", "LSE", "K_cache", "V_cache", "k_scale", "v_scale"};

/* Whether a failed call left every part as it was. */
static const char *changed_part(const kv_request *k, const kv_inputs *in, const kv_state *s) {
    kv_state fresh;
    state_init(k, in, &fresh);
    const char *changed = NULL;
    for (int i = 0; i < 6 && !changed; i++) {
        const void *a = part(s, i), *b = part(&fresh, i);
        if (a && b && memcmp(a, b, bytes_of(k, in, i)) != 0)
            changed = part_names[i];
    }
    state_free(&fresh);
    return changed;
}

static attn_kvcache_host_tensors host_tensors(const kv_request *k, const kv_inputs *in,
                                              const kv_state *s) {
    const attn_kvcache_params *kp = &k->kp;
    return (attn_kvcache_host_tensors){
        .q = in->q,
        .o = s->o,
        .lse = k->lse ? s->lse : NULL,
        .k_cache = s->kc,
        .v_cache = s->vc,
        .k_new = kp->append ? in->kn : NULL,
        .v_new = kp->append ? in->vn : NULL,
        .cache_seqlens = in->lengths,
        .cache_batch_idx = kp->batch_idx ? in->slots : NULL,
        .block_table = kp->page_size && k->fault != KVF_NO_TABLE ? in->table : NULL,
        .alibi_slopes = kp->attn.alibi ? in->slopes : NULL,
        .rotary_cos = kp->rotary_dim ? in->cos : NULL,
        .rotary_sin = kp->rotary_dim ? in->sin : NULL,
        .k_scale = s->ks,
        .v_scale = k->fault == KVF_NO_SCALES ? NULL : s->vs,
    };
}

/* A device buffer of `bytes` (4 when 0) holding `host` (zeros when NULL). */
static cl_mem make_buffer(cl_context cl, cl_command_queue queue, size_t bytes, const void *host) {
    cl_mem m = clCreateBuffer(cl, CL_MEM_READ_WRITE, bytes ? bytes : 4, NULL, NULL);
    const float zero = 0.0f;
    if (m && host && bytes)
        clEnqueueWriteBuffer(queue, m, CL_TRUE, 0, bytes, host, 0, NULL, NULL);
    else if (m)
        clEnqueueFillBuffer(queue, m, &zero, sizeof zero, 0, bytes ? (bytes + 3) / 4 * 4 : 4, 0,
                            NULL, NULL);
    return m;
}

/* The device call on device copies of `s`, read back into `s`. With
 * `share` (the overlap faults), k_scale (1) or v_scale (2) starts on the
 * last element of O's or V_cache's buffer, written after it; the call must
 * refuse, and *changed names a buffer it changed. */
static attn_status device_call(attn_context_t ctx, attn_plan_t plan, const kv_request *k,
                               const kv_inputs *in, kv_state *s, int share, const char **changed) {
    cl_command_queue queue = attn_context_queue(ctx);
    cl_context cl = NULL;
    clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof cl, &cl, NULL);
    const attn_kvcache_host_tensors h = host_tensors(k, in, s);
    /* 0 Q, 1 O, 2 LSE, 3 K_cache, 4 V_cache, 5 k_new, 6 v_new, 7 k_scale, 8 v_scale */
    const void *init[9] = {in->q, s->o, s->lse, s->kc, s->vc, in->kn, in->vn, s->ks, s->vs};
    size_t size[9] = {in->q_elems * k->es,  bytes_of(k, in, 0), bytes_of(k, in, 1),
                      bytes_of(k, in, 2),   bytes_of(k, in, 3), in->kn_elems * k->es,
                      in->vn_elems * k->es, bytes_of(k, in, 4), bytes_of(k, in, 5)};
    void *host[9] = {NULL, s->o, s->lse, s->kc, s->vc, NULL, NULL, s->ks, s->vs};
    cl_mem m[9];
    size_t offset[9] = {0};
    /* The shared buffer: the output (1 or 4) and then the scales on its last element. */
    const int outer = share == 1 ? 1 : 4, inner = share == 1 ? 7 : 8;
    unsigned char *composed = NULL;
    size_t composed_size = 0;
    if (share) {
        offset[inner] = (size[outer] - 1) / 4 * 4;
        composed_size = offset[inner] + size[inner];
        composed = malloc(composed_size);
        memcpy(composed, init[outer], size[outer]);
        memcpy(composed + offset[inner], init[inner], size[inner]);
    }
    for (int i = 0; i < 9; i++)
        m[i] = share && i == inner   ? NULL
               : share && i == outer ? make_buffer(cl, queue, composed_size, composed)
                                     : make_buffer(cl, queue, size[i], init[i]);
    if (share) {
        m[inner] = m[outer];
        clRetainMemObject(m[outer]);
    }
    attn_kvcache_device_tensors t = {
        .q = m[0],
        .o = m[1],
        .lse = k->lse ? m[2] : NULL,
        .k_cache = m[3],
        .v_cache = m[4],
        .k_new = k->kp.append ? m[5] : NULL,
        .v_new = k->kp.append ? m[6] : NULL,
        .cache_seqlens = h.cache_seqlens,
        .cache_batch_idx = h.cache_batch_idx,
        .block_table = h.block_table,
        .alibi_slopes = h.alibi_slopes,
        .rotary_cos = h.rotary_cos,
        .rotary_sin = h.rotary_sin,
        .k_scale = h.k_scale ? m[7] : NULL,
        .v_scale = h.v_scale ? m[8] : NULL,
        .k_scale_offset = offset[7],
        .v_scale_offset = offset[8],
    };
    cl_event ev = NULL;
    const attn_status st = attn_plan_execute_kvcache_device(plan, &t, NULL, 0, 0, NULL, &ev);
    if (ev) {
        clWaitForEvents(1, &ev);
        clReleaseEvent(ev);
    }
    clFinish(queue);
    if (share) {
        /* Every buffer as it was. */
        static const char *const names[9] = {"Q",     "O",     "LSE",     "K_cache", "V_cache",
                                             "k_new", "v_new", "k_scale", "v_scale"};
        for (int i = 0; i < 9 && !*changed; i++) {
            if (i == inner)
                continue;
            const size_t n = i == outer ? composed_size : size[i];
            const void *want = i == outer ? composed : init[i];
            if (!n || !want)
                continue;
            void *back = malloc(n);
            clEnqueueReadBuffer(queue, m[i], CL_TRUE, 0, n, back, 0, NULL, NULL);
            if (memcmp(back, want, n) != 0)
                *changed = names[i];
            free(back);
        }
    } else {
        for (int i = 1; i < 9; i++)
            if (host[i] && size[i])
                clEnqueueReadBuffer(queue, m[i], CL_TRUE, 0, size[i], host[i], 0, NULL, NULL);
    }
    for (int i = 0; i < 9; i++)
        clReleaseMemObject(m[i]);
    free(composed);
    return st;
}

/* ---- The dense reference over the keys as stored ------------------------------- */

/* Element `at` of a cache in storage `kvt`, in float (int8: q * scale). */
static float cache_value(attn_kv_dtype kvt, const void *c, size_t at, float scale) {
    if (kvt == ATTN_KV_DTYPE_INT8)
        return (float)((const int8_t *)c)[at] * scale;
    float x;
    const attn_dtype t = (attn_dtype)(kvt - 1);
    test_from_storage(t, (const char *)c + at * test_dtype_size(t), &x, 1);
    return x;
}

/* Q in float, turned by the header's rotary rule at each row's position and
 * rounded to the storage type (the same float operations as the library). */
static float *q_as_attended(const kv_request *k, const kv_inputs *in) {
    const attn_kvcache_params *kp = &k->kp;
    const attn_params *a = &kp->attn;
    const size_t n = in->q_elems;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    test_from_storage(a->dtype, in->q, x, n);
    memcpy(y, x, n * sizeof *y);
    const int D = a->head_dim, rd = kp->rotary_dim, half = rd / 2, sq = a->seq_q;
    for (int b = 0; rd && b < a->batch; b++)
        for (int h = 0; h < a->heads_q; h++)
            for (int i = 0; i < sq; i++) {
                long pos = (long)in->lengths[b] + i - (kp->append ? 0 : sq);
                pos = pos < 0 ? 0 : pos >= kp->rotary_positions ? kp->rotary_positions - 1 : pos;
                const size_t row =
                    (((size_t)b * (size_t)a->heads_q + (size_t)h) * (size_t)sq + (size_t)i) *
                    (size_t)D;
                for (int c = 0; c < rd; c++) {
                    int partner = c < half ? c + half : c - half, f = c < half ? c : c - half;
                    float sign = c < half ? -1.0f : 1.0f;
                    if (kp->rotary_interleaved) {
                        partner = c ^ 1;
                        f = c / 2;
                        sign = (c & 1) ? 1.0f : -1.0f;
                    }
                    const float turned = x[row + (size_t)c] * in->cos[pos * half + f];
                    const float mixed = sign * (x[row + (size_t)partner] * in->sin[pos * half + f]);
                    y[row + (size_t)c] = turned + mixed;
                }
            }
    test_round_to_storage(a->dtype, y, n);
    free(x);
    return y;
}

/* The double reference and naive_fp32 of each sequence over its keys,
 * gathered in float from `after` (attn_reference_kvcache's cache, appended
 * to): O [batch, heads_q, seq_q, Dv] and LSE, packed. */
static void dense_outputs(const kv_request *k, const kv_inputs *in, const kv_state *after,
                          float *ref_o, float *ref_lse, float *naive_o, float *naive_lse) {
    const attn_kvcache_params *kp = &k->kp;
    const attn_params *a = &kp->attn;
    const int64_t hq = a->heads_q, hk = a->heads_kv ? a->heads_kv : hq, sq = a->seq_q;
    const int64_t D = a->head_dim, Dv = a->head_dim_v;
    float *q = q_as_attended(k, in);
    for (int64_t b = 0; b < a->batch; b++) {
        const int64_t keys = in->lengths[b] + (kp->append ? sq : 0), sk = keys > 0 ? keys : 1;
        attn_params one;
        attn_params_init(&one, 1, (int32_t)hq, (int32_t)sq, (int32_t)sk, (int32_t)D);
        one.heads_kv = (int32_t)hk;
        one.head_dim_v = (int32_t)Dv;
        one.mask = a->mask;
        one.scale = a->scale;
        one.softcap = a->softcap;
        one.window = a->window;
        one.alibi = a->alibi;
        float *kd = calloc((size_t)(hk * sk * D), sizeof *kd);
        float *vd = calloc((size_t)(hk * sk * Dv), sizeof *vd);
        for (int64_t h = 0; h < hk; h++)
            for (int64_t j = 0; j < keys; j++) {
                int64_t block = kp->batch_idx ? in->slots[b] : b, row = j;
                if (kp->page_size) {
                    block = in->table[b * kp->max_pages + j / kp->page_size];
                    row = j % kp->page_size;
                }
                const attn_strides *cs = &kp->k_cache_strides, *vs = &kp->v_cache_strides;
                const size_t kat = (size_t)(block * cs->batch + h * cs->head + row * cs->seq);
                const size_t vat = (size_t)(block * vs->batch + h * vs->head + row * vs->seq);
                float kscale = 1.0f, vscale = 1.0f;
                if (k->kvt == ATTN_KV_DTYPE_INT8) {
                    const attn_strides *a1 = &kp->k_scale_strides, *a2 = &kp->v_scale_strides;
                    kscale = after->ks[block * a1->batch + h * a1->head + row * a1->seq];
                    vscale = after->vs[block * a2->batch + h * a2->head + row * a2->seq];
                }
                for (int64_t d = 0; d < D; d++)
                    kd[(h * sk + j) * D + d] =
                        cache_value(k->kvt, after->kc, kat + (size_t)d, kscale);
                for (int64_t d = 0; d < Dv; d++)
                    vd[(h * sk + j) * Dv + d] =
                        cache_value(k->kvt, after->vc, vat + (size_t)d, vscale);
            }
        int32_t none = 0;
        attn_host_tensors t = {.q = q + b * hq * sq * D,
                               .k = kd,
                               .v = vd,
                               .o = ref_o + b * hq * sq * Dv,
                               .lse = ref_lse + b * hq * sq,
                               .alibi_slopes = a->alibi ? in->slopes : NULL};
        test_extras x = {.alibi_slopes = a->alibi ? in->slopes : NULL};
        if (keys == 0) {
            one.key_padding = 1;
            t.key_lengths = &none;
            x.key_lengths = &none;
        }
        attn_params r;
        test_resolve(&one, &r);
        attn_reference_host(&one, &t);
        test_naive_fp32(&r, t.q, kd, vd, &x, naive_o + b * hq * sq * Dv, naive_lse + b * hq * sq,
                        NULL);
        free(kd);
        free(vd);
    }
    free(q);
}

/* ---- One KV-cache input -------------------------------------------------------- */

static void fail(const char *what, const request *q, const kv_request *k, attn_status st,
                 const char *message) {
    const attn_kvcache_params *kp = &k->kp;
    fprintf(stderr,
            "fuzz_kvcache: page %d max_pages %d capacity %d slots %d batch_idx %d append %d "
            "s_new %d kv_dtype %d rotary %d/%d/%d head-major %d %s fault %d LSE %d\n",
            kp->page_size, kp->max_pages, kp->capacity, k->blocks, kp->batch_idx, kp->append,
            kp->attn.seq_q, (int)kp->kv_dtype, kp->rotary_dim, kp->rotary_interleaved,
            kp->rotary_positions, k->head_major, k->device ? "device" : "host", k->fault, k->lse);
    fuzz_violation(what, q, st, message);
}

/* A failed call: a documented status, a message, nothing written. */
static void check_refusal(const request *q, const kv_request *k, const kv_inputs *in,
                          const kv_state *s, attn_status st, const char *message,
                          const char *call) {
    char what[160];
    if (!(st <= ATTN_ERR_NULL_ARGUMENT && st >= ATTN_ERR_KERNEL_SOURCE)) {
        snprintf(what, sizeof what, "%s gave an undocumented or OpenCL status", call);
        fail(what, q, k, st, message);
    }
    if (!message || !*message) {
        snprintf(what, sizeof what, "%s failed without a message", call);
        fail(what, q, k, st, message);
    }
    const char *changed = changed_part(k, in, s);
    if (changed) {
        snprintf(what, sizeof what, "%s failed but changed %s", call, changed);
        fail(what, q, k, st, message);
    }
}

static void compare_values(const request *q, const kv_request *k, const kv_inputs *in,
                           const kv_state *got, const kv_state *ref) {
    const attn_params *a = &k->kp.attn;
    const size_t n_o = in->o_elems, n_l = in->lse_elems;
    float *ro = malloc(n_o * sizeof(float)), *rl = malloc(n_l * sizeof(float));
    float *no = malloc(n_o * sizeof(float)), *nl = malloc(n_l * sizeof(float));
    float *go = malloc(n_o * sizeof(float)), *fo = malloc(n_o * sizeof(float));
    dense_outputs(k, in, ref, ro, rl, no, nl);
    test_round_to_storage(a->dtype, no, n_o);
    test_from_storage(a->dtype, got->o, go, n_o);
    test_from_storage(a->dtype, ref->o, fo, n_o);
    attn_params packed;
    attn_params_init(&packed, a->batch, a->heads_q, a->seq_q, 1, a->head_dim);
    packed.heads_kv = a->heads_kv;
    packed.head_dim_v = a->head_dim_v;
    attn_params r;
    test_resolve(&packed, &r);
    const test_shape os = test_tensor_shape(&r, TEST_O), ls = test_tensor_shape(&r, TEST_LSE);
    /* 16-bit storage: naive_fp32's O rounded once more (test_compare_output). */
    const double rtol = a->dtype == ATTN_DTYPE_F32 ? TEST_NAIVE_RTOL : 1e-2;
    const test_result tests[4] = {
        test_compare_rtol(&os, go, ro, no, 0, rtol),
        test_compare_rtol(&os, fo, ro, no, 0, rtol),
        k->lse ? test_compare(&ls, got->lse, rl, nl, 0) : (test_result){.ok = 1},
        k->lse ? test_compare(&ls, ref->lse, rl, nl, 0) : (test_result){.ok = 1},
    };
    const char *names[4] = {"the call's O", "attn_reference_kvcache's O", "the call's LSE",
                            "attn_reference_kvcache's LSE"};
    for (int i = 0; i < 4; i++)
        if (!tests[i].ok) {
            char line[256], what[400];
            test_format_result(line, sizeof line, names[i], &tests[i]);
            snprintf(what, sizeof what, "%s off the dense double reference: %s%s", names[i], line,
                     tests[i].naive_disagrees ? " (naive_fp32 disagrees)" : "");
            fail(what, q, k, ATTN_SUCCESS, "");
        }
    free(ro);
    free(rl);
    free(no);
    free(nl);
    free(go);
    free(fo);
}

void fuzz_kvcache(attn_context_t ctx, reader *r, const request *q) {
    const reader start = *r;
    kv_request k;
    decode_kv(r, q, &k);
    kv_inputs in;
    make_inputs(q, &k, start.n > 3 ? start.p[3] : 0, &in);
    const int host_only = apply_fault(&k, &in);
    /* The overlap faults apply to int8 device calls where a scale tensor is
     * written (append) or meets an output (O); elsewhere they are none. */
    const int int8 = k.kvt == ATTN_KV_DTYPE_INT8;
    const int share = !k.device || !int8                             ? 0
                      : k.fault == KVF_SCALE_ON_O                    ? 1
                      : k.fault == KVF_SCALE_ON_CACHE && k.kp.append ? 2
                                                                     : 0;
    const char *changed = NULL;

    attn_plan_t plan = NULL;
    attn_status st = ATTN_SUCCESS;
    if (kv_shapes[k.shape] && attn_context_set_tuning(ctx, kv_shapes[k.shape]) != ATTN_SUCCESS)
        fail("attn_context_set_tuning refused a decode shape the tests use", q, &k, st,
             attn_last_error(ctx));
    st = attn_plan_create_kvcache(ctx, &k.kp, k.lse ? ATTN_PLAN_LSE : 0, &plan);
    char create_message[1024];
    snprintf(create_message, sizeof create_message, "%s", st ? attn_last_error(ctx) : "");
    const char *message = create_message;
    if (kv_shapes[k.shape])
        attn_context_set_tuning(ctx, NULL);
    kv_state s, ref;
    state_init(&k, &in, &s);
    state_init(&k, &in, &ref);
    if (st != ATTN_SUCCESS)
        check_refusal(q, &k, &in, &s, st, message, "attn_plan_create_kvcache");
    else if (k.device)
        st = device_call(ctx, plan, &k, &in, &s, share, &changed);
    else {
        const attn_kvcache_host_tensors h = host_tensors(&k, &in, &s);
        st = attn_plan_execute_kvcache_host(plan, &h);
    }
    message = st ? attn_last_error(ctx) : "";
    if (plan && st != ATTN_SUCCESS)
        check_refusal(q, &k, &in, &s, st, message, "the KV-cache execute");
    if (share && changed)
        fail("a device call refused for overlap changed a buffer", q, &k, st, changed);

    const attn_kvcache_host_tensors rh = host_tensors(&k, &in, &ref);
    const attn_status rs = attn_reference_kvcache(&k.kp, &rh);
    const char *ref_message = rs ? attn_last_error(NULL) : "";
    if (rs != ATTN_SUCCESS)
        check_refusal(q, &k, &in, &ref, rs, ref_message, "attn_reference_kvcache");
    /* The overlap faults and the faults the device call does not read
     * (host-only) are the only ones where the two may differ. */
    const int may_differ = share || (k.device && host_only);
    if (!may_differ && rs != st) {
        char what[200];
        snprintf(what, sizeof what, "attn_reference_kvcache gave %s, the call %s",
                 attn_status_name(rs), attn_status_name(st));
        fail(what, q, &k, st, message);
    }
    if (share && plan && rs == ATTN_SUCCESS && st != ATTN_ERR_INVALID_VALUE)
        fail("a scale tensor sharing memory with an output was not refused", q, &k, st, message);
    if (st == ATTN_SUCCESS && rs == ATTN_SUCCESS && !may_differ) {
        for (int i = 2; i < 6; i++)
            if (part(&s, i) && memcmp(part(&s, i), part(&ref, i), bytes_of(&k, &in, i)) != 0) {
                char what[160];
                snprintf(what, sizeof what,
                         "%s after the call differs from attn_reference_kvcache's", part_names[i]);
                fail(what, q, &k, st, "");
            }
        compare_values(q, &k, &in, &s, &ref);
    }
    const char *env = getenv("ATTN_FUZZ_TRACE");
    if (env && *env && strcmp(env, "0") != 0)
        printf(" kv page %d cap %d s_new %d append %d batch_idx %d kv_dtype %d rotary %d%s "
               "fault %d %s: %s, reference %s",
               k.kp.page_size, k.kp.page_size ? k.kp.max_pages * k.kp.page_size : k.kp.capacity,
               k.kp.attn.seq_q, k.kp.append, k.kp.batch_idx, (int)k.kp.kv_dtype, k.kp.rotary_dim,
               k.kp.rotary_interleaved ? "i" : "", k.fault, k.device ? "device" : "host",
               attn_status_name(st), attn_status_name(rs));
    state_free(&s);
    state_free(&ref);
    attn_plan_destroy(plan);
    kv_inputs_free(&in);
}
