/* Every kernel of the library on tiny edge-tile shapes, small enough to run
 * under a device-side checker: tests/oclgrind_check.sh runs this program
 * under oclgrind (out-of-bounds accesses, data races, uninitialized values,
 * API misuse), one meson test per path and fused kernel variant.
 *
 * argv[1] names the path:
 *   three-kernel  qk_scores, softmax_rows and pv (or their cpu shape,
 *                 three_cpu_pack + qk_scores_cpu, softmax_rows_cpu, pv_cpu:
 *                 whichever ATTN_CL_TUNE selects) through the host call, and
 *                 commit_outputs through the device-memory call (with LSE,
 *                 and in head chunks under ATTN_CL_SCRATCH_LIMIT);
 *   fused         flash_cpu_pack_k + flash_cpu, or flash_gpu: whichever
 *                 ATTN_CL_TUNE selects (the meson tests name each variant:
 *                 oclgrind's device claims to be a CPU, a GPU and an
 *                 accelerator at once, so the table alone picks one);
 *   fused-probs   the fused path with probabilities on every host call:
 *                 flash_cpu with its row statistics, then flash_cpu_probs
 *                 (ATTN_CL_TUNE must give the cpu variant).
 *
 * The cases cover each mask, lengths 1, 7, 33 and 40 with Sq != Sk both
 * ways, head dims 1, 8, 31 and 64 (and head_dim_v != head_dim), GQA, the
 * strided layouts, LSE on and off, and every variant (16-bit storage,
 * windows, ALiBi, softcap, bias, keep-mask, key padding, varlen, dropout). Each case runs twice,
 * through the host call and through the device-memory call, and each run is compared with
 * attn_reference under test_util.h's bound (gaps between strided rows must keep their bytes).
 *
 * Usage: test_kernels_checked PATH [--count | --run N]. Without an option
 * every run goes in this process; --count prints the number of runs and
 * --run N does run N alone. The checker needs one forward per process:
 * oclgrind 21.10's uninitialized-value plugin keeps the shadow state of a
 * released buffer and hands it to the next buffer that reuses its index,
 * so a second forward in one process reads stale shadow (false reports,
 * and a crash when the new buffer is larger).
 *
 * ATTN_TEST_REQUIRE_PLATFORM=name fails the run unless the chosen device's
 * platform name contains `name`, so that a checker run cannot silently fall
 * back to another OpenCL device. */
#include "test_runs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A case: a request in test_parse_case's words, and whether it asks for LSE. */
typedef struct checked_case {
    const char *spec;
    int lse;
} checked_case;

static const checked_case cases[] = {
    {"B1 Hq1 Hkv1 Sq1 Sk1 D1 none bhsd", 1},
    {"B1 Hq1 Hkv1 Sq1 Sk1 D8 tl bhsd", 0},
    {"B1 Hq2 Hkv2 Sq7 Sk7 D8 tl bhsd", 1},
    {"B1 Hq2 Hkv1 Sq7 Sk7 D31 br bshd", 0},
    {"B1 Hq2 Hkv1 Sq33 Sk33 D31 br bshd", 1},
    {"B1 Hq1 Hkv1 Sq33 Sk33 D64 none padded", 0},
    /* Sq < Sk: partial last key tile, causal diagonal off the corner. */
    {"B1 Hq1 Hkv1 Sq7 Sk33 D64 tl bhsd", 1},
    {"B1 Hq1 Hkv1 Sq7 Sk33 D31 br padded", 0},
    {"B1 Hq1 Hkv1 Sq1 Sk40 D8 Dv64 br bhsd", 1},
    {"B1 Hq2 Hkv2 Sq7 Sk40 D1 none hbsd", 1},
    /* Sq > Sk: bottom-right masks whole rows (O 0, LSE -inf). */
    {"B1 Hq2 Hkv2 Sq33 Sk7 D8 br bhsd", 1},
    {"B2 Hq1 Hkv1 Sq33 Sk7 D1 tl hbsd", 1},
    {"B1 Hq1 Hkv1 Sq40 Sk1 D31 Dv8 none bhsd", 0},
    {"B1 Hq1 Hkv1 Sq40 Sk33 D64 Dv31 tl bshd", 0},
    {"B2 Hq2 Hkv1 Sq33 Sk1 D8 Dv1 br padded", 1},
    /* Every variant of attn_cl.h, on tiles cut by windows, padding and
     * packed sequences: each kernel's storage loads and stores, modifiers
     * and masks. */
    {"B2 Hq2 Hkv1 Sq7 Sk9 D8 br bshd f16 win=3,1 alibi", 1},
    {"B2 Hq2 Hkv2 Sq9 Sk7 D8 tl padded bf16 softcap=5 bias=2x1 keep=1x2", 1},
    {"B3 Hq2 Hkv1 Sq7 Sk9 D8 none bhsd varlen pad", 1},
    {"B3 Hq2 Hkv2 Sq9 Sk7 D31 Dv8 br bshd varlen bias=1x2 win=2,-1", 0},
    {"B2 Hq1 Hkv1 Sq5 Sk40 D8 none bhsd f16 keep=2x1 pad", 1},
    /* Dropout (refused by the decode kernels: see do_run). */
    {"B2 Hq2 Hkv1 Sq9 Sk13 D8 br bshd f16 drop=0.3,5,7", 1},
    {"B3 Hq2 Hkv2 Sq7 Sk9 D8 none padded varlen pad drop=0.5", 0},
};

static attn_algo algo;
static int fused_probs; /* argv[1] "fused-probs" */

typedef enum call_kind { CALL_HOST, CALL_DEVICE } call_kind;

/* One run: a case through one of the two calls. */
typedef struct checked_run {
    const checked_case *c;
    call_kind call;
    int probs;         /* also the probabilities (host call; fused: with fused-probs) */
    int chunk_by_head; /* ATTN_CL_SCRATCH_LIMIT = one head's scores */
} checked_run;

/* Three-kernel cases run again with one head's scores a chunk: the host
 * call writes O chunk by chunk; the device-memory call stages and commits
 * (without LSE in the first, with it in the second). */
static const checked_case chunked_cases[] = {
    {"B2 Hq2 Hkv1 Sq7 Sk33 D8 br bshd", 0},
    {"B1 Hq3 Hkv3 Sq33 Sk7 D31 Dv8 tl padded", 1},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Run `index` of the path's list; returns 0 past the end. */
static int get_run(size_t index, checked_run *run) {
    const size_t plain = 2 * COUNT(cases);
    const size_t chunked = algo == ATTN_ALGO_THREE_KERNEL ? 2 * COUNT(chunked_cases) : 0;
    if (index < plain) {
        *run = (checked_run){&cases[index / 2], index % 2 ? CALL_DEVICE : CALL_HOST,
                             fused_probs || (index / 2) % 3 == 0, 0};
        return 1;
    }
    if (index < plain + chunked) {
        index -= plain;
        *run = (checked_run){&chunked_cases[index / 2], index % 2 ? CALL_DEVICE : CALL_HOST, 0, 1};
        return 1;
    }
    return 0;
}

/* Runs one forward and compares it with the reference; prints one line and
 * returns whether it passed. */
static int do_run(attn_context_t ctx, const checked_run *run, uint64_t seed) {
    const checked_case *c = run->c;
    attn_params p;
    test_layout layout;
    float qk;
    int quick;
    if (!test_parse_case(c->spec, &p, &layout, &qk, &quick)) {
        return 0;
    }
    p.algo = algo;
    if (p.varlen) {
        test_varlen_totals(&p, seed);
    }
    test_set_layout(&p, layout);
    const int want_probs =
        run->probs && run->call == CALL_HOST && (algo == ATTN_ALGO_THREE_KERNEL || fused_probs);

    char what[200];
    test_describe(what, sizeof what, &p, layout);
    snprintf(what + strlen(what), sizeof what - strlen(what), "%s%s%s", c->lse ? " lse" : "",
             want_probs ? " probs" : "", run->chunk_by_head ? " 1-head chunks" : "");
    const char *call = run->call == CALL_HOST ? "[host]  " : "[device]";

    if (run->chunk_by_head) {
        char limit[32];
        snprintf(limit, sizeof limit, "%zu", (size_t)p.seq_q * (size_t)p.seq_k * sizeof(float));
        setenv("ATTN_CL_SCRATCH_LIMIT", limit, 1);
    } else {
        unsetenv("ATTN_CL_SCRATCH_LIMIT");
    }
    test_problem t;
    if (test_problem_init(&t, &p, seed, qk, c->lse, want_probs) != 0) {
        printf("%s %-60s reference failed  FAIL\n", call, what);
        return 0;
    }
    test_outputs out;
    char detail[600] = "";
    const attn_status status =
        test_run_forward(ctx, &t, run->call == CALL_HOST ? TEST_CALL_HOST : TEST_CALL_DEVICE,
                         c->lse, want_probs, &out, detail, sizeof detail);
    int ok = status == ATTN_SUCCESS;
    const char *tune = getenv("ATTN_CL_TUNE");
    if (p.dropout_p > 0.0f && tune && strstr(tune, "variant=decode")) {
        /* The decode kernels have no dropout and must say so. */
        if (ok) {
            test_outputs_free(&out);
        }
        ok = status == ATTN_ERR_UNSUPPORTED;
        snprintf(detail, sizeof detail, "dropout refused by variant=decode: %s",
                 attn_status_name(status));
    } else if (ok) {
        ok = test_outputs_check(&t, &out, detail, sizeof detail);
        test_outputs_free(&out);
    }
    printf("%s %-60s %s  %s\n", call, what, detail, ok ? "PASS" : "FAIL");
    fflush(stdout);
    unsetenv("ATTN_CL_SCRATCH_LIMIT");
    test_problem_free(&t);
    return ok;
}

static void require_platform(attn_context_t ctx) {
    const char *want = getenv("ATTN_TEST_REQUIRE_PLATFORM");
    if (!want || !*want) {
        return;
    }
    attn_device_info info;
    int ok = attn_context_device_info(ctx, &info) == ATTN_SUCCESS &&
             strstr(info.platform_name, want) != NULL;
    if (!ok) {
        printf("FAIL: the device's platform \"%s\" is not the required \"%s\"\n",
               info.platform_name, want);
        exit(1);
    }
}

static int usage(const char *argv0) {
    fprintf(stderr, "usage: %s three-kernel|fused|fused-probs [--count | --run N]\n", argv0);
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "three-kernel") != 0 && strcmp(argv[1], "fused") != 0 &&
                     strcmp(argv[1], "fused-probs") != 0)) {
        return usage(argv[0]);
    }
    fused_probs = strcmp(argv[1], "fused-probs") == 0;
    algo = strcmp(argv[1], "three-kernel") == 0 ? ATTN_ALGO_THREE_KERNEL : ATTN_ALGO_FUSED;
    size_t total = 0;
    checked_run run;
    while (get_run(total, &run)) {
        total++;
    }
    size_t first = 0, last = total;
    if (argc == 3 && strcmp(argv[2], "--count") == 0) {
        printf("%zu\n", total);
        return 0;
    }
    if (argc == 4 && strcmp(argv[2], "--run") == 0) {
        char *end;
        first = strtoul(argv[3], &end, 10);
        if (*end || first >= total) {
            return usage(argv[0]);
        }
        last = first + 1;
    } else if (argc != 2) {
        return usage(argv[0]);
    }

    attn_context_t ctx = test_context_create();
    require_platform(ctx);
    const char *tune = getenv("ATTN_CL_TUNE");
    printf("algorithm %s%s%s\n", argv[1], tune && *tune ? ", ATTN_CL_TUNE=" : "",
           tune && *tune ? tune : "");
    int failures = 0;
    for (size_t i = first; i < last; i++) {
        get_run(i, &run);
        /* The host and device runs of a case share its data. */
        failures += !do_run(ctx, &run, 1 + i / 2);
    }
    attn_context_destroy(ctx);
    if (last - first > 1) {
        printf("%s: %zu run(s), %d failure(s)\n", failures ? "FAIL" : "PASS", last - first,
               failures);
    }
    return failures ? 1 : 0;
}
