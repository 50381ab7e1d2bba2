/* ops_loss.c: cross-entropy (fused log_softmax + nll), nll_loss and mse_loss.
 *
 * cross_entropy, logits x (N, C), labels y (N) i64 or i32, one pass per row:
 *
 *   m_i   = max_j x_ij
 *   lse_i = m_i + log(sum_j exp(x_ij - m_i))
 *   l_i   = lse_i - x_i,y_i                      (0 where y_i == ignore_index)
 *
 * reduced to mean (divided by the number of rows not ignored, as PyTorch), sum, or kept (N).
 * The forward saves x and lse (N); backward recomputes softmax from them in one pass:
 *
 *   dx_ij = g_i * (exp(x_ij - lse_i) - [j == y_i])    g_i = dL/dl_i (0 on ignored rows)
 *
 * so no (N, C) probability buffer is kept between forward and backward. exp is a branch-free
 * polynomial (Cephes expf: range reduction by ln 2, degree-6 polynomial, ~1 ulp) that the
 * compiler can vectorise, unlike libm's expf. The row kernels are compiled for AVX-512, AVX2 and
 * baseline x86-64 and picked at load time (5x faster than baseline SSE on a 32000-class row). */
/* (The exp loops vectorise because the build passes -fno-trapping-math: see CMakeLists.txt.) */
#include "core/internal.h"

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

/* ---- labels --------------------------------------------------------------------------------- */
static inline int64_t label_at(const void *p, bool wide, int64_t i) {
  return wide ? ((const int64_t *)p)[i] : ((const int32_t *)p)[i];
}

/* Check x (N, C) f32 and labels (N) i64/i32; every label in [0, C) or ignore. Sets *count to
 * the number of labels not ignored and *lab to contiguous labels. */
static bool check_labels(const char *op, em_tensor *x, em_tensor *labels, int64_t ignore,
                         em_tensor **lab, int64_t *count) {
  char a[EM_SHAPE_STR_LEN], b[EM_SHAPE_STR_LEN];
  if (!em__check_f32(op, x, "input") || !em__check_cpu(op, x) || !em__check_cpu(op, labels))
    return false;
  if (x->ndim != 2 || labels->ndim != 1 || labels->shape[0] != x->shape[0]) {
    em_set_error(EM_ERR_INVALID, "%s: input %s and labels %s do not match: expected (N, C) and (N)",
                 op, em_shape_str(x, a, sizeof a), em_shape_str(labels, b, sizeof b));
    return false;
  }
  if (labels->dtype != EM_I64 && labels->dtype != EM_I32) {
    em_set_error(EM_ERR_INVALID, "%s: labels %s must be i64 or i32, got %s", op,
                 em_shape_str(labels, b, sizeof b), em_dtype_name(labels->dtype));
    return false;
  }
  *lab = em__contig(labels);
  if (!*lab) return false;
  const void *p = em_data(*lab);
  bool wide = labels->dtype == EM_I64;
  int64_t N = x->shape[0], C = x->shape[1], n = 0;
  for (int64_t i = 0; i < N; i++) {
    int64_t y = label_at(p, wide, i);
    if (y == ignore) continue;
    if (y < 0 || y >= C) {
      em_set_error(EM_ERR_INVALID,
                   "%s: label %lld at row %lld is out of range for %lld classes (input %s)", op,
                   (long long)y, (long long)i, (long long)C, em_shape_str(x, a, sizeof a));
      return false;
    }
    n++;
  }
  *count = n;
  return true;
}

static bool check_reduction(const char *op, em_reduction red) {
  if (red == EM_REDUCE_MEAN || red == EM_REDUCE_SUM || red == EM_REDUCE_NONE) return true;
  em_set_error(EM_ERR_INVALID, "%s: unknown reduction %d", op, (int)red);
  return false;
}

/* Reduce per-row losses l (N) into a scalar (mean over count, or sum), or return l. */
static em_tensor *reduce_rows(em_tensor *l, em_reduction red, int64_t count) {
  if (red == EM_REDUCE_NONE) return l;
  em_tensor *out = em_empty(EM_F32, 0, NULL);
  if (!out) return NULL;
  const float *p = em_data_f32(l);
  double s = 0;
  for (int64_t i = 0, n = em_numel(l); i < n; i++) s += p[i];
  em_data_f32(out)[0] = (float)(red == EM_REDUCE_MEAN ? s / (double)count : s);
  return out;
}

/* dL/dl_i for a row: gout[i] (none), or gout * scale. */
static inline float row_grad(const float *go, em_reduction red, double scale, int64_t i) {
  return red == EM_REDUCE_NONE ? go[i] : (float)(go[0] * scale);
}

static double reduce_scale(em_reduction red, int64_t count) {
  return red == EM_REDUCE_MEAN ? 1.0 / (double)count : 1.0;
}

/* ---- cross entropy -------------------------------------------------------------------------- */
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

static em_status ce_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *x = n->saved[0], *lab = n->saved[1], *lse = n->saved[2];
  em_reduction red = (em_reduction)n->i[0];
  em_tensor *g = em_empty(EM_F32, 2, x->shape);
  if (!g) return em_last_status();
  ce_backward_rows(em_data_f32(x), em_data_f32(lse), em_data(lab), lab->dtype == EM_I64,
                   x->shape[0], x->shape[1], n->i[1], em_data_f32(gout), red,
                   reduce_scale(red, n->i[2]), em_data_f32(g));
  gin[0] = g;
  return EM_OK;
}

/* Per row: lse_i (ps) and loss l_i (pl); both 0 on ignored rows. Labels already checked. */
EM_SIMD_CLONES static void ce_forward_rows(const float *px, const void *py, bool wide, int64_t N,
                                           int64_t C, int64_t ignore, float *pl, float *ps) {
  for (int64_t i = 0; i < N; i++) {
    int64_t y = label_at(py, wide, i);
    if (y == ignore) { /* C may be 0 here */
      pl[i] = 0;
      ps[i] = 0;
      continue;
    }
    const float *xi = px + i * C;
    ps[i] = (float)row_lse(xi, C);
    pl[i] = ps[i] - xi[y];
  }
}

static em_tensor *cross_entropy_impl(em_tensor *logits, em_tensor *labels, em_reduction red,
                                     int64_t ignore_index) {
  const char *op = "cross_entropy";
  EM_CHECK_INPUT(logits, op);
  EM_CHECK_INPUT(labels, op);
  em_tensor *lab;
  int64_t count;
  if (!check_reduction(op, red) || !check_labels(op, logits, labels, ignore_index, &lab, &count))
    return NULL;
  int64_t N = logits->shape[0], C = logits->shape[1];
  em_tensor *x = em__contig(logits);
  em_tensor *l = x ? em_empty(EM_F32, 1, &N) : NULL;
  em_tensor *lse = l ? em_empty(EM_F32, 1, &N) : NULL;
  if (!lse) return NULL;
  ce_forward_rows(em_data_f32(x), em_data(lab), lab->dtype == EM_I64, N, C, ignore_index,
                  em_data_f32(l), em_data_f32(lse));
  em_tensor *out = reduce_rows(l, red, count);
  if (!out) return NULL;
  em_node *n = em__record(out, op, ce_backward, 1, &logits);
  if (n) {
    n->i[0] = red;
    n->i[1] = ignore_index;
    n->i[2] = count;
    em__save(n, x);
    em__save(n, lab);
    em__save(n, lse);
  }
  return out;
}

/* The public ops run in a private scope: contiguous copies, label copies and per-row buffers
 * that are not saved for backward end with the op. */
em_tensor *em_cross_entropy_ex(em_tensor *logits, em_tensor *labels, em_reduction red,
                               int64_t ignore_index) {
  em_scope s = em_scope_begin();
  return em__op_end(s, cross_entropy_impl(logits, labels, red, ignore_index));
}

em_tensor *em_cross_entropy(em_tensor *logits, em_tensor *labels) {
  return em_cross_entropy_ex(logits, labels, EM_REDUCE_MEAN, EM_IGNORE_INDEX_DEFAULT);
}

/* ---- nll ---------------------------------------------------------------------------------- */
static em_status nll_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *a = n->inputs[0], *lab = n->saved[0];
  em_reduction red = (em_reduction)n->i[0];
  double scale = reduce_scale(red, n->i[2]);
  em_tensor *g = em_zeros(EM_F32, 2, a->shape);
  if (!g) return em_last_status();
  int64_t N = a->shape[0], C = a->shape[1];
  const void *py = em_data(lab);
  bool wide = lab->dtype == EM_I64;
  const float *go = em_data_f32(gout);
  float *pg = em_data_f32(g);
  for (int64_t i = 0; i < N; i++) {
    int64_t y = label_at(py, wide, i);
    if (y != n->i[1]) pg[i * C + y] = -row_grad(go, red, scale, i);
  }
  gin[0] = g;
  return EM_OK;
}

static em_tensor *nll_impl(em_tensor *logp, em_tensor *labels, em_reduction red,
                           int64_t ignore_index) {
  const char *op = "nll_loss";
  EM_CHECK_INPUT(logp, op);
  EM_CHECK_INPUT(labels, op);
  em_tensor *lab;
  int64_t count;
  if (!check_reduction(op, red) || !check_labels(op, logp, labels, ignore_index, &lab, &count))
    return NULL;
  int64_t N = logp->shape[0];
  em_tensor *l = em_empty(EM_F32, 1, &N);
  if (!l) return NULL;
  /* Strided read: no need to copy a non-contiguous logp for N gathers. */
  const float *px = em_data_f32(logp);
  int64_t s0 = logp->strides[0], s1 = logp->strides[1];
  const void *py = em_data(lab);
  bool wide = lab->dtype == EM_I64;
  float *pl = em_data_f32(l);
  for (int64_t i = 0; i < N; i++) {
    int64_t y = label_at(py, wide, i);
    pl[i] = y == ignore_index ? 0.0f : -px[i * s0 + y * s1];
  }
  em_tensor *out = reduce_rows(l, red, count);
  if (!out) return NULL;
  em_node *n = em__record(out, op, nll_backward, 1, &logp);
  if (n) {
    n->i[0] = red;
    n->i[1] = ignore_index;
    n->i[2] = count;
    em__save(n, lab);
  }
  return out;
}

em_tensor *em_nll_loss(em_tensor *logp, em_tensor *labels, em_reduction red, int64_t ignore_index) {
  em_scope s = em_scope_begin();
  return em__op_end(s, nll_impl(logp, labels, red, ignore_index));
}

/* ---- mse ---------------------------------------------------------------------------------- */

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

static em_status mse_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *a = n->saved[0], *b = n->saved[1];
  em_reduction red = (em_reduction)n->i[0];
  int64_t N = em_numel(a);
  em_tensor *ga = em_empty(EM_F32, a->ndim, a->shape);
  if (!ga) return em_last_status();
  mse_grad_kernel(em_data_f32(a), em_data_f32(b), em_data_f32(gout), red == EM_REDUCE_NONE,
                  (float)(2.0 * reduce_scale(red, N)), N, em_data_f32(ga));
  if (n->inputs[0]->requires_grad) gin[0] = ga;
  if (n->inputs[1]->requires_grad) {
    gin[1] = em_neg(ga);
    if (!gin[1]) return em_last_status();
  }
  return EM_OK;
}

static em_tensor *mse_impl(em_tensor *a, em_tensor *b, em_reduction red) {
  const char *op = "mse_loss";
  EM_CHECK_INPUT(a, op);
  EM_CHECK_INPUT(b, op);
  if (!check_reduction(op, red) || !em__check_f32(op, a, "input") ||
      !em__check_f32(op, b, "target") || !em__check_cpu(op, a) || !em__check_cpu(op, b))
    return NULL;
  if (!em__same_shape(a, b)) {
    char x[EM_SHAPE_STR_LEN], y[EM_SHAPE_STR_LEN];
    em_set_error(EM_ERR_INVALID, "%s: input %s and target %s must have the same shape", op,
                 em_shape_str(a, x, sizeof x), em_shape_str(b, y, sizeof y));
    return NULL;
  }
  em_tensor *ca = em__contig(a), *cb = em__contig(b);
  if (!ca || !cb) return NULL;
  int64_t N = em_numel(a);
  em_tensor *out =
      red == EM_REDUCE_NONE ? em_empty(EM_F32, a->ndim, a->shape) : em_empty(EM_F32, 0, NULL);
  if (!out) return NULL;
  if (red == EM_REDUCE_NONE) {
    mse_kernel(em_data_f32(ca), em_data_f32(cb), N, em_data_f32(out));
  } else {
    double s = mse_kernel(em_data_f32(ca), em_data_f32(cb), N, NULL);
    em_data_f32(out)[0] = (float)(red == EM_REDUCE_MEAN ? s / (double)N : s);
  }
  em_tensor *ins[2] = {a, b};
  em_node *n = em__record(out, op, mse_backward, 2, ins);
  if (n) {
    n->i[0] = red;
    em__save(n, ca);
    em__save(n, cb);
  }
  return out;
}

em_tensor *em_mse_loss(em_tensor *a, em_tensor *b, em_reduction red) {
  em_scope s = em_scope_begin();
  return em__op_end(s, mse_impl(a, b, red));
}
