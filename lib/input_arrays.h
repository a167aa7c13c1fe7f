/* The small per-batch and per-head input arrays, described once.
 *
 * Each row is X(name, element type, element count, enabled): `count` and
 * `enabled` are expressions of `p`, the resolved attn_params. The name is the
 * field of attn_host_tensors and attn_device_tensors that holds the array on
 * the host, and `<name>_mem` the device call's cl_mem alternative. The table
 * drives the validated view of the arrays (attn_input_arrays), their checks
 * (input_arrays.c: one check_<name> function a row), their device copies and
 * release (input_arrays.c), and the order in which kernels receive them
 * (launch.c's feature arguments, kernels/common.cl's FEATURE_PARAMS).
 *
 * Adding an input: one row here, its check_<name> in input_arrays.c, its
 * fields in the public tensors structs, its parameter in FEATURE_PARAMS, and
 * its meaning in the kernels that use it and in reference.c. */
#ifndef ATTN_INPUT_ARRAYS_H
#define ATTN_INPUT_ARRAYS_H

#include "attn_cl.h"

#include <stdint.h>

#define ATTN_INPUT_ARRAYS(X)                                                                       \
    X(key_lengths, int32_t, p->batch, p->key_padding)                                              \
    X(alibi_slopes, float, p->heads_q, p->alibi)                                                   \
    X(cu_seqlens_q, int32_t, p->batch + 1, p->varlen)                                              \
    X(cu_seqlens_k, int32_t, p->batch + 1, p->varlen)

typedef enum attn_input_array {
#define ATTN_INPUT_ENUM(name, type, count, enabled) ATTN_INPUT_##name,
    ATTN_INPUT_ARRAYS(ATTN_INPUT_ENUM)
#undef ATTN_INPUT_ENUM
        ATTN_INPUT_COUNT
} attn_input_array;

/* The arrays as the caller gave them in host memory (NULL: absent, or given
 * as cl_mem on the device call). Named fields, so that the reference reads
 * m->cu_seqlens_q[b]. */
typedef struct attn_input_arrays {
#define ATTN_INPUT_FIELD(name, type, count, enabled) const type *name;
    ATTN_INPUT_ARRAYS(ATTN_INPUT_FIELD)
#undef ATTN_INPUT_FIELD
} attn_input_arrays;

/* The host arrays of the public tensors structs, which name them alike. */
#define ATTN_INPUT_FROM_TENSORS_(name, type, count, enabled) .name = t->name,
static inline attn_input_arrays attn_input_arrays_of_host(const attn_host_tensors *t) {
    return (attn_input_arrays){ATTN_INPUT_ARRAYS(ATTN_INPUT_FROM_TENSORS_)};
}
static inline attn_input_arrays attn_input_arrays_of_device(const attn_device_tensors *t) {
    return (attn_input_arrays){ATTN_INPUT_ARRAYS(ATTN_INPUT_FROM_TENSORS_)};
}
static inline attn_input_arrays
attn_input_arrays_of_backward_host(const attn_backward_host_tensors *t) {
    return (attn_input_arrays){ATTN_INPUT_ARRAYS(ATTN_INPUT_FROM_TENSORS_)};
}
static inline attn_input_arrays
attn_input_arrays_of_backward_device(const attn_backward_device_tensors *t) {
    return (attn_input_arrays){ATTN_INPUT_ARRAYS(ATTN_INPUT_FROM_TENSORS_)};
}
#undef ATTN_INPUT_FROM_TENSORS_

#endif
