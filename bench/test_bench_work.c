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
    if (bench_flops(&p, NULL) != want) {
        printf("FAIL flops: %.0f, want %.0f\n", bench_flops(&p, NULL), want);
        failed++;
    } else {
        passed++;
    }

    /* Windows, key padding and varlen against a brute force over every pair. */
    const int32_t cu_q[4] = {0, 7, 7, 20}, cu_k[4] = {0, 11, 14, 14}, key_lengths[3] = {9, 0, 20};
    const bench_lengths lengths = {key_lengths, cu_q, cu_k};
    const int windows[][3] = {{0, -1, -1}, {1, 3, 0}, {1, -1, 2}, {1, 2, 5}, {1, 0, 0}};
    for (int m = 0; m < 3; m++) {
        for (int w = 0; w < 5; w++) {
            for (int flags = 0; flags < 4; flags++) {
                attn_params_init(&p, 3, 2, 13, 20, 8);
                p.mask = masks[m];
                p.window = (attn_window){windows[w][0], windows[w][1], windows[w][2]};
                p.key_padding = flags & 1;
                p.varlen = (flags & 2) != 0;
                uint64_t got = 0, brute = 0;
                for (int32_t b = 0; b < 3; b++) {
                    got += bench_sequence_pairs(&p, &lengths, b);
                    int64_t lq = p.varlen ? cu_q[b + 1] - cu_q[b] : 13;
                    int64_t lk = p.varlen ? cu_k[b + 1] - cu_k[b] : 20;
                    for (int64_t i = 0; i < lq; i++) {
                        int64_t d = m == 1 ? i : i + lk - lq;
                        for (int64_t j = 0; j < lk; j++) {
                            int visible = (!p.key_padding || j < key_lengths[b]) &&
                                          (m == 0 || j <= d) &&
                                          (!p.window.enabled || p.window.left < 0 ||
                                           j >= d - p.window.left) &&
                                          (!p.window.enabled || p.window.right < 0 ||
                                           j <= d + p.window.right);
                            brute += (uint64_t)visible;
                        }
                    }
                }
                if (got != brute) {
                    printf("FAIL pairs mask %d window %d flags %d: %llu, want %llu\n", m, w, flags,
                           (unsigned long long)got, (unsigned long long)brute);
                    failed++;
                } else {
                    passed++;
                }
            }
        }
    }

    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
