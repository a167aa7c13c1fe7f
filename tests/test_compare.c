/* Comparison of an output with the reference: the max-error bound and the NMSE. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- Comparison --------------------------------------------------------------- */

test_result test_compare_rtol(const test_shape *s, const float *out, const float *ref,
                              const float *naive, size_t buffer_elems, double naive_rtol) {
    test_result r = {0};
    double naive_max = 0.0, ref_max = 0.0, err2 = 0.0, naive_err2 = 0.0, ref2 = 0.0;
    unsigned char *covered = buffer_elems ? calloc(buffer_elems, 1) : NULL;
    size_t logical = 0;
    for (int64_t b = 0; b < s->batch; b++) {
        for (int64_t h = 0; h < s->heads; h++) {
            for (int64_t i = 0; i < s->seq; i++) {
                for (int64_t d = 0; d < s->inner; d++, logical++) {
                    size_t at = test_element_at(s, b, h, i, d);
                    if (covered) {
                        covered[at] = 1;
                    }
                    double o = out[at], f = ref[at], n = naive[at];
                    if (isinf(f) && f < 0) {
                        r.mismatch += !(isinf(o) && o < 0);
                        r.naive_disagrees |= !(isinf(n) && n < 0);
                        continue;
                    }
                    if (!isfinite(n)) {
                        r.naive_disagrees = 1;
                        continue;
                    }
                    /* naive_fp32's error counts whatever the output holds:
                     * a non-finite output must not hide that naive_fp32
                     * is wrong too (scores past FLT_MAX: it gives 0). */
                    naive_max = fmax(naive_max, fabs(n - f));
                    ref_max = fmax(ref_max, fabs(f));
                    naive_err2 += (n - f) * (n - f);
                    ref2 += f * f;
                    if (!isfinite(o)) {
                        r.mismatch++;
                        continue;
                    }
                    double err = fabs(o - f);
                    if (err > r.max_err) {
                        r.max_err = err;
                        r.worst = logical;
                    }
                    err2 += (o - f) * (o - f);
                }
            }
        }
    }
    if (covered) {
        for (size_t at = 0; at < buffer_elems; at++) {
            if (!covered[at] && !test_is_sentinel(out + at, sizeof *out)) {
                r.gaps_written++;
            }
        }
        free(covered);
    }
    /* An all-zero reference (every row masked) leaves nothing to normalize
     * by: the squared error itself must then be tiny. */
    double norm = ref2 > 0.0 ? ref2 : 1.0;
    r.nmse = err2 / norm;
    r.nmse_bound = 4.0 * naive_err2 / norm + TEST_NMSE_FLOOR;
    r.bound = 2.0 * naive_max + TEST_ATOL * fmax(1.0, ref_max);
    r.naive_disagrees |= !(naive_max <= naive_rtol * fmax(1.0, ref_max));
    r.ok = r.max_err <= r.bound && r.nmse <= r.nmse_bound && r.mismatch == 0 &&
           r.gaps_written == 0 && !r.naive_disagrees;
    return r;
}

test_result test_compare(const test_shape *s, const float *out, const float *ref,
                         const float *naive, size_t buffer_elems) {
    return test_compare_rtol(s, out, ref, naive, buffer_elems, TEST_NAIVE_RTOL);
}

void test_format_result(char *buf, size_t size, const char *name, const test_result *r) {
    int n = snprintf(buf, size, "%s err %.2e <= %.2e nmse %.1e <= %.1e", name, r->max_err, r->bound,
                     r->nmse, r->nmse_bound);
    if (n > 0 && (size_t)n < size && r->mismatch) {
        n += snprintf(buf + n, size - (size_t)n, " %zu non-finite mismatches", r->mismatch);
    }
    if (n > 0 && (size_t)n < size && r->gaps_written) {
        n += snprintf(buf + n, size - (size_t)n, " %zu gap elements written", r->gaps_written);
    }
    if (n > 0 && (size_t)n < size && r->naive_disagrees) {
        snprintf(buf + n, size - (size_t)n, " NAIVE FP32 AND REFERENCE DISAGREE");
    }
}
