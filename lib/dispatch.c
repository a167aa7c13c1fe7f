/* Which algorithm serves a problem: the table of algorithms and the AUTO
 * policy, in one place. Adding an algorithm is one file that provides an
 * attn_algorithm and one row here. */
#include "attn_internal.h"
#include "tuning.h"

/* A row's id is the attn_algo it serves; the first row of an id is the one
 * an explicit request gets. The decode row serves ATTN_ALGO_FUSED too (a
 * fused kernel with the same results), chosen by decode_wanted, and so does
 * the fused probabilities row, for every request with probabilities. */
static const attn_algorithm *const algorithms[] = {
    &attn_three_kernel_algorithm,
    &attn_fused_algorithm,
    &attn_decode_algorithm,
    &attn_fused_probs_algorithm,
};

static const attn_algorithm *find_algorithm(attn_algo id) {
    for (size_t i = 0; i < sizeof algorithms / sizeof algorithms[0]; i++)
        if (algorithms[i]->id == id)
            return algorithms[i];
    return NULL;
}

/* The fraction of a call's probabilities it asks for (its heads and query
 * rows subset; an end of 0 is the last). */
static double probs_fraction(const attn_params *p) {
    const int heads_end = p->probs_heads_end ? p->probs_heads_end : p->heads_q;
    const int rows_end = p->probs_rows_end ? p->probs_rows_end : p->seq_q;
    return (double)(heads_end - p->probs_heads_begin) * (double)(rows_end - p->probs_rows_begin) /
           ((double)p->heads_q * (double)p->seq_q);
}

/* AUTO: the fused path is faster on every device measured and needs O(seq)
 * memory. With probabilities on a CPU device (the fused cpu variant, the
 * table's): the three-kernel path's cpu shape writes every probability
 * faster than the fused path recomputes them, and the fused path pays only
 * for a subset's share (PoCL, 2 cores, fp32, B=1 H=8 D=64, host call,
 * attn_bench --algo all --host: every probability 19.7 / 25.9 ms at n = 512
 * and 255 / 360 ms at 2048, three-kernel / fused; half the heads at 2048
 * 196 / 207; one head's last 16 rows 18.8 / 9.2 at 512): more than half of
 * them go to the three-kernel path, fewer to the fused one. GPUs (and the
 * fused gpu or decode variants) keep the three-kernel path: not measured
 * there. The caller holds ctx->lock. */
static attn_status resolve_auto(attn_context_t ctx, const attn_problem *pb, attn_algo *id) {
    *id = ATTN_ALGO_FUSED;
    if (!pb->want_probs)
        return ATTN_SUCCESS;
    const attn_params *p = &pb->p;
    attn_tuning t;
    attn_tuning_origin origin;
    attn_status status = attn_tuning_lookup(ctx, p, &t, &origin);
    if (status != ATTN_SUCCESS)
        return status;
    if (ctx->info.is_gpu || t.variant != ATTN_FUSED_CPU || probs_fraction(p) > 0.5)
        *id = ATTN_ALGO_THREE_KERNEL;
    return ATTN_SUCCESS;
}

/* Decode shapes: at most DECODE_MAX_ROWS query rows read each kv head
 * (group * seq_q), over DECODE_MIN_KEYS keys or more. On CPUs the fused cpu
 * shape's packing of K is the whole cost there (PoCL on 2 cores, the commit
 * adding lib/decode.c); on GPUs the fused gpu shape gives such a problem one
 * work-group a head, a block of rows nearly empty, where the decode
 * kernels split the keys (NVIDIA H200, Sq=1 Sk=16384 Hq=32 Hkv=8 D=128
 * f32, attn_bench --overhead: 13.7 ms fused gpu shape, 0.71 ms decode). */
#define DECODE_MAX_ROWS 16
#define DECODE_MIN_KEYS 256

/* Whether a fused request (AUTO's or an explicit ATTN_ALGO_FUSED: the
 * decode kernel is a fused kernel with the same results) goes to the decode
 * algorithm: always under the tuning's variant=decode; for decode shapes
 * without dropout (which the decode kernels lack and refuse), unless an
 * override named another variant. The caller holds ctx->lock. */
static attn_status decode_wanted(attn_context_t ctx, const attn_problem *pb, int *wanted) {
    const attn_params *p = &pb->p;
    attn_tuning t;
    attn_tuning_origin origin;
    attn_status status = attn_tuning_lookup(ctx, p, &t, &origin);
    if (status != ATTN_SUCCESS)
        return status;
    if ((origin.context | origin.env) & ATTN_TUNE_VARIANT)
        *wanted = t.variant == ATTN_FUSED_DECODE;
    else
        *wanted = !pb->want_probs && !(p->dropout_p > 0.0f) &&
                  (int64_t)pb->group * p->seq_q <= DECODE_MAX_ROWS && p->seq_k >= DECODE_MIN_KEYS;
    return ATTN_SUCCESS;
}

attn_status attn_dispatch(attn_context_t ctx, const attn_problem *pb,
                          const attn_algorithm **algorithm, attn_algo_state **state) {
    *algorithm = NULL;
    *state = NULL;
    attn_algo id = pb->p.algo;
    if (id == ATTN_ALGO_AUTO) {
        attn_status status = resolve_auto(ctx, pb, &id);
        if (status != ATTN_SUCCESS)
            return status;
    }
    const attn_algorithm *a = find_algorithm(id);
    if (!a)
        return attn_fail(ctx, ATTN_ERR_INVALID_VALUE, "algo %d is not an attn_algo", (int)id);
    if (pb->kv.enabled) {
        /* Only the decode kernels read a KV cache (lib/kvcache.c). */
        if (id != ATTN_ALGO_FUSED)
            return attn_fail(ctx, ATTN_ERR_UNSUPPORTED,
                             "a KV cache is read by the fused (decode) path only; use "
                             "ATTN_ALGO_AUTO or ATTN_ALGO_FUSED");
        a = &attn_decode_algorithm;
    } else if (id == ATTN_ALGO_FUSED && pb->want_probs) {
        a = &attn_fused_probs_algorithm;
    } else if (id == ATTN_ALGO_FUSED) {
        int decode = 0;
        attn_status status = decode_wanted(ctx, pb, &decode);
        if (status != ATTN_SUCCESS)
            return status;
        if (decode)
            a = &attn_decode_algorithm;
    }
    attn_status status = a->configure(ctx, pb, state);
    if (status == ATTN_SUCCESS)
        *algorithm = a;
    return status;
}
