/* Wall-clock timing and the median of repeated measurements. */
#ifndef BENCH_TIME_H
#define BENCH_TIME_H

#include <stddef.h>

/* Milliseconds on a monotonic clock (CLOCK_MONOTONIC): only differences mean
 * anything. */
double bench_now_ms(void);

/* The median of `n` > 0 values; reorders `values`. */
double bench_median(double *values, size_t n);

#endif
