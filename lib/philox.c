/* Philox-4x32-10, the counter-based generator of the dropout mask: a
 * keyed bijection of a 128-bit counter, so that any element's random word
 * is computed directly from its coordinates, in any order, on any device.
 * The constants and the round are the published algorithm's. */
#include "philox.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u /* key schedule: golden ratio */
#define PHILOX_W1 0xBB67AE85u /* sqrt(3) - 1 */

void attn_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        if (round > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        const uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
        const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

uint32_t attn_dropout_threshold(float p) {
    /* p * 2^16 is exact in double; halves round up. */
    const double t = (double)p * 65536.0 + 0.5;
    return t >= 65535.0 ? 0xFFFFu : (uint32_t)t;
}

void attn_dropout_words(uint64_t seed, uint64_t offset, uint32_t stream, uint32_t i, uint32_t j,
                        uint32_t out[4]) {
    const uint32_t ctr[4] = {j >> 3, i, stream, (uint32_t)offset};
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32) ^ (uint32_t)(offset >> 32)};
    attn_philox4x32_10(ctr, key, out);
}

int attn_dropout_keep(uint64_t seed, uint64_t offset, uint32_t stream, uint32_t i, uint32_t j,
                      uint32_t threshold) {
    uint32_t w[4];
    attn_dropout_words(seed, offset, stream, i, j, w);
    const uint32_t draw = (w[(j & 7) >> 1] >> (16 * (j & 1))) & 0xFFFFu;
    return draw >= threshold;
}
