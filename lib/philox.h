/* The dropout mask's generator on the host (philox.c): Philox-4x32-10 and
 * the keep rule of attn_cl.h's dropout fields. kernels/common.cl computes
 * the same bits on the device (philox4x32_10, dropout_keep); the CPU
 * reference and the tests draw the mask through these. Depends on nothing
 * but <stdint.h>, so tests compile it in. */
#ifndef ATTN_PHILOX_H
#define ATTN_PHILOX_H

#include <stdint.h>

/* Philox-4x32-10 (ten rounds) of counter ctr under key: four uniform
 * 32-bit words in out (which may be ctr). */
void attn_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* A key keeps when its 16-bit draw is >= this: round(p * 2^16), capped
 * at 2^16 - 1 (p in [0, 1), validated before). */
uint32_t attn_dropout_threshold(float p);

/* The four words of keys 8 * (j / 8) .. + 7 of query row i of stream
 * b * heads_q + h: the counter (j / 8, i, stream, low word of offset) under
 * the key (seed low, seed high ^ offset high). Key j draws the 16 bits
 * (word (j % 8) / 2) >> (16 * (j % 2)): low half first. */
void attn_dropout_words(uint64_t seed, uint64_t offset, uint32_t stream, uint32_t i, uint32_t j,
                        uint32_t out[4]);

/* Whether key j of query row i of `stream` is kept. */
int attn_dropout_keep(uint64_t seed, uint64_t offset, uint32_t stream, uint32_t i, uint32_t j,
                      uint32_t threshold);

#endif
