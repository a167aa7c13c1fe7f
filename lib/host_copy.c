/* Copying a host forward's staged outputs into the caller's memory, row by
 * row (see host_copy.h). Copying an output's whole span instead would write
 * its gaps back with what the staging held there, over another output
 * interleaved with it (a packed [O | LSE] record) or over rows no sequence
 * owns. */
#include "host_copy.h"

#include <string.h>

void attn_copy_output_rows(void *dst, const void *src, const attn_output_rows *o) {
    const int64_t sb = o->strides.batch, sh = o->strides.head, ss = o->strides.seq;
    const size_t row_bytes = (size_t)o->inner * o->element_size;
    if (!o->cu_seqlens) {
        /* Rows that tile their span exactly (packed BHSD, BSHD, ...) are one
         * copy: rows that do not overlap and number span / inner cover it. */
        const size_t span = (size_t)(o->batch - 1) * (size_t)sb +
                            (size_t)(o->heads - 1) * (size_t)sh +
                            (size_t)(o->rows - 1) * (size_t)ss + (size_t)o->inner;
        if (span == (size_t)o->batch * (size_t)o->heads * (size_t)o->rows * (size_t)o->inner) {
            memcpy(dst, src, span * o->element_size);
            return;
        }
    }
    for (int64_t b = 0; b < o->batch; b++) {
        const int64_t first = o->cu_seqlens ? o->cu_seqlens[b] : 0;
        const int64_t end = o->cu_seqlens ? o->cu_seqlens[b + 1] : o->rows;
        /* Varlen tensors are one batch of packed rows: sb is 0 there. */
        for (int64_t h = 0; h < o->heads; h++)
            for (int64_t s = first; s < end; s++) {
                const size_t at =
                    ((size_t)b * (size_t)sb + (size_t)h * (size_t)sh + (size_t)s * (size_t)ss) *
                    o->element_size;
                memcpy((char *)dst + at, (const char *)src + at, row_bytes);
            }
    }
}
