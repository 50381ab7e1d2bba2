/* em_half.h: conversions between f32 and the 16-bit floats (bf16, IEEE f16), by bit
 * manipulation: round to nearest even, NaN and infinity kept, f16 subnormals handled. Integer
 * code, so it vectorises and never goes through libgcc's soft-float _Float16 helpers. */
#ifndef EMBER_HALF_H
#define EMBER_HALF_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

static inline uint16_t em_f32_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, sizeof x);
  if ((x & 0x7f800000u) == 0x7f800000u) /* inf or NaN: keep (make NaN quiet) */
    return (uint16_t)((x >> 16) | ((x & 0xffffu) ? 0x40u : 0));
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

static inline float em_bf16_to_f32(uint16_t h) {
  uint32_t x = (uint32_t)h << 16;
  float f;
  memcpy(&f, &x, sizeof f);
  return f;
}

static inline uint16_t em_f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, sizeof x);
  uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) /* inf or NaN */
    return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  /* rounds to >= 65520: inf */
  if (ax < 0x38800000u) {                                    /* f16 subnormal or zero */
    if (ax < 0x33000000u) return (uint16_t)sign;             /* below half the smallest */
    uint32_t m = (ax & 0x7fffffu) | 0x800000u, e = ax >> 23; /* value = m * 2^(e - 150) */
    uint32_t shift = 126 - e;                                /* to units of 2^-24 */
    uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) r++;
    return (uint16_t)(sign | r);
  }
  uint32_t r = ax - 0x38000000u; /* rebias exponent 127 -> 15 */
  r += 0xfffu + ((r >> 13) & 1u);
  return (uint16_t)(sign | (r >> 13));
}

static inline float em_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
  if (e == 0x1f) {
    x = sign | 0x7f800000u | (m << 13);
  } else if (e == 0) {
    if (!m) {
      x = sign;
    } else { /* subnormal: normalise */
      int s = 0;
      while (!(m & 0x400u)) {
        m <<= 1;
        s++;
      }
      x = sign | ((uint32_t)(113 - s) << 23) | ((m & 0x3ffu) << 13);
    }
  } else {
    x = sign | ((e + 112) << 23) | (m << 13);
  }
  float f;
  memcpy(&f, &x, sizeof f);
  return f;
}

/* Bulk conversions (core/half.c), for gradient compression and 16-bit reductions: the same
 * results as the functions above, bit for bit, except that a NaN may keep more of its payload.
 * On x86-64 CPUs with F16C the f16 ones use its instructions (picked at run time); the others are
 * loops that vectorise. dst and src do not overlap. to_f16/to_bf16 multiply by scale first. */
void em_f32_to_f16_n(uint16_t *dst, const float *src, int64_t n, float scale);
void em_f16_to_f32_n(float *dst, const uint16_t *src, int64_t n);
void em_f32_to_bf16_n(uint16_t *dst, const float *src, int64_t n, float scale);
void em_bf16_to_f32_n(float *dst, const uint16_t *src, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
