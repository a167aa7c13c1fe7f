/* The host call's last step (host_copy.c): from the staging its outputs were
 * downloaded into, copy exactly the elements the forward wrote into the
 * caller's memory, nothing in between. */
#ifndef ATTN_HOST_COPY_H
#define ATTN_HOST_COPY_H

#include "attn_cl.h"

#include <stddef.h>
#include <stdint.h>

/* One output as the forward writes it: `batch` x `heads` x `rows` rows of
 * `inner` contiguous elements of `element_size` bytes, laid out by
 * `strides` (element strides, none negative, rows not overlapping: the plan
 * has checked). With `cu_seqlens` (varlen: batch is the number of sequences,
 * rows the packed total) only the rows of sequences, cu_seqlens[b] <=
 * row < cu_seqlens[b + 1], are written; the rest are no one's. */
typedef struct attn_output_rows {
    int64_t batch, heads, rows, inner;
    attn_strides strides;
    size_t element_size;
    const int32_t *cu_seqlens; /* NULL unless varlen */
} attn_output_rows;

/* Copies the rows `o` describes from `src` to `dst`, two buffers of the same
 * layout. Elements between the rows (strided gaps, rows past the last
 * sequence) are left as they are in `dst`: another output, or the caller's
 * own data, may live there. */
void attn_copy_output_rows(void *dst, const void *src, const attn_output_rows *o);

#endif
