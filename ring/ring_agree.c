/* Collective agreement on failure: each rank checks what it was given, the
 * ranks exchange a fingerprint of their requests and their verdicts, and
 * every rank reaches the same status and message (naming the rank at fault)
 * before any data moves. */
#include "ring_agree.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

attn_status ring_mpi_fail(int rank, int code, const char *what) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(code, text, &length) != MPI_SUCCESS)
        snprintf(text, sizeof text, "MPI error %d", code);
    return ring_fail(ATTN_RING_ERR_MPI, "rank %d: %s failed: %s", rank, what, text);
}

attn_status ring_agree_status(MPI_Comm comm, int rank, attn_status local, const char *message) {
    int first = local != ATTN_SUCCESS ? rank : INT_MAX, lowest;
    int rc = MPI_Allreduce(&first, &lowest, 1, MPI_INT, MPI_MIN, comm);
    if (rc != MPI_SUCCESS)
        return ring_mpi_fail(rank, rc, "MPI_Allreduce");
    if (lowest == INT_MAX)
        return ATTN_SUCCESS;
    /* The lowest failing rank tells the others its status and message. */
    int status = (int)local;
    char agreed[RING_MESSAGE_MAX];
    if (rank == lowest)
        snprintf(agreed, sizeof agreed, "%s", message);
    rc = MPI_Bcast(&status, 1, MPI_INT, lowest, comm);
    if (rc == MPI_SUCCESS)
        rc = MPI_Bcast(agreed, (int)sizeof agreed, MPI_CHAR, lowest, comm);
    if (rc != MPI_SUCCESS)
        return ring_mpi_fail(rank, rc, "MPI_Bcast");
    agreed[sizeof agreed - 1] = '\0';
    ring_set_error(agreed);
    return (attn_status)status;
}

/* What must be the same on every rank, as integers (floats by their bits),
 * followed by what each rank has of its own. */
enum {
    F_BATCH,
    F_HEADS_Q,
    F_HEADS_KV,
    F_SEQ_Q,
    F_SEQ_K,
    F_HEAD_DIM,
    F_HEAD_DIM_V,
    F_SCALE,
    F_MASK,
    F_ALGO,
    F_DTYPE,
    F_SOFTCAP,
    F_WINDOW_ENABLED,
    F_WINDOW_LEFT,
    F_WINDOW_RIGHT,
    F_LAYOUT,
    F_SHARED, /* fields before this one must agree */
    F_LOCAL_SEQ = F_SHARED,
    F_COUNT
};

static const char *const field_names[F_SHARED] = {
    "batch",          "heads_q",     "heads_kv",     "seq_q",  "seq_k", "head_dim",
    "head_dim_v",     "scale",       "mask",         "algo",   "dtype", "softcap",
    "window.enabled", "window.left", "window.right", "layout",
};

static int64_t float_bits(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

static void fingerprint(const attn_ring_params *rp, int64_t *f) {
    const attn_params *p = &rp->attn;
    const int window = p->window.enabled != 0;
    f[F_BATCH] = p->batch;
    f[F_HEADS_Q] = p->heads_q;
    f[F_HEADS_KV] = p->heads_kv ? p->heads_kv : p->heads_q;
    f[F_SEQ_Q] = p->seq_q;
    f[F_SEQ_K] = p->seq_k;
    f[F_HEAD_DIM] = p->head_dim;
    f[F_HEAD_DIM_V] = p->head_dim_v ? p->head_dim_v : p->head_dim;
    f[F_SCALE] = float_bits(p->scale);
    f[F_MASK] = p->mask;
    f[F_ALGO] = p->algo;
    f[F_DTYPE] = p->dtype;
    f[F_SOFTCAP] = float_bits(p->softcap);
    f[F_WINDOW_ENABLED] = window;
    f[F_WINDOW_LEFT] = window && p->window.left >= 0 ? p->window.left : -1;
    f[F_WINDOW_RIGHT] = window && p->window.right >= 0 ? p->window.right : -1;
    f[F_LAYOUT] = rp->layout;
    f[F_LOCAL_SEQ] = rp->local_seq;
}

static int strides_zero(attn_strides s) {
    return s.batch == 0 && s.head == 0 && s.seq == 0;
}

/* This rank's own verdict on its request. */
static attn_status check_local(attn_context_t ctx, int rank, const attn_ring_params *rp,
                               const attn_ring_tensors *t) {
    if (!ctx)
        return ring_fail(ATTN_ERR_NULL_ARGUMENT, "rank %d: ctx is NULL", rank);
    if (!rp)
        return ring_fail(ATTN_ERR_NULL_ARGUMENT, "rank %d: params is NULL", rank);
    if (!t)
        return ring_fail(ATTN_ERR_NULL_ARGUMENT, "rank %d: tensors is NULL", rank);
    const attn_params *p = &rp->attn;
    if (rp->layout != ATTN_RING_CONTIGUOUS && rp->layout != ATTN_RING_ZIGZAG)
        return ring_fail(ATTN_ERR_INVALID_VALUE, "rank %d: layout %d is not an attn_ring_layout",
                         rank, (int)rp->layout);
    if (rp->local_seq < 0)
        return ring_fail(ATTN_ERR_INVALID_SIZE, "rank %d: local_seq %d is negative", rank,
                         rp->local_seq);
    if (p->seq_q != p->seq_k)
        return ring_fail(ATTN_ERR_INVALID_SIZE,
                         "rank %d: seq_q %d != seq_k %d: the ring computes self-attention over "
                         "one sequence",
                         rank, p->seq_q, p->seq_k);
    if (p->bias.present || p->keep_mask.present || p->key_padding || p->alibi || p->varlen)
        return ring_fail(ATTN_ERR_UNSUPPORTED,
                         "rank %d: the ring serves no bias, keep-mask, key padding, ALiBi or "
                         "varlen",
                         rank);
    if (!strides_zero(p->q_strides) || !strides_zero(p->k_strides) || !strides_zero(p->v_strides) ||
        !strides_zero(p->o_strides) || !strides_zero(p->lse_strides))
        return ring_fail(ATTN_ERR_UNSUPPORTED,
                         "rank %d: the ring takes packed shards: strides must be zero", rank);
    /* The whole problem as one device would run it: sizes, head dims, enums,
     * scale, window, and whether this device serves it at all. */
    attn_status status = attn_check(ctx, p, 1, 0, NULL);
    if (status != ATTN_SUCCESS)
        return ring_fail(status, "rank %d: %s", rank, attn_last_error(ctx));
    if (rp->local_seq > 0 && (!t->q || !t->k || !t->v || !t->o))
        return ring_fail(ATTN_ERR_NULL_ARGUMENT, "rank %d: tensors q, k, v and o are required",
                         rank);
    return ATTN_SUCCESS;
}

attn_status ring_agree_inputs(MPI_Comm comm, int rank, int ranks, attn_context_t ctx,
                              const attn_ring_params *rp, const attn_ring_tensors *t,
                              int32_t *local_seqs) {
    attn_status status = check_local(ctx, rank, rp, t);
    status = ring_agree_status(comm, rank, status, attn_ring_last_error());
    if (status != ATTN_SUCCESS)
        return status;

    /* Every rank's request passed its own checks: now they must agree. */
    int64_t *all = malloc((size_t)ranks * F_COUNT * sizeof *all);
    status = all ? ATTN_SUCCESS
                 : ring_fail(ATTN_ERR_HOST_OUT_OF_MEMORY, "rank %d: out of host memory", rank);
    status = ring_agree_status(comm, rank, status, attn_ring_last_error());
    if (status != ATTN_SUCCESS) {
        free(all);
        return status;
    }
    int64_t mine[F_COUNT];
    fingerprint(rp, mine);
    int rc = MPI_Allgather(mine, F_COUNT, MPI_INT64_T, all, F_COUNT, MPI_INT64_T, comm);
    if (rc != MPI_SUCCESS) {
        free(all);
        return ring_mpi_fail(rank, rc, "MPI_Allgather");
    }
    /* Every rank reads the same table, so reaches the same verdict. */
    status = ATTN_SUCCESS;
    for (int r = 1; r < ranks && status == ATTN_SUCCESS; r++)
        for (int f = 0; f < F_SHARED; f++)
            if (all[r * F_COUNT + f] != all[f]) {
                status = ring_fail(ATTN_ERR_INVALID_VALUE,
                                   "rank %d: %s is %lld, rank 0's is %lld: every rank must "
                                   "pass the same problem",
                                   r, field_names[f], (long long)all[r * F_COUNT + f],
                                   (long long)all[f]);
                break;
            }
    int64_t total = 0, largest_bytes = 0;
    const int64_t seq = all[F_SEQ_Q];
    const int64_t elem = all[F_DTYPE] == ATTN_DTYPE_F32 ? 4 : 2;
    const int64_t row_bytes =
        all[F_BATCH] * all[F_HEADS_KV] * (all[F_HEAD_DIM] + all[F_HEAD_DIM_V]) * elem;
    for (int r = 0; r < ranks && status == ATTN_SUCCESS; r++) {
        const int64_t rows = all[r * F_COUNT + F_LOCAL_SEQ];
        local_seqs[r] = (int32_t)rows;
        total += rows;
        if (rows * row_bytes > largest_bytes)
            largest_bytes = rows * row_bytes;
        if (all[F_LAYOUT] == ATTN_RING_ZIGZAG) {
            const int32_t expected = attn_ring_zigzag_rows((int32_t)seq, ranks, r, NULL, NULL);
            if (rows != expected)
                status = ring_fail(ATTN_ERR_INVALID_SIZE,
                                   "rank %d: local_seq is %lld, the zigzag layout of seq %lld "
                                   "over %d ranks gives it %d",
                                   r, (long long)rows, (long long)seq, ranks, expected);
        }
    }
    if (status == ATTN_SUCCESS && total != seq)
        status = ring_fail(ATTN_ERR_INVALID_SIZE, "the ranks' local_seq sum to %lld, not seq %lld",
                           (long long)total, (long long)seq);
    /* One message carries a shard's K and V. */
    if (status == ATTN_SUCCESS && largest_bytes > INT_MAX)
        status = ring_fail(ATTN_ERR_UNSUPPORTED,
                           "a shard's K and V take %lld bytes, over one message's %d",
                           (long long)largest_bytes, INT_MAX);
    free(all);
    return status;
}
