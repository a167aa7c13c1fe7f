/* The factors the fused kernels scale a softmax exponent by. */
#include "attn_internal.h"

#include <math.h>

#define LOG2_E 1.4426950408889634

/* The kernels compute a weight as exp2(((s/2 - m/2) * hi) * lo): halving
 * keeps s - m finite for scores up to +-FLT_MAX, and splitting 2c into a
 * mantissa (hi, at most 8) and a power of two (lo, a normal float) keeps
 * every bit of c when the scale is subnormal or c = |scale| * log2(e) would
 * overflow. Multiplying by the power of two last rounds only once more, and
 * only where the result is subnormal (a weight of 1 either way) or
 * overflows (a weight of 0 either way). */
attn_softmax_exponent attn_softmax_exponent_of(const attn_params *p, int modifiers) {
    attn_softmax_exponent e;
    /* Modified scores are in natural units; raw q.k carries the scale. */
    e.unit = modifiers ? 1.0f : fabsf(p->scale);
    double two_c = 2.0 * (double)e.unit * LOG2_E;
    /* Only a guard: the smallest subnormal scale gives 2^-147. A factor of 0
     * would turn a -inf score into NaN rather than weight 0. */
    if (two_c < 0x1p-150)
        two_c = 0x1p-150;
    int exponent;
    (void)frexp(two_c, &exponent);
    if (exponent > 127)
        exponent = 127;
    if (exponent < -126)
        exponent = -126;
    e.lo = ldexpf(1.0f, exponent);
    e.hi = (float)ldexp(two_c, -exponent);
    return e;
}
