/* libFuzzer target over validation and planning alone: each input decodes
 * into the same request as tests/fuzz_forward.c (fuzz_request.h; the two
 * share a seed corpus), and only the calls that build no kernel and read no
 * tensor run, so it covers thousands of inputs a second where the device
 * target covers tens.
 *
 * Properties checked (a violation prints why and aborts):
 *   - attn_check answers ATTN_SUCCESS or one of the library's own codes,
 *     with a message on failure; a request with an INT32_MIN size or head
 *     dim is refused; one that is valid by the header's rules
 *     (valid_params) is accepted, and with the algorithm the request asks
 *     for (AUTO: fused, or three-kernel when the probabilities are wanted);
 *   - asking twice gives the same answer (no state leaks between checks);
 *   - params whose struct_size is not this library's are refused with
 *     ATTN_ERR_INVALID_VALUE, before anything else is read;
 *   - attn_plan_create refuses what attn_check refuses, with the same
 *     status, *plan NULL, and no kernel built (so it costs no more than the
 *     check);
 *   - with TUNING_STRING, attn_context_set_tuning accepts the spec or
 *     refuses it with ATTN_ERR_INVALID_VALUE, and the checks above run
 *     under whatever it accepted (a spec is matched against the device's
 *     table entry only at a forward, so a valid request may then be
 *     refused, as INVALID_VALUE naming the spec).
 * Built with -fsanitize=fuzzer,address,undefined (meson -Dfuzz=true,
 * clang); fuzz_validate_replay runs it over the seed corpus in every build. */
#include "fuzz_request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int documented(attn_status st) {
    return st == ATTN_SUCCESS || (st <= ATTN_ERR_NULL_ARGUMENT && st >= ATTN_ERR_KERNEL_SOURCE);
}

static void violation(const char *what, const request *q, attn_status st, const char *message) {
    const attn_params *p = &q->p;
    fprintf(
        stderr,
        "\nfuzz_validate: %s\n  status %s: %s\n  B=%d Hq=%d Hkv=%d Sq=%d Sk=%d D=%d Dv=%d mask=%d "
        "algo=%d dtype=%d scale=%g softcap=%g window=%d(%d,%d) alibi=%d bias=%d keep=%d "
        "pad=%d varlen=%d(%d,%d) flags=%u\n",
        what, attn_status_name(st), message ? message : "", (int)p->batch, (int)p->heads_q,
        (int)p->heads_kv, (int)p->seq_q, (int)p->seq_k, (int)p->head_dim, (int)p->head_dim_v,
        (int)p->mask, (int)p->algo, (int)p->dtype, (double)p->scale, (double)p->softcap,
        (int)p->window.enabled, (int)p->window.left, (int)p->window.right, (int)p->alibi,
        (int)p->bias.present, (int)p->keep_mask.present, (int)p->key_padding, (int)p->varlen,
        (int)p->total_q, (int)p->total_k, (unsigned)q->flags);
    abort();
}

static attn_context_t context(void) {
    static attn_context_t ctx;
    if (!ctx) {
        attn_status st = attn_context_create(NULL, &ctx);
        if (st != ATTN_SUCCESS) {
            fprintf(stderr, "fuzz_validate: no OpenCL device: %s: %s\n", attn_status_name(st),
                    attn_last_error(NULL));
            abort();
        }
    }
    return ctx;
}

/* The rest of the input as a tuning spec; whether the context took it. */
static int tuning_string(attn_context_t ctx, const request *q, reader *r) {
    char spec[300];
    const size_t n = r->n < sizeof spec - 1 ? r->n : sizeof spec - 1;
    memcpy(spec, r->p, n);
    spec[n] = '\0';
    r->n -= n;
    const attn_status st = attn_context_set_tuning(ctx, spec);
    if (st != ATTN_SUCCESS && st != ATTN_ERR_INVALID_VALUE) {
        violation("attn_context_set_tuning gave a status other than INVALID_VALUE", q, st,
                  attn_last_error(ctx));
    }
    return st == ATTN_SUCCESS;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    attn_context_t ctx = context();
    reader r = {data, size};
    request q;
    decode(&r, &q);
    /* A spec is checked against the device's table entry it amends only
     * at a forward: under one, a valid request may be refused, as
     * INVALID_VALUE naming the spec. */
    const int tuned = (q.flags & TUNING_STRING) && tuning_string(ctx, &q, &r);
    if (q.shape) {
        const attn_status st = attn_context_set_tuning(ctx, kernel_shapes[q.shape]);
        if (st != ATTN_SUCCESS) {
            violation("attn_context_set_tuning refused a kernel shape the tests use", &q, st,
                      attn_last_error(ctx));
        }
    }
    const int want_lse = (q.flags & WANT_LSE) != 0, want_probs = (q.flags & WANT_PROBS) != 0;
    const size_class sizes = classify(&q.p);
    const int valid = sizes == SIZES_SMALL && valid_params(&q);

    attn_algo chosen = ATTN_ALGO_AUTO;
    const attn_status checked = attn_check(ctx, &q.p, want_lse, want_probs, &chosen);
    if (!documented(checked)) {
        violation("attn_check gave a status that is not the library's", &q, checked,
                  attn_last_error(ctx));
    }
    if (checked != ATTN_SUCCESS && !*attn_last_error(ctx)) {
        violation("attn_check failed without a message", &q, checked, "");
    }
    if (sizes == SIZES_REFUSED && checked == ATTN_SUCCESS) {
        violation("attn_check accepted an INT32_MIN size or head dim", &q, checked, "");
    }
    const int tuning_refused = tuned && checked == ATTN_ERR_INVALID_VALUE &&
                               strstr(attn_last_error(ctx), "attn_context_set_tuning") != NULL;
    if (valid && checked != ATTN_SUCCESS && !tuning_refused) {
        violation("attn_check refused a valid request", &q, checked, attn_last_error(ctx));
    }
    const attn_algo expected = q.p.algo != ATTN_ALGO_AUTO ? q.p.algo
                               : !want_probs              ? ATTN_ALGO_FUSED
                               : checked == ATTN_SUCCESS  ? auto_algo_for_probs(ctx, &q, want_lse)
                                                          : ATTN_ALGO_AUTO;
    if (checked == ATTN_SUCCESS && chosen != expected) {
        violation("attn_check chose another algorithm", &q, checked, "");
    }

    attn_algo again_algo = ATTN_ALGO_AUTO;
    const attn_status again = attn_check(ctx, &q.p, want_lse, want_probs, &again_algo);
    if (again != checked || (checked == ATTN_SUCCESS && again_algo != chosen)) {
        violation("attn_check answered the same request differently", &q, again, "");
    }

    attn_params stale = q.p;
    stale.struct_size = q.seed & 1 ? stale.struct_size - 4 : stale.struct_size + 8;
    const attn_status refused = attn_check(ctx, &stale, want_lse, want_probs, NULL);
    if (refused != ATTN_ERR_INVALID_VALUE) {
        violation("params with another struct_size were not refused as INVALID_VALUE", &q, refused,
                  attn_last_error(ctx));
    }

    if (checked != ATTN_SUCCESS) {
        const uint32_t outputs =
            (want_lse ? ATTN_PLAN_LSE : 0) | (want_probs ? ATTN_PLAN_PROBS : 0);
        attn_plan_t plan = (attn_plan_t)(uintptr_t)1; /* must come back NULL */
        const attn_status st = attn_plan_create(ctx, &q.p, outputs, &plan);
        if (st != checked || plan != NULL) {
            violation("attn_plan_create and attn_check disagree", &q, st, attn_last_error(ctx));
        }
    }
    attn_context_set_tuning(ctx, NULL);
    return 0;
}
