/* Input data for the bench and the comparison of outputs. */
#ifndef BENCH_DATA_H
#define BENCH_DATA_H

#include <stddef.h>
#include <stdint.h>

/* Fills x[0..n) with uniform values in [-1, 1) from a small deterministic
 * generator, so runs with the same seed see the same inputs. */
void bench_fill_random(float *x, size_t n, uint64_t *state);

/* max |a[i] - b[i]|; NaN if any difference is NaN (a NaN must not hide
 * behind a max that skips it). */
double bench_max_abs_diff(const float *a, const float *b, size_t n);

/* a · b · c · d as a size_t; 0 when the product does not fit. */
size_t bench_elements(int64_t a, int64_t b, int64_t c, int64_t d);

#endif
