/* The per-batch and per-head input arrays of lib/input_arrays.h: their
 * checks (one function a row of the table) and their device copies. */
#include "attn_internal.h"

#include <math.h>
#include <string.h>

static attn_status check_key_lengths(attn_context_t ctx, const attn_params *p,
                                     const int32_t *lengths) {
    for (int32_t b = 0; b < p->batch; b++)
        if (lengths[b] < 0 || lengths[b] > p->seq_k)
            return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                             "key_lengths[%d] = %d is outside 0..seq_k (%d)", b, lengths[b],
                             p->seq_k);
    return ATTN_SUCCESS;
}

static attn_status check_alibi_slopes(attn_context_t ctx, const attn_params *p,
                                      const float *slopes) {
    for (int32_t h = 0; h < p->heads_q; h++)
        if (!isfinite(slopes[h]))
            return attn_fail(ctx, ATTN_ERR_INVALID_VALUE, "alibi_slopes[%d] is not finite", h);
    return ATTN_SUCCESS;
}

/* Prefix sums from 0, each sequence within the longest, the last within the
 * packed total. */
static attn_status check_cu_seqlens(attn_context_t ctx, const attn_params *p, const int32_t *cu,
                                    const char *side, int32_t longest, int32_t total) {
    if (cu[0] != 0)
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE, "cu_seqlens_%s[0] is %d, not 0", side, cu[0]);
    for (int32_t b = 0; b < p->batch; b++) {
        const int64_t len = (int64_t)cu[b + 1] - cu[b];
        if (len < 0 || len > longest)
            return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                             "cu_seqlens_%s: sequence %d has %lld rows, outside 0..seq_%s (%d)",
                             side, b, (long long)len, side, longest);
    }
    if (cu[p->batch] > total)
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE,
                         "cu_seqlens_%s[%d] = %d is past total_%s (%d)", side, p->batch,
                         cu[p->batch], side, total);
    return ATTN_SUCCESS;
}

static attn_status check_cu_seqlens_q(attn_context_t ctx, const attn_params *p, const int32_t *cu) {
    return check_cu_seqlens(ctx, p, cu, "q", p->seq_q, p->total_q);
}

static attn_status check_cu_seqlens_k(attn_context_t ctx, const attn_params *p, const int32_t *cu) {
    return check_cu_seqlens(ctx, p, cu, "k", p->seq_k, p->total_k);
}

attn_status attn_problem_check_arrays(attn_context_t ctx, const attn_problem *pb,
                                      const attn_input_arrays *m, unsigned on_device) {
    const attn_params *p = &pb->p;
    attn_status status = ATTN_SUCCESS;
    /* Every missing array first, then the values: a NULL array is reported
     * as such whatever the arrays before it hold. */
#define NULL_ROW(name, type, count, enabled)                                                       \
    if (status == ATTN_SUCCESS && (enabled) && !(on_device & (1u << ATTN_INPUT_##name)) &&         \
        !m->name)                                                                                  \
        status = attn_fail(ctx, ATTN_ERR_NULL_ARGUMENT, "params ask for %s, which is NULL", #name);
    ATTN_INPUT_ARRAYS(NULL_ROW)
#undef NULL_ROW
#define CHECK_ROW(name, type, count, enabled)                                                      \
    if (status == ATTN_SUCCESS && (enabled) && !(on_device & (1u << ATTN_INPUT_##name)))           \
        status = check_##name(ctx, p, m->name);
    ATTN_INPUT_ARRAYS(CHECK_ROW)
#undef CHECK_ROW
    return status;
}

size_t attn_input_array_bytes(const attn_problem *pb, attn_input_array which) {
    const attn_params *p = &pb->p;
    switch (which) {
#define BYTES_ROW(name, type, count, enabled)                                                      \
    case ATTN_INPUT_##name:                                                                        \
        return (enabled) ? (size_t)(count) * sizeof(type) : 0;
        ATTN_INPUT_ARRAYS(BYTES_ROW)
#undef BYTES_ROW
    case ATTN_INPUT_COUNT:
        break;
    }
    return 0;
}

const void *attn_input_array_host(const attn_input_arrays *m, attn_input_array which) {
    switch (which) {
#define HOST_ROW(name, type, count, enabled)                                                       \
    case ATTN_INPUT_##name:                                                                        \
        return m->name;
        ATTN_INPUT_ARRAYS(HOST_ROW)
#undef HOST_ROW
    case ATTN_INPUT_COUNT:
        break;
    }
    return NULL;
}

const char *attn_input_array_name(attn_input_array which) {
    static const char *const names[ATTN_INPUT_COUNT] = {
#define NAME_ROW(name, type, count, enabled) #name,
        ATTN_INPUT_ARRAYS(NAME_ROW)
#undef NAME_ROW
    };
    return (unsigned)which < ATTN_INPUT_COUNT ? names[which] : "?";
}

attn_status attn_input_arrays_create(attn_context_t ctx, const attn_problem *pb,
                                     cl_mem buffers[ATTN_INPUT_COUNT]) {
    for (int i = 0; i < ATTN_INPUT_COUNT; i++)
        buffers[i] = NULL;
    for (int i = 0; i < ATTN_INPUT_COUNT; i++) {
        const size_t bytes = attn_input_array_bytes(pb, (attn_input_array)i);
        if (!bytes)
            continue;
        cl_int err;
        buffers[i] = clCreateBuffer(ctx->context, CL_MEM_READ_ONLY, bytes, NULL, &err);
        if (err != CL_SUCCESS) {
            buffers[i] = NULL;
            attn_input_arrays_release(buffers);
            return attn_fail(ctx, (attn_status)err, "clCreateBuffer for %s failed: %s (%d)",
                             attn_input_array_name((attn_input_array)i), attn_cl_error_name(err),
                             (int)err);
        }
    }
    return ATTN_SUCCESS;
}

void attn_input_arrays_release(cl_mem buffers[ATTN_INPUT_COUNT]) {
    for (int i = 0; i < ATTN_INPUT_COUNT; i++) {
        if (buffers[i])
            clReleaseMemObject(buffers[i]);
        buffers[i] = NULL;
    }
}
