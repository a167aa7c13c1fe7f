/* Ring attention over MPI (libattn_cl_ring), run under mpirun with 1 to 4
 * processes. Every rank draws the whole problem from the same seed, passes
 * its shard to attn_ring_forward, and rank 0 gathers the shards back into
 * natural order and holds them to the bound every forward is held to
 * (tests/test_util.h) against the double reference, beside one device's
 * forward of the whole problem. Also: the same bits on a second run, the
 * per-step statistics, and bad input on one rank agreed by all (same status
 * and message on every rank, naming that rank; outputs untouched). */
#include "attn_cl_ring.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rank, ranks;

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "test_ring: out of host memory\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return p;
}

/* How a case cuts the sequence: zigzag, contiguous even, contiguous
 * growing with the rank (rank r holds about (r + 1) parts), or contiguous
 * with rank 0 empty (rank r holds about r parts). */
typedef enum shard_kind { ZIGZAG, EVEN, GROWING, FIRST_EMPTY } shard_kind;

static const char *shard_name(shard_kind k) {
    return k == ZIGZAG ? "zigzag" : k == EVEN ? "even" : k == GROWING ? "growing" : "first-empty";
}

/* The natural rows rank r holds, in its local order: up to two runs. */
typedef struct rows {
    int32_t start[2], length[2];
    int32_t total;
} rows;

static rows rows_of(shard_kind kind, int32_t seq, int r) {
    rows out = {{0, 0}, {0, 0}, 0};
    if (kind == ZIGZAG) {
        out.total = attn_ring_zigzag_rows(seq, ranks, r, out.start, out.length);
        return out;
    }
    /* Weights: rank r's share of the sequence, the last rank taking the rest. */
    int64_t w_total = 0, w_before = 0;
    for (int i = 0; i < ranks; i++) {
        const int64_t w = kind == EVEN ? 1 : kind == GROWING ? i + 1 : i;
        w_total += w;
        if (i < r)
            w_before += w;
    }
    int64_t w_mine = kind == EVEN ? 1 : kind == GROWING ? r + 1 : r;
    if (w_total == 0) /* one rank, FIRST_EMPTY: it holds everything */
        w_total = w_mine = 1;
    const int32_t begin = (int32_t)(seq * w_before / w_total);
    const int32_t end = r == ranks - 1 ? seq : (int32_t)(seq * (w_before + w_mine) / w_total);
    out.start[0] = begin;
    out.length[0] = end - begin;
    out.total = end - begin;
    return out;
}

/* Copies rows of a packed [B, H, seq, inner] tensor into the packed shard
 * [B, H, total, inner] (to_shard) or back. */
static void copy_rows(const rows *rw, int64_t batch, int64_t heads, int64_t seq, int64_t inner,
                      size_t elem, char *full, char *shard, int to_shard) {
    for (int64_t bh = 0; bh < batch * heads; bh++) {
        int64_t local = 0;
        for (int part = 0; part < 2; part++) {
            const size_t bytes = (size_t)(rw->length[part] * inner) * elem;
            char *f = full + (size_t)((bh * seq + rw->start[part]) * inner) * elem;
            char *s = shard + (size_t)((bh * rw->total + local) * inner) * elem;
            if (bytes)
                memcpy(to_shard ? s : f, to_shard ? f : s, bytes);
            local += rw->length[part];
        }
    }
}

/* Every rank's shard of a float or stored tensor, gathered on rank 0 into
 * natural order in `full`. */
static void gather(shard_kind kind, const attn_params *p, int64_t heads, int64_t inner, size_t elem,
                   const void *mine, int32_t mine_rows, void *full) {
    const size_t row_bytes = (size_t)(p->batch * heads * inner) * elem;
    int *counts = xmalloc((size_t)ranks * sizeof *counts);
    int *displs = xmalloc((size_t)ranks * sizeof *displs);
    int total = 0;
    for (int r = 0; r < ranks; r++) {
        counts[r] = (int)(rows_of(kind, p->seq_q, r).total * row_bytes);
        displs[r] = total;
        total += counts[r];
    }
    char *all = xmalloc((size_t)total);
    MPI_Gatherv(mine, (int)(mine_rows * row_bytes), MPI_BYTE, all, counts, displs, MPI_BYTE, 0,
                MPI_COMM_WORLD);
    if (rank == 0)
        for (int r = 0; r < ranks; r++) {
            rows rw = rows_of(kind, p->seq_q, r);
            copy_rows(&rw, p->batch, heads, p->seq_q, inner, elem, full, all + displs[r], 0);
        }
    free(all);
    free(counts);
    free(displs);
}

static int failures;

/* Rank 0 prints; every rank counts failures of its own part and the
 * verdict is summed at the end. */
static void check_case(const char *text, shard_kind kind, attn_context_t ctx) {
    attn_params p;
    test_layout layout;
    float qk;
    int quick;
    if (!test_parse_case(text, &p, &layout, &qk, &quick)) {
        failures++;
        return;
    }
    test_problem t;
    if (test_problem_init(&t, &p, 1234 + (uint64_t)p.seq_q, qk, 1, 0) != 0) {
        failures++;
        return;
    }
    const size_t elem = test_dtype_size(p.dtype);
    const int64_t hq = t.r.heads_q, hkv = t.r.heads_kv, d = t.r.head_dim, dv = t.r.head_dim_v;
    rows mine = rows_of(kind, p.seq_q, rank);
    const int32_t nl = mine.total;
    char *q = xmalloc((size_t)(p.batch * hq * nl * d) * elem);
    char *k = xmalloc((size_t)(p.batch * hkv * nl * d) * elem);
    char *v = xmalloc((size_t)(p.batch * hkv * nl * dv) * elem);
    copy_rows(&mine, p.batch, hq, p.seq_q, d, elem, t.q_store, q, 1);
    copy_rows(&mine, p.batch, hkv, p.seq_q, d, elem, t.k_store, k, 1);
    copy_rows(&mine, p.batch, hkv, p.seq_q, dv, elem, t.v_store, v, 1);
    const size_t o_bytes = (size_t)(p.batch * hq * nl * dv) * elem;
    const size_t lse_bytes = (size_t)(p.batch * hq * nl) * sizeof(float);
    void *o = test_alloc_sentinel(o_bytes), *o2 = test_alloc_sentinel(o_bytes);
    float *lse = test_alloc_sentinel(lse_bytes), *lse2 = test_alloc_sentinel(lse_bytes);

    attn_ring_params rp;
    attn_ring_params_init(&rp, p.batch, p.heads_q, p.seq_q, p.head_dim,
                          kind == ZIGZAG ? ATTN_RING_ZIGZAG : ATTN_RING_CONTIGUOUS, nl);
    rp.attn = p;
    attn_ring_step_stats *steps = xmalloc((size_t)ranks * sizeof *steps);
    attn_ring_tensors rt = {q, k, v, o, lse};
    attn_status st = attn_ring_forward(ctx, MPI_COMM_WORLD, &rp, &rt, steps);
    char why[512] = "";
    if (st != ATTN_SUCCESS)
        snprintf(why, sizeof why, "rank %d: %s: %s", rank, attn_ring_status_name(st),
                 attn_ring_last_error());
    /* A second run gives the same bits: the merge order is fixed. */
    attn_ring_tensors rt2 = {q, k, v, o2, lse2};
    attn_status st2 = attn_ring_forward(ctx, MPI_COMM_WORLD, &rp, &rt2, NULL);
    int same =
        st2 == ATTN_SUCCESS && memcmp(o, o2, o_bytes) == 0 && memcmp(lse, lse2, lse_bytes) == 0;
    /* The statistics: a step's message is the held shard's K and V. */
    int stats_ok = 1;
    for (int s = 0; st == ATTN_SUCCESS && s < ranks; s++) {
        const int origin = (rank - s + ranks) % ranks;
        const uint64_t want =
            s == ranks - 1
                ? 0
                : (uint64_t)(p.batch * hkv * (d + dv) * rows_of(kind, p.seq_q, origin).total) *
                      elem;
        stats_ok &= steps[s].bytes_sent == want && steps[s].compute_s >= 0 &&
                    steps[s].exposed_s >= 0 && isfinite(steps[s].comm_s);
    }

    void *full_o = rank == 0 ? test_alloc_output(&t) : NULL;
    float *full_lse = rank == 0 ? test_alloc_sentinel(t.lse_elems * sizeof(float)) : NULL;
    gather(kind, &t.r, hq, dv, elem, o, nl, full_o);
    gather(kind, &t.r, hq, 1, sizeof(float), lse, nl, full_lse);

    int local_bad = st != ATTN_SUCCESS || !same || !stats_ok;
    int any_bad = 0;
    MPI_Reduce(&local_bad, &any_bad, 1, MPI_INT, MPI_MAX, 0, MPI_COMM_WORLD);
    if (local_bad) {
        printf("FAIL rank %d: %s %s: %s%s%s\n", rank, text, shard_name(kind), why,
               same ? "" : " (second run differs)", stats_ok ? "" : " (step statistics wrong)");
        failures++;
    }
    if (rank == 0) {
        /* One device's forward of the whole problem, for comparison. */
        void *single = test_alloc_output(&t);
        float *single_lse = test_alloc_sentinel(t.lse_elems * sizeof(float));
        attn_host_tensors ht = test_host_tensors(&t, single, single_lse, NULL);
        attn_status sst = attn_forward_host(ctx, &t.p, &ht);
        double diff = 0.0;
        if (sst == ATTN_SUCCESS) {
            float *a = xmalloc(t.o_elems * sizeof(float)), *b = xmalloc(t.o_elems * sizeof(float));
            test_from_storage(p.dtype, full_o, a, t.o_elems);
            test_from_storage(p.dtype, single, b, t.o_elems);
            for (size_t e = 0; e < t.o_elems; e++)
                diff = fmax(diff, fabs((double)a[e] - b[e]));
            free(a);
            free(b);
        }
        if (!any_bad) {
            test_result ro = test_compare_output(&t, full_o);
            test_result rl = test_compare(&t.lse_shape, full_lse, t.ref_lse, t.naive_lse, 0);
            test_result so = test_compare_output(&t, single);
            char lo[160], ll[160];
            test_format_result(lo, sizeof lo, "O", &ro);
            test_format_result(ll, sizeof ll, "LSE", &rl);
            const int ok = ro.ok && rl.ok && so.ok && sst == ATTN_SUCCESS;
            printf("%s np%d %-44s %-11s %s %s; |ring - one device| %.1e (one device err %.1e)\n",
                   ok ? "PASS" : "FAIL", ranks, text, shard_name(kind), lo, ll, diff, so.max_err);
            failures += !ok;
        }
        free(single);
        free(single_lse);
    }
    free(full_o);
    free(full_lse);
    free(steps);
    free(q);
    free(k);
    free(v);
    free(o);
    free(o2);
    free(lse);
    free(lse2);
    test_problem_free(&t);
}

/* Bad input on one rank (the last): every rank must return the same status
 * and message, the message must name that rank, and no output be written. */
typedef enum bad_kind {
    BAD_NULL_Q,
    BAD_PARAMS_DIFFER,
    BAD_HEAD_DIM,
    BAD_UNSUPPORTED,
    BAD_ZIGZAG_ROWS,
    BAD_CONTIGUOUS_SUM,
    BAD_KIND_COUNT
} bad_kind;

static const char *const bad_names[BAD_KIND_COUNT] = {
    "q NULL", "heads_q differs", "head_dim 600", "ALiBi", "zigzag local_seq", "local_seq sum",
};

static const attn_status bad_status[BAD_KIND_COUNT] = {
    ATTN_ERR_NULL_ARGUMENT, ATTN_ERR_INVALID_VALUE, ATTN_ERR_UNSUPPORTED_HEAD_DIM,
    ATTN_ERR_UNSUPPORTED,   ATTN_ERR_INVALID_SIZE,  ATTN_ERR_INVALID_SIZE,
};

static void check_bad(bad_kind bad, attn_context_t ctx) {
    const int culprit = ranks - 1;
    const int32_t seq = 37, b = 1, h = 2, d = 16;
    const shard_kind kind = bad == BAD_ZIGZAG_ROWS ? ZIGZAG : EVEN;
    rows mine = rows_of(kind, seq, rank);
    attn_ring_params rp;
    attn_ring_params_init(&rp, b, h, seq, d,
                          kind == ZIGZAG ? ATTN_RING_ZIGZAG : ATTN_RING_CONTIGUOUS, mine.total);
    rp.attn.mask = ATTN_MASK_CAUSAL_BOTTOM_RIGHT;
    /* Room for one row more than the shard, for the wrong local_seq. */
    const size_t elems = (size_t)(b * h * (mine.total + 1) * d);
    float *in = xmalloc(elems * sizeof(float));
    for (size_t i = 0; i < elems; i++)
        in[i] = (float)(i % 7) * 0.1f;
    float *o = test_alloc_sentinel(elems * sizeof(float));
    float *lse = test_alloc_sentinel((size_t)(b * h * (mine.total + 1)) * sizeof(float));
    attn_ring_tensors rt = {in, in, in, o, lse};
    if (rank == culprit) {
        switch (bad) {
        case BAD_NULL_Q:
            rt.q = NULL;
            break;
        case BAD_PARAMS_DIFFER:
            rp.attn.heads_q = rp.attn.heads_kv = 1; /* still valid on its own */
            break;
        case BAD_HEAD_DIM:
            rp.attn.head_dim = 600;
            break;
        case BAD_UNSUPPORTED:
            rp.attn.alibi = 1;
            break;
        case BAD_ZIGZAG_ROWS:
        case BAD_CONTIGUOUS_SUM:
            rp.local_seq += 1;
            break;
        default:
            break;
        }
    }
    /* With one rank, heads_q differing from itself is no fault. */
    const int applies = !(bad == BAD_PARAMS_DIFFER && ranks == 1);
    attn_status st = attn_ring_forward(ctx, MPI_COMM_WORLD, &rp, &rt, NULL);
    char message[512];
    snprintf(message, sizeof message, "%s", attn_ring_last_error());
    char root_message[512];
    memcpy(root_message, message, sizeof message);
    MPI_Bcast(root_message, (int)sizeof root_message, MPI_CHAR, 0, MPI_COMM_WORLD);
    int root_status = st;
    MPI_Bcast(&root_status, 1, MPI_INT, 0, MPI_COMM_WORLD);
    char named[32];
    snprintf(named, sizeof named, "rank %d", culprit);
    const int untouched = test_is_sentinel(o, elems * sizeof(float)) &&
                          test_is_sentinel(lse, (size_t)(b * h * (mine.total + 1)) * sizeof(float));
    int ok;
    if (!applies)
        ok = st == ATTN_SUCCESS;
    else
        ok = st == bad_status[bad] && (int)st == root_status &&
             strcmp(message, root_message) == 0 && untouched &&
             (bad == BAD_CONTIGUOUS_SUM || strstr(message, named) != NULL);
    int all_ok = 0;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!ok) {
        printf("FAIL rank %d: bad input %s: %s: %s (want %s, rank 0 got %s)\n", rank,
               bad_names[bad], attn_ring_status_name(st), message,
               attn_ring_status_name(bad_status[bad]), attn_ring_status_name(root_status));
        failures++;
    } else if (rank == 0) {
        printf("PASS np%d bad input on rank %d: %-17s -> %s: %s\n", ranks, culprit, bad_names[bad],
               attn_ring_status_name(st), applies ? message : "(no fault with one rank)");
    }
    free(in);
    free(o);
    free(lse);
}

/* The zigzag maps against each other and against attn_ring_zigzag_rows. */
static void check_zigzag_maps(void) {
    int bad = 0;
    for (int32_t seq = 0; seq <= 40; seq++) {
        int32_t zig = 0;
        for (int r = 0; r < ranks; r++) {
            int32_t start[2], length[2];
            attn_ring_zigzag_rows(seq, ranks, r, start, length);
            for (int part = 0; part < 2; part++)
                for (int32_t i = 0; i < length[part]; i++, zig++) {
                    bad += attn_ring_zigzag_to_natural(seq, ranks, zig) != start[part] + i;
                    bad += attn_ring_natural_to_zigzag(seq, ranks, start[part] + i) != zig;
                }
        }
        bad += zig != seq;
    }
    bad += attn_ring_zigzag_to_natural(10, ranks, 10) != -1;
    bad += attn_ring_natural_to_zigzag(10, 0, 1) != -1;
    bad += attn_ring_zigzag_rows(10, ranks, ranks, NULL, NULL) != -1;
    if (rank == 0)
        printf("%s np%d zigzag maps (seq 0..40)\n", bad ? "FAIL" : "PASS", ranks);
    failures += bad != 0;
}

int main(int argc, char **argv) {
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    if (provided < MPI_THREAD_FUNNELED) {
        if (rank == 0)
            printf("FAIL: MPI gives thread level %d, the ring needs MPI_THREAD_FUNNELED\n",
                   provided);
        MPI_Finalize();
        return 1;
    }
    attn_context_t ctx = NULL;
    attn_status st = attn_context_create(NULL, &ctx);
    int have = st == ATTN_SUCCESS, all_have = 0;
    MPI_Allreduce(&have, &all_have, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!all_have) {
        if (rank == 0)
            printf("SKIP: no OpenCL device on every rank: %s\n", attn_last_error(NULL));
        attn_context_destroy(ctx);
        MPI_Finalize();
        return TEST_SKIP;
    }
    if (rank == 0)
        printf("ring of %d ranks; bound: max|out-ref| <= 2*max|naive_fp32-ref| + atol\n", ranks);

    check_zigzag_maps();
    static const struct {
        const char *text;
        shard_kind kind;
    } cases[] = {
        {"B1 Hq2 Sq64 Sk64 D16 none", EVEN},
        {"B2 Hq4 Hkv2 Sq257 Sk257 D31 none", GROWING},
        {"B2 Hq4 Hkv2 Sq257 Sk257 D31 br", ZIGZAG},
        {"B2 Hq4 Hkv2 Sq257 Sk257 D31 br", GROWING},
        {"B1 Hq3 Sq100 Sk100 D20 tl", FIRST_EMPTY},
        {"B1 Hq4 Hkv1 Sq300 Sk300 D64 Dv32 tl f16", ZIGZAG},
        {"B1 Hq2 Sq200 Sk200 D24 none bf16", GROWING},
        {"B1 Hq2 Sq211 Sk211 D32 br win=37,-1", ZIGZAG},
        {"B1 Hq2 Sq190 Sk190 D16 none win=20,45", GROWING},
        {"B1 Hq2 Sq190 Sk190 D16 none win=-1,3", ZIGZAG},
        {"B2 Hq2 Sq150 Sk150 D40 none softcap=5 qk=3", ZIGZAG},
        {"B1 Hq2 Sq5 Sk5 D8 br", ZIGZAG},
        {"B1 Hq2 Sq1 Sk1 D8 none", EVEN},
    };
    /* ATTN_TEST_QUICK (under valgrind): the first three cases. */
    const size_t n_cases = test_quick() ? 3 : sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n_cases; i++)
        check_case(cases[i].text, cases[i].kind, ctx);
    for (int bad = 0; bad < BAD_KIND_COUNT; bad++)
        check_bad((bad_kind)bad, ctx);

    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
        printf("%s: %d failure%s over %d ranks\n", total ? "FAIL" : "PASS", total,
               total == 1 ? "" : "s", ranks);
    attn_context_destroy(ctx);
    MPI_Finalize();
    return total ? 1 : 0;
}
