/* attn_merge and attn_merge_device: two forwards over disjoint key sets,
 * merged by their LSEs, against one forward over all keys.
 *
 * The keys are split at s: part A sees keys [0, s), part B keys [s, seq_k),
 * both as views into the same K, V and keep-mask (pointers or offsets plus
 * the full tensors' strides). The keep-mask hides query row 1 from every key
 * of part A (A's row is fully masked: LSE -inf, O 0) and row 2 from every
 * key (masked in both: the merged row must be O 0, LSE -inf).
 *
 * Bound: the full problem's (test_util.h), O and LSE: the partial forwards
 * and the merge each add an fp32 rounding or two, well inside
 * 2 * max|naive_fp32 - ref| + 1e-6 * max(1, max|ref|). With 16-bit storage
 * the partial O's are rounded to it before the merge rounds again: O may
 * be off by one more rounding than naive_fp32's single one, half an ulp at
 * |O| <= 1 (V is drawn from [-1, 1)): 2^-11 for f16, 2^-8 for bf16. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

static void report(const char *name, int ok, const char *detail) {
    printf("%-56s %s  %s\n", name, detail, ok ? "PASS" : "FAIL");
    failures += !ok;
}

typedef struct merge_case {
    int32_t batch, heads_q, heads_kv, seq_q, seq_k, split, head_dim;
    test_layout layout;
    attn_dtype dtype;
} merge_case;

/* The full problem's data with the keep-mask described above, its double
 * reference and naive fp32 outputs. */
typedef struct problem {
    attn_params p, r;
    test_problem t;
} problem;

static int problem_init(problem *pr, const merge_case *c, uint64_t seed) {
    attn_params p;
    attn_params_init(&p, c->batch, c->heads_q, c->seq_q, c->seq_k, c->head_dim);
    p.heads_kv = c->heads_kv;
    p.dtype = c->dtype;
    p.keep_mask = (attn_score_operand){1, c->batch, c->heads_q, {0, 0, 0}};
    test_set_layout(&p, c->layout);
    if (test_problem_init(&pr->t, &p, seed, 1.0f, 1, 0) != 0) {
        return -1;
    }
    /* Rewrite the mask: row 1 sees no key of part A, row 2 no key at all;
     * then recompute the reference and naive outputs for it. */
    test_problem *t = &pr->t;
    test_shape ms = test_tensor_shape(&t->r, TEST_KEEP_MASK);
    for (int64_t b = 0; b < ms.batch; b++) {
        for (int64_t h = 0; h < ms.heads; h++) {
            uint8_t *row1 = t->x.keep_mask + (size_t)(b * ms.strides.batch + h * ms.strides.head +
                                                      1 * ms.strides.seq);
            uint8_t *row2 = row1 + ms.strides.seq;
            memset(row1, 0, (size_t)c->split);
            memset(row1 + c->split, 1, (size_t)(c->seq_k - c->split));
            memset(row2, 0, (size_t)c->seq_k);
        }
    }
    attn_params as_f32 = t->p;
    as_f32.dtype = ATTN_DTYPE_F32;
    attn_host_tensors ref = test_host_tensors(t, t->ref_o, t->ref_lse, NULL);
    ref.q = t->q;
    ref.k = t->k;
    ref.v = t->v;
    if (attn_reference_host(&as_f32, &ref) != ATTN_SUCCESS) {
        printf("FAIL: reference: %s\n", attn_last_error(NULL));
        return -1;
    }
    test_naive_fp32(&t->r, t->q, t->k, t->v, &t->x, t->naive_o, t->naive_lse, NULL);
    test_round_to_storage(c->dtype, t->naive_o, t->o_elems);
    pr->p = t->p;
    pr->r = t->r;
    return 0;
}

/* Part A or B of the keys: the full problem's params with seq_k cut and the
 * full tensors' strides (explicit, so the views keep them). */
static attn_params part_params(const problem *pr, const merge_case *c, int part) {
    attn_params p = pr->r;
    p.seq_k = part == 0 ? c->split : c->seq_k - c->split;
    return p;
}

/* Element offsets of part B's first key in K, V and the keep-mask. */
static size_t k_offset(const problem *pr, const merge_case *c) {
    return (size_t)c->split * (size_t)pr->r.k_strides.seq;
}
static size_t v_offset(const problem *pr, const merge_case *c) {
    return (size_t)c->split * (size_t)pr->r.v_strides.seq;
}

static int check(const problem *pr, const void *o, const float *lse, char *detail, size_t size) {
    test_result ro = test_compare_output(&pr->t, o);
    const attn_dtype dtype = pr->p.dtype;
    const double partial_rounding = dtype == ATTN_DTYPE_F16    ? 0x1p-11
                                    : dtype == ATTN_DTYPE_BF16 ? 0x1p-8
                                                               : 0.0;
    ro.bound += partial_rounding;
    ro.ok = ro.ok || (ro.max_err <= ro.bound && ro.nmse <= ro.nmse_bound && !ro.mismatch &&
                      !ro.gaps_written && !ro.naive_disagrees);
    test_result rl = test_compare(&pr->t.lse_shape, lse, pr->t.ref_lse, pr->t.naive_lse, 0);
    char a[200], b[200];
    test_format_result(a, sizeof a, "O", &ro);
    test_format_result(b, sizeof b, "LSE", &rl);
    snprintf(detail, size, "%s | %s", a, b);
    return ro.ok && rl.ok;
}

static cl_mem upload(cl_context context, const void *host, size_t bytes) {
    cl_int err;
    cl_mem mem = clCreateBuffer(context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes,
                                (void *)host, &err);
    if (err != CL_SUCCESS) {
        printf("FAIL: clCreateBuffer: %d\n", (int)err);
        exit(1);
    }
    return mem;
}

static void run_case(attn_context_t ctx, const merge_case *c, uint64_t seed) {
    problem pr;
    if (problem_init(&pr, c, seed) != 0) {
        failures++;
        return;
    }
    test_problem *t = &pr.t;
    const size_t es = test_dtype_size(c->dtype);
    char label[160];
    snprintf(label, sizeof label, "B%d Hq%d Hkv%d Sq%d Sk%d split %d D%d %s %s", c->batch,
             c->heads_q, c->heads_kv, c->seq_q, c->seq_k, c->split, c->head_dim,
             test_layout_name(c->layout), test_dtype_name(c->dtype));

    /* The two partial forwards, on the host call. */
    void *o_part[2];
    float *lse_part[2];
    int ok = 1;
    for (int part = 0; part < 2; part++) {
        attn_params pp = part_params(&pr, c, part);
        o_part[part] = test_alloc_output(t);
        lse_part[part] = test_alloc_sentinel(t->lse_elems * sizeof(float));
        attn_host_tensors h = test_host_tensors(t, o_part[part], lse_part[part], NULL);
        if (part == 1) {
            h.k = (const char *)h.k + k_offset(&pr, c) * es;
            h.v = (const char *)h.v + v_offset(&pr, c) * es;
            h.keep_mask += c->split;
        }
        attn_status st = attn_forward_host(ctx, &pp, &h);
        ok &= st == ATTN_SUCCESS;
        if (st != ATTN_SUCCESS) {
            printf("FAIL: part %c: %s: %s\n", 'A' + part, attn_status_name(st),
                   attn_last_error(ctx));
        }
    }
    /* Part A's row 1 saw no key. */
    const float lse_a_row1 = lse_part[0][1 * pr.r.lse_strides.seq];
    char detail[512];
    snprintf(detail, sizeof detail, "part A row 1 LSE %g", (double)lse_a_row1);
    report(label, ok && isinf(lse_a_row1) && lse_a_row1 < 0, detail);

    /* attn_merge on the host, into fresh outputs. */
    void *o = test_alloc_output(t);
    float *lse = test_alloc_sentinel(t->lse_elems * sizeof(float));
    attn_merge_tensors m = {o_part[0], o_part[1], lse_part[0], lse_part[1], o, lse};
    attn_status st = attn_merge(&pr.p, &m);
    ok = st == ATTN_SUCCESS && check(&pr, o, lse, detail, sizeof detail);
    report("  attn_merge", ok, st == ATTN_SUCCESS ? detail : attn_status_name(st));

    /* attn_merge_device, the parts at byte offsets inside larger buffers. */
    cl_context context;
    clGetCommandQueueInfo(attn_context_queue(ctx), CL_QUEUE_CONTEXT, sizeof context, &context,
                          NULL);
    const size_t ob = t->o_elems * es, lb = t->lse_elems * sizeof(float), pad = 64;
    char *both_o = test_alloc_sentinel(pad + 2 * ob), *both_l = test_alloc_sentinel(pad + 2 * lb);
    memcpy(both_o + pad, o_part[0], ob);
    memcpy(both_o + pad + ob, o_part[1], ob);
    memcpy(both_l + pad, lse_part[0], lb);
    memcpy(both_l + pad + lb, lse_part[1], lb);
    void *o_dev = test_alloc_output(t);
    float *lse_dev = test_alloc_sentinel(lb);
    cl_mem parts_o = upload(context, both_o, pad + 2 * ob);
    cl_mem parts_l = upload(context, both_l, pad + 2 * lb);
    cl_mem out_o = upload(context, o_dev, ob), out_l = upload(context, lse_dev, lb);
    attn_merge_device_tensors md = {parts_o, parts_o,  parts_l, parts_l,  out_o, out_l,
                                    pad,     pad + ob, pad,     pad + lb, 0,     0};
    cl_event done = NULL;
    st = attn_merge_device(ctx, &pr.p, &md, 0, NULL, &done);
    if (st == ATTN_SUCCESS) {
        clWaitForEvents(1, &done);
        clReleaseEvent(done);
        clEnqueueReadBuffer(attn_context_queue(ctx), out_o, CL_TRUE, 0, ob, o_dev, 0, NULL, NULL);
        clEnqueueReadBuffer(attn_context_queue(ctx), out_l, CL_TRUE, 0, lb, lse_dev, 0, NULL, NULL);
    }
    ok = st == ATTN_SUCCESS && check(&pr, o_dev, lse_dev, detail, sizeof detail);
    report("  attn_merge_device", ok, st == ATTN_SUCCESS ? detail : attn_last_error(ctx));
    cl_mem mems[4] = {parts_o, parts_l, out_o, out_l};
    for (int i = 0; i < 4; i++) {
        clReleaseMemObject(mems[i]);
    }

    /* In place: the result over part A's own buffers. */
    m = (attn_merge_tensors){o_part[0],   o_part[1], lse_part[0],
                             lse_part[1], o_part[0], lse_part[0]};
    st = attn_merge(&pr.p, &m);
    ok = st == ATTN_SUCCESS && check(&pr, o_part[0], lse_part[0], detail, sizeof detail);
    report("  attn_merge in place (output = part A)", ok,
           st == ATTN_SUCCESS ? detail : attn_status_name(st));

    free(both_o);
    free(both_l);
    free(o_dev);
    free(lse_dev);
    free(o);
    free(lse);
    for (int part = 0; part < 2; part++) {
        free(o_part[part]);
        free(lse_part[part]);
    }
    test_problem_free(t);
}

/* LSEs at the edges, one row each, host and device: a part at +inf
 * dominates (its O, LSE +inf, the other's O not read even when NaN), both
 * at +inf give O NaN and LSE +inf, NaN makes the row NaN, both -inf give 0
 * and -inf, and a finite pair for contrast. */
enum { EDGE_ROWS = 8, EDGE_D = 8 };
static void infinite_parts(attn_context_t ctx) {
    const float inf = INFINITY, nan = NAN;
    static const float la[EDGE_ROWS] = {INFINITY,  2.0f, INFINITY, INFINITY,
                                        -INFINITY, NAN,  1.0f,     -INFINITY};
    static const float lb[EDGE_ROWS] = {1.0f,     INFINITY, INFINITY, -INFINITY,
                                        INFINITY, INFINITY, 2.0f,     -INFINITY};
    static const char *const names[EDGE_ROWS] = {"(+inf, 1)",    "(2, +inf)",    "(+inf, +inf)",
                                                 "(+inf, -inf)", "(-inf, +inf)", "(NaN, +inf)",
                                                 "(1, 2)",       "(-inf, -inf)"};
    float o_a[EDGE_ROWS * EDGE_D], o_b[EDGE_ROWS * EDGE_D];
    float want_o[EDGE_ROWS * EDGE_D], want_l[EDGE_ROWS];
    for (int r = 0; r < EDGE_ROWS; r++) {
        const double ea = exp((double)la[r] - 2.0), eb = exp((double)lb[r] - 2.0); /* row 6 */
        for (int d = 0; d < EDGE_D; d++) {
            const float a = 0.25f * (float)(d + 1), b = -0.5f * (float)(d + 1);
            /* The part that weighs 0 holds NaN: it must not be read. */
            o_a[r * EDGE_D + d] = (r == 1 || r == 4) ? nan : a;
            o_b[r * EDGE_D + d] = (r == 0 || r == 3) ? nan : b;
            const float finite = (float)((ea * a + eb * b) / (ea + eb));
            const float row[EDGE_ROWS] = {a, b, nan, a, b, nan, finite, 0.0f};
            want_o[r * EDGE_D + d] = row[r];
        }
        const float lse_row[EDGE_ROWS] = {
            inf, inf, inf, inf, inf, nan, (float)(2.0 + log1p(exp(-1.0))), -inf};
        want_l[r] = lse_row[r];
    }

    attn_params p;
    attn_params_init(&p, 1, 2, EDGE_ROWS / 2, 4, EDGE_D);
    float o[EDGE_ROWS * EDGE_D], lse[EDGE_ROWS];
    attn_merge_tensors m = {o_a, o_b, la, lb, o, lse};
    attn_status st = attn_merge(&p, &m);

    cl_context context;
    cl_command_queue queue = attn_context_queue(ctx);
    clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof context, &context, NULL);
    cl_mem bufs[6] = {upload(context, o_a, sizeof o_a), upload(context, o_b, sizeof o_b),
                      upload(context, la, sizeof la),   upload(context, lb, sizeof lb),
                      upload(context, o_a, sizeof o_a), upload(context, la, sizeof la)};
    attn_merge_device_tensors md = {.o_a = bufs[0],
                                    .o_b = bufs[1],
                                    .lse_a = bufs[2],
                                    .lse_b = bufs[3],
                                    .o = bufs[4],
                                    .lse = bufs[5]};
    float o_dev[EDGE_ROWS * EDGE_D], lse_dev[EDGE_ROWS];
    attn_status st_dev = attn_merge_device(ctx, &p, &md, 0, NULL, NULL);
    clEnqueueReadBuffer(queue, bufs[4], CL_TRUE, 0, sizeof o_dev, o_dev, 0, NULL, NULL);
    clEnqueueReadBuffer(queue, bufs[5], CL_TRUE, 0, sizeof lse_dev, lse_dev, 0, NULL, NULL);
    for (int i = 0; i < 6; i++) {
        clReleaseMemObject(bufs[i]);
    }

    for (int r = 0; r < EDGE_ROWS; r++) {
        for (int where = 0; where < 2; where++) {
            const float *got_o = (where ? o_dev : o) + r * EDGE_D;
            const float got_l = where ? lse_dev[r] : lse[r];
            /* The same value, NaN for NaN; the finite row within 1e-6. */
#define SAME(g, w) (isnan(w) ? isnan(g) : (g) == (w) || fabs((double)(g) - (double)(w)) <= 1e-6)
            int ok = (where ? st_dev : st) == ATTN_SUCCESS && SAME(got_l, want_l[r]);
            for (int d = 0; d < EDGE_D; d++) {
                ok &= SAME(got_o[d], want_o[r * EDGE_D + d]);
            }
#undef SAME
            char label[96], detail[96];
            snprintf(label, sizeof label, "  %s: LSE %s",
                     where ? "attn_merge_device" : "attn_merge", names[r]);
            snprintf(detail, sizeof detail, "O[0] %g (want %g), LSE %g (want %g)", (double)got_o[0],
                     (double)want_o[r * EDGE_D], (double)got_l, (double)want_l[r]);
            report(label, ok, detail);
        }
    }
}

/* Bad input: NULL pointers, no context, buffers too small. */
static void rejects(attn_context_t ctx) {
    attn_params p;
    attn_params_init(&p, 1, 2, 4, 4, 8);
    float buf[64] = {0};
    attn_merge_tensors m = {buf, buf, buf, NULL, buf, buf};
    attn_status st = attn_merge(&p, &m);
    report("attn_merge with a NULL LSE", st == ATTN_ERR_NULL_ARGUMENT, attn_status_name(st));
    st = attn_merge(&p, NULL);
    report("attn_merge with NULL tensors", st == ATTN_ERR_NULL_ARGUMENT, attn_status_name(st));
    p.head_dim = 0;
    m.lse_b = buf;
    st = attn_merge(&p, &m);
    report("attn_merge with head_dim 0", st == ATTN_ERR_UNSUPPORTED_HEAD_DIM, attn_status_name(st));

    attn_params_init(&p, 1, 2, 4, 4, 8);
    cl_context context;
    clGetCommandQueueInfo(attn_context_queue(ctx), CL_QUEUE_CONTEXT, sizeof context, &context,
                          NULL);
    cl_mem small = upload(context, buf, 16), big = upload(context, buf, sizeof buf);
    attn_merge_device_tensors md = {big, big, small, big, big, big, 0, 0, 0, 0, 0, 0};
    cl_event ev = NULL;
    st = attn_merge_device(ctx, &p, &md, 0, NULL, &ev);
    report("attn_merge_device with an LSE buffer too small", st == ATTN_ERR_BUFFER_TOO_SMALL && !ev,
           attn_status_name(st));
    st = attn_merge_device(NULL, &p, &md, 0, NULL, NULL);
    report("attn_merge_device without a context", st == ATTN_ERR_NULL_ARGUMENT,
           attn_status_name(st));
    clReleaseMemObject(small);
    clReleaseMemObject(big);
}

int main(void) {
    attn_context_t ctx = test_context_create();
    static const merge_case cases[] = {
        {1, 2, 2, 7, 20, 9, 16, TEST_BHSD, ATTN_DTYPE_F32},
        {2, 4, 2, 33, 65, 40, 31, TEST_BSHD, ATTN_DTYPE_F32},
        {2, 2, 1, 17, 100, 1, 64, TEST_PADDED, ATTN_DTYPE_F32},
        {1, 3, 3, 9, 13, 12, 16, TEST_HBSD, ATTN_DTYPE_F16},
        {2, 2, 2, 9, 30, 16, 32, TEST_BSHD, ATTN_DTYPE_BF16},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (test_quick() && i > 0) {
            break;
        }
        run_case(ctx, &cases[i], 500 + i);
    }
    infinite_parts(ctx);
    rejects(ctx);
    attn_context_destroy(ctx);
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
