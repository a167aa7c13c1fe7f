/* What the files of libattn_cl_ring share: the rows a rank holds, the
 * attention of one block of queries on one block of keys, and the error
 * message this thread keeps. */
#ifndef ATTN_RING_INTERNAL_H
#define ATTN_RING_INTERNAL_H

#include "attn_cl_ring.h"

#include <stdint.h>

/* ---- Shards (ring_layout.c) ---------------------------------------------- */

/* One run of rows a rank holds: natural rows [start, start + length), at
 * local row `local` of its shard. */
typedef struct ring_range {
    int64_t start, length, local;
} ring_range;

typedef struct ring_shard {
    int count; /* 1 (contiguous) or 2 (zigzag) */
    ring_range part[2];
    int64_t rows;
} ring_shard;

/* The shard of `rank`: for ATTN_RING_CONTIGUOUS from every rank's local_seq
 * (`local_seqs`, `ranks` entries), for ATTN_RING_ZIGZAG from seq alone. */
void ring_shard_of(attn_ring_layout layout, int32_t seq, int32_t ranks, int32_t rank,
                   const int32_t *local_seqs, ring_shard *out);

/* ---- Blocks (ring_blocks.c) ---------------------------------------------- */

/* The keys every query sees, around its own position i: [i - left, i + right];
 * -1 is unbounded. A causal mask is right = 0. */
typedef struct ring_reach {
    int64_t left, right;
} ring_reach;

ring_reach ring_reach_of(const attn_params *p);

/* One forward the library can run: natural query rows [q_start, q_start +
 * q_rows) on natural key rows [k_start, k_start + k_rows), with the mask and
 * window that give exactly the reach within them. */
typedef struct ring_block {
    int64_t q_start, q_rows, k_start, k_rows;
    attn_mask mask;
    attn_window window;
} ring_block;

/* The block of queries [qa, qb) on keys [ka, kb) under `reach`: returns 0
 * when no query sees any of the keys (nothing to compute), else 1 and *out.
 * Query rows that see none of the keys may be left out of *out. */
int ring_block_plan(ring_reach reach, int64_t qa, int64_t qb, int64_t ka, int64_t kb,
                    ring_block *out);

/* ---- Errors (ring_errors.c) ---------------------------------------------- */

#define RING_MESSAGE_MAX 512

/* Records the formatted message as this thread's last error; returns status. */
attn_status ring_fail(attn_status status, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
/* Sets this thread's message verbatim (the agreed one). */
void ring_set_error(const char *message);
void ring_clear_error(void);

#endif
