/* The test programs' device helpers; the rest of test_util.h lives in
 * test_data.c, test_layouts.c, test_naive.c, test_compare.c, test_problem.c
 * and test_cases.c. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- Devices ------------------------------------------------------------------ */

attn_context_t test_context_create(void) {
    attn_context_t ctx = NULL;
    attn_status st = attn_context_create(NULL, &ctx);
    if (st == ATTN_ERR_NO_DEVICE) {
        printf("SKIP: no OpenCL device: %s\n", attn_last_error(NULL));
        exit(TEST_SKIP);
    }
    if (st != ATTN_SUCCESS) {
        printf("FAIL: attn_context_create: %s: %s\n", attn_status_name(st), attn_last_error(NULL));
        exit(1);
    }
    attn_device_info info;
    if (attn_context_device_info(ctx, &info) == ATTN_SUCCESS) {
        printf("device %d:%d %s (%s)\n", info.platform_index, info.device_index, info.device_name,
               info.platform_name);
    }
    return ctx;
}

static int sweep_probs;

void test_sweep_begin(int argc, char **argv, attn_algo *algo) {
    if (argc < 2 || argc > 3 ||
        (strcmp(argv[1], "three-kernel") != 0 && strcmp(argv[1], "fused") != 0) ||
        (argc == 3 && strcmp(argv[2], "probs") != 0)) {
        fprintf(stderr, "usage: %s three-kernel|fused [probs]\n", argv[0]);
        exit(2);
    }
    *algo = strcmp(argv[1], "fused") == 0 ? ATTN_ALGO_FUSED : ATTN_ALGO_THREE_KERNEL;
    sweep_probs = *algo == ATTN_ALGO_THREE_KERNEL || argc == 3;
    const char *tune = getenv("ATTN_CL_TUNE");
    printf("algorithm %s%s%s%s\n", argv[1], sweep_probs ? " with probabilities" : "",
           tune && *tune ? ", ATTN_CL_TUNE=" : "", tune && *tune ? tune : "");
    printf("bound: max|out-ref| <= 2*max|naive_fp32-ref| + %.0e*max(1,max|ref|), "
           "NMSE <= 4*NMSE(naive_fp32) + %.0e%s\n",
           TEST_ATOL, TEST_NMSE_FLOOR, test_quick() ? " (quick subset)" : "");
}

int test_sweep_probs(void) {
    return sweep_probs;
}

int test_ok(attn_context_t ctx, attn_status status, const char *what) {
    if (status == ATTN_SUCCESS) {
        return 1;
    }
    printf("FAIL: %s: %s: %s\n", what, attn_status_name(status), attn_last_error(ctx));
    return 0;
}
