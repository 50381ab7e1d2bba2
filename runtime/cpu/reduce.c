/* cpu/reduce.c: the CPU's reduction kernels: sum/mean over a set of dims and its backward, max and
 * argmax over one dim and its backward, and the autograd engine's sum_to and accumulate.
 *
 * A sum drops the input's size-1 dims and merges runs of neighbouring dims that are all reduced
 * (or all kept) into one "group". Every reduction is then one or more passes of a single kernel
 * over a 3-D view
 *
 *   x (O, R, K) -> y (O, K)        O: kept dims before, R: reduced group, K: kept dims after
 *
 * so the common cases are one pass: all dims (1, R, 1), trailing dims (O, R, 1), leading dims
 * (1, R, K): the bias gradient, sum over dim 0 of (N, C). Sums accumulate in float64 vector
 * lanes (omp simd): with AVX-512 as fast as float lanes (~0.05 ns per element, measured), and
 * a 2^20-element sum stays exact to float precision.
 *
 * The kernels are compiled three times (AVX-512, AVX2, baseline x86-64) and picked at load time:
 * the build targets baseline x86-64, whose 4-wide SSE runs them 3-5x slower. */
#include "cpu/cpu.h"

#include <stdlib.h>
#include <string.h>

/* ---- sum ------------------------------------------------------------------------------------ */

/* Sum of n contiguous floats in float64 lanes (omp simd): as fast as memory on long rows. */
static inline double sum_contig(const float *x, int64_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; i++) s += x[i];
  return s;
}

/* x (O, R, K) -> y (O, K) = scale * sum over R. acc: K doubles of scratch (K > 1). */
EM_SIMD_CLONES static void sum_ork(const float *x, float *y, int64_t O, int64_t R, int64_t K,
                                   double scale, double *acc) {
  if (K == 1) {
    for (int64_t o = 0; o < O; o++) y[o] = (float)(sum_contig(x + o * R, R) * scale);
    return;
  }
  for (int64_t o = 0; o < O; o++) {
    const float *xo = x + o * R * K;
    for (int64_t k = 0; k < K; k++) acc[k] = 0;
    for (int64_t r = 0; r < R; r++) {
      const float *row = xo + r * K;
#pragma omp simd
      for (int64_t k = 0; k < K; k++) acc[k] += row[k];
    }
    float *yo = y + o * K;
#pragma omp simd
    for (int64_t k = 0; k < K; k++) yo[k] = (float)(acc[k] * scale);
  }
}

/* One pass per reduced group, from the last; every pass but the final one writes a scratch
 * buffer. */
em_status em__cpu_sum(const em_tensor *x, uint32_t mask, double scale, em_tensor *y) {
  int64_t gsize[EM_MAX_DIMS];
  bool gred[EM_MAX_DIMS];
  int ng = em__reduce_groups(x->ndim, x->shape, mask, gsize, gred);
  float *py = em_data_f32(y);
  int64_t nout = em_numel(y);
  if (nout == 0) return EM_OK;
  if (em_numel(x) == 0) { /* reducing over an empty dim: 0 (sum) or NaN (mean: 0/0) */
    for (int64_t i = 0; i < nout; i++) py[i] = (float)(0.0 * scale);
    return EM_OK;
  }
  const float *px = em_data_f32(x);
  int last = -1; /* index of the last reduced group */
  for (int g = 0; g < ng; g++)
    if (gred[g]) last = g;
  if (last < 0) { /* nothing to reduce but a size-1 dim: a scaled copy */
    for (int64_t i = 0; i < nout; i++) py[i] = (float)(px[i] * scale);
    return EM_OK;
  }
  /* A pass's K is at most numel / (size of the last reduced group). */
  int64_t total = em_numel(x);
  double *acc = malloc((size_t)(total / gsize[last]) * sizeof *acc + sizeof *acc);
  float *tmp[2] = {NULL, NULL};
  if (!acc) goto nomem;
  const float *cur = px;
  int npass = 0;
  for (int g = 0; g < ng; g++) npass += gred[g];
  for (int pass = 0; pass < npass; pass++) {
    int r = -1;
    for (int g = 0; g < ng; g++)
      if (gred[g]) r = g;
    int64_t O = 1, K = 1;
    for (int g = 0; g < r; g++) O *= gsize[g];
    for (int g = r + 1; g < ng; g++) K *= gsize[g];
    float *dst;
    if (pass == npass - 1) {
      dst = py;
    } else {
      if (!tmp[pass & 1]) tmp[pass & 1] = malloc((size_t)(O * K) * sizeof(float));
      if (!tmp[pass & 1]) goto nomem;
      dst = tmp[pass & 1];
    }
    sum_ork(cur, dst, O, gsize[r], K, pass == npass - 1 ? scale : 1.0, acc);
    cur = dst;
    /* Drop group r; merge its kept neighbours. */
    if (r > 0 && r + 1 < ng && !gred[r - 1] && !gred[r + 1]) {
      gsize[r - 1] *= gsize[r + 1];
      memmove(&gsize[r], &gsize[r + 2], (size_t)(ng - r - 2) * sizeof *gsize);
      memmove(&gred[r], &gred[r + 2], (size_t)(ng - r - 2) * sizeof *gred);
      ng -= 2;
    } else {
      memmove(&gsize[r], &gsize[r + 1], (size_t)(ng - r - 1) * sizeof *gsize);
      memmove(&gred[r], &gred[r + 1], (size_t)(ng - r - 1) * sizeof *gred);
      ng -= 1;
    }
  }
  free(acc);
  free(tmp[0]);
  free(tmp[1]);
  return EM_OK;
nomem:
  free(acc);
  free(tmp[0]);
  free(tmp[1]);
  return em_set_error(EM_ERR_NOMEM, "sum: out of memory for scratch buffers (input of %lld)",
                      (long long)total);
}

/* dst (groups gsize) = s * src read with strides gst (0 on reduced groups). ng >= 1. */
EM_SIMD_CLONES static void expand_kernel(const float *src, float *dst, int ng, const int64_t *gsize,
                                         const int64_t *gst, float s) {
  int64_t n = 1;
  for (int k = 0; k < ng; k++) n *= gsize[k];
  int64_t inner = gsize[ng - 1], ist = gst[ng - 1];
  int64_t idx[EM_MAX_DIMS] = {0}, off = 0;
  for (int64_t k = 0; k < n; k += inner) {
    float *o = dst + k;
    if (ist == 0) {
      float v = src[off] * s;
#pragma omp simd
      for (int64_t i = 0; i < inner; i++) o[i] = v;
    } else {
      const float *p = src + off;
#pragma omp simd
      for (int64_t i = 0; i < inner; i++) o[i] = p[i] * s;
    }
    for (int d = ng - 2; d >= 0; d--) {
      off += gst[d];
      if (++idx[d] < gsize[d]) break;
      off -= gst[d] * gsize[d];
      idx[d] = 0;
    }
  }
}

em_status em__cpu_sum_backward(const em_tensor *gy, uint32_t mask, double scale, em_tensor *gx) {
  if (em_numel(gx) == 0) return EM_OK;
  int64_t gsize[EM_MAX_DIMS], gst[EM_MAX_DIMS];
  bool gred[EM_MAX_DIMS];
  int ng = em__reduce_groups(gx->ndim, gx->shape, mask, gsize, gred);
  int64_t st = 1;
  for (int k = ng - 1; k >= 0; k--) {
    gst[k] = gred[k] ? 0 : st;
    if (!gred[k]) st *= gsize[k];
  }
  if (ng == 0) {
    em_data_f32(gx)[0] = em_data_f32(gy)[0] * (float)scale;
    return EM_OK;
  }
  expand_kernel(em_data_f32(gy), em_data_f32(gx), ng, gsize, gst, (float)scale);
  return EM_OK;
}

/* ---- max / argmax over one dim ------------------------------------------------------------ */

/* NaN counts as the largest value (propagates, as PyTorch); ties keep the first. */
static inline bool beats(float v, float best) { return v > best || (v != v && best == best); }

/* Index of the first maximum of x[0..R) (the first NaN if any). 16 lanes find the value, then
 * a scan finds its first position: both loops vectorise, unlike one compare-and-track loop. */
static inline int64_t argmax_row(const float *x, int64_t R) {
  float acc[16];
  int32_t nan[16];
  for (int k = 0; k < 16; k++) {
    acc[k] = x[0];
    nan[k] = 0;
  }
  int64_t r = 0;
  for (; r + 16 <= R; r += 16)
    for (int k = 0; k < 16; k++) {
      float v = x[r + k];
      acc[k] = v > acc[k] ? v : acc[k];
      nan[k] |= v != v;
    }
  float m = acc[0];
  int32_t any_nan = 0;
  for (int k = 0; k < 16; k++) {
    m = acc[k] > m ? acc[k] : m;
    any_nan |= nan[k];
  }
  for (; r < R; r++) {
    m = x[r] > m ? x[r] : m;
    any_nan |= x[r] != x[r];
  }
  for (r = 0; r < R; r++)
    if (any_nan ? x[r] != x[r] : x[r] == m) return r;
  return 0;
}

/* x (O, R, K) -> vals (O, K), idx (O, K): the first maximum over R. R >= 1. */
EM_SIMD_CLONES static void max_ork(const float *x, int64_t O, int64_t R, int64_t K, float *vals,
                                   int64_t *idx) {
  for (int64_t o = 0; o < O; o++) {
    const float *xo = x + o * R * K;
    int64_t *io = idx + o * K;
    float *vo = vals + o * K;
    if (K == 1) {
      io[0] = argmax_row(xo, R);
      vo[0] = xo[io[0]];
      continue;
    }
    for (int64_t k = 0; k < K; k++) {
      vo[k] = xo[k];
      io[k] = 0;
    }
    for (int64_t r = 1; r < R; r++) {
      const float *row = xo + r * K;
#pragma omp simd
      for (int64_t k = 0; k < K; k++) {
        bool b = beats(row[k], vo[k]);
        vo[k] = b ? row[k] : vo[k];
        io[k] = b ? r : io[k];
      }
    }
  }
}

em_status em__cpu_max(const em_tensor *x, int64_t O, int64_t R, int64_t K, em_tensor *vals,
                      em_tensor *idx) {
  if (O * K > 0) max_ork(em_data_f32(x), O, R, K, em_data_f32(vals), (int64_t *)em_data(idx));
  return EM_OK;
}

em_status em__cpu_max_backward(const em_tensor *idx, const em_tensor *gy, int64_t O, int64_t R,
                               int64_t K, em_tensor *gx) {
  const int64_t *pi = (const int64_t *)em_data(idx);
  const float *go = em_data_f32(gy);
  float *pg = em_data_f32(gx);
  memset(pg, 0, (size_t)em_numel(gx) * sizeof *pg);
  for (int64_t o = 0; o < O; o++)
    for (int64_t k = 0; k < K; k++) pg[(o * R + pi[o * K + k]) * K + k] = go[o * K + k];
  return EM_OK;
}

/* ---- autograd: sum_to and accumulate ------------------------------------------------------ */

em_status em__cpu_sum_to(const em_tensor *x, em_tensor *y) {
  /* y's strides in x's index space: 0 where y broadcasts (missing or size 1). */
  int64_t tst[EM_MAX_DIMS] = {0}, cst[EM_MAX_DIMS];
  em__contig_strides(y->ndim, y->shape, cst);
  int lead = x->ndim - y->ndim;
  for (int d = 0; d < y->ndim; d++) tst[lead + d] = y->shape[d] == 1 ? 0 : cst[d];
  const float *src = em_data_f32(x);
  float *dst = em_data_f32(y);
  memset(dst, 0, (size_t)em_numel(y) * sizeof *dst);
  int64_t idx[EM_MAX_DIMS] = {0}, off = 0, n = em_numel(x);
  for (int64_t k = 0; k < n; k++) {
    dst[off] += src[k];
    for (int d = x->ndim - 1; d >= 0; d--) {
      off += tst[d];
      if (++idx[d] < x->shape[d]) break;
      off -= tst[d] * x->shape[d];
      idx[d] = 0;
    }
  }
  return EM_OK;
}

EM_SIMD_CLONES static void add_into(float *restrict o, const float *restrict p, int64_t n) {
  for (int64_t i = 0; i < n; i++) o[i] += p[i];
}

em_status em__cpu_accumulate(em_tensor *y, const em_tensor *x) {
  float *o = em_data_f32(y);
  int64_t n = em_numel(y);
  if (em_is_contiguous(x)) {
    add_into(o, em_data_f32(x), n);
  } else {
    for (int64_t i = 0; i < n; i++) o[i] += (float)em_get(x, i);
  }
  return EM_OK;
}
