/* The status rule of include/attn_cl.h's attn_context_set_tuning on device
 * limits this machine may not have: a value from an override (the context's
 * spec, ATTN_CL_TUNE) that the device cannot take is the caller's,
 * ATTN_ERR_INVALID_VALUE with a message naming that override; only the
 * built-in table's own choice failing a valid request is
 * ATTN_ERR_UNSUPPORTED.
 *
 * It links the library's test build (lib/fault_injection.h), which exposes
 * the context: the test lowers the context's record of the device's local
 * memory to 512 KiB, the device the mismatch was found on (PoCL here reports
 * 1 MiB or 512 KiB depending on the machine). attn_check runs the forward's
 * validation and dispatch and builds nothing. */
#include "attn_internal.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

static void report(const char *name, int ok, const char *detail) {
    printf("%-64s %s  %s\n", name, detail, ok ? "PASS" : "FAIL");
    failures += !ok;
}

/* attn_check of a fused D512 forward under `context_spec` and ATTN_CL_TUNE
 * `env_spec` (NULL: none): the status, and a message that contains `named`
 * and not `absent` (either NULL: not checked). */
static void expect(attn_context_t ctx, const char *name, const char *context_spec,
                   const char *env_spec, attn_status want, const char *named, const char *absent) {
    attn_params p;
    attn_params_init(&p, 1, 2, 9, 13, 512);
    p.algo = ATTN_ALGO_FUSED;
    attn_context_set_tuning(ctx, context_spec);
    if (env_spec) {
        setenv("ATTN_CL_TUNE", env_spec, 1);
    }
    attn_status st = attn_check(ctx, &p, 1, 0, NULL);
    unsetenv("ATTN_CL_TUNE");
    attn_context_set_tuning(ctx, NULL);
    const char *message = st == ATTN_SUCCESS ? "" : attn_last_error(ctx);
    const int ok =
        st == want && (!named || strstr(message, named)) && (!absent || !strstr(message, absent));
    char detail[400];
    snprintf(detail, sizeof detail, "%s%s%.300s", attn_status_name(st), *message ? ": " : "",
             message);
    report(name, ok, detail);
}

int main(void) {
    attn_context_t ctx = test_context_create();
    /* The gpu shape with rows=1 and wg = tile_k = 256 cannot shrink (its key
     * tile is one group's worth): at head_dim 512 it needs
     * 4 * (513 + 256 * 513 + 257 + 256) = 529,416 bytes of local memory. */
    static const char big[] = "variant=gpu,rows=1,wg=256,tile_k=256";
    ctx->info.local_mem_bytes = 512 * 1024;

    expect(ctx, "attn_context_set_tuning: 529,416 B > 512 KiB -> INVALID_VALUE", big, NULL,
           ATTN_ERR_INVALID_VALUE, "attn_context_set_tuning \"variant=gpu", "ATTN_CL_TUNE");
    expect(ctx, "ATTN_CL_TUNE: 529,416 B > 512 KiB -> INVALID_VALUE", NULL, big,
           ATTN_ERR_INVALID_VALUE, "ATTN_CL_TUNE \"variant=gpu", "attn_context_set_tuning");
    /* The context's spec sets only a key the refusal does not depend on:
     * the message names the environment's alone. */
    expect(ctx, "ATTN_CL_TUNE over a context's unroll=2 -> names ATTN_CL_TUNE", "unroll=2", big,
           ATTN_ERR_INVALID_VALUE, "ATTN_CL_TUNE \"variant=gpu", "attn_context_set_tuning");
    /* Halving brings an override's tiles within the limit: no refusal. */
    expect(ctx, "variant=gpu,rows=16,wg=128,tile_k=64 shrinks to fit 512 KiB",
           "variant=gpu,rows=16,wg=128,tile_k=64", NULL, ATTN_SUCCESS, NULL, NULL);
    expect(ctx, "the table's own entry at 512 KiB", NULL, NULL, ATTN_SUCCESS, NULL, NULL);
    /* Naming only a kernel shape takes that shape's defaults for the keys
     * left out, whichever shape the device's entry has (a GPU's wg 128 once
     * refused variant=cpu, a CPU's wg 1 variant=gpu). */
    expect(ctx, "variant=cpu alone: the cpu shape's defaults", "variant=cpu", NULL, ATTN_SUCCESS,
           NULL, NULL);
    expect(ctx, "variant=gpu alone: the gpu shape's defaults", "variant=gpu", NULL, ATTN_SUCCESS,
           NULL, NULL);
    expect(ctx, "ATTN_CL_TUNE variant=cpu,rows=2 over a context's variant=gpu", "variant=gpu",
           "variant=cpu,rows=2", ATTN_SUCCESS, NULL, NULL);
    expect(ctx, "variant=cpu,wg=4: a named key still refused", "variant=cpu,wg=4", NULL,
           ATTN_ERR_INVALID_VALUE, "attn_context_set_tuning \"variant=cpu,wg=4\"", NULL);

    attn_context_destroy(ctx);
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
