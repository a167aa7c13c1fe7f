/* Checks the work count that attn_bench's GFLOP/s rests on: visible pairs
 * against a brute-force count, and a few values worked out by hand. */
#include "bench_work.h"

#include <stdio.h>

static uint64_t brute_force_pairs(int32_t seq_q, int32_t seq_k, attn_mask mask) {
    uint64_t pairs = 0;
    for (int64_t i = 0; i < seq_q; i++) {
        for (int64_t j = 0; j < seq_k; j++) {
            int visible = mask == ATTN_MASK_CAUSAL_TOP_LEFT       ? j <= i
                          : mask == ATTN_MASK_CAUSAL_BOTTOM_RIGHT ? j <= i + seq_k - seq_q
                                                                  : 1;
            pairs += (uint64_t)visible;
        }
    }
    return pairs;
}

int main(void) {
    int failed = 0, passed = 0;
    const attn_mask masks[] = {ATTN_MASK_NONE, ATTN_MASK_CAUSAL_TOP_LEFT,
                               ATTN_MASK_CAUSAL_BOTTOM_RIGHT};
    for (int m = 0; m < 3; m++) {
        for (int32_t sq = 1; sq <= 40; sq++) {
            for (int32_t sk = 1; sk <= 40; sk++) {
                uint64_t want = brute_force_pairs(sq, sk, masks[m]);
                uint64_t got = bench_visible_pairs(sq, sk, masks[m]);
                if (got != want) {
                    printf("FAIL pairs mask %d %dx%d: %llu, want %llu\n", (int)masks[m], (int)sq,
                           (int)sk, (unsigned long long)got, (unsigned long long)want);
                    failed++;
                } else {
                    passed++;
                }
            }
        }
    }

    /* Hand-worked: 8 queries, 4 keys, bottom-right: queries 4..7 see 1..4 keys. */
    struct {
        int32_t sq, sk;
        attn_mask mask;
        uint64_t pairs;
    } cases[] = {
        {8, 4, ATTN_MASK_CAUSAL_BOTTOM_RIGHT, 10},
        {4, 8, ATTN_MASK_CAUSAL_TOP_LEFT, 10},
        {4, 8, ATTN_MASK_CAUSAL_BOTTOM_RIGHT, 26},
        {8, 4, ATTN_MASK_CAUSAL_TOP_LEFT, 26},
        {1, 5, ATTN_MASK_CAUSAL_TOP_LEFT, 1},
        {1, 5, ATTN_MASK_CAUSAL_BOTTOM_RIGHT, 5},
        {8192, 8192, ATTN_MASK_CAUSAL_TOP_LEFT, 8192ull * 8193ull / 2},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint64_t got = bench_visible_pairs(cases[c].sq, cases[c].sk, cases[c].mask);
        if (got != cases[c].pairs) {
            printf("FAIL pairs %dx%d mask %d: %llu, want %llu\n", (int)cases[c].sq,
                   (int)cases[c].sk, (int)cases[c].mask, (unsigned long long)got,
                   (unsigned long long)cases[c].pairs);
            failed++;
        } else {
            passed++;
        }
    }

    /* 2 · B · Hq · pairs · (D + Dv) for the default shape at n = 1024. */
    attn_params p;
    attn_params_init(&p, 1, 8, 1024, 1024, 64);
    p.heads_kv = 8;
    p.head_dim_v = 64;
    double want = 2.0 * 8 * 1024.0 * 1024.0 * 128.0;
    if (bench_flops(&p) != want) {
        printf("FAIL flops: %.0f, want %.0f\n", bench_flops(&p), want);
        failed++;
    } else {
        passed++;
    }

    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
