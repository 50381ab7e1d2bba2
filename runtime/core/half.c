/* core/half.c: bulk conversions between f32 and the 16-bit floats (em_half.h). The scalar
 * conversions are integer code that handles f16 subnormals with a loop: right, but slow on the
 * values a pre-divided gradient is full of (ddp fp16 compression ran 3x slower than none). With
 * F16C (x86-64, detected at run time) eight values convert per instruction, rounding to nearest
 * even like the scalar code; bf16 is a few integer operations per value that vectorise (GCC's -O2
 * cost model leaves loops that need a scalar tail alone: these two ask for the cheap one). */
#include "em_half.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_F16C_PATH 1
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define HALF_SIMD_CLONES                                                                           \
  __attribute__((target_clones("avx512f", "avx2", "default"), optimize("vect-cost-model=cheap")))
#else
#define HALF_SIMD_CLONES
#endif

#ifdef HAVE_F16C_PATH
static bool have_f16c(void) {
  static int known = -1; /* racy first call is harmless: every thread computes the same */
  if (known < 0) {
    /* F16C is CPUID leaf 1's ECX bit 29 (bit_F16C): clang 14's __builtin_cpu_supports does not
     * know "f16c", and the fuzzing build (tests/fuzz) compiles this file with clang. */
    unsigned a, b, c, d;
    __builtin_cpu_init();
    known = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) && __builtin_cpu_supports("avx");
  }
  return known;
}

__attribute__((target("avx,f16c"))) static int64_t to_f16_f16c(uint16_t *dst, const float *src,
                                                               int64_t n, float scale) {
  __m256 k = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h =
        _mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(src + i), k), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128((__m128i *)(dst + i), h);
  }
  return i;
}

__attribute__((target("avx,f16c"))) static int64_t to_f32_f16c(float *dst, const uint16_t *src,
                                                               int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
  return i;
}
#endif

void em_f32_to_f16_n(uint16_t *dst, const float *src, int64_t n, float scale) {
  int64_t i = 0;
#ifdef HAVE_F16C_PATH
  if (have_f16c()) i = to_f16_f16c(dst, src, n, scale);
#endif
  for (; i < n; i++) dst[i] = em_f32_to_f16(src[i] * scale);
}

void em_f16_to_f32_n(float *dst, const uint16_t *src, int64_t n) {
  int64_t i = 0;
#ifdef HAVE_F16C_PATH
  if (have_f16c()) i = to_f32_f16c(dst, src, n);
#endif
  for (; i < n; i++) dst[i] = em_f16_to_f32(src[i]);
}

/* em_f32_to_bf16 without a branch, so that the loop vectorises: both results, then a select. */
HALF_SIMD_CLONES void em_f32_to_bf16_n(uint16_t *restrict dst, const float *restrict src, int64_t n,
                                       float scale) {
  for (int64_t i = 0; i < n; i++) {
    float f = src[i] * scale;
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t special = (uint32_t)((x >> 16) | ((x & 0xffffu) ? 0x40u : 0));
    uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
    dst[i] = (uint16_t)((x & 0x7f800000u) == 0x7f800000u ? special : rounded);
  }
}

HALF_SIMD_CLONES void em_bf16_to_f32_n(float *restrict dst, const uint16_t *restrict src,
                                       int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] = em_bf16_to_f32(src[i]);
}
