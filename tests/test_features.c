/* The attention variants (attn_cl.h: GQA, strides, bias, keep-mask, key
 * padding, sliding windows, ALiBi, softcap, varlen, head dims to 512, f16
 * and bf16 storage, dropout) against attn_reference_host, on one algorithm (argv[1]:
 * "three-kernel" or "fused"; ATTN_CL_TUNE picks the fused kernel variant),
 * each alone and in combination, through both attn_forward_host and
 * attn_forward_device.
 *
 * A case is one line of words (test_parse_case in test_util.h says which):
 * "B3 Hq4 Hkv2 Sq40 Sk60 D32 br bshd win=6,0 varlen".
 *
 * Bound (test_util.h): max|out - ref| <= 2 * max|naive_fp32 - ref| + atol,
 * atol = 1e-6 * max(1, max|ref|), NMSE <= 4 * NMSE(naive_fp32) + 1e-10, for
 * O, LSE and (three-kernel) probabilities. ref is the double reference on
 * the stored inputs, unrounded; naive_fp32 rounds its O to the storage type,
 * so with f16 (11-bit significand) and bf16 (8-bit) the bound is about one
 * rounding of O, about 5e-4 and 4e-3 of |O|. */
#include "test_runs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const cases[] = {
    /* Each feature alone, under each mask, on shapes that break tiling. */
    "B2 Hq4 Hkv2 Sq33 Sk65 D31 none bhsd bias=2x4",
    "B2 Hq4 Hkv2 Sq65 Sk33 D16 br padded bias=1x4",
    "B3 Hq2 Hkv1 Sq7 Sk100 D8 tl bshd bias=3x1",
    "B1 Hq3 Hkv3 Sq100 Sk100 D64 none bhsd bias=1x1",
    "B2 Hq2 Hkv2 Sq33 Sk65 D31 none bhsd keep=2x2",
    "B2 Hq4 Hkv1 Sq64 Sk64 D32 br bshd keep=1x1",
    "B1 Hq2 Hkv2 Sq100 Sk7 D16 tl padded keep=1x2",
    "B4 Hq2 Hkv2 Sq17 Sk70 D31 none bhsd pad",
    "B3 Hq2 Hkv1 Sq70 Sk17 D8 br bshd pad",
    "B1 Hq2 Hkv2 Sq100 Sk100 D32 none bhsd win=8,8",
    "B1 Hq2 Hkv2 Sq100 Sk100 D32 none bhsd win=-1,0",
    "B1 Hq2 Hkv2 Sq64 Sk257 D16 tl bhsd win=20,-1",
    "B1 Hq2 Hkv2 Sq257 Sk64 D16 br bshd win=5,0",
    "B2 Hq2 Hkv1 Sq33 Sk65 D31 br padded win=0,3",
    "B1 Hq2 Hkv2 Sq7 Sk100 D8 none bhsd win=3,2",
    /* Extents up to INT32_MAX (as unbounded as -1; once overflowed diag + R). */
    "B1 Hq2 Hkv2 Sq7 Sk9 D8 br bhsd f16 win=-1,2147483647 softcap=5",
    "B1 Hq2 Hkv1 Sq9 Sk7 D8 none bshd win=2147483647,2147483647",
    "B1 Hq4 Hkv4 Sq100 Sk100 D64 none bhsd alibi",
    "B1 Hq4 Hkv2 Sq65 Sk33 D16 br bshd alibi",
    "B1 Hq2 Hkv2 Sq100 Sk100 D64 none bhsd softcap=30 qk=30",
    "B1 Hq2 Hkv2 Sq33 Sk65 D31 tl bhsd softcap=5",
    "B3 Hq4 Hkv2 Sq40 Sk50 D16 none bhsd varlen",
    "B3 Hq4 Hkv2 Sq40 Sk50 D16 br bshd varlen",
    "B4 Hq2 Hkv1 Sq33 Sk17 D31 tl padded varlen",
    /* Head sizes: up to 512, and head_dim_v != head_dim. */
    "B1 Hq2 Hkv2 Sq64 Sk64 D512 none bhsd",
    "B1 Hq2 Hkv1 Sq33 Sk65 D192 Dv128 br bhsd",
    "B1 Hq1 Hkv1 Sq17 Sk33 D320 Dv512 tl bshd",
    /* 16-bit storage. */
    "B2 Hq4 Hkv2 Sq65 Sk33 D64 none bhsd f16",
    "B2 Hq4 Hkv2 Sq33 Sk65 D31 br bshd f16",
    "B1 Hq2 Hkv2 Sq100 Sk100 D64 tl padded bf16",
    "B2 Hq2 Hkv1 Sq7 Sk100 D8 none hbsd bf16",
    "B1 Hq2 Hkv2 Sq64 Sk64 D96 Dv80 br bhsd f16 qk=30",
    /* Combinations. */
    "B3 Hq4 Hkv2 Sq40 Sk60 D32 br bshd win=6,0 varlen",
    "B3 Hq4 Hkv1 Sq33 Sk65 D31 tl bshd bf16 softcap=20 pad",
    "B2 Hq4 Hkv2 Sq33 Sk65 D16 br padded f16 alibi bias=2x1 keep=1x4",
    "B3 Hq2 Hkv2 Sq40 Sk40 D64 tl bhsd varlen pad alibi win=10,-1",
    "B2 Hq6 Hkv2 Sq100 Sk257 D80 none bshd bf16 win=30,30 keep=2x6 softcap=10",
    "B2 Hq2 Hkv2 Sq257 Sk100 D128 br bhsd varlen f16 bias=1x2",
    ("B3 Hq4 Hkv2 Sq9 Sk13 D16 br padded f16 alibi bias=3x1 keep=1x4 pad varlen win=4,1 "
     "softcap=8 quick"),
    /* Dropout, alone and with the features that hide keys (the decode
     * shapes refuse it: see run_case). */
    "B2 Hq4 Hkv2 Sq33 Sk65 D31 none bhsd drop=0.1",
    "B2 Hq4 Hkv2 Sq65 Sk33 D16 br bshd drop=0.5,7,3",
    "B1 Hq2 Hkv2 Sq100 Sk100 D64 tl padded f16 drop=0.3,1,18446744073709551615",
    "B3 Hq4 Hkv2 Sq40 Sk50 D16 br bshd varlen bf16 drop=0.2,123,456 quick",
    "B2 Hq2 Hkv1 Sq7 Sk100 D8 none hbsd keep=2x2 pad alibi win=20,5 drop=0.9",
    "B1 Hq2 Hkv1 Sq33 Sk65 D96 Dv80 tl bhsd bias=1x2 softcap=10 drop=0.05,18446744073709551615,9",
};

/* The decode kernels have no dropout: under variant=decode a dropout case
 * must be refused with ATTN_ERR_UNSUPPORTED. */
static int decode_tuning(void) {
    const char *tune = getenv("ATTN_CL_TUNE");
    return tune && strstr(tune, "variant=decode") != NULL;
}

static int failures;

static void run_case(attn_context_t ctx, attn_algo algo, const char *text, uint64_t seed) {
    attn_params p;
    test_layout layout;
    float qk;
    int quick;
    if (!test_parse_case(text, &p, &layout, &qk, &quick)) {
        failures++;
        return;
    }
    if (test_quick() && !quick) {
        return;
    }
    p.algo = algo;
    if (p.varlen) {
        test_varlen_totals(&p, seed);
    }
    test_set_layout(&p, layout);
    const int want_probs = test_sweep_probs();
    test_problem t;
    if (test_problem_init(&t, &p, seed, qk, 1, want_probs) != 0) {
        printf("%s  FAIL (reference)\n", text);
        failures++;
        return;
    }
    char desc[256];
    test_describe(desc, sizeof desc, &t.p, layout);
    printf("%s\n", desc);
    const test_call calls[2] = {TEST_CALL_HOST, TEST_CALL_DEVICE};
    for (int c = 0; c < 2; c++) {
        test_outputs out;
        char line[640] = "";
        const double start = test_seconds();
        const attn_status status =
            test_run_forward(ctx, &t, calls[c], 1, want_probs, &out, line, sizeof line);
        int ok = status == ATTN_SUCCESS;
        const double ms = 1e3 * (test_seconds() - start);
        if (t.p.dropout_p > 0.0f && decode_tuning()) {
            if (ok) {
                test_outputs_free(&out);
            }
            ok = status == ATTN_ERR_UNSUPPORTED;
            snprintf(line, sizeof line,
                     "dropout under variant=decode: %s (want "
                     "ATTN_ERR_UNSUPPORTED)",
                     attn_status_name(status));
        } else if (ok) {
            ok = test_outputs_check(&t, &out, line, sizeof line);
            test_outputs_free(&out);
        }
        printf("  %-6s %7.1f ms  %s  %s\n", test_call_name(calls[c]), ms, line,
               ok ? "PASS" : "FAIL");
        failures += !ok;
    }
    fflush(stdout);
    test_problem_free(&t);
}

int main(int argc, char **argv) {
    attn_algo algo;
    test_sweep_begin(argc, argv, &algo);
    attn_context_t ctx = test_context_create();
    const double start = test_seconds();
    const size_t count = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < count; i++) {
        run_case(ctx, algo, cases[i], 100 + i);
    }
    attn_context_destroy(ctx);
    printf("%s: %zu case(s) x host and device calls, %d failure(s), %.1f s\n",
           failures ? "FAIL" : "PASS", count, failures, test_seconds() - start);
    return failures ? 1 : 0;
}
