/* SHA-256 (FIPS 180-4), for the keys and checksums of the kernel binary
 * cache (lib/binary_cache.c): small enough to own rather than depend on. */
#ifndef ATTN_SHA256_H
#define ATTN_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define ATTN_SHA256_BYTES 32

typedef struct attn_sha256 {
    uint32_t state[8];
    uint64_t length; /* bytes hashed so far */
    unsigned char block[64];
    size_t used; /* bytes of `block` filled */
} attn_sha256;

void attn_sha256_init(attn_sha256 *h);
void attn_sha256_update(attn_sha256 *h, const void *data, size_t size);
void attn_sha256_final(attn_sha256 *h, unsigned char digest[ATTN_SHA256_BYTES]);

/* The digest of one buffer. */
void attn_sha256_of(const void *data, size_t size, unsigned char digest[ATTN_SHA256_BYTES]);

#endif
