/* ring_bench: times attn_ring_forward and says, per ring step, how long the
 * attention took, how long the step's messages took alone (the same
 * exchange with nothing computed) and how much of that the ring hid behind
 * the attention. Run under mpirun; every rank holds a random shard.
 *
 *   mpirun -np 2 ring_bench --seq 16384 --heads 8 --head-dim 64
 *
 * Rank 0 prints one line per step (each figure the slowest rank's median
 * over the repeats) and a summary line of key=value pairs. */
#include "attn_cl_ring.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct options {
    int32_t batch, heads, heads_kv, seq, head_dim;
    int causal, zigzag, repeats;
    attn_dtype dtype;
} options;

static void usage(FILE *to) {
    fprintf(to, "usage: mpirun -np P ring_bench [--seq N] [--heads H] [--heads-kv H]\n"
                "         [--head-dim D] [--batch B] [--causal] [--layout zigzag|contiguous]\n"
                "         [--dtype f32|f16|bf16] [--repeats R]\n"
                "defaults: --seq 16384 --heads 8 --head-dim 64 --batch 1 --layout zigzag\n"
                "          --dtype f32 --repeats 3, no mask\n");
}

/* Returns 0 and fills *o, 1 for --help, -1 on a bad flag. */
static int parse(int argc, char **argv, options *o) {
    *o = (options){1, 8, 0, 16384, 64, 0, 1, 3, ATTN_DTYPE_F32};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int32_t *num = !strcmp(a, "--seq")        ? &o->seq
                       : !strcmp(a, "--heads")    ? &o->heads
                       : !strcmp(a, "--heads-kv") ? &o->heads_kv
                       : !strcmp(a, "--head-dim") ? &o->head_dim
                       : !strcmp(a, "--batch")    ? &o->batch
                       : !strcmp(a, "--repeats")  ? &o->repeats
                                                  : NULL;
        if (!strcmp(a, "--help"))
            return 1;
        if (!strcmp(a, "--causal")) {
            o->causal = 1;
        } else if (num && val) {
            char *end;
            long n = strtol(val, &end, 10);
            if (*end || n < 1 || n > 1L << 30)
                return -1;
            *num = (int32_t)n;
            i++;
        } else if (!strcmp(a, "--layout") && val) {
            if (strcmp(val, "zigzag") && strcmp(val, "contiguous"))
                return -1;
            o->zigzag = !strcmp(val, "zigzag");
            i++;
        } else if (!strcmp(a, "--dtype") && val) {
            o->dtype = !strcmp(val, "f16")    ? ATTN_DTYPE_F16
                       : !strcmp(val, "bf16") ? ATTN_DTYPE_BF16
                       : !strcmp(val, "f32")  ? ATTN_DTYPE_F32
                                              : (attn_dtype)-1;
            if ((int)o->dtype < 0)
                return -1;
            i++;
        } else {
            return -1;
        }
    }
    return 0;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int compare_doubles(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, compare_doubles);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The slowest rank's value. */
static double max_over_ranks(double x) {
    double m = x;
    MPI_Allreduce(&x, &m, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return m;
}

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "ring_bench: out of host memory\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return p;
}

/* Rows rank r holds: the zigzag layout, or contiguous even shards. */
static int32_t shard_rows(const options *o, int r, int ranks) {
    if (o->zigzag)
        return attn_ring_zigzag_rows(o->seq, ranks, r, NULL, NULL);
    return (int32_t)((int64_t)o->seq * (r + 1) / ranks - (int64_t)o->seq * r / ranks);
}

int main(int argc, char **argv) {
    int provided = 0, rank = 0, ranks = 1;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    options o;
    const int parsed = parse(argc, argv, &o);
    if (parsed != 0) {
        if (rank == 0)
            usage(parsed > 0 ? stdout : stderr);
        MPI_Finalize();
        return parsed > 0 ? 0 : 2;
    }
    attn_context_t ctx = NULL;
    attn_status st = attn_context_create(NULL, &ctx);
    if (st != ATTN_SUCCESS) {
        fprintf(stderr, "ring_bench: rank %d: no device: %s: %s\n", rank, attn_status_name(st),
                attn_last_error(NULL));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    const int32_t hkv = o.heads_kv ? o.heads_kv : o.heads;
    const int32_t nl = shard_rows(&o, rank, ranks);
    const size_t elem = o.dtype == ATTN_DTYPE_F32 ? 4 : 2;
    const size_t q_elems = (size_t)o.batch * (size_t)o.heads * (size_t)nl * (size_t)o.head_dim;
    const size_t kv_elems = (size_t)o.batch * (size_t)hkv * (size_t)nl * (size_t)o.head_dim;
    float *qf = xmalloc(q_elems * sizeof(float)), *kf = xmalloc(kv_elems * sizeof(float));
    float *vf = xmalloc(kv_elems * sizeof(float));
    srand(1 + (unsigned)rank);
    for (size_t i = 0; i < q_elems; i++)
        qf[i] = (float)rand() / (float)RAND_MAX * 2.0f - 1.0f;
    for (size_t i = 0; i < kv_elems; i++) {
        kf[i] = (float)rand() / (float)RAND_MAX * 2.0f - 1.0f;
        vf[i] = (float)rand() / (float)RAND_MAX * 2.0f - 1.0f;
    }
    void *q = qf, *k = kf, *v = vf;
    if (o.dtype != ATTN_DTYPE_F32) {
        void (*narrow)(const float *, uint16_t *, size_t) =
            o.dtype == ATTN_DTYPE_F16 ? attn_f32_to_f16 : attn_f32_to_bf16;
        q = xmalloc(q_elems * elem);
        k = xmalloc(kv_elems * elem);
        v = xmalloc(kv_elems * elem);
        narrow(qf, q, q_elems);
        narrow(kf, k, kv_elems);
        narrow(vf, v, kv_elems);
    }
    void *out = xmalloc(q_elems * elem);
    float *lse = xmalloc((size_t)o.batch * (size_t)o.heads * (size_t)nl * sizeof(float));

    attn_ring_params rp;
    attn_ring_params_init(&rp, o.batch, o.heads, o.seq, o.head_dim,
                          o.zigzag ? ATTN_RING_ZIGZAG : ATTN_RING_CONTIGUOUS, nl);
    rp.attn.heads_kv = hkv;
    rp.attn.dtype = o.dtype;
    rp.attn.mask = o.causal ? ATTN_MASK_CAUSAL_BOTTOM_RIGHT : ATTN_MASK_NONE;
    attn_ring_tensors t = {q, k, v, out, lse};
    const int repeats = o.repeats;
    attn_ring_step_stats *steps = xmalloc((size_t)(ranks * repeats) * sizeof *steps);
    double *wall = xmalloc((size_t)repeats * sizeof *wall);

    /* The messages alone: each step's exchange of the ring, nothing computed. */
    const size_t row_bytes = (size_t)o.batch * (size_t)hkv * 2u * (size_t)o.head_dim * elem;
    int32_t largest = 0;
    for (int r = 0; r < ranks; r++)
        largest = shard_rows(&o, r, ranks) > largest ? shard_rows(&o, r, ranks) : largest;
    char *buf[2] = {xmalloc(row_bytes * (size_t)largest), xmalloc(row_bytes * (size_t)largest)};
    memset(buf[0], 0, row_bytes * (size_t)largest);
    double *alone = xmalloc((size_t)(ranks * repeats) * sizeof *alone);
    for (int rep = 0; rep < repeats; rep++)
        for (int s = 0; s < ranks; s++) {
            alone[s * repeats + rep] = 0.0;
            if (s == ranks - 1)
                continue;
            const int origin = (rank - s + ranks) % ranks,
                      next = (rank - s - 1 + 2 * ranks) % ranks;
            MPI_Barrier(MPI_COMM_WORLD);
            const double t0 = now_seconds();
            MPI_Request req[2];
            MPI_Irecv(buf[1], (int)(row_bytes * (size_t)shard_rows(&o, next, ranks)), MPI_BYTE,
                      (rank + ranks - 1) % ranks, s, MPI_COMM_WORLD, &req[0]);
            MPI_Isend(buf[0], (int)(row_bytes * (size_t)shard_rows(&o, origin, ranks)), MPI_BYTE,
                      (rank + 1) % ranks, s, MPI_COMM_WORLD, &req[1]);
            MPI_Waitall(2, req, MPI_STATUSES_IGNORE);
            alone[s * repeats + rep] = now_seconds() - t0;
        }

    /* One run to build the kernels, then the timed ones. */
    st = attn_ring_forward(ctx, MPI_COMM_WORLD, &rp, &t, steps);
    for (int rep = 0; rep < repeats && st == ATTN_SUCCESS; rep++) {
        MPI_Barrier(MPI_COMM_WORLD);
        const double t0 = now_seconds();
        st = attn_ring_forward(ctx, MPI_COMM_WORLD, &rp, &t, steps + rep * ranks);
        wall[rep] = max_over_ranks(now_seconds() - t0);
    }
    if (st != ATTN_SUCCESS) {
        if (rank == 0)
            fprintf(stderr, "ring_bench: %s: %s\n", attn_ring_status_name(st),
                    attn_ring_last_error());
        MPI_Finalize();
        return 1;
    }

    /* Visible (query, key) pairs for the work count. */
    const double n = o.seq;
    const double pairs = o.causal ? n * (n + 1) / 2 : n * n;
    const double flops = 2.0 * o.batch * o.heads * pairs * (2.0 * o.head_dim);
    if (rank == 0) {
        printf("ring_bench: %d ranks, batch %d, heads %d/%d, seq %d, head_dim %d, %s, %s, %s, "
               "%d repeats (medians; each figure the slowest rank's)\n",
               ranks, o.batch, o.heads, hkv, o.seq, o.head_dim, o.causal ? "causal" : "no mask",
               o.zigzag ? "zigzag" : "contiguous",
               o.dtype == ATTN_DTYPE_F32   ? "f32"
               : o.dtype == ATTN_DTYPE_F16 ? "f16"
                                           : "bf16",
               repeats);
        printf("%4s %10s %11s %11s %11s %11s %8s\n", "step", "MiB sent", "compute ms", "comm ms",
               "alone ms", "exposed ms", "hidden");
    }
    double *tmp = xmalloc((size_t)repeats * sizeof *tmp);
    double sum_alone = 0.0, sum_exposed = 0.0, sum_compute = 0.0;
    for (int s = 0; s < ranks; s++) {
        double fig[4];
        for (int f = 0; f < 4; f++) {
            for (int rep = 0; rep < repeats; rep++) {
                const attn_ring_step_stats *x = &steps[rep * ranks + s];
                tmp[rep] = f == 0   ? x->compute_s
                           : f == 1 ? x->comm_s
                           : f == 2 ? alone[s * repeats + rep]
                                    : x->exposed_s;
            }
            fig[f] = max_over_ranks(median(tmp, repeats));
        }
        double mib = (double)steps[s].bytes_sent / 1048576.0, mib_max = mib;
        MPI_Allreduce(&mib, &mib_max, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        sum_compute += fig[0];
        sum_alone += fig[2];
        sum_exposed += fig[3];
        if (rank == 0) {
            char hidden[16] = "-";
            if (s < ranks - 1 && fig[2] > 0)
                snprintf(hidden, sizeof hidden, "%.1f%%", 100.0 * fmax(0.0, 1.0 - fig[3] / fig[2]));
            printf("%4d %10.2f %11.2f %11.2f %11.2f %11.3f %8s\n", s, mib_max, 1e3 * fig[0],
                   1e3 * fig[1], 1e3 * fig[2], 1e3 * fig[3], hidden);
        }
    }
    const double wall_ms = 1e3 * median(wall, repeats);
    if (rank == 0) {
        const double hidden = sum_alone > 0 ? fmax(0.0, 1.0 - sum_exposed / sum_alone) : 1.0;
        printf("summary: ranks=%d seq=%d ms=%.1f gflops=%.1f compute_ms=%.1f comm_alone_ms=%.2f "
               "exposed_ms=%.3f hidden=%.1f%%\n",
               ranks, o.seq, wall_ms, flops / (wall_ms * 1e-3) * 1e-9, 1e3 * sum_compute,
               1e3 * sum_alone, 1e3 * sum_exposed, 100.0 * hidden);
    }
    attn_context_destroy(ctx);
    MPI_Finalize();
    return 0;
}
