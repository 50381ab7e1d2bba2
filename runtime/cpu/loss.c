/* cpu/loss.c: the CPU's loss kernels: cross-entropy (fused log_softmax + nll), nll and mse, with
 * their backwards.
 *
 * cross_entropy, one pass per row of x (N, C):
 *
 *   m_i   = max_j x_ij
 *   lse_i = m_i + log(sum_j exp(x_ij - m_i))
 *   l_i   = lse_i - x_i,y_i                      (0 where y_i == ignore)
 *
 * and backward recomputes softmax from x and lse in one pass:
 *
 *   dx_ij = g_i * (exp(x_ij - lse_i) - [j == y_i])    g_i = dL/dl_i (0 on ignored rows)
 *
 * so no (N, C) probability buffer is kept between forward and backward. exp is a branch-free
 * polynomial (Cephes expf: range reduction by ln 2, degree-6 polynomial, ~1 ulp) that the
 * compiler can vectorise, unlike libm's expf. The row kernels are compiled for AVX-512, AVX2 and
 * baseline x86-64 and picked at load time (5x faster than baseline SSE on a 32000-class row).
 *
 * A reduced loss sums the per-row losses in float64, in row order, as they are computed. */
/* (The exp loops vectorise because the build passes -fno-trapping-math: see CMakeLists.txt.) */
#include "cpu/cpu.h"

#include <math.h>
#include <string.h>

/* ---- fast exp ------------------------------------------------------------------------------- */
static inline float fast_expf(float x) {
  x = x < -87.0f ? -87.0f : x; /* NaN passes both tests and stays NaN */
  x = x > 88.0f ? 88.0f : x;
  float t = x * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23: n = round(x / ln 2) */
  uint32_t ti;
  memcpy(&ti, &t, sizeof ti);
  float n = t - 12582912.0f;
  float r = x - n * 0.693359375f; /* ln 2 in two parts (Cody-Waite) */
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  uint32_t sb = (ti + 127u) << 23; /* low bits of ti hold n: 2^n as float bits */
  float s;
  memcpy(&s, &sb, sizeof s);
  return p * s;
}

/* log sum_j exp(x_j) of one row, C >= 1: max over 16 lanes, then sum_j exp(x_j - max) in 16
 * float lanes flushed to float64 every 1024 terms. A NaN anywhere gives NaN (through the sum). */
__attribute__((always_inline)) static inline double row_lse(const float *x, int64_t C) {
  float mx[16];
  for (int k = 0; k < 16; k++) mx[k] = x[0];
  int64_t j = 0;
  for (; j + 16 <= C; j += 16)
    for (int k = 0; k < 16; k++) mx[k] = x[j + k] > mx[k] ? x[j + k] : mx[k];
  float m = mx[0];
  for (int k = 1; k < 16; k++) m = mx[k] > m ? mx[k] : m;
  for (; j < C; j++) m = x[j] > m ? x[j] : m;
  double total = 0;
  for (j = 0; j + 16 <= C;) {
    float acc[16] = {0};
    int64_t end = C - j >= 1024 ? j + 1024 : j + (C - j) / 16 * 16;
    for (; j < end; j += 16)
      for (int k = 0; k < 16; k++) acc[k] += fast_expf(x[j + k] - m);
    for (int k = 0; k < 16; k++) total += acc[k];
  }
  for (; j < C; j++) total += fast_expf(x[j] - m);
  return m + log(total);
}

/* ---- labels and reductions ------------------------------------------------------------------ */
static inline int64_t label_at(const void *p, bool wide, int64_t i) {
  return wide ? ((const int64_t *)p)[i] : ((const int32_t *)p)[i];
}

/* A reduced loss from the sum of the per-row losses. */
static void write_reduced(em_tensor *loss, em_reduction red, double sum, int64_t count) {
  em_data_f32(loss)[0] = (float)(red == EM_REDUCE_MEAN ? sum / (double)count : sum);
}

/* dL/dl_i for a row: gy[i] (none), or gy[0] * scale. */
static inline float row_grad(const float *go, em_reduction red, double scale, int64_t i) {
  return red == EM_REDUCE_NONE ? go[i] : (float)(go[0] * scale);
}

/* ---- cross entropy -------------------------------------------------------------------------- */
/* Per row: lse_i (ps) and, when pl is not NULL, the loss l_i (pl); both 0 on ignored rows.
 * Returns the sum of the l_i in row order. */
EM_SIMD_CLONES static double ce_forward_rows(const float *px, const void *py, bool wide, int64_t N,
                                             int64_t C, int64_t ignore, float *pl, float *ps) {
  double sum = 0;
  for (int64_t i = 0; i < N; i++) {
    int64_t y = label_at(py, wide, i);
    float l = 0;
    if (y == ignore) { /* C may be 0 here */
      ps[i] = 0;
    } else {
      const float *xi = px + i * C;
      ps[i] = (float)row_lse(xi, C);
      l = ps[i] - xi[y];
    }
    if (pl) pl[i] = l;
    sum += l;
  }
  return sum;
}

em_status em__cpu_cross_entropy(const em_tensor *x, const em_tensor *labels, int64_t ignore,
                                em_reduction red, int64_t count, em_tensor *lse, em_tensor *loss) {
  float *pl = red == EM_REDUCE_NONE ? em_data_f32(loss) : NULL;
  double sum = ce_forward_rows(em_data_f32(x), em_data(labels), labels->dtype == EM_I64,
                               x->shape[0], x->shape[1], ignore, pl, em_data_f32(lse));
  if (!pl) write_reduced(loss, red, sum, count);
  return EM_OK;
}

/* g (N, C) = gi * (exp(x - lse_i) - onehot(y_i)) per row; gi from row_grad; 0 if ignored. */
EM_SIMD_CLONES static void ce_backward_rows(const float *px, const float *pl, const void *py,
                                            bool wide, int64_t N, int64_t C, int64_t ignore,
                                            const float *go, em_reduction red, double scale,
                                            float *pg) {
  for (int64_t i = 0; i < N; i++) {
    const float *xi = px + i * C;
    float *gi = pg + i * C;
    int64_t y = label_at(py, wide, i);
    if (y == ignore) {
      memset(gi, 0, (size_t)C * sizeof *gi);
      continue;
    }
    float s = row_grad(go, red, scale, i), l = pl[i];
#pragma omp simd
    for (int64_t j = 0; j < C; j++) gi[j] = s * fast_expf(xi[j] - l);
    gi[y] -= s;
  }
}

em_status em__cpu_cross_entropy_backward(const em_tensor *x, const em_tensor *labels,
                                         const em_tensor *lse, int64_t ignore, const em_tensor *gy,
                                         em_reduction red, double scale, em_tensor *gx) {
  ce_backward_rows(em_data_f32(x), em_data_f32(lse), em_data(labels), labels->dtype == EM_I64,
                   x->shape[0], x->shape[1], ignore, em_data_f32(gy), red, scale, em_data_f32(gx));
  return EM_OK;
}

/* ---- nll ------------------------------------------------------------------------------------ */
em_status em__cpu_nll(const em_tensor *logp, const em_tensor *labels, int64_t ignore,
                      em_reduction red, int64_t count, em_tensor *loss) {
  /* Strided read: no need to copy a non-contiguous logp for N gathers. */
  const float *px = em_data_f32(logp);
  int64_t N = logp->shape[0], s0 = logp->strides[0], s1 = logp->strides[1];
  const void *py = em_data(labels);
  bool wide = labels->dtype == EM_I64;
  float *pl = red == EM_REDUCE_NONE ? em_data_f32(loss) : NULL;
  double sum = 0;
  for (int64_t i = 0; i < N; i++) {
    int64_t y = label_at(py, wide, i);
    float l = y == ignore ? 0.0f : -px[i * s0 + y * s1];
    if (pl) pl[i] = l;
    sum += l;
  }
  if (!pl) write_reduced(loss, red, sum, count);
  return EM_OK;
}

em_status em__cpu_nll_backward(const em_tensor *labels, int64_t ignore, const em_tensor *gy,
                               em_reduction red, double scale, em_tensor *gx) {
  int64_t N = gx->shape[0], C = gx->shape[1];
  const void *py = em_data(labels);
  bool wide = labels->dtype == EM_I64;
  const float *go = em_data_f32(gy);
  float *pg = em_data_f32(gx);
  memset(pg, 0, (size_t)(N * C) * sizeof *pg);
  for (int64_t i = 0; i < N; i++) {
    int64_t y = label_at(py, wide, i);
    if (y != ignore) pg[i * C + y] = -row_grad(go, red, scale, i);
  }
  return EM_OK;
}

/* ---- mse ------------------------------------------------------------------------------------ */

/* sum (a - b)^2 in float64 lanes, or per element into po (po != NULL; returns 0). */
EM_SIMD_CLONES static double mse_kernel(const float *pa, const float *pb, int64_t N, float *po) {
  if (po) {
#pragma omp simd
    for (int64_t i = 0; i < N; i++) po[i] = (pa[i] - pb[i]) * (pa[i] - pb[i]);
    return 0;
  }
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < N; i++) {
    double d = (double)pa[i] - pb[i];
    s += d * d;
  }
  return s;
}

em_status em__cpu_mse(const em_tensor *a, const em_tensor *b, em_reduction red, em_tensor *loss) {
  int64_t N = em_numel(a);
  if (red == EM_REDUCE_NONE) {
    mse_kernel(em_data_f32(a), em_data_f32(b), N, em_data_f32(loss));
  } else {
    double s = mse_kernel(em_data_f32(a), em_data_f32(b), N, NULL);
    write_reduced(loss, red, s, N);
  }
  return EM_OK;
}

/* pg = k * go_i * (a - b), go_i = go[i] (per element) or go[0] (reduced). */
EM_SIMD_CLONES static void mse_grad_kernel(const float *pa, const float *pb, const float *go,
                                           bool per_elem, float k, int64_t N, float *pg) {
  if (per_elem) {
#pragma omp simd
    for (int64_t i = 0; i < N; i++) pg[i] = k * go[i] * (pa[i] - pb[i]);
  } else {
    float kg = k * go[0];
#pragma omp simd
    for (int64_t i = 0; i < N; i++) pg[i] = kg * (pa[i] - pb[i]);
  }
}

em_status em__cpu_mse_backward(const em_tensor *a, const em_tensor *b, const em_tensor *gy,
                               em_reduction red, double scale, em_tensor *ga) {
  mse_grad_kernel(em_data_f32(a), em_data_f32(b), em_data_f32(gy), red == EM_REDUCE_NONE,
                  (float)(2.0 * scale), em_numel(a), em_data_f32(ga));
  return EM_OK;
}
