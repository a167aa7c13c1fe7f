#include "bench_data.h"

#include <math.h>

/* splitmix64: tiny, fast and good enough for test inputs. */
static uint64_t next_u64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void bench_fill_random(float *x, size_t n, uint64_t *state) {
    for (size_t i = 0; i < n; i++) {
        /* 24 random bits: exactly representable in a float. */
        x[i] = (float)(next_u64(state) >> 40) * (2.0f / 16777216.0f) - 1.0f;
    }
}

double bench_max_abs_diff(const float *a, const float *b, size_t n) {
    double max = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (isnan(d)) {
            return NAN;
        }
        if (d > max) {
            max = d;
        }
    }
    return max;
}

size_t bench_elements(int64_t a, int64_t b, int64_t c, int64_t d) {
    int64_t f[4] = {a, b, c, d};
    size_t n = 1;
    for (int i = 0; i < 4; i++) {
        if (f[i] <= 0) {
            return 0;
        }
        if ((size_t)f[i] > SIZE_MAX / n) {
            return 0;
        }
        n *= (size_t)f[i];
    }
    return n;
}
