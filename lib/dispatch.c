/* Which algorithm serves a problem: the table of algorithms and the AUTO
 * policy, in one place. Adding an algorithm is one file that provides an
 * attn_algorithm and one row here. */
#include "attn_internal.h"

static const attn_algorithm *const algorithms[] = {
    &attn_three_kernel_algorithm,
    &attn_fused_algorithm,
};

static const attn_algorithm *find_algorithm(attn_algo id) {
    for (size_t i = 0; i < sizeof algorithms / sizeof algorithms[0]; i++)
        if (algorithms[i]->id == id)
            return algorithms[i];
    return NULL;
}

/* AUTO: the fused path is faster on every device measured and needs O(seq)
 * memory; only the three-kernel path materializes the probabilities. */
static attn_algo resolve_auto(const attn_problem *pb) {
    return pb->want_probs ? ATTN_ALGO_THREE_KERNEL : ATTN_ALGO_FUSED;
}

attn_status attn_dispatch(attn_context_t ctx, const attn_problem *pb,
                          const attn_algorithm **algorithm, attn_algo_state **state) {
    const attn_algo id = pb->p.algo == ATTN_ALGO_AUTO ? resolve_auto(pb) : pb->p.algo;
    const attn_algorithm *a = find_algorithm(id);
    *algorithm = NULL;
    *state = NULL;
    if (!a)
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE, "algo %d is not an attn_algo", (int)id);
    attn_status status = a->configure(ctx, pb, state);
    if (status == ATTN_SUCCESS)
        *algorithm = a;
    return status;
}
