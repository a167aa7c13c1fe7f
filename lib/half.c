/* IEEE half and bfloat16 from and to float, bit by bit, so that the host
 * rounds exactly as the kernels' vstore_half_rte and bf16 stores do. */
#include "half.h"
#include "attn_internal.h"

#include <math.h>
#include <string.h>

static uint32_t float_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    return x;
}

static float bits_float(uint32_t x) {
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

float attn_half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    if (exponent == 0) { /* zero or subnormal: mantissa * 2^-24, exact in float */
        const float magnitude = ldexpf((float)mantissa, -24);
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 31) /* infinity or NaN */
        return bits_float(sign | 0x7f800000u | (mantissa << 13));
    return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

uint16_t attn_float_to_half(float f) {
    const uint32_t x = float_bits(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t magnitude = x & 0x7fffffffu;
    if (magnitude > 0x7f800000u) /* NaN: quiet, keeping the top payload bits */
        return (uint16_t)(sign | 0x7e00u | ((magnitude >> 13) & 0x1ffu));
    if (magnitude >= 0x477ff000u) /* >= 65520 rounds past 65504: infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (magnitude < 0x38800000u) { /* below 2^-14: a multiple of 2^-24, rounded to even */
        const float scaled = bits_float(magnitude) * 16777216.0f; /* exact: a power of 2 */
        return (uint16_t)(sign | (uint16_t)lrintf(scaled));
    }
    uint32_t h = (((magnitude >> 23) - 112u) << 10) | ((magnitude >> 13) & 0x3ffu);
    const uint32_t rest = magnitude & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
        h++; /* a carry into the exponent is the right encoding */
    return (uint16_t)(sign | h);
}

float attn_bfloat_to_float(uint16_t b) {
    return bits_float((uint32_t)b << 16);
}

uint16_t attn_float_to_bfloat(float f) {
    const uint32_t x = float_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN: quiet */
        return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

double attn_load_element(const void *base, size_t index, attn_dtype dtype) {
    switch (dtype) {
    case ATTN_DTYPE_F16:
        return attn_half_to_float(((const uint16_t *)base)[index]);
    case ATTN_DTYPE_BF16:
        return attn_bfloat_to_float(((const uint16_t *)base)[index]);
    default:
        return ((const float *)base)[index];
    }
}

void attn_store_element(void *base, size_t index, attn_dtype dtype, double value) {
    const float f = (float)value;
    switch (dtype) {
    case ATTN_DTYPE_F16:
        ((uint16_t *)base)[index] = attn_float_to_half(f);
        break;
    case ATTN_DTYPE_BF16:
        ((uint16_t *)base)[index] = attn_float_to_bfloat(f);
        break;
    default:
        ((float *)base)[index] = f;
    }
}

void attn_f32_to_f16(const float *in, uint16_t *out, size_t n) {
    for (size_t i = 0; in && out && i < n; i++)
        out[i] = attn_float_to_half(in[i]);
}

void attn_f16_to_f32(const uint16_t *in, float *out, size_t n) {
    for (size_t i = 0; in && out && i < n; i++)
        out[i] = attn_half_to_float(in[i]);
}

void attn_f32_to_bf16(const float *in, uint16_t *out, size_t n) {
    for (size_t i = 0; in && out && i < n; i++)
        out[i] = attn_float_to_bfloat(in[i]);
}

void attn_bf16_to_f32(const uint16_t *in, float *out, size_t n) {
    for (size_t i = 0; in && out && i < n; i++)
        out[i] = attn_bfloat_to_float(in[i]);
}
