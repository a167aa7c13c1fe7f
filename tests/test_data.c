/* Random data, sentinel buffers, timing and the 16-bit storage types the tests share. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- Data ----------------------------------------------------------------- */

void test_rng_seed(test_rng *rng, uint64_t seed) {
    rng->state = seed;
}

/* splitmix64: tiny, seedable, and the same sequence on every platform. */
static uint64_t rng_next(test_rng *rng) {
    uint64_t z = (rng->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float test_rng_float(test_rng *rng, float lo, float hi) {
    double unit = (double)(rng_next(rng) >> 11) * 0x1.0p-53;
    return (float)(lo + (hi - lo) * unit);
}

void test_fill_uniform(test_rng *rng, float *data, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) {
        data[i] = test_rng_float(rng, lo, hi);
    }
}

void *test_alloc_sentinel(size_t bytes) {
    void *data = malloc(bytes ? bytes : 1);
    if (!data) {
        fprintf(stderr, "test: out of host memory (%zu bytes)\n", bytes);
        exit(1);
    }
    memset(data, TEST_SENTINEL_BYTE, bytes);
    return data;
}

int test_is_sentinel(const void *data, size_t bytes) {
    const unsigned char *c = data;
    for (size_t i = 0; i < bytes; i++) {
        if (c[i] != TEST_SENTINEL_BYTE) {
            return 0;
        }
    }
    return 1;
}

int test_quick(void) {
    const char *env = getenv("ATTN_TEST_QUICK");
    return env && *env && strcmp(env, "0") != 0;
}

double test_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- Storage types ------------------------------------------------------------- */

size_t test_dtype_size(attn_dtype dtype) {
    return dtype == ATTN_DTYPE_F32 ? sizeof(float) : sizeof(uint16_t);
}

const char *test_dtype_name(attn_dtype dtype) {
    switch (dtype) {
    case ATTN_DTYPE_F32:
        return "f32";
    case ATTN_DTYPE_F16:
        return "f16";
    case ATTN_DTYPE_BF16:
        return "bf16";
    }
    return "?";
}

void *test_to_storage(attn_dtype dtype, const float *in, size_t n) {
    void *out = test_alloc_sentinel(n * test_dtype_size(dtype));
    if (dtype == ATTN_DTYPE_F16) {
        attn_f32_to_f16(in, out, n);
    } else if (dtype == ATTN_DTYPE_BF16) {
        attn_f32_to_bf16(in, out, n);
    } else {
        memcpy(out, in, n * sizeof(float));
    }
    return out;
}

void test_from_storage(attn_dtype dtype, const void *in, float *out, size_t n) {
    if (dtype == ATTN_DTYPE_F16) {
        attn_f16_to_f32(in, out, n);
    } else if (dtype == ATTN_DTYPE_BF16) {
        attn_bf16_to_f32(in, out, n);
    } else {
        memmove(out, in, n * sizeof(float));
    }
}

void test_round_to_storage(attn_dtype dtype, float *data, size_t n) {
    if (dtype == ATTN_DTYPE_F32) {
        return;
    }
    void *stored = test_to_storage(dtype, data, n);
    test_from_storage(dtype, stored, data, n);
    free(stored);
}
