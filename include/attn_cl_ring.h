/*
 * libattn_cl_ring — ring attention over MPI: one sequence split across
 * processes (each with its own libattn_cl context, so its own device),
 * possibly on several machines.
 *
 * Every rank of an MPI communicator holds a shard of the sequence's rows of
 * Q, K and V and receives the same rows of O (and, if asked, LSE). The K/V
 * shards travel around the ring of ranks (rank r sends to r + 1 and receives
 * from r - 1) with non-blocking messages while each rank attends its queries
 * to the shard it holds; the partial results are merged by their
 * log-sum-exps (attn_merge) in a fixed order, step by step, so the result
 * does not depend on message timing.
 *
 * The problem is self-attention over the whole sequence: params.attn
 * describes it with seq_q == seq_k == the sequence's total rows. Each rank's
 * tensors are its shard, packed BHSD with local_seq rows:
 *   Q [batch, heads_q, local_seq, head_dim]   K [batch, heads_kv, local_seq, head_dim]
 *   V [batch, heads_kv, local_seq, head_dim_v] O [batch, heads_q, local_seq, head_dim_v]
 *   LSE [batch, heads_q, local_seq]
 * Served: every mask (causal, either alignment: they coincide here), sliding
 * windows, grouped-query heads, softcap, any scale, f32/f16/bf16 storage,
 * the LSE output. Not served (ATTN_ERR_UNSUPPORTED): a bias, a keep-mask,
 * key padding, ALiBi, varlen, explicit strides.
 *
 * Layouts (which rows a rank holds, docs/ring.md):
 *   ATTN_RING_CONTIGUOUS: rank r holds rows [offset_r, offset_r + local_seq_r),
 *     offset_r the sum of the lower ranks' local_seq: shards may be uneven
 *     (or empty); under a causal mask the last rank does most of the work.
 *   ATTN_RING_ZIGZAG: the sequence is cut into 2·P chunks (P ranks; chunk c
 *     has seq / 2P rows, plus one for c < seq % 2P); rank r holds chunk r
 *     followed by chunk 2P-1-r, so under a causal mask every rank does the
 *     same work. local_seq must be the two chunks' rows
 *     (attn_ring_zigzag_rows).
 *
 * Failure is collective: every rank validates its own inputs and the ranks
 * agree, before any data moves, so every rank returns the same status and
 * attn_ring_last_error() the same message, which names the rank at fault. A
 * device failure during the ring is agreed on the same way at its end (the
 * ring keeps moving, so no rank hangs). A failed call leaves O and LSE
 * untouched on every rank. An MPI error (the call sets MPI_ERRORS_RETURN on
 * its own duplicate of the communicator) returns ATTN_RING_ERR_MPI on the
 * rank that saw it; agreement is then no longer possible.
 *
 * Threads: the call runs the attention on a thread of its own while the
 * calling thread drives MPI, so MPI must be initialized with at least
 * MPI_THREAD_FUNNELED, and the call made from the thread that initialized it.
 * The call is collective over `comm`: every rank calls it, in the same order
 * as their other collectives.
 */
#ifndef ATTN_CL_RING_H
#define ATTN_CL_RING_H

#include "attn_cl.h"

#include <mpi.h>

#ifdef __cplusplus
extern "C" {
#endif

/* An MPI call failed (its error string is in the message). */
#define ATTN_RING_ERR_MPI ((attn_status)-2101)

typedef enum attn_ring_layout {
    ATTN_RING_CONTIGUOUS = 0,
    ATTN_RING_ZIGZAG = 1,
} attn_ring_layout;

typedef struct attn_ring_params {
    attn_params attn; /* the whole sequence: seq_q == seq_k; strides all zero */
    attn_ring_layout layout;
    int32_t local_seq; /* rows this rank holds */
} attn_ring_params;

/* attn_params_init(&p->attn, batch, heads, seq, seq, head_dim), the layout
 * and this rank's rows; change what differs (heads_kv, mask, dtype, ...). */
ATTN_API void attn_ring_params_init(attn_ring_params *params, int32_t batch, int32_t heads,
                                    int32_t seq, int32_t head_dim, attn_ring_layout layout,
                                    int32_t local_seq);

/* This rank's shard, in params.attn.dtype (LSE in float). q, k, v and o are
 * required unless local_seq is 0; lse NULL: not computed. */
typedef struct attn_ring_tensors {
    const void *q, *k, *v;
    void *o;
    float *lse;
} attn_ring_tensors;

/* What one ring step cost this rank, in seconds: the attention on the shard
 * held (with its merges), the messages of the step from posting to
 * completion, and how long the rank waited for them after its attention
 * ended (the communication not hidden). The last step sends nothing. */
typedef struct attn_ring_step_stats {
    double compute_s;
    double comm_s;
    double exposed_s;
    uint64_t bytes_sent;
} attn_ring_step_stats;

/* The sequence-parallel forward. `steps`, when not NULL, receives one entry
 * per step (the communicator's size); it is written even when the call
 * fails after agreement. Collective over `comm` (see above). */
ATTN_API attn_status attn_ring_forward(attn_context_t ctx, MPI_Comm comm,
                                       const attn_ring_params *params,
                                       const attn_ring_tensors *tensors,
                                       attn_ring_step_stats *steps);

/* ---- The zigzag layout ---------------------------------------------------- */

/* The rows rank `rank` of `ranks` holds under ATTN_RING_ZIGZAG, in its local
 * order: natural rows [start[0], start[0] + length[0]) then
 * [start[1], start[1] + length[1]]. Returns local_seq (their sum), or -1
 * when seq < 0, ranks < 1 or rank is not in 0..ranks-1. */
ATTN_API int32_t attn_ring_zigzag_rows(int32_t seq, int32_t ranks, int32_t rank, int32_t start[2],
                                       int32_t length[2]);

/* Zigzag order is the ranks' shards one after another (rank 0's local rows,
 * then rank 1's, ...). These map a row between it and the natural order;
 * each returns -1 for arguments out of range. */
ATTN_API int32_t attn_ring_zigzag_to_natural(int32_t seq, int32_t ranks, int32_t zigzag_row);
ATTN_API int32_t attn_ring_natural_to_zigzag(int32_t seq, int32_t ranks, int32_t natural_row);

/* ---- Errors --------------------------------------------------------------- */

/* attn_status_name, and "ATTN_RING_ERR_MPI". */
ATTN_API const char *attn_ring_status_name(attn_status status);

/* The message of this thread's most recent failed attn_ring_forward; "" if
 * none. Valid until the thread's next attn_ring_forward. */
ATTN_API const char *attn_ring_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* ATTN_CL_RING_H */
