/* Which rows of the sequence each rank holds: contiguous shards of any
 * lengths, or the zigzag layout that balances a causal mask (rank r of P
 * holds chunks r and 2P-1-r of 2P, so each rank has one chunk from the
 * cheap start of the sequence and one from its expensive end). */
#include "ring_internal.h"

#include <stddef.h>

/* Chunk c of the 2P: seq / 2P rows, one more for the first seq % 2P. */
static int64_t chunk_start(int64_t seq, int64_t chunks, int64_t c) {
    const int64_t base = seq / chunks, extra = seq % chunks;
    return c * base + (c < extra ? c : extra);
}

static int64_t chunk_length(int64_t seq, int64_t chunks, int64_t c) {
    return seq / chunks + (c < seq % chunks ? 1 : 0);
}

int32_t attn_ring_zigzag_rows(int32_t seq, int32_t ranks, int32_t rank, int32_t start[2],
                              int32_t length[2]) {
    if (seq < 0 || ranks < 1 || rank < 0 || rank >= ranks)
        return -1;
    const int64_t chunks = 2 * (int64_t)ranks;
    const int64_t first = rank, second = chunks - 1 - rank;
    if (start) {
        start[0] = (int32_t)chunk_start(seq, chunks, first);
        start[1] = (int32_t)chunk_start(seq, chunks, second);
    }
    const int64_t a = chunk_length(seq, chunks, first), b = chunk_length(seq, chunks, second);
    if (length) {
        length[0] = (int32_t)a;
        length[1] = (int32_t)b;
    }
    return (int32_t)(a + b);
}

int32_t attn_ring_zigzag_to_natural(int32_t seq, int32_t ranks, int32_t zigzag_row) {
    if (seq < 0 || ranks < 1 || zigzag_row < 0 || zigzag_row >= seq)
        return -1;
    int64_t before = 0; /* zigzag rows of the lower ranks */
    for (int32_t r = 0; r < ranks; r++) {
        int32_t start[2], length[2];
        const int32_t rows = attn_ring_zigzag_rows(seq, ranks, r, start, length);
        if (zigzag_row < before + rows) {
            const int64_t local = zigzag_row - before;
            return (int32_t)(local < length[0] ? start[0] + local : start[1] + local - length[0]);
        }
        before += rows;
    }
    return -1;
}

int32_t attn_ring_natural_to_zigzag(int32_t seq, int32_t ranks, int32_t natural_row) {
    if (seq < 0 || ranks < 1 || natural_row < 0 || natural_row >= seq)
        return -1;
    const int64_t chunks = 2 * (int64_t)ranks;
    /* The chunk holding the row: chunks differ by at most one row. */
    int64_t c = natural_row / (seq / chunks + 1);
    while (chunk_start(seq, chunks, c + 1) <= natural_row)
        c++;
    const int64_t rank = c < ranks ? c : chunks - 1 - c;
    int64_t before = 0;
    for (int32_t r = 0; r < rank; r++)
        before += attn_ring_zigzag_rows(seq, ranks, r, NULL, NULL);
    const int64_t in_chunk = natural_row - chunk_start(seq, chunks, c);
    const int64_t local = c < ranks ? in_chunk : chunk_length(seq, chunks, rank) + in_chunk;
    return (int32_t)(before + local);
}

void ring_shard_of(attn_ring_layout layout, int32_t seq, int32_t ranks, int32_t rank,
                   const int32_t *local_seqs, ring_shard *out) {
    if (layout == ATTN_RING_ZIGZAG) {
        int32_t start[2], length[2];
        attn_ring_zigzag_rows(seq, ranks, rank, start, length);
        out->count = 2;
        out->part[0] = (ring_range){start[0], length[0], 0};
        out->part[1] = (ring_range){start[1], length[1], length[0]};
        out->rows = (int64_t)length[0] + length[1];
        return;
    }
    int64_t offset = 0;
    for (int32_t r = 0; r < rank; r++)
        offset += local_seqs[r];
    out->count = 1;
    out->part[0] = (ring_range){offset, local_seqs[rank], 0};
    out->part[1] = (ring_range){0, 0, 0};
    out->rows = local_seqs[rank];
}
