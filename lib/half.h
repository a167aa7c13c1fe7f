/* Conversions between float and the 16-bit storage types (half.c), for the
 * CPU reference and the public array conversions. */
#ifndef ATTN_HALF_H
#define ATTN_HALF_H

#include "attn_cl.h"

#include <stddef.h>
#include <stdint.h>

float attn_half_to_float(uint16_t h);
/* Rounds to nearest even; overflow gives infinity, NaN stays NaN. */
uint16_t attn_float_to_half(float f);
float attn_bfloat_to_float(uint16_t b);
uint16_t attn_float_to_bfloat(float f);

/* Element `index` of an array of the storage type, as a double; and a value
 * stored there, rounded to float and then to the storage type. */
double attn_load_element(const void *base, size_t index, attn_dtype dtype);
void attn_store_element(void *base, size_t index, attn_dtype dtype, double value);

#endif
