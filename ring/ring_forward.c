/* attn_ring_forward: P steps around the ring. At step s rank r holds the K/V
 * shard of rank r - s; it posts the message that passes that shard on to
 * r + 1 (and the receive of the next one from r - 1), attends its queries to
 * the shard on a worker thread meanwhile, and polls MPI from the calling
 * thread so that the messages progress while the device computes. Each
 * block's partial O and LSE are merged into the running result by
 * attn_merge, step by step and block by block, always in that order: the
 * bits do not depend on when messages arrive.
 *
 * The attention runs in float storage whatever the request's dtype: 16-bit
 * shards travel as they are (half the bytes) and are widened on arrival,
 * exactly, so partials and merges keep fp32 and O is rounded once at the
 * end, as a single device's forward rounds it. */
#include "ring_agree.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void attn_ring_params_init(attn_ring_params *params, int32_t batch, int32_t heads, int32_t seq,
                           int32_t head_dim, attn_ring_layout layout, int32_t local_seq) {
    if (!params)
        return;
    memset(params, 0, sizeof *params);
    attn_params_init(&params->attn, batch, heads, seq, seq, head_dim);
    params->layout = layout;
    params->local_seq = local_seq;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The resolved sizes every step uses. */
typedef struct ring_sizes {
    int64_t batch, heads_q, heads_kv, head_dim, head_dim_v;
    size_t elem; /* bytes of one stored element */
} ring_sizes;

/* Bytes of one shard's K followed by its V, `rows` rows, stored. */
static size_t kv_bytes(const ring_sizes *z, int64_t rows) {
    return (size_t)(z->batch * z->heads_kv * rows * (z->head_dim + z->head_dim_v)) * z->elem;
}

/* One step's attention, run on the worker thread. */
typedef struct ring_step {
    attn_context_t ctx;
    const attn_params *global;
    const ring_sizes *z;
    ring_reach reach;
    int rank, step;
    const ring_shard *mine, *held; /* this rank's rows; the held shard's */
    const void *kv;                /* the held shard, stored */
    float *kf, *vf;                /* widening buffers (unused for f32) */
    const float *qf;               /* this rank's queries, float */
    float *acc_o, *acc_lse;        /* the running result */
    float *part_o, *part_lse;      /* one block's partial */
    attn_status status;
    char message[RING_MESSAGE_MAX];
    double t_start, t_end;
    atomic_int done;
} ring_step;

/* Queries `blk` of this rank on keys of the held shard, merged into the
 * running result. Tensors are addressed in place through strides: rows of
 * the packed shards. */
static attn_status run_block(ring_step *w, const ring_block *blk, const ring_range *q,
                             const ring_range *k, const float *kf, const float *vf) {
    const ring_sizes *z = w->z;
    const int64_t nq = w->mine->rows, nk = w->held->rows;
    const int64_t qrow = q->local + (blk->q_start - q->start);
    const int64_t krow = k->local + (blk->k_start - k->start);
    attn_params p;
    attn_params_init(&p, (int32_t)z->batch, (int32_t)z->heads_q, (int32_t)blk->q_rows,
                     (int32_t)blk->k_rows, (int32_t)z->head_dim);
    p.heads_kv = (int32_t)z->heads_kv;
    p.head_dim_v = (int32_t)z->head_dim_v;
    p.scale = w->global->scale;
    p.softcap = w->global->softcap;
    p.algo = w->global->algo;
    p.dtype = ATTN_DTYPE_F32;
    p.mask = blk->mask;
    p.window = blk->window;
    p.q_strides = (attn_strides){z->heads_q * nq * z->head_dim, nq * z->head_dim, z->head_dim};
    p.k_strides = (attn_strides){z->heads_kv * nk * z->head_dim, nk * z->head_dim, z->head_dim};
    p.v_strides =
        (attn_strides){z->heads_kv * nk * z->head_dim_v, nk * z->head_dim_v, z->head_dim_v};
    p.o_strides =
        (attn_strides){z->heads_q * nq * z->head_dim_v, nq * z->head_dim_v, z->head_dim_v};
    p.lse_strides = (attn_strides){z->heads_q * nq, nq, 1};

    const size_t o_at = (size_t)(qrow * z->head_dim_v);
    attn_host_tensors t = {0};
    t.q = w->qf + qrow * z->head_dim;
    t.k = kf + krow * z->head_dim;
    t.v = vf + krow * z->head_dim_v;
    t.o = w->part_o + o_at;
    t.lse = w->part_lse + qrow;
    attn_status status = attn_forward_host(w->ctx, &p, &t);
    if (status != ATTN_SUCCESS)
        return ring_fail(status, "rank %d: step %d: forward: %s", w->rank, w->step,
                         attn_last_error(w->ctx));
    attn_merge_tensors m = {w->acc_o + o_at,    w->part_o + o_at, w->acc_lse + qrow,
                            w->part_lse + qrow, w->acc_o + o_at,  w->acc_lse + qrow};
    status = attn_merge(&p, &m);
    if (status != ATTN_SUCCESS)
        return ring_fail(status, "rank %d: step %d: merge: %s", w->rank, w->step,
                         attn_last_error(NULL));
    return ATTN_SUCCESS;
}

static void widen(attn_dtype dtype, const void *in, float *out, size_t n) {
    if (dtype == ATTN_DTYPE_F16)
        attn_f16_to_f32(in, out, n);
    else
        attn_bf16_to_f32(in, out, n);
}

static void run_step(ring_step *w) {
    const ring_sizes *z = w->z;
    const size_t k_elems = (size_t)(z->batch * z->heads_kv * w->held->rows * z->head_dim);
    const size_t v_elems = (size_t)(z->batch * z->heads_kv * w->held->rows * z->head_dim_v);
    const float *kf = w->kv, *vf = (const float *)w->kv + k_elems;
    if (w->global->dtype != ATTN_DTYPE_F32) {
        widen(w->global->dtype, w->kv, w->kf, k_elems);
        widen(w->global->dtype, (const uint16_t *)w->kv + k_elems, w->vf, v_elems);
        kf = w->kf;
        vf = w->vf;
    }
    /* The fixed order: this rank's runs of queries, then the held runs of keys. */
    for (int i = 0; i < w->mine->count && w->status == ATTN_SUCCESS; i++)
        for (int j = 0; j < w->held->count && w->status == ATTN_SUCCESS; j++) {
            const ring_range *q = &w->mine->part[i], *k = &w->held->part[j];
            ring_block blk;
            if (!ring_block_plan(w->reach, q->start, q->start + q->length, k->start,
                                 k->start + k->length, &blk))
                continue;
            w->status = run_block(w, &blk, q, k, kf, vf);
            if (w->status != ATTN_SUCCESS)
                snprintf(w->message, sizeof w->message, "%s", attn_ring_last_error());
        }
}

static void *step_thread(void *arg) {
    ring_step *w = arg;
    w->t_start = now_seconds();
    run_step(w);
    w->t_end = now_seconds();
    atomic_store(&w->done, 1);
    return NULL;
}

/* Everything one call allocates; the call's outputs are written from acc_*
 * only after the ranks agree that every one succeeded. */
typedef struct ring_buffers {
    int32_t *local_seqs;
    float *qf_own; /* widened queries (NULL for f32: the caller's are used) */
    void *kv[2];   /* the held shard and the one arriving */
    float *kf, *vf;
    float *acc_o, *acc_lse, *part_o, *part_lse;
} ring_buffers;

static void free_buffers(ring_buffers *b) {
    free(b->local_seqs);
    free(b->qf_own);
    free(b->kv[0]);
    free(b->kv[1]);
    free(b->kf);
    free(b->vf);
    free(b->acc_o);
    free(b->acc_lse);
    free(b->part_o);
    free(b->part_lse);
}

static void *alloc_bytes(size_t bytes, int *ok) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        *ok = 0;
    return p;
}

/* The ring itself: `ranks` steps. Returns this rank's own outcome: a device
 * failure is recorded and the ring keeps moving (computing nothing more), so
 * that every rank reaches the final agreement; an MPI failure returns at
 * once. */
static attn_status run_ring(MPI_Comm comm, int rank, int ranks, ring_step *proto, ring_buffers *b,
                            const ring_sizes *z, attn_ring_layout layout, int32_t seq,
                            attn_ring_step_stats *steps, int *mpi_failed) {
    const int right = (rank + 1) % ranks, left = (rank + ranks - 1) % ranks;
    ring_shard mine;
    ring_shard_of(layout, seq, ranks, rank, b->local_seqs, &mine);
    attn_status status = ATTN_SUCCESS;
    char message[RING_MESSAGE_MAX] = "";
    for (int s = 0; s < ranks; s++) {
        const int origin = (rank - s + ranks) % ranks;
        const int next_origin = (rank - s - 1 + 2 * ranks) % ranks;
        ring_shard held;
        ring_shard_of(layout, seq, ranks, origin, b->local_seqs, &held);
        const int cur = s % 2;
        const double t0 = now_seconds();
        MPI_Request req[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
        int pending = 0;
        size_t sent = 0;
        if (s < ranks - 1) {
            ring_shard next;
            ring_shard_of(layout, seq, ranks, next_origin, b->local_seqs, &next);
            sent = kv_bytes(z, held.rows);
            int rc = MPI_Irecv(b->kv[1 - cur], (int)kv_bytes(z, next.rows), MPI_BYTE, left, s, comm,
                               &req[0]);
            if (rc == MPI_SUCCESS)
                rc = MPI_Isend(b->kv[cur], (int)sent, MPI_BYTE, right, s, comm, &req[1]);
            if (rc != MPI_SUCCESS) {
                *mpi_failed = 1;
                return ring_mpi_fail(rank, rc, "posting a ring message");
            }
            pending = 1;
        }

        ring_step *w = proto;
        w->mine = &mine;
        w->held = &held;
        w->kv = b->kv[cur];
        w->step = s;
        w->status = ATTN_SUCCESS;
        w->message[0] = '\0';
        w->t_start = w->t_end = t0;
        atomic_store(&w->done, 0);
        /* After a failure the ring only carries the shards on. */
        const int compute = status == ATTN_SUCCESS;
        pthread_t thread;
        int threaded = 0;
        if (compute) {
            threaded = pthread_create(&thread, NULL, step_thread, w) == 0;
            if (!threaded)
                step_thread(w); /* no thread to spare: compute here, then wait */
        }
        double t_comm = t0;
        int rc = MPI_SUCCESS;
        /* Poll: each MPI_Testall moves the messages on; the sleep leaves the
         * cores to the device. */
        while (threaded && !atomic_load(&w->done)) {
            if (pending) {
                int flag = 0;
                rc = MPI_Testall(2, req, &flag, MPI_STATUSES_IGNORE);
                if (rc != MPI_SUCCESS)
                    break;
                if (flag) {
                    pending = 0;
                    t_comm = now_seconds();
                }
            }
            nanosleep(&(struct timespec){0, pending ? 100000 : 1000000}, NULL);
        }
        if (threaded)
            pthread_join(thread, NULL);
        const double t_computed = compute ? w->t_end : t0;
        if (pending && rc == MPI_SUCCESS) {
            rc = MPI_Waitall(2, req, MPI_STATUSES_IGNORE);
            t_comm = now_seconds();
        }
        if (rc != MPI_SUCCESS) {
            *mpi_failed = 1;
            return ring_mpi_fail(rank, rc, "completing a ring message");
        }
        if (compute && w->status != ATTN_SUCCESS) {
            status = w->status;
            snprintf(message, sizeof message, "%s", w->message);
        }
        if (steps) {
            steps[s].compute_s = t_computed - t0;
            steps[s].comm_s = s < ranks - 1 ? t_comm - t0 : 0.0;
            steps[s].exposed_s = t_comm > t_computed ? t_comm - t_computed : 0.0;
            steps[s].bytes_sent = sent;
        }
    }
    if (status != ATTN_SUCCESS)
        ring_set_error(message);
    return status;
}

attn_status attn_ring_forward(attn_context_t ctx, MPI_Comm comm, const attn_ring_params *rp,
                              const attn_ring_tensors *t, attn_ring_step_stats *steps) {
    ring_clear_error();
    if (comm == MPI_COMM_NULL)
        return ring_fail(ATTN_ERR_NULL_ARGUMENT, "comm is MPI_COMM_NULL");
    /* A duplicate: the ring's messages never meet the caller's, and its
     * errors return instead of aborting. */
    MPI_Comm ring;
    int rc = MPI_Comm_dup(comm, &ring);
    if (rc != MPI_SUCCESS)
        return ring_mpi_fail(-1, rc, "MPI_Comm_dup");
    MPI_Comm_set_errhandler(ring, MPI_ERRORS_RETURN);
    int rank = 0, ranks = 1;
    MPI_Comm_rank(ring, &rank);
    MPI_Comm_size(ring, &ranks);

    ring_buffers b = {0};
    int ok = 1;
    b.local_seqs = alloc_bytes((size_t)ranks * sizeof *b.local_seqs, &ok);
    attn_status status =
        ok ? ATTN_SUCCESS
           : ring_fail(ATTN_ERR_HOST_OUT_OF_MEMORY, "rank %d: out of host memory", rank);
    status = ring_agree_status(ring, rank, status, attn_ring_last_error());
    if (status == ATTN_SUCCESS)
        status = ring_agree_inputs(ring, rank, ranks, ctx, rp, t, b.local_seqs);
    if (status != ATTN_SUCCESS) {
        free_buffers(&b);
        MPI_Comm_free(&ring);
        return status;
    }

    const attn_params *p = &rp->attn;
    ring_sizes z = {p->batch,
                    p->heads_q,
                    p->heads_kv ? p->heads_kv : p->heads_q,
                    p->head_dim,
                    p->head_dim_v ? p->head_dim_v : p->head_dim,
                    p->dtype == ATTN_DTYPE_F32 ? 4 : 2};
    int64_t largest = 0;
    for (int r = 0; r < ranks; r++)
        largest = b.local_seqs[r] > largest ? b.local_seqs[r] : largest;
    const int64_t nl = rp->local_seq;
    const size_t q_elems = (size_t)(z.batch * z.heads_q * nl * z.head_dim);
    const size_t o_elems = (size_t)(z.batch * z.heads_q * nl * z.head_dim_v);
    const size_t lse_elems = (size_t)(z.batch * z.heads_q * nl);
    const size_t k_local = (size_t)(z.batch * z.heads_kv * nl * z.head_dim) * z.elem;
    const size_t v_local = (size_t)(z.batch * z.heads_kv * nl * z.head_dim_v) * z.elem;
    b.kv[0] = alloc_bytes(kv_bytes(&z, largest), &ok);
    b.kv[1] = alloc_bytes(kv_bytes(&z, largest), &ok);
    b.acc_o = alloc_bytes(o_elems * sizeof(float), &ok);
    b.acc_lse = alloc_bytes(lse_elems * sizeof(float), &ok);
    b.part_o = alloc_bytes(o_elems * sizeof(float), &ok);
    b.part_lse = alloc_bytes(lse_elems * sizeof(float), &ok);
    if (p->dtype != ATTN_DTYPE_F32) {
        const size_t held = (size_t)(z.batch * z.heads_kv * largest);
        b.qf_own = alloc_bytes(q_elems * sizeof(float), &ok);
        b.kf = alloc_bytes(held * (size_t)z.head_dim * sizeof(float), &ok);
        b.vf = alloc_bytes(held * (size_t)z.head_dim_v * sizeof(float), &ok);
    }
    status = ok ? ATTN_SUCCESS
                : ring_fail(ATTN_ERR_HOST_OUT_OF_MEMORY, "rank %d: out of host memory", rank);
    status = ring_agree_status(ring, rank, status, attn_ring_last_error());
    if (status != ATTN_SUCCESS) {
        free_buffers(&b);
        MPI_Comm_free(&ring);
        return status;
    }

    /* The running result starts as "no keys yet": LSE -inf weighs 0. */
    memset(b.acc_o, 0, o_elems * sizeof(float));
    for (size_t i = 0; i < lse_elems; i++)
        b.acc_lse[i] = -INFINITY;
    if (nl > 0) {
        memcpy(b.kv[0], t->k, k_local);
        memcpy((char *)b.kv[0] + k_local, t->v, v_local);
    }
    const float *qf = t->q;
    if (p->dtype != ATTN_DTYPE_F32) {
        widen(p->dtype, t->q, b.qf_own, q_elems);
        qf = b.qf_own;
    }

    ring_step proto = {0};
    proto.ctx = ctx;
    proto.global = p;
    proto.z = &z;
    proto.reach = ring_reach_of(p);
    proto.rank = rank;
    proto.kf = b.kf;
    proto.vf = b.vf;
    proto.qf = qf;
    proto.acc_o = b.acc_o;
    proto.acc_lse = b.acc_lse;
    proto.part_o = b.part_o;
    proto.part_lse = b.part_lse;
    int mpi_failed = 0;
    status = run_ring(ring, rank, ranks, &proto, &b, &z, rp->layout, p->seq_q, steps, &mpi_failed);
    if (!mpi_failed)
        status = ring_agree_status(ring, rank, status, attn_ring_last_error());
    if (status == ATTN_SUCCESS && nl > 0) {
        if (p->dtype == ATTN_DTYPE_F32)
            memcpy(t->o, b.acc_o, o_elems * sizeof(float));
        else if (p->dtype == ATTN_DTYPE_F16)
            attn_f32_to_f16(b.acc_o, t->o, o_elems);
        else
            attn_f32_to_bf16(b.acc_o, t->o, o_elems);
        if (t->lse)
            memcpy(t->lse, b.acc_lse, lse_elems * sizeof(float));
    }
    free_buffers(&b);
    MPI_Comm_free(&ring);
    return status;
}
