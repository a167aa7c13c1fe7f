/* Decoding over a KV cache (attn_plan_create_kvcache) against the double
 * reference (attn_reference_kvcache) and a naive fp32 attention over the
 * same keys gathered densely, which sets the bound (tests/test_util.h).
 *
 * Swept: contiguous caches (with and without cache_batch_idx) and paged
 * ones of page sizes 1, 3, 16 and 256 (slot-major and head-major pages),
 * cache lengths 0, 1, a page boundary +-1 and full capacity, s_new 1, 4 and
 * 33, GQA groups 1, 4 and 8, with and without append, every storage type,
 * masks, a window, softcap and ALiBi; through the device call and the host
 * call. After each device call the cache is read back and compared byte for
 * byte with the reference's append. Then every bad input of include/
 * attn_cl.h's list, after which the outputs and the cache must hold what
 * they held, byte for byte.
 *
 * Built with KV_FAULT_WALK (against the fault-injection library): the
 * fault walk, and (outside the quick subset) a 128k-token cache on one head
 * whose plan allocates nothing that grows with the cache (long_cache).
 *
 * The number of key splits comes from ATTN_CL_TUNE (tests/meson.build runs
 * it with splits=1, 3 and the automatic choice). */
#ifdef KV_FAULT_WALK
#include "fault_injection.h"
#endif
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct kv_case {
    int batch, heads_q, heads_kv, s_new, head_dim, head_dim_v;
    int page_size; /* 0: contiguous */
    int capacity;  /* contiguous: tokens a slot; paged: max_pages * page_size (rounded up) */
    int append, batch_idx, head_major;
    attn_mask mask;
    attn_dtype dtype;
    int window_left; /* -2: no window */
    float softcap;
    int alibi;
    int quick;
    int rotary_dim; /* 0: none */
    int interleaved;
    attn_kv_dtype kv; /* the cache's storage; ATTN_KV_DTYPE_SAME (0): Q's */
} kv_case;

/* One call's inputs, in float (rounded to the storage type) and stored. */
typedef struct kv_data {
    attn_kvcache_params kp;
    attn_params r; /* kp.attn resolved, seq_k unused */
    size_t q_elems, o_elems, lse_elems, kc_elems, vc_elems, kn_elems, vn_elems;
    float *q, *kc, *vc, *kn, *vn, *slopes;
    float *cos, *sin;                      /* rotary tables [positions, rotary_dim / 2] */
    void *q_s, *kc_s, *vc_s, *kn_s, *vn_s; /* kc_s, vc_s in the cache's storage */
    int32_t *lengths, *slots, *table;
    attn_kv_dtype kvt; /* the cache's storage, resolved */
    size_t kes;        /* its element size */
    float *ks, *vs;    /* int8: the scales, ks_elems and vs_elems of them */
    size_t ks_elems, vs_elems;
} kv_data;

static int failures;

static size_t es_of(attn_dtype d) {
    return test_dtype_size(d);
}

/* [n0, n1, n2, inner] packed, or head-major / slot-major by `s`. */
static size_t extent_of(int64_t n0, int64_t n1, int64_t n2, int64_t inner, const attn_strides *s) {
    return (size_t)((n0 - 1) * s->batch + (n1 - 1) * s->head + (n2 - 1) * s->seq + inner);
}

static float *random_floats(test_rng *rng, size_t n, float lo, float hi, attn_dtype dtype) {
    float *x = malloc(n * sizeof *x);
    test_fill_uniform(rng, x, n, lo, hi);
    test_round_to_storage(dtype, x, n);
    return x;
}

static void kv_data_free(kv_data *d) {
    void *all[] = {d->q,     d->kc,    d->vc,   d->kn,   d->vn,   d->slopes,
                   d->q_s,   d->kc_s,  d->vc_s, d->kn_s, d->vn_s, d->lengths,
                   d->slots, d->table, d->cos,  d->sin,  d->ks,   d->vs};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
    memset(d, 0, sizeof *d);
}

/* int8 quantization of one row, written from include/attn_cl.h: scale =
 * max|x| / 127, q = x / scale rounded to nearest even, in -127..127. */
static float quantize_row(const float *x, int n, int8_t *q) {
    float amax = 0.0f;
    for (int i = 0; i < n; i++)
        amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    const float scale = amax / 127.0f;
    for (int i = 0; i < n; i++) {
        float r = scale == 0.0f ? 0.0f : rintf(x[i] / scale);
        q[i] = (int8_t)(r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r);
    }
    return scale;
}

/* Packed rows [rows, n] of floats as the cache stores them, in float. */
static void as_stored(const kv_data *d, float *x, size_t rows, int n) {
    if (d->kvt != ATTN_KV_DTYPE_INT8) {
        test_round_to_storage((attn_dtype)(d->kvt - 1), x, rows * (size_t)n);
        return;
    }
    int8_t q[1024];
    for (size_t r = 0; r < rows; r++) {
        const float scale = quantize_row(x + r * (size_t)n, n, q);
        for (int i = 0; i < n; i++)
            x[r * (size_t)n + (size_t)i] = (float)q[i] * scale;
    }
}

/* The cache's float values `x` (rounded to Q's type) into its storage:
 * rounded to it, or quantized (int8, the scales laid out by `ss`), and
 * x then holds the stored values (int8: q * scale in float). */
static void *cache_to_storage(kv_data *d, float *x, size_t elems, int64_t blocks, int64_t heads,
                              int64_t rows, int n, const attn_strides *cs, const attn_strides *ss,
                              float **scales, size_t *scale_elems) {
    if (d->kvt != ATTN_KV_DTYPE_INT8) {
        const attn_dtype t = (attn_dtype)(d->kvt - 1);
        test_round_to_storage(t, x, elems);
        return test_to_storage(t, x, elems);
    }
    int8_t *q = calloc(elems, 1);
    *scale_elems = extent_of(blocks, heads, rows, 1, ss);
    *scales = calloc(*scale_elems, sizeof(float));
    for (int64_t b = 0; b < blocks; b++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t r = 0; r < rows; r++) {
                const size_t at = (size_t)(b * cs->batch + h * cs->head + r * cs->seq);
                const float scale = quantize_row(x + at, n, q + at);
                (*scales)[b * ss->batch + h * ss->head + r * ss->seq] = scale;
                for (int i = 0; i < n; i++)
                    x[at + (size_t)i] = (float)q[at + (size_t)i] * scale;
            }
    return q;
}

/* Lengths that break tiling: 0, 1, a page boundary -1, +0, +1, full. */
static int32_t pick_length(int b, int page, int room) {
    const int32_t pattern[6] = {room, 0, 1, page - 1, page, page + 1};
    int32_t l = pattern[b % 6];
    return l < 0 ? 0 : l > room ? room : l;
}

static void kv_data_init(kv_data *d, const kv_case *c, uint64_t seed) {
    memset(d, 0, sizeof *d);
    test_rng rng;
    test_rng_seed(&rng, seed);
    attn_kvcache_params *kp = &d->kp;
    const int paged = c->page_size > 0;
    const int max_pages = paged ? (c->capacity + c->page_size - 1) / c->page_size : 0;
    const int capacity = paged ? max_pages * c->page_size : c->capacity;
    attn_kvcache_params_init(kp, c->batch, c->heads_q, c->s_new, capacity, c->head_dim);
    attn_params *a = &kp->attn;
    a->heads_kv = c->heads_kv;
    a->head_dim_v = c->head_dim_v;
    a->mask = c->mask;
    a->dtype = c->dtype;
    a->softcap = c->softcap;
    a->alibi = c->alibi;
    if (c->window_left != -2) {
        a->window.enabled = 1;
        a->window.left = c->window_left;
        a->window.right = 0;
    }
    kp->append = c->append;
    kp->batch_idx = c->batch_idx;
    if (c->rotary_dim) {
        /* Positions past the cache, so that the clamp is not exercised by
         * the valid cases; angles of a real model's frequencies. */
        kp->rotary_dim = c->rotary_dim;
        kp->rotary_interleaved = c->interleaved;
        kp->rotary_positions = capacity + 2;
        const int half = c->rotary_dim / 2;
        d->cos = malloc((size_t)kp->rotary_positions * (size_t)half * sizeof(float));
        d->sin = malloc((size_t)kp->rotary_positions * (size_t)half * sizeof(float));
        for (int pos = 0; pos < kp->rotary_positions; pos++)
            for (int f = 0; f < half; f++) {
                const double angle = pos * pow(10000.0, -2.0 * f / c->rotary_dim);
                d->cos[pos * half + f] = (float)cos(angle);
                d->sin[pos * half + f] = (float)sin(angle);
            }
    }
    kp->page_size = c->page_size;
    kp->max_pages = max_pages;
    /* Extra slots / pages nobody uses, so that indices are not the identity. */
    const int blocks = paged ? c->batch * max_pages + 3 : c->batch + (c->batch_idx ? 2 : 0);
    if (paged)
        kp->num_pages = blocks;
    else
        kp->cache_slots = blocks;
    const int rows = paged ? c->page_size : capacity;
    const int64_t hk = c->heads_kv;
    for (int t = 0; t < 2; t++) {
        const int64_t inner = t == 0 ? c->head_dim : c->head_dim_v;
        attn_strides *s = t == 0 ? &kp->k_cache_strides : &kp->v_cache_strides;
        if (c->head_major) /* [blocks, heads, rows, D] */
            *s = (attn_strides){hk * rows * inner, rows * inner, inner};
        else /* [blocks, rows, heads, D] */
            *s = (attn_strides){hk * rows * inner, inner, hk * inner};
    }
    test_resolve(a, &d->r);
    const test_shape qs = test_tensor_shape(&d->r, TEST_Q), os = test_tensor_shape(&d->r, TEST_O);
    const test_shape ls = test_tensor_shape(&d->r, TEST_LSE);
    d->q_elems = test_shape_extent(&qs);
    d->o_elems = test_shape_extent(&os);
    d->lse_elems = test_shape_extent(&ls);
    d->kc_elems = extent_of(blocks, hk, rows, c->head_dim, &kp->k_cache_strides);
    d->vc_elems = extent_of(blocks, hk, rows, c->head_dim_v, &kp->v_cache_strides);
    d->kn_elems = (size_t)c->batch * hk * c->s_new * c->head_dim;
    d->vn_elems = (size_t)c->batch * hk * c->s_new * c->head_dim_v;
    d->q = random_floats(&rng, d->q_elems, -1, 1, c->dtype);
    d->kc = random_floats(&rng, d->kc_elems, -1, 1, c->dtype);
    d->vc = random_floats(&rng, d->vc_elems, -1, 1, c->dtype);
    d->kn = random_floats(&rng, d->kn_elems, -1, 1, c->dtype);
    d->vn = random_floats(&rng, d->vn_elems, -1, 1, c->dtype);
    d->q_s = test_to_storage(c->dtype, d->q, d->q_elems);
    kp->kv_dtype = c->kv;
    d->kvt = c->kv ? c->kv : (attn_kv_dtype)(c->dtype + 1);
    d->kes = d->kvt == ATTN_KV_DTYPE_INT8 ? 1 : d->kvt == ATTN_KV_DTYPE_F32 ? 4 : 2;
    if (d->kvt == ATTN_KV_DTYPE_INT8) /* scales in the cache's order */
        for (int t = 0; t < 2; t++)
            *(t == 0 ? &kp->k_scale_strides : &kp->v_scale_strides) =
                c->head_major ? (attn_strides){hk * rows, rows, 1}
                              : (attn_strides){hk * rows, 1, hk};
    d->kc_s = cache_to_storage(d, d->kc, d->kc_elems, blocks, hk, rows, c->head_dim,
                               &kp->k_cache_strides, &kp->k_scale_strides, &d->ks, &d->ks_elems);
    d->vc_s = cache_to_storage(d, d->vc, d->vc_elems, blocks, hk, rows, c->head_dim_v,
                               &kp->v_cache_strides, &kp->v_scale_strides, &d->vs, &d->vs_elems);
    d->kn_s = test_to_storage(c->dtype, d->kn, d->kn_elems);
    d->vn_s = test_to_storage(c->dtype, d->vn, d->vn_elems);
    d->slopes = malloc((size_t)c->heads_q * sizeof(float));
    for (int h = 0; h < c->heads_q; h++)
        d->slopes[h] = powf(2.0f, -8.0f * (float)(h + 1) / (float)c->heads_q);
    d->lengths = malloc((size_t)c->batch * sizeof(int32_t));
    const int room = capacity - (c->append ? c->s_new : 0);
    for (int b = 0; b < c->batch; b++)
        d->lengths[b] = pick_length(b, paged ? c->page_size : 16, room);
    d->slots = malloc((size_t)c->batch * sizeof(int32_t));
    for (int b = 0; b < c->batch; b++)
        d->slots[b] = c->batch_idx ? blocks - 1 - b : b; /* reversed */
    d->table = malloc((size_t)(c->batch * (max_pages ? max_pages : 1)) * sizeof(int32_t));
    if (paged) {
        /* Every page once, in a shuffled order. */
        int32_t *perm = malloc((size_t)blocks * sizeof *perm);
        for (int i = 0; i < blocks; i++)
            perm[i] = i;
        for (int i = blocks - 1; i > 0; i--) {
            int j = (int)(test_rng_float(&rng, 0, 1) * (float)(i + 1));
            j = j > i ? i : j;
            int32_t tmp = perm[i];
            perm[i] = perm[j];
            perm[j] = tmp;
        }
        for (int i = 0; i < c->batch * max_pages; i++)
            d->table[i] = perm[i];
        free(perm);
    }
}

static attn_kvcache_host_tensors host_tensors(const kv_data *d, int stored, const void *q, void *o,
                                              float *lse, void *kc, void *vc) {
    return (attn_kvcache_host_tensors){
        .q = q,
        .o = o,
        .lse = lse,
        .k_cache = kc,
        .v_cache = vc,
        .k_new = d->kp.append ? (stored ? d->kn_s : (void *)d->kn) : NULL,
        .v_new = d->kp.append ? (stored ? d->vn_s : (void *)d->vn) : NULL,
        .cache_seqlens = d->lengths,
        .cache_batch_idx = d->kp.batch_idx ? d->slots : NULL,
        .block_table = d->kp.page_size ? d->table : NULL,
        .alibi_slopes = d->kp.attn.alibi ? d->slopes : NULL,
        .rotary_cos = d->cos,
        .rotary_sin = d->sin,
        .k_scale = d->ks,
        .v_scale = d->vs,
    };
}

/* Rows [batch, heads, seq_q, D] (packed, float) rotated at their positions
 * and rounded to the storage type: include/attn_cl.h's rule, written from
 * it (the same float operations, so the same bits as the library's). */
static float *rotated_rows(const kv_data *d, const float *x, int heads) {
    const attn_kvcache_params *kp = &d->kp;
    const attn_params *r = &d->r;
    const int D = r->head_dim, rd = kp->rotary_dim, half = rd / 2, sq = r->seq_q;
    const size_t n = (size_t)r->batch * (size_t)heads * (size_t)sq * (size_t)D;
    float *y = malloc(n * sizeof *y);
    memcpy(y, x, n * sizeof *y);
    for (int b = 0; b < r->batch; b++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < sq; i++) {
                long pos = (long)d->lengths[b] + i - (kp->append ? 0 : sq);
                pos = pos < 0 ? 0 : pos >= kp->rotary_positions ? kp->rotary_positions - 1 : pos;
                const float *row = x + (((size_t)b * heads + h) * sq + i) * D;
                float *out = y + (((size_t)b * heads + h) * sq + i) * D;
                for (int c = 0; c < rd; c++) {
                    int partner = c < half ? c + half : c - half, f = c < half ? c : c - half;
                    float sign = c < half ? -1.0f : 1.0f;
                    if (kp->rotary_interleaved) {
                        partner = c ^ 1;
                        f = c / 2;
                        sign = (c & 1) ? 1.0f : -1.0f;
                    }
                    const float turned = row[c] * d->cos[pos * half + f];
                    const float mixed = sign * (row[partner] * d->sin[pos * half + f]);
                    out[c] = turned + mixed;
                }
            }
    test_round_to_storage(r->dtype, y, n);
    return y;
}

static void *dup_bytes(const void *x, size_t n) {
    void *y = malloc(n ? n : 1);
    memcpy(y, x, n);
    return y;
}

/* The naive fp32 attention of each sequence over its keys, gathered. */
static void naive_outputs(const kv_data *d, float *o, float *lse) {
    const attn_kvcache_params *kp = &d->kp;
    const attn_params *r = &d->r;
    const int64_t hk = r->heads_kv, D = r->head_dim, Dv = r->head_dim_v;
    /* Q and k_new as the library attends to them (the test's Q is packed). */
    float *q = kp->rotary_dim ? rotated_rows(d, d->q, r->heads_q) : d->q;
    float *kn = kp->rotary_dim && kp->append ? rotated_rows(d, d->kn, (int)hk) : d->kn;
    float *vn = d->vn;
    if (kp->append && d->kvt != (attn_kv_dtype)(r->dtype + 1)) {
        /* The new rows as the cache stores them, which the queries see. */
        const size_t rows = (size_t)r->batch * (size_t)hk * (size_t)r->seq_q;
        float *stored = dup_bytes(kn, rows * (size_t)D * sizeof(float));
        if (kn != d->kn)
            free(kn);
        kn = stored;
        vn = dup_bytes(d->vn, rows * (size_t)Dv * sizeof(float));
        as_stored(d, kn, rows, (int)D);
        as_stored(d, vn, rows, (int)Dv);
    }
    for (int b = 0; b < r->batch; b++) {
        const int cached = d->lengths[b], keys = cached + (kp->append ? r->seq_q : 0);
        attn_params one = *r;
        one.batch = 1;
        one.seq_k = keys > 0 ? keys : 1;
        one.k_strides = (attn_strides){hk * one.seq_k * D, one.seq_k * D, D};
        one.v_strides = (attn_strides){hk * one.seq_k * Dv, one.seq_k * Dv, Dv};
        float *k = calloc((size_t)(hk * one.seq_k * D), sizeof *k);
        float *v = calloc((size_t)(hk * one.seq_k * Dv), sizeof *v);
        for (int64_t h = 0; h < hk; h++)
            for (int64_t j = 0; j < keys; j++) {
                const float *kr, *vr;
                if (j < cached) {
                    int64_t blk = kp->batch_idx ? d->slots[b] : b, row = j;
                    if (kp->page_size) {
                        blk = d->table[b * kp->max_pages + j / kp->page_size];
                        row = j % kp->page_size;
                    }
                    const attn_strides *ks = &kp->k_cache_strides, *vs = &kp->v_cache_strides;
                    kr = d->kc + blk * ks->batch + h * ks->head + row * ks->seq;
                    vr = d->vc + blk * vs->batch + h * vs->head + row * vs->seq;
                } else {
                    const int64_t i = j - cached;
                    kr = kn + ((b * hk + h) * r->seq_q + i) * D;
                    vr = vn + ((b * hk + h) * r->seq_q + i) * Dv;
                }
                memcpy(k + (h * one.seq_k + j) * D, kr, (size_t)D * sizeof(float));
                memcpy(v + (h * one.seq_k + j) * Dv, vr, (size_t)Dv * sizeof(float));
            }
        const int32_t none = 0;
        test_extras x = {.alibi_slopes = r->alibi ? d->slopes : NULL};
        if (keys == 0) {
            one.key_padding = 1;
            x.key_lengths = (int32_t *)&none;
        }
        test_naive_fp32(&one, q + b * r->q_strides.batch, k, v, &x, o + b * r->o_strides.batch,
                        lse ? lse + b * r->lse_strides.batch : NULL, NULL);
        free(k);
        free(v);
    }
    if (q != d->q)
        free(q);
    if (kn != d->kn)
        free(kn);
    if (vn != d->vn)
        free(vn);
}

static void describe(char *buf, size_t n, const kv_case *c) {
    char win[32] = "";
    if (c->window_left != -2)
        snprintf(win, sizeof win, " win=%d", c->window_left);
    snprintf(buf, n, "B%d Hq%d Hkv%d snew%d D%d Dv%d %s%d%s%s %s %s%s%s%s%s", c->batch, c->heads_q,
             c->heads_kv, c->s_new, c->head_dim, c->head_dim_v, c->page_size ? "page" : "cap",
             c->page_size ? c->page_size : c->capacity, c->head_major ? " head-major" : "",
             c->batch_idx ? " batch_idx" : "", test_mask_name(c->mask), test_dtype_name(c->dtype),
             c->append ? " append" : "", win, c->softcap > 0 ? " softcap" : "",
             c->alibi ? " alibi" : "");
    if (c->kv) {
        static const char *const kv_names[5] = {"", "f32", "f16", "bf16", "int8"};
        const size_t len = strlen(buf);
        snprintf(buf + len, n - len, " kv=%s", kv_names[c->kv]);
    }
    if (c->rotary_dim) {
        const size_t len = strlen(buf);
        snprintf(buf + len, n - len, " rotary%d%s", c->rotary_dim,
                 c->interleaved ? " interleaved" : "");
    }
}

static int check_result(const char *what, const char *name, const test_shape *s, const float *out,
                        const float *ref, const float *naive) {
    test_result r = test_compare(s, out, ref, naive, 0);
    char line[256];
    test_format_result(line, sizeof line, what, &r);
    if (!r.ok) {
        printf("FAIL %s: %s\n", name, line);
        failures++;
    }
    return r.ok;
}

/* O in the storage type against the reference (test_compare_output: the
 * naive O's rounding to the storage type allowed, gaps still sentinel). */
static int check_o(const char *what, const char *name, const kv_data *d, const test_shape *os,
                   const void *o_store, float *ref_o, float *naive_o) {
    test_problem tp;
    memset(&tp, 0, sizeof tp);
    tp.p = d->kp.attn;
    tp.o_shape = *os;
    tp.o_elems = d->o_elems;
    tp.ref_o = ref_o;
    tp.naive_o = naive_o;
    test_result r = test_compare_output(&tp, o_store);
    char line[256];
    test_format_result(line, sizeof line, what, &r);
    if (!r.ok) {
        printf("FAIL %s: %s\n", name, line);
        failures++;
    }
    return r.ok;
}

static void run_case(attn_context_t ctx, const kv_case *c, uint64_t seed) {
    char name[256];
    describe(name, sizeof name, c);
    kv_data d;
    kv_data_init(&d, c, seed);
    const attn_dtype dt = c->dtype;
    const size_t es = es_of(dt);
    const attn_params *r = &d.r;

    /* Reference in double on the float copies (O unrounded), and in the
     * storage type on the stored ones for the cache's expected bytes. */
    const size_t kes = d.kes;
    const size_t ss[2] = {d.ks_elems * 4, d.vs_elems * 4}; /* int8: the scales' bytes */
    float *ref_o = calloc(d.o_elems, sizeof(float)), *ref_lse = calloc(d.lse_elems, sizeof(float));
    float *kc_ref = dup_bytes(d.kc, d.kc_elems * 4), *vc_ref = dup_bytes(d.vc, d.vc_elems * 4);
    float *ks_ref = d.ks ? dup_bytes(d.ks, ss[0]) : NULL,
          *vs_ref = d.vs ? dup_bytes(d.vs, ss[1]) : NULL;
    float *q_rot = NULL, *kn_rot = NULL;
    attn_kvcache_params kp32 = d.kp;
    kp32.attn.dtype = ATTN_DTYPE_F32;
    attn_kvcache_host_tensors ht = host_tensors(&d, 0, d.q, ref_o, ref_lse, kc_ref, vc_ref);
    if (c->kv) {
        /* A cache of its own type: Q and the new rows in float, the cache as
         * stored; with rotary embedding Q and k_new rotated in Q's type
         * first (the library's rounding), so that k_new quantizes alike. */
        free(kc_ref);
        free(vc_ref);
        ht.k_cache = kc_ref = dup_bytes(d.kc_s, d.kc_elems * kes);
        ht.v_cache = vc_ref = dup_bytes(d.vc_s, d.vc_elems * kes);
        ht.k_scale = ks_ref;
        ht.v_scale = vs_ref;
        if (c->rotary_dim) {
            q_rot = rotated_rows(&d, d.q, c->heads_q);
            kn_rot = rotated_rows(&d, d.kn, c->heads_kv);
            ht.q = q_rot;
            ht.k_new = c->append ? kn_rot : NULL;
            kp32.rotary_dim = 0;
        }
    }
    attn_status st = attn_reference_kvcache(&kp32, &ht);
    void *kc_exp = dup_bytes(d.kc_s, d.kc_elems * kes),
         *vc_exp = dup_bytes(d.vc_s, d.vc_elems * kes);
    float *ks_exp = d.ks ? dup_bytes(d.ks, ss[0]) : NULL,
          *vs_exp = d.vs ? dup_bytes(d.vs, ss[1]) : NULL;
    void *o_scratch = malloc(d.o_elems * es);
    float *lse_scratch = malloc(d.lse_elems * sizeof(float));
    if (st == ATTN_SUCCESS) {
        ht = host_tensors(&d, 1, d.q_s, o_scratch, lse_scratch, kc_exp, vc_exp);
        ht.k_scale = ks_exp;
        ht.v_scale = vs_exp;
        st = attn_reference_kvcache(&d.kp, &ht);
    }
    /* Both references append the same bits. */
    if (st == ATTN_SUCCESS && c->kv &&
        (memcmp(kc_ref, kc_exp, d.kc_elems * kes) != 0 ||
         memcmp(vc_ref, vc_exp, d.vc_elems * kes) ||
         (ks_ref && (memcmp(ks_ref, ks_exp, ss[0]) != 0 || memcmp(vs_ref, vs_exp, ss[1]) != 0)))) {
        printf("FAIL %s: the reference appends other bits from float and stored new rows\n", name);
        failures++;
    }
    if (st != ATTN_SUCCESS) {
        printf("FAIL %s: reference: %s %s\n", name, attn_status_name(st), attn_last_error(NULL));
        failures++;
        goto done;
    }
    float *naive_o = calloc(d.o_elems, sizeof(float)), *naive_lse = calloc(d.lse_elems, 4);
    naive_outputs(&d, naive_o, naive_lse);
    test_round_to_storage(dt, naive_o, d.o_elems);
    const test_shape os = test_tensor_shape(r, TEST_O), ls = test_tensor_shape(r, TEST_LSE);

    attn_plan_t plan = NULL;
    st = attn_plan_create_kvcache(ctx, &d.kp, ATTN_PLAN_LSE, &plan);
    if (!test_ok(ctx, st, name)) {
        failures++;
        free(naive_o);
        free(naive_lse);
        goto done;
    }
    int ok = 1;
    /* Device call, twice (the second reuses everything the first made, and
     * takes the small arrays from device buffers). */
    for (int rep = 0; rep < 2 && ok; rep++) {
        cl_int err;
        cl_context cl = NULL;
        clGetCommandQueueInfo(attn_context_queue(ctx), CL_QUEUE_CONTEXT, sizeof cl, &cl, NULL);
        cl_command_queue queue = attn_context_queue(ctx);
        const size_t sizes[9] = {d.q_elems * es,   d.o_elems * es,    d.lse_elems * 4,
                                 d.kc_elems * kes, d.vc_elems * kes,  d.kn_elems * es,
                                 d.vn_elems * es,  ss[0] ? ss[0] : 4, ss[1] ? ss[1] : 4};
        void *o_init = test_alloc_sentinel(d.o_elems * es);
        const void *init[9] = {d.q_s, o_init, NULL, d.kc_s, d.vc_s, d.kn_s, d.vn_s, d.ks, d.vs};
        cl_mem m[9];
        for (int i = 0; i < 9; i++) {
            m[i] = clCreateBuffer(cl, CL_MEM_READ_WRITE | (init[i] ? CL_MEM_COPY_HOST_PTR : 0),
                                  sizes[i], (void *)init[i], &err);
            if (err != CL_SUCCESS) {
                printf("FAIL %s: clCreateBuffer %d\n", name, err);
                exit(1);
            }
        }
        free(o_init);
        attn_kvcache_device_tensors dt_ = {
            .q = m[0],
            .o = m[1],
            .lse = m[2],
            .k_cache = m[3],
            .v_cache = m[4],
            .k_new = d.kp.append ? m[5] : NULL,
            .v_new = d.kp.append ? m[6] : NULL,
            .cache_seqlens = d.lengths,
            .cache_batch_idx = d.kp.batch_idx ? d.slots : NULL,
            .block_table = d.kp.page_size ? d.table : NULL,
            .alibi_slopes = c->alibi ? d.slopes : NULL,
            .rotary_cos = d.cos,
            .rotary_sin = d.sin,
            .k_scale = d.ks ? m[7] : NULL,
            .v_scale = d.vs ? m[8] : NULL,
        };
        /* The second time, the small arrays from device buffers. */
        cl_mem arrays[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
        if (rep == 1) {
            const void *host[6] = {dt_.cache_seqlens, dt_.cache_batch_idx, dt_.block_table,
                                   dt_.alibi_slopes,  dt_.rotary_cos,      dt_.rotary_sin};
            const size_t table = (size_t)d.kp.rotary_positions * (size_t)(d.kp.rotary_dim / 2) * 4;
            const size_t bytes[6] = {(size_t)c->batch * 4,
                                     (size_t)c->batch * 4,
                                     (size_t)c->batch *
                                         (size_t)(d.kp.max_pages ? d.kp.max_pages : 1) * 4,
                                     (size_t)c->heads_q * 4,
                                     table,
                                     table};
            for (int i = 0; i < 6; i++)
                if (host[i])
                    arrays[i] = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                               bytes[i], (void *)host[i], &err);
            dt_.cache_seqlens = NULL;
            dt_.cache_batch_idx = NULL;
            dt_.block_table = NULL;
            dt_.alibi_slopes = NULL;
            dt_.rotary_cos = dt_.rotary_sin = NULL;
            dt_.cache_seqlens_mem = arrays[0];
            dt_.cache_batch_idx_mem = arrays[1];
            dt_.block_table_mem = arrays[2];
            dt_.alibi_slopes_mem = arrays[3];
            dt_.rotary_cos_mem = arrays[4];
            dt_.rotary_sin_mem = arrays[5];
        }
        cl_event ev = NULL;
        st = attn_plan_execute_kvcache_device(plan, &dt_, NULL, 0, 0, NULL, &ev);
        if (!test_ok(ctx, st, name)) {
            ok = 0;
        } else {
            clWaitForEvents(1, &ev);
            clReleaseEvent(ev);
            void *o_s = malloc(sizes[1]), *kc = malloc(sizes[3]), *vc = malloc(sizes[4]);
            float *lse = malloc(sizes[2]);
            clEnqueueReadBuffer(queue, m[1], CL_TRUE, 0, sizes[1], o_s, 0, NULL, NULL);
            clEnqueueReadBuffer(queue, m[2], CL_TRUE, 0, sizes[2], lse, 0, NULL, NULL);
            clEnqueueReadBuffer(queue, m[3], CL_TRUE, 0, sizes[3], kc, 0, NULL, NULL);
            clEnqueueReadBuffer(queue, m[4], CL_TRUE, 0, sizes[4], vc, 0, NULL, NULL);
            ok &= check_o("O", name, &d, &os, o_s, ref_o, naive_o);
            ok &= check_result("LSE", name, &ls, lse, ref_lse, naive_lse);
            if (memcmp(kc, kc_exp, sizes[3]) != 0 || memcmp(vc, vc_exp, sizes[4]) != 0) {
                printf("FAIL %s: the device cache differs from the reference's append\n", name);
                failures++;
                ok = 0;
            }
            for (int i = 7; i < 9 && d.ks; i++) {
                float *back = malloc(sizes[i]);
                clEnqueueReadBuffer(queue, m[i], CL_TRUE, 0, sizes[i], back, 0, NULL, NULL);
                if (memcmp(back, i == 7 ? ks_exp : vs_exp, sizes[i]) != 0) {
                    printf("FAIL %s: the device's %s differs from the reference's append\n", name,
                           i == 7 ? "k_scale" : "v_scale");
                    failures++;
                    ok = 0;
                }
                free(back);
            }
            free(o_s);
            free(kc);
            free(vc);
            free(lse);
        }
        for (int i = 0; i < 9; i++)
            clReleaseMemObject(m[i]);
        for (int i = 0; i < 6; i++)
            if (arrays[i])
                clReleaseMemObject(arrays[i]);
    }
    /* Host call: O and LSE, and the cache appended in place. */
    if (ok) {
        void *o_s = test_alloc_sentinel(d.o_elems * es);
        float *lse = test_alloc_sentinel(d.lse_elems * 4);
        void *kc = dup_bytes(d.kc_s, d.kc_elems * kes), *vc = dup_bytes(d.vc_s, d.vc_elems * kes);
        float *ks = d.ks ? dup_bytes(d.ks, ss[0]) : NULL,
              *vs = d.vs ? dup_bytes(d.vs, ss[1]) : NULL;
        ht = host_tensors(&d, 1, d.q_s, o_s, lse, kc, vc);
        ht.k_scale = ks;
        ht.v_scale = vs;
        st = attn_plan_execute_kvcache_host(plan, &ht);
        if (!test_ok(ctx, st, name)) {
            ok = 0;
        } else {
            ok &= check_o("host O", name, &d, &os, o_s, ref_o, naive_o);
            ok &= check_result("host LSE", name, &ls, lse, ref_lse, naive_lse);
            if (memcmp(kc, kc_exp, d.kc_elems * kes) != 0 ||
                memcmp(vc, vc_exp, d.vc_elems * kes) != 0 ||
                (ks && (memcmp(ks, ks_exp, ss[0]) != 0 || memcmp(vs, vs_exp, ss[1]) != 0))) {
                printf("FAIL %s: the host cache differs from the reference's append\n", name);
                failures++;
                ok = 0;
            }
        }
        free(o_s);
        free(lse);
        free(kc);
        free(vc);
        free(ks);
        free(vs);
    }
    if (ok)
        printf("ok   %s\n", name);
    else if (st != ATTN_SUCCESS)
        failures++;
    attn_plan_destroy(plan);
    free(naive_o);
    free(naive_lse);
done:
    free(ref_o);
    free(ref_lse);
    free(kc_ref);
    free(vc_ref);
    free(kc_exp);
    free(vc_exp);
    free(ks_ref);
    free(vs_ref);
    free(ks_exp);
    free(vs_exp);
    free(q_rot);
    free(kn_rot);
    free(o_scratch);
    free(lse_scratch);
    kv_data_free(&d);
}

/* ---- Bad input ---------------------------------------------------------------- */

/* Set by the bad input that gives cache_seqlens both ways (the device call
 * only: the host call has no device arrays). */
static int lengths_both_ways;
/* Set by the bad inputs only host calls see: values in host memory that the
 * device call does not read (include/attn_cl.h). */
static int host_only;

/* One device call on d's data with its arrays changed by `edit`: must fail
 * with `want`, leaving O, LSE and the cache as they were. */
static void bad_case(attn_context_t ctx, const char *what, const kv_case *c,
                     void (*edit)(kv_data *d), attn_status want) {
    kv_data d;
    kv_data_init(&d, c, 99);
    edit(&d);
    const size_t es = es_of(c->dtype), kes = d.kes;
    cl_context cl = NULL;
    cl_command_queue queue = attn_context_queue(ctx);
    clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof cl, &cl, NULL);
    attn_plan_t plan = NULL;
    attn_status st = attn_plan_create_kvcache(ctx, &d.kp, ATTN_PLAN_LSE, &plan);
    int ok = 1;
    if (st == ATTN_SUCCESS) {
        const size_t sizes[9] = {
            d.q_elems * es,           d.o_elems * es,  d.lse_elems * 4, d.kc_elems * kes,
            d.vc_elems * kes,         d.kn_elems * es, d.vn_elems * es, d.ks ? d.ks_elems * 4 : 4,
            d.vs ? d.vs_elems * 4 : 4};
        void *o0 = test_alloc_sentinel(sizes[1]), *l0 = test_alloc_sentinel(sizes[2]);
        float one = 0.0f; /* a buffer for absent scales */
        const void *init[9] = {d.q_s,
                               o0,
                               l0,
                               d.kc_s,
                               d.vc_s,
                               d.kn_s,
                               d.vn_s,
                               d.ks ? (void *)d.ks : &one,
                               d.vs ? (void *)d.vs : &one};
        cl_mem m[9];
        for (int i = 0; i < 9; i++)
            m[i] = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizes[i],
                                  (void *)init[i], NULL);
        const attn_kvcache_device_tensors t = {
            .q = m[0],
            .o = m[1],
            .lse = m[2],
            .k_cache = m[3],
            .v_cache = m[4],
            .k_new = m[5],
            .v_new = m[6],
            .cache_seqlens = d.lengths,
            .cache_batch_idx = d.kp.batch_idx ? d.slots : NULL,
            .block_table = d.kp.page_size ? d.table : NULL,
            .alibi_slopes = c->alibi ? d.slopes : NULL,
            .rotary_cos = d.cos,
            .rotary_sin = d.sin,
            .cache_seqlens_mem = lengths_both_ways ? m[0] : NULL,
            .k_scale = d.ks ? m[7] : NULL,
            .v_scale = d.vs ? m[8] : NULL,
        };
        cl_event ev = (cl_event)&ok; /* must come back NULL */
        st = host_only ? want : attn_plan_execute_kvcache_device(plan, &t, NULL, 0, 0, NULL, &ev);
        ok &= host_only || ev == NULL;
        clFinish(queue);
        for (int i = 1; i < 9; i++) {
            if (i == 5 || i == 6)
                continue; /* inputs */
            void *back = malloc(sizes[i]);
            clEnqueueReadBuffer(queue, m[i], CL_TRUE, 0, sizes[i], back, 0, NULL, NULL);
            if (memcmp(back, init[i], sizes[i]) != 0) {
                printf("FAIL bad input %s: %s changed\n", what,
                       i == 1   ? "O"
                       : i == 2 ? "LSE"
                       : i == 3 ? "K_cache"
                       : i == 4 ? "V_cache"
                       : i == 7 ? "k_scale"
                                : "v_scale");
                ok = 0;
            }
            free(back);
        }
        /* The host call: the caller's cache untouched too. */
        if (st == want && !lengths_both_ways) {
            void *kc = dup_bytes(d.kc_s, sizes[3]), *vc = dup_bytes(d.vc_s, sizes[4]);
            float *ks = dup_bytes(init[7], sizes[7]), *vs = dup_bytes(init[8], sizes[8]);
            attn_kvcache_host_tensors ht = host_tensors(&d, 1, d.q_s, o0, l0, kc, vc);
            ht.k_new = d.kn_s;
            ht.v_new = d.vn_s;
            ht.k_scale = d.ks ? ks : NULL;
            ht.v_scale = d.vs ? vs : NULL;
            attn_status hs = attn_plan_execute_kvcache_host(plan, &ht);
            if (hs != want || memcmp(kc, d.kc_s, sizes[3]) != 0 ||
                memcmp(vc, d.vc_s, sizes[4]) != 0 || memcmp(ks, init[7], sizes[7]) != 0 ||
                memcmp(vs, init[8], sizes[8]) != 0 || !test_is_sentinel(o0, sizes[1]) ||
                !test_is_sentinel(l0, sizes[2])) {
                printf("FAIL bad input %s: host call gave %s or wrote\n", what,
                       attn_status_name(hs));
                ok = 0;
            }
            free(kc);
            free(vc);
            free(ks);
            free(vs);
        }
        for (int i = 0; i < 9; i++)
            clReleaseMemObject(m[i]);
        free(o0);
        free(l0);
    }
    if (st != want) {
        printf("FAIL bad input %s: %s, want %s (%s)\n", what, attn_status_name(st),
               attn_status_name(want), attn_last_error(ctx));
        ok = 0;
    }
    /* The reference refuses it alike. */
    if (ok && !lengths_both_ways) {
        void *o = malloc(d.o_elems * es);
        float *lse = malloc(d.lse_elems * 4);
        void *kc = dup_bytes(d.kc_s, d.kc_elems * kes), *vc = dup_bytes(d.vc_s, d.vc_elems * kes);
        attn_kvcache_host_tensors ht = host_tensors(&d, 1, d.q_s, o, lse, kc, vc);
        ht.k_new = d.kn_s;
        ht.v_new = d.vn_s;
        attn_status rs = attn_reference_kvcache(&d.kp, &ht);
        if (rs != want) {
            printf("FAIL bad input %s: the reference gave %s\n", what, attn_status_name(rs));
            ok = 0;
        }
        free(o);
        free(lse);
        free(kc);
        free(vc);
    }
    if (ok)
        printf("ok   bad input %s: %s, nothing written\n", what, attn_status_name(st));
    else
        failures++;
    attn_plan_destroy(plan);
    kv_data_free(&d);
}

static void len_negative(kv_data *d) {
    d->lengths[1] = -1;
}
static void len_over(kv_data *d) {
    /* With append: room for the new rows is part of the capacity. */
    d->lengths[0] = d->kp.capacity - d->kp.attn.seq_q + 1;
}
static void table_negative(kv_data *d) {
    d->table[0] = -3;
}
static void table_over(kv_data *d) {
    d->table[1] = d->kp.num_pages;
}
static void same_page(kv_data *d) {
    /* Sequence 1 appends into the page sequence 0 reads. */
    d->lengths[0] = 2;
    d->lengths[1] = 2;
    d->table[d->kp.max_pages] = d->table[0];
}
static void slot_over(kv_data *d) {
    d->slots[0] = d->kp.cache_slots;
}
static void same_slot(kv_data *d) {
    d->slots[1] = d->slots[0];
}
static void page_size_negative(kv_data *d) {
    d->kp.page_size = -1;
}
static void no_table(kv_data *d) {
    d->kp.page_size = 4;
    d->kp.max_pages = 0;
}
/* Sequence 0's first cached key (kv head 0): its scales' index. */
static size_t first_scale(const kv_data *d, const attn_strides *s) {
    const int64_t block = d->kp.page_size ? d->table[0] : d->kp.batch_idx ? d->slots[0] : 0;
    return (size_t)(block * s->batch);
}
static void k_scale_nan(kv_data *d) {
    d->ks[first_scale(d, &d->kp.k_scale_strides)] = NAN;
}
static void v_scale_inf(kv_data *d) {
    d->vs[first_scale(d, &d->kp.v_scale_strides)] = INFINITY;
}
static void k_scale_negative(kv_data *d) {
    d->ks[first_scale(d, &d->kp.k_scale_strides)] = -0.5f;
}
static void k_new_inf(kv_data *d) {
    ((float *)d->kn_s)[3] = INFINITY;
}
static void v_new_nan(kv_data *d) {
    ((float *)d->vn_s)[d->vn_elems - 1] = NAN;
}
static void no_scales(kv_data *d) {
    free(d->vs);
    d->vs = NULL;
}
static void kv_dtype_unknown(kv_data *d) {
    d->kp.kv_dtype = (attn_kv_dtype)7;
}
static void no_edit(kv_data *d) {
    (void)d;
}
static void with_varlen(kv_data *d) {
    d->kp.attn.varlen = 1;
}
static void rotary_odd(kv_data *d) {
    d->kp.rotary_dim = 3;
}
static void rotary_over(kv_data *d) {
    d->kp.rotary_dim = d->kp.attn.head_dim + 2;
}
static void rotary_no_positions(kv_data *d) {
    d->kp.rotary_positions = 0;
}
static void rotary_nan(kv_data *d) {
    d->sin[3] = NAN;
}
static void rotary_no_table(kv_data *d) {
    free(d->cos);
    d->cos = NULL;
}

/* Device tensors that share a buffer (attn_check_kvcache_overlap): tensor
 * `a` (0 Q, 1 O, 2 LSE, 3 K_cache, 4 V_cache, 5 k_new, 6 v_new, 7 k_scale,
 * 8 v_scale) lives in tensor b's buffer from byte `at`. `interleave`: the
 * int8 scales' strides doubled (head-major case), so that k_scale and
 * v_scale at 4 bytes apart interleave without sharing an element. The call
 * must give `want`; a refused one leaves every buffer as it was, byte for
 * byte. */
#define LAST ((size_t)-1)
static void overlap_case(attn_context_t ctx, const char *what, const kv_case *c, int a, int b,
                         size_t at, int interleave, attn_status want) {
    kv_data d;
    kv_data_init(&d, c, 5);
    const size_t es = es_of(c->dtype), kes = d.kes;
    if (interleave) {
        const int64_t hk = c->heads_kv, rows = c->capacity;
        d.kp.k_scale_strides = d.kp.v_scale_strides = (attn_strides){2 * hk * rows, 2 * rows, 2};
    }
    size_t sizes[9] = {
        d.q_elems * es,           d.o_elems * es,  d.lse_elems * 4, d.kc_elems * kes,
        d.vc_elems * kes,         d.kn_elems * es, d.vn_elems * es, d.ks ? d.ks_elems * 4 : 4,
        d.vs ? d.vs_elems * 4 : 4};
    if (interleave)
        sizes[7] = sizes[8] = 2 * sizes[7];
    unsigned char *init[9];
    const void *src[9] = {d.q_s, NULL, NULL, d.kc_s, d.vc_s, d.kn_s, d.vn_s, d.ks, d.vs};
    for (int i = 0; i < 9; i++) {
        init[i] = test_alloc_sentinel(sizes[i]);
        if (src[i])
            memcpy(init[i], src[i], sizes[i] < d.ks_elems * 4 || i < 7 ? sizes[i] : d.ks_elems * 4);
    }
    /* b's buffer holds b, then a from byte `at` (LAST: on b's last 4 bytes). */
    if (at == LAST)
        at = (sizes[b] - 1) / 4 * 4;
    const size_t shared = at + sizes[a] > sizes[b] ? at + sizes[a] : sizes[b];
    unsigned char *composed = test_alloc_sentinel(shared);
    memcpy(composed, init[b], sizes[b]);
    memcpy(composed + at, init[a], sizes[a]);
    cl_context cl = NULL;
    cl_command_queue queue = attn_context_queue(ctx);
    clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof cl, &cl, NULL);
    cl_mem m[9];
    for (int i = 0; i < 9; i++) {
        if (i == a)
            continue;
        m[i] = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                              i == b ? shared : sizes[i], i == b ? composed : init[i], NULL);
    }
    m[a] = m[b];
    attn_plan_t plan = NULL;
    attn_status st = attn_plan_create_kvcache(ctx, &d.kp, ATTN_PLAN_LSE, &plan);
    int ok = st == ATTN_SUCCESS;
    if (ok) {
        const int int8 = d.ks != NULL;
        const attn_kvcache_device_tensors t = {
            .q = m[0],
            .o = m[1],
            .lse = m[2],
            .k_cache = m[3],
            .v_cache = m[4],
            .k_new = m[5],
            .v_new = m[6],
            .q_offset = a == 0 ? at : 0,
            .o_offset = a == 1 ? at : 0,
            .lse_offset = a == 2 ? at : 0,
            .k_cache_offset = a == 3 ? at : 0,
            .v_cache_offset = a == 4 ? at : 0,
            .k_new_offset = a == 5 ? at : 0,
            .v_new_offset = a == 6 ? at : 0,
            .cache_seqlens = d.lengths,
            .cache_batch_idx = d.kp.batch_idx ? d.slots : NULL,
            .block_table = d.kp.page_size ? d.table : NULL,
            .rotary_cos = d.cos,
            .rotary_sin = d.sin,
            .k_scale = int8 ? m[7] : NULL,
            .v_scale = int8 ? m[8] : NULL,
            .k_scale_offset = a == 7 ? at : 0,
            .v_scale_offset = a == 8 ? at : 0,
        };
        st = attn_plan_execute_kvcache_device(plan, &t, NULL, 0, 0, NULL, NULL);
        clFinish(queue);
        for (int i = 0; i < 9 && st != ATTN_SUCCESS; i++) {
            if (i == a)
                continue;
            const size_t n = i == b ? shared : sizes[i];
            unsigned char *back = malloc(n);
            clEnqueueReadBuffer(queue, m[i], CL_TRUE, 0, n, back, 0, NULL, NULL);
            if (memcmp(back, i == b ? composed : init[i], n) != 0) {
                printf("FAIL overlap %s: a refused call changed buffer %d\n", what, i);
                ok = 0;
            }
            free(back);
        }
    }
    if (st != want || (st != ATTN_SUCCESS && !*attn_last_error(ctx))) {
        printf("FAIL overlap %s: %s, want %s (%s)\n", what, attn_status_name(st),
               attn_status_name(want), attn_last_error(ctx));
        ok = 0;
    }
    if (ok)
        printf("ok   overlap %s: %s%s\n", what, attn_status_name(st),
               st != ATTN_SUCCESS ? ", nothing written" : "");
    else
        failures++;
    attn_plan_destroy(plan);
    for (int i = 0; i < 9; i++) {
        if (i != a)
            clReleaseMemObject(m[i]);
        free(init[i]);
    }
    free(composed);
    kv_data_free(&d);
}

#ifdef KV_FAULT_WALK
/* Every failure point of a plan's creation and its device and host
 * executes (lib/fault_injection.h): a call that fails returns the injected
 * status and leaves O, LSE and the cache as they were, byte for byte; a call
 * that succeeds (the fault absorbed, or past the last call) appended. */
static void fault_walk(attn_context_t ctx, const kv_case *c) {
    kv_data d;
    kv_data_init(&d, c, 7);
    const size_t es = es_of(c->dtype), kes = d.kes;
    void *kc_exp = dup_bytes(d.kc_s, d.kc_elems * kes),
         *vc_exp = dup_bytes(d.vc_s, d.vc_elems * kes);
    /* int8: the scales, walked and compared like the cache (4 bytes if none) */
    float none_scale = 0.0f;
    const void *ks0 = d.ks ? (void *)d.ks : &none_scale, *vs0 = d.vs ? (void *)d.vs : &none_scale;
    const size_t ksz = d.ks ? d.ks_elems * 4 : 4, vsz = d.vs ? d.vs_elems * 4 : 4;
    float *ks_exp = dup_bytes(ks0, ksz), *vs_exp = dup_bytes(vs0, vsz);
    void *o_ref = malloc(d.o_elems * es);
    float *lse_ref = malloc(d.lse_elems * 4);
    attn_kvcache_host_tensors ht = host_tensors(&d, 1, d.q_s, o_ref, lse_ref, kc_exp, vc_exp);
    ht.k_scale = d.ks ? ks_exp : NULL;
    ht.v_scale = d.vs ? vs_exp : NULL;
    if (attn_reference_kvcache(&d.kp, &ht) != ATTN_SUCCESS) {
        printf("FAIL fault walk: reference\n");
        failures++;
        return;
    }
    cl_context cl = NULL;
    cl_command_queue queue = attn_context_queue(ctx);
    clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof cl, &cl, NULL);
    const size_t sizes[9] = {d.q_elems * es,
                             d.o_elems * es,
                             d.lse_elems * 4,
                             d.kc_elems * kes,
                             d.vc_elems * kes,
                             d.kn_elems * es,
                             d.vn_elems * es,
                             ksz,
                             vsz};
    void *o0 = test_alloc_sentinel(sizes[1]), *l0 = test_alloc_sentinel(sizes[2]);
    const void *init[9] = {d.q_s, o0, l0, d.kc_s, d.vc_s, d.kn_s, d.vn_s, ks0, vs0};
    long points = 0, failed_calls = 0;
    for (int kind = 0; kind < ATTN_FAULT_KIND_COUNT; kind++) {
        const cl_int err =
            kind == ATTN_FAULT_BUILD_PROGRAM ? CL_BUILD_PROGRAM_FAILURE : CL_OUT_OF_RESOURCES;
        const attn_status want =
            kind == ATTN_FAULT_HOST_ALLOC ? ATTN_ERR_HOST_OUT_OF_MEMORY : (attn_status)err;
        for (long n = 1; n < 400; n++) {
            for (int host = 0; host < 2; host++) {
                cl_mem m[9];
                for (int i = 0; i < 9; i++)
                    m[i] = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizes[i],
                                          (void *)init[i], NULL);
                void *kc = dup_bytes(d.kc_s, sizes[3]), *vc = dup_bytes(d.vc_s, sizes[4]);
                float *ks = dup_bytes(ks0, ksz), *vs = dup_bytes(vs0, vsz);
                void *o = dup_bytes(o0, sizes[1]);
                float *lse = dup_bytes(l0, sizes[2]);
                attn_fault_reset();
                attn_fault_arm((attn_fault_kind)kind, n, err);
                attn_plan_t plan = NULL;
                attn_status st = attn_plan_create_kvcache(ctx, &d.kp, ATTN_PLAN_LSE, &plan);
                cl_event ev = NULL;
                if (st == ATTN_SUCCESS && !host) {
                    const attn_kvcache_device_tensors t = {
                        .q = m[0],
                        .o = m[1],
                        .lse = m[2],
                        .k_cache = m[3],
                        .v_cache = m[4],
                        .k_new = m[5],
                        .v_new = m[6],
                        .cache_seqlens = d.lengths,
                        .cache_batch_idx = d.kp.batch_idx ? d.slots : NULL,
                        .block_table = d.kp.page_size ? d.table : NULL,
                        .rotary_cos = d.cos,
                        .rotary_sin = d.sin,
                        .k_scale = d.ks ? m[7] : NULL,
                        .v_scale = d.vs ? m[8] : NULL,
                    };
                    st = attn_plan_execute_kvcache_device(plan, &t, NULL, 0, 0, NULL, &ev);
                } else if (st == ATTN_SUCCESS) {
                    attn_kvcache_host_tensors h = host_tensors(&d, 1, d.q_s, o, lse, kc, vc);
                    h.k_scale = d.ks ? ks : NULL;
                    h.v_scale = d.vs ? vs : NULL;
                    st = attn_plan_execute_kvcache_host(plan, &h);
                }
                const int fired = attn_fault_fired();
                attn_fault_reset();
                if (ev) {
                    clWaitForEvents(1, &ev);
                    clReleaseEvent(ev);
                }
                clFinish(queue);
                attn_plan_destroy(plan);
                void *back[9] = {NULL, o, lse, kc, vc, NULL, NULL, ks, vs};
                for (int i = 1; i < 9 && !host; i++) {
                    if (i == 5 || i == 6)
                        continue;
                    back[i] = malloc(sizes[i]);
                    clEnqueueReadBuffer(queue, m[i], CL_TRUE, 0, sizes[i], back[i], 0, NULL, NULL);
                }
                int bad = 0;
                if (st != ATTN_SUCCESS) {
                    failed_calls++;
                    bad = st != want || ev != NULL;
                    for (int i = 1; i < 9; i++)
                        bad |= i != 5 && i != 6 && memcmp(back[i], init[i], sizes[i]) != 0;
                } else {
                    bad = memcmp(back[3], kc_exp, sizes[3]) != 0 ||
                          memcmp(back[4], vc_exp, sizes[4]) != 0 ||
                          memcmp(back[7], ks_exp, sizes[7]) != 0 ||
                          memcmp(back[8], vs_exp, sizes[8]) != 0;
                }
                if (bad) {
                    printf("FAIL fault walk %s call %ld of %s: %s (%s)\n", host ? "host" : "device",
                           n, attn_fault_call_name((attn_fault_kind)kind), attn_status_name(st),
                           attn_last_error(ctx));
                    failures++;
                }
                for (int i = 1; i < 9 && !host; i++)
                    if (i != 5 && i != 6)
                        free(back[i]);
                for (int i = 0; i < 9; i++)
                    clReleaseMemObject(m[i]);
                free(kc);
                free(vc);
                free(ks);
                free(vs);
                free(o);
                free(lse);
                points += fired;
                if (!fired && host)
                    n = 400; /* past this kind's last call */
            }
        }
    }
    printf("ok   fault walk: %ld failure points, %ld failed calls checked\n", points, failed_calls);
    free(o0);
    free(l0);
    free(kc_exp);
    free(vc_exp);
    free(ks_exp);
    free(vs_exp);
    free(o_ref);
    free(lse_ref);
    kv_data_free(&d);
}
#endif

#ifdef KV_FAULT_WALK
/* A 128k-token cache on one head (f16, D 16, append of one row at the
 * end of the cache) through a plan's device execute with the caller's
 * buffers: the call completes, matches the double reference, and nothing
 * the library allocates (device buffers, host memory: the fault build's
 * accounting) grows with the cache, beyond the split partials in the
 * plan's workspace, which stay a small fraction of it. */
static void long_cache(attn_context_t ctx) {
    enum { CAP = 131072, D = 16 };
    attn_kvcache_params kp;
    attn_kvcache_params_init(&kp, 1, 1, 1, CAP, D);
    kp.attn.dtype = ATTN_DTYPE_F16;
    kp.attn.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
    kp.append = 1;
    const size_t cache_elems = (size_t)CAP * D, cache_bytes = cache_elems * 2;
    test_rng rng;
    test_rng_seed(&rng, 128);
    float *x = malloc(cache_elems * sizeof *x);
    test_fill_uniform(&rng, x, cache_elems, -1.0f, 1.0f);
    void *kc = test_to_storage(ATTN_DTYPE_F16, x, cache_elems);
    test_fill_uniform(&rng, x, cache_elems, -1.0f, 1.0f);
    void *vc = test_to_storage(ATTN_DTYPE_F16, x, cache_elems);
    test_fill_uniform(&rng, x, 3 * D, -1.0f, 1.0f);
    void *q = test_to_storage(ATTN_DTYPE_F16, x, D),
         *kn = test_to_storage(ATTN_DTYPE_F16, x + D, D),
         *vn = test_to_storage(ATTN_DTYPE_F16, x + 2 * D, D);
    free(x);
    const int32_t length = CAP - 1;
    cl_context cl = NULL;
    cl_command_queue queue = attn_context_queue(ctx);
    clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof cl, &cl, NULL);
    const cl_mem_flags copy = CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR;
    cl_mem mq = clCreateBuffer(cl, copy, D * 2, q, NULL),
           mo = clCreateBuffer(cl, copy, D * 2, q, NULL),
           ml = clCreateBuffer(cl, CL_MEM_READ_WRITE, 4, NULL, NULL),
           mkc = clCreateBuffer(cl, copy, cache_bytes, kc, NULL),
           mvc = clCreateBuffer(cl, copy, cache_bytes, vc, NULL),
           mkn = clCreateBuffer(cl, copy, D * 2, kn, NULL),
           mvn = clCreateBuffer(cl, copy, D * 2, vn, NULL);
    /* The kernels built first: their sources and binaries are not the
     * cache's to account for. */
    attn_plan_t plan = NULL;
    attn_status st = attn_plan_create_kvcache(ctx, &kp, ATTN_PLAN_LSE, &plan);
    attn_plan_destroy(plan);
    plan = NULL;
    attn_fault_reset();
    if (st == ATTN_SUCCESS)
        st = attn_plan_create_kvcache(ctx, &kp, ATTN_PLAN_LSE, &plan);
    const attn_kvcache_device_tensors t = {.q = mq,
                                           .o = mo,
                                           .lse = ml,
                                           .k_cache = mkc,
                                           .v_cache = mvc,
                                           .k_new = mkn,
                                           .v_new = mvn,
                                           .cache_seqlens = &length};
    for (int step = 0; step < 2 && st == ATTN_SUCCESS; step++)
        st = attn_plan_execute_kvcache_device(plan, &t, NULL, 0, 0, NULL, NULL);
    clFinish(queue);
    const size_t device_largest = attn_fault_largest(ATTN_FAULT_CREATE_BUFFER);
    const size_t host_largest = attn_fault_largest(ATTN_FAULT_HOST_ALLOC);
    const size_t workspace = plan ? attn_plan_workspace_size(plan) : 0;
    uint16_t o[D];
    float lse = 0.0f, got[D], want[D], ref_lse = 0.0f;
    clEnqueueReadBuffer(queue, mo, CL_TRUE, 0, sizeof o, o, 0, NULL, NULL);
    clEnqueueReadBuffer(queue, ml, CL_TRUE, 0, 4, &lse, 0, NULL, NULL);
    test_from_storage(ATTN_DTYPE_F16, o, got, D);
    /* The reference on host copies, O in float (Q's values are f16's). */
    uint16_t ref_o[D];
    attn_kvcache_host_tensors h = {.q = q,
                                   .o = ref_o,
                                   .lse = &ref_lse,
                                   .k_cache = kc,
                                   .v_cache = vc,
                                   .k_new = kn,
                                   .v_new = vn,
                                   .cache_seqlens = &length};
    const attn_status rs = attn_reference_kvcache(&kp, &h);
    test_from_storage(ATTN_DTYPE_F16, ref_o, want, D);
    double err = fabs((double)lse - ref_lse);
    for (int d = 0; d < D; d++)
        err = fmax(err, fabs((double)got[d] - want[d]));
    /* Beyond the workspace: the small arrays, staging, plan structs. */
    const size_t small = 64 * 1024;
    const int ok = st == ATTN_SUCCESS && rs == ATTN_SUCCESS && err <= 2e-3 &&
                   device_largest <= (workspace > small ? workspace : small) &&
                   host_largest <= small && workspace <= cache_bytes / 64;
    printf("%s 128k-token cache, one head: %s, max err %.1e (f16 O), largest allocation %zu bytes "
           "on the device, %zu on the host, workspace %zu, cache %zu bytes\n",
           ok ? "ok  " : "FAIL", attn_status_name(st), err, device_largest, host_largest, workspace,
           2 * cache_bytes);
    failures += !ok;
    attn_plan_destroy(plan);
    cl_mem all[7] = {mq, mo, ml, mkc, mvc, mkn, mvn};
    for (int i = 0; i < 7; i++)
        clReleaseMemObject(all[i]);
    free(kc);
    free(vc);
    free(q);
    free(kn);
    free(vn);
}
#endif

int main(int argc, char **argv) {
    /* tests/oclgrind_check.sh: --count says how many runs, --run N does the
     * N-th quick case alone (one call of each kind a process). */
    long only = -1;
    if (argc == 2 && strcmp(argv[1], "--count") == 0)
        only = -2;
    else if (argc == 3 && strcmp(argv[1], "--run") == 0)
        only = strtol(argv[2], NULL, 10);
    else if (argc != 1) {
        fprintf(stderr, "usage: %s [--count | --run N]\n", argv[0]);
        return 2;
    }
    const float none = 0.0f;
    const attn_mask br = ATTN_MASK_CAUSAL_BOTTOM_RIGHT, nm = ATTN_MASK_NONE;
    const attn_dtype f32 = ATTN_DTYPE_F32, f16 = ATTN_DTYPE_F16, bf16 = ATTN_DTYPE_BF16;
    const attn_kv_dtype i8 = ATTN_KV_DTYPE_INT8, k16 = ATTN_KV_DTYPE_F16, kb = ATTN_KV_DTYPE_BF16,
                        k32 = ATTN_KV_DTYPE_F32;
    /* B Hq Hkv snew D Dv page cap append idx hmajor mask dtype win softcap alibi quick
     * rotary_dim interleaved kv */
    const kv_case cases[] = {
        {6, 4, 4, 1, 16, 16, 0, 40, 1, 0, 1, br, f32, -2, none, 0, 1, 0, 0, 0},
        {6, 8, 2, 1, 32, 32, 0, 300, 1, 0, 0, br, f32, -2, none, 0, 0, 0, 0, 0},
        {3, 8, 1, 4, 24, 24, 0, 64, 1, 1, 1, br, f32, -2, none, 0, 0, 0, 0, 0},
        {6, 4, 1, 1, 16, 16, 1, 20, 1, 0, 0, br, f32, -2, none, 0, 1, 0, 0, 0},
        {6, 4, 1, 4, 16, 16, 3, 40, 1, 0, 1, br, f16, -2, none, 0, 0, 0, 0, 0},
        {6, 8, 2, 1, 64, 64, 16, 96, 1, 0, 0, br, f32, -2, none, 0, 0, 0, 0, 0},
        {6, 8, 1, 33, 20, 12, 16, 120, 1, 0, 1, br, f32, -2, none, 0, 0, 0, 0, 0},
        {2, 8, 2, 4, 32, 32, 256, 600, 1, 0, 0, br, bf16, -2, none, 0, 0, 0, 0, 0},
        {6, 4, 4, 1, 16, 16, 16, 64, 0, 0, 0, nm, f32, -2, none, 0, 1, 0, 0, 0},
        {6, 8, 2, 4, 16, 16, 3, 48, 1, 0, 0, br, f32, 5, 30.0f, 1, 0, 0, 0, 0},
        {6, 8, 2, 4, 33, 33, 0, 70, 1, 1, 0, br, f16, 9, none, 1, 0, 0, 0, 0},
        {6, 4, 1, 33, 16, 16, 0, 80, 1, 0, 0, nm, f32, -2, none, 0, 0, 0, 0, 0},
        {6, 8, 8, 1, 128, 128, 16, 64, 1, 0, 0, br, f16, -2, none, 0, 0, 0, 0, 0},
        /* rotary: halves and interleaved, rotary_dim < D, every storage
         * type, paged and contiguous, with and without append */
        {6, 8, 2, 1, 32, 32, 16, 64, 1, 0, 0, br, f32, -2, none, 0, 1, 16, 0, 0},
        {6, 8, 2, 4, 32, 32, 3, 40, 1, 0, 1, br, f16, -2, none, 0, 0, 24, 1, 0},
        {3, 4, 4, 33, 16, 16, 0, 70, 1, 1, 0, br, bf16, -2, none, 1, 0, 16, 0, 0},
        {6, 4, 1, 4, 16, 16, 0, 40, 0, 0, 0, br, f32, 5, none, 0, 0, 8, 1, 0},
        /* A cache of its own storage type, with Q f32 and f16: each type
         * meets every page size, s_new, GQA group, rotary pairing */
        {6, 4, 4, 1, 16, 16, 0, 40, 1, 0, 1, br, f32, -2, none, 0, 1, 0, 0, i8},
        {6, 8, 2, 4, 32, 32, 3, 40, 1, 0, 1, br, f16, -2, none, 0, 0, 24, 1, i8},
        {6, 8, 1, 33, 20, 12, 16, 120, 1, 0, 0, br, f32, -2, none, 0, 0, 16, 0, i8},
        {2, 8, 2, 1, 32, 32, 256, 600, 1, 0, 0, br, f16, 5, 30.0f, 1, 0, 0, 0, i8},
        {6, 4, 1, 1, 16, 16, 1, 20, 1, 0, 0, br, f16, -2, none, 0, 0, 0, 0, i8},
        {6, 4, 1, 4, 16, 16, 0, 40, 0, 1, 0, nm, f32, -2, none, 0, 0, 8, 1, i8},
        {6, 8, 8, 1, 128, 128, 16, 64, 1, 0, 0, br, f32, -2, none, 0, 0, 0, 0, i8},
        {6, 8, 2, 4, 32, 32, 16, 64, 1, 0, 0, br, f32, -2, none, 0, 0, 16, 0, k16},
        {6, 4, 1, 33, 16, 16, 3, 80, 1, 0, 1, br, f32, -2, none, 0, 0, 0, 0, k16},
        {3, 8, 1, 1, 24, 24, 1, 30, 1, 0, 0, br, f32, 5, 30.0f, 1, 0, 8, 1, k16},
        {2, 8, 8, 4, 32, 32, 256, 600, 1, 0, 0, br, f32, -2, none, 0, 0, 0, 0, k16},
        {6, 4, 4, 1, 16, 16, 0, 40, 1, 1, 0, br, f32, -2, none, 0, 0, 0, 0, k16},
        {6, 8, 2, 1, 32, 32, 0, 64, 1, 0, 0, br, f16, -2, none, 0, 0, 0, 0, k16},
        {6, 8, 2, 1, 32, 32, 0, 64, 1, 0, 1, br, f16, -2, none, 0, 0, 16, 1, kb},
        {6, 4, 1, 4, 16, 16, 3, 40, 1, 0, 0, br, f32, -2, none, 0, 0, 0, 0, kb},
        {6, 8, 8, 33, 16, 16, 16, 80, 1, 0, 1, br, f16, 9, none, 1, 0, 8, 0, kb},
        {6, 8, 1, 1, 16, 16, 1, 20, 1, 0, 0, br, f32, -2, none, 0, 0, 0, 0, kb},
        {2, 8, 2, 4, 32, 32, 256, 600, 1, 0, 0, br, f16, -2, none, 0, 0, 0, 0, kb},
        {6, 8, 2, 4, 32, 32, 16, 64, 1, 0, 0, br, f16, -2, none, 0, 0, 16, 1, k32},
        {6, 4, 1, 33, 16, 16, 1, 60, 1, 0, 1, br, f16, 5, 30.0f, 1, 0, 0, 0, k32},
        {6, 8, 8, 1, 16, 16, 0, 40, 1, 1, 0, br, f16, -2, none, 0, 0, 0, 0, k32},
        {6, 4, 4, 4, 16, 16, 3, 40, 0, 0, 0, nm, f16, -2, none, 0, 0, 8, 0, k32},
        {2, 8, 1, 1, 32, 32, 256, 600, 1, 0, 0, br, f32, -2, none, 0, 0, 0, 0, k32},
    };
    const size_t n_cases = sizeof cases / sizeof cases[0];
    if (only == -2) {
        int n = 0;
        for (size_t i = 0; i < n_cases; i++)
            n += cases[i].quick;
        printf("%d\n", n);
        return 0;
    }
    attn_context_t ctx = test_context_create();
    if (only >= 0) {
        for (size_t i = 0, q = 0; i < n_cases; i++)
            if (cases[i].quick && q++ == (size_t)only)
                run_case(ctx, &cases[i], 1000 + i);
        attn_context_destroy(ctx);
        return failures ? 1 : 0;
    }
#ifdef KV_FAULT_WALK
    /* Paged by 3 with append, ALiBi-free GQA, rotary embedding and an int8
     * cache (the new rows quantized): every kernel with splits. */
    const kv_case walk = {3, 4, 2, 2, 8, 8, 3, 12, 1, 0, 0, br, f32, -2, none, 0, 1, 4, 0, i8};
    fault_walk(ctx, &walk);
    if (!test_quick())
        long_cache(ctx);
    attn_context_destroy(ctx);
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
#endif
    const int quick = test_quick();
    for (size_t i = 0; i < n_cases; i++)
        if (!quick || cases[i].quick)
            run_case(ctx, &cases[i], 1000 + i);

    /* Bad input: paged (page 4, append 2) and contiguous with batch_idx. */
    const kv_case paged = {3, 4, 2, 2, 8, 8, 4, 16, 1, 0, 0, br, f32, -2, none, 0, 1, 0, 0, 0};
    const kv_case slots = {3, 4, 2, 2, 8, 8, 0, 16, 1, 1, 0, br, f32, -2, none, 0, 1, 0, 0, 0};
    bad_case(ctx, "cache_seqlens negative", &paged, len_negative, ATTN_ERR_INVALID_VALUE);
    bad_case(ctx, "cache_seqlens + s_new over capacity", &paged, len_over, ATTN_ERR_INVALID_VALUE);
    bad_case(ctx, "block_table entry negative", &paged, table_negative, ATTN_ERR_INVALID_VALUE);
    bad_case(ctx, "block_table entry past num_pages", &paged, table_over, ATTN_ERR_INVALID_VALUE);
    bad_case(ctx, "two sequences in one page", &paged, same_page, ATTN_ERR_INVALID_VALUE);
    bad_case(ctx, "cache_batch_idx past the slots", &slots, slot_over, ATTN_ERR_INVALID_VALUE);
    bad_case(ctx, "two sequences appending to one slot", &slots, same_slot, ATTN_ERR_INVALID_VALUE);
    bad_case(ctx, "page_size negative", &paged, page_size_negative, ATTN_ERR_INVALID_SIZE);
    bad_case(ctx, "paged without block-table columns", &paged, no_table, ATTN_ERR_INVALID_SIZE);
    bad_case(ctx, "varlen", &paged, with_varlen, ATTN_ERR_UNSUPPORTED);
    const kv_case rotary = {3, 4, 2, 2, 8, 8, 4, 16, 1, 0, 0, br, f32, -2, none, 0, 1, 4, 0, 0};
    bad_case(ctx, "rotary_dim odd", &rotary, rotary_odd, ATTN_ERR_INVALID_VALUE);
    bad_case(ctx, "rotary_dim above head_dim", &rotary, rotary_over, ATTN_ERR_INVALID_VALUE);
    bad_case(ctx, "rotary tables of no rows", &rotary, rotary_no_positions, ATTN_ERR_INVALID_SIZE);
    bad_case(ctx, "rotary_sin holding NaN", &rotary, rotary_nan, ATTN_ERR_INVALID_VALUE);
    bad_case(ctx, "rotary_cos missing", &rotary, rotary_no_table, ATTN_ERR_NULL_ARGUMENT);
    /* int8: scales of rows the call reads, new rows to quantize, a missing
     * scale tensor, an unknown storage type (paged by 4 and contiguous). */
    const kv_case paged8 = {3, 4,  2,   2,  8,    8, 4, 16, 1, 0,
                            0, br, f32, -2, none, 0, 1, 0,  0, ATTN_KV_DTYPE_INT8};
    const kv_case slots8 = {3, 4,  2,   2,  8,    8, 0, 16, 1, 1,
                            1, br, f32, -2, none, 0, 1, 0,  0, ATTN_KV_DTYPE_INT8};
    bad_case(ctx, "int8 scale tensor missing", &paged8, no_scales, ATTN_ERR_NULL_ARGUMENT);
    bad_case(ctx, "kv_dtype unknown", &paged8, kv_dtype_unknown, ATTN_ERR_INVALID_VALUE);
    host_only = 1;
    bad_case(ctx, "int8 k_scale NaN (host)", &paged8, k_scale_nan, ATTN_ERR_INVALID_VALUE);
    bad_case(ctx, "int8 v_scale infinite (host)", &slots8, v_scale_inf, ATTN_ERR_INVALID_VALUE);
    bad_case(ctx, "int8 k_scale negative (host)", &slots8, k_scale_negative,
             ATTN_ERR_INVALID_VALUE);
    bad_case(ctx, "int8 k_new infinite (host)", &paged8, k_new_inf, ATTN_ERR_INVALID_VALUE);
    bad_case(ctx, "int8 v_new NaN (host)", &slots8, v_new_nan, ATTN_ERR_INVALID_VALUE);
    host_only = 0;
    lengths_both_ways = 1;
    bad_case(ctx, "cache_seqlens in host and device memory", &paged, no_edit,
             ATTN_ERR_INVALID_VALUE);
    lengths_both_ways = 0;

    /* Device tensors sharing memory (attn_check_kvcache_overlap): the int8
     * scales and the new rows against O, LSE, each other and the cache. */
    const kv_case shared8 = {3, 4,  2,   2,  8,    8, 0, 16, 1, 0,
                             1, br, f32, -2, none, 0, 1, 0,  0, ATTN_KV_DTYPE_INT8};
    kv_case read8 = shared8;
    read8.append = 0;
    const attn_status bad = ATTN_ERR_INVALID_VALUE;
    overlap_case(ctx, "k_scale on O's last element", &shared8, 7, 1, LAST, 0, bad);
    overlap_case(ctx, "v_scale on LSE (no append)", &read8, 8, 2, 0, 0, bad);
    overlap_case(ctx, "v_scale on V_cache's last row (append)", &shared8, 8, 4, LAST, 0, bad);
    overlap_case(ctx, "k_scale and v_scale one tensor (append)", &shared8, 8, 7, 0, 0, bad);
    overlap_case(ctx, "k_scale on Q (append)", &shared8, 7, 0, 0, 0, bad);
    overlap_case(ctx, "k_new on O", &shared8, 5, 1, 0, 0, bad);
    overlap_case(ctx, "k_scale and v_scale interleaved (append)", &shared8, 8, 7, 4, 1,
                 ATTN_SUCCESS);
    overlap_case(ctx, "k_scale and v_scale one tensor (read only)", &read8, 8, 7, 0, 0,
                 ATTN_SUCCESS);

    attn_context_destroy(ctx);
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
