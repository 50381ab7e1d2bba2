/* test_half.c: the bulk 16-bit float conversions (em_half.h) against the scalar ones, which are
 * the oracle: every f16 and bf16 bit pattern to f32, and f32 values from every region (zeros,
 * f16 subnormals and the halfway points between them, normals, the overflow edge, infinities,
 * NaN, random bit patterns) to f16 and bf16, with and without a scale, at lengths that leave
 * tails past the 8-wide vector path. Equal bit for bit, except that a NaN only has to stay NaN. */
#include "testutil.h"

#include "em_half.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint32_t bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static float from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static bool is_nan16(uint16_t h, bool bf) {
  return bf ? (h & 0x7f80u) == 0x7f80u && (h & 0x7fu) : (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu);
}

Test(half, every_16_bit_pattern_to_f32) {
  enum { N = 65536 + 5 }; /* 5 past a multiple of 8: a scalar tail */
  uint16_t *h = malloc(N * sizeof *h);
  float *f = malloc(N * sizeof *f);
  cr_assert(h && f);
  for (int bf = 0; bf < 2; bf++) {
    for (int i = 0; i < N; i++) h[i] = (uint16_t)(i * 40503u); /* a permutation of 0..65535 */
    if (bf)
      em_bf16_to_f32_n(f, h, N);
    else
      em_f16_to_f32_n(f, h, N);
    for (int i = 0; i < N; i++) {
      float want = bf ? em_bf16_to_f32(h[i]) : em_f16_to_f32(h[i]);
      if (isnan(want))
        cr_assert(isnan(f[i]), "%s 0x%04x: NaN expected", bf ? "bf16" : "f16", h[i]);
      else
        cr_assert_eq(bits(f[i]), bits(want), "%s 0x%04x: 0x%08x, want 0x%08x", bf ? "bf16" : "f16",
                     h[i], bits(f[i]), bits(want));
    }
  }
  free(h);
  free(f);
}

Test(half, f32_to_16_bits_in_every_region) {
  enum { N = 200003 };
  float *f = malloc(N * sizeof *f);
  uint16_t *h = malloc(N * sizeof *h);
  cr_assert(f && h);
  /* Edges: zeros, f16's smallest subnormal 2^-24 and the halfway points around it, the largest
   * subnormal and smallest normal, 65504 and the rounding edge to infinity at 65520, bf16's
   * rounding edges, infinities, NaN. Then f16 subnormals and their midpoints densely, then
   * random bit patterns. */
  const float edges[] = {0.0f,       -0.0f,        0x1p-24f,      0x1p-25f,    0x1.8p-25f,
                         0x1.8p-24f, 0x1.ff8p-15f, 0x1p-14f,      65504.0f,    65519.99f,
                         65520.0f,   -65520.0f,    0x1.010001p0f, 0x1.0180p0f, INFINITY,
                         -INFINITY,  NAN,          1e-45f,        3.0e38f};
  int k = 0;
  for (size_t i = 0; i < sizeof edges / sizeof *edges; i++) f[k++] = edges[i];
  for (int i = 0; i < 4096; i++) f[k++] = (float)i * 0x1p-25f; /* subnormals and midpoints */
  uint64_t x = 88172645463325252ull;
  while (k < N) { /* xorshift bit patterns: every exponent, sign and mantissa */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    f[k++] = from_bits((uint32_t)x);
  }
  const float scales[] = {1.0f, 0.5f, 1.0f / 3.0f};
  for (int bf = 0; bf < 2; bf++) {
    for (int s = 0; s < 3; s++) {
      float sc = scales[s];
      if (bf)
        em_f32_to_bf16_n(h, f, N, sc);
      else
        em_f32_to_f16_n(h, f, N, sc);
      for (int i = 0; i < N; i++) {
        uint16_t want = bf ? em_f32_to_bf16(f[i] * sc) : em_f32_to_f16(f[i] * sc);
        if (is_nan16(want, bf))
          cr_assert(is_nan16(h[i], bf), "%s of %a: NaN expected, got 0x%04x", bf ? "bf16" : "f16",
                    (double)f[i], h[i]);
        else
          cr_assert_eq(h[i], want, "%s of %a x %g: 0x%04x, want 0x%04x", bf ? "bf16" : "f16",
                       (double)f[i], (double)sc, h[i], want);
      }
    }
  }
  free(f);
  free(h);
}
