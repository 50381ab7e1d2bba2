/* cpu/norm.c: the CPU's batch normalisation and layer normalisation kernels, forward (training
 * and eval) and backward.
 *
 *   batch norm:  x (N, C, ...) seen as (N, C, S); statistics per channel (C) over M = N * S
 *                values; weight = scale (C), bias = shift (C)
 *   layer norm:  x (..., D1..Dn) seen as (R, D), D = D1 * ... * Dn; statistics per row (R);
 *                weight/bias (D) = scale/shift
 *   y = (x - mean) / sqrt(var + eps) * scale + shift      (var biased, as PyTorch normalises)
 *
 * oneDNN 2.6 has a JIT batch normalisation for channels-last data only; on nchw it runs a generic
 * kernel that was 2x slower than the plain loops below (64x32x26x26, one thread: 5.4 against
 * 2.9 ms forward + backward). So:
 *   - S = 1 ((N, C) inputs, after a linear layer): oneDNN, the data described as (N, C, 1, 1)
 *     with nhwc strides (the same bytes), which selects its JIT kernel;
 *   - S > 1 (images, nchw): plain loops over each channel's N contiguous runs of S values.
 * Layer norm is plain loops over rows (oneDNN's simple_layer_normalization was 1.8x slower). */
#include "cpu/cpu.h"
#include "cpu/dnnl.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Reductions and elementwise loops carry "omp simd" so that they vectorise at -O2 (GCC's cheap
 * cost model otherwise leaves loops of unknown length scalar, and float sums need the
 * reassociation the pragma allows). */
static float sum_f(const float *p, int64_t n) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; i++) s += p[i];
  return s;
}

/* Sum of (p[i] - m)^2. */
static float sqdev_f(const float *p, int64_t n, float m) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; i++) s += (p[i] - m) * (p[i] - m);
  return s;
}

/* Adds the sums of g[i] and of g[i] (p[i] - m). */
static void dot_f(const float *g, const float *p, int64_t n, float m, double *sg, double *sgx) {
  float a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
  for (int64_t i = 0; i < n; i++) {
    a += g[i];
    b += g[i] * (p[i] - m);
  }
  *sg += a;
  *sgx += b;
}

/* ---- batch norm, S = 1: oneDNN ----------------------------------------------------------- */
typedef struct {
  int64_t N, C;
  unsigned flags;
  dnnl_prop_kind_t prop;
  float eps;
  dnnl_memory_desc_t data, chan;
  const_dnnl_primitive_desc_t hint;
} bn_ctx;

static dnnl_status_t build_bn(void *vctx, dnnl_primitive_desc_t *pd) {
  bn_ctx *x = vctx;
  dnnl_batch_normalization_desc_t d;
  bool fwd = x->prop == dnnl_forward_training || x->prop == dnnl_forward_inference;
  dnnl_status_t st =
      fwd ? dnnl_batch_normalization_forward_desc_init(&d, x->prop, &x->data, x->eps, x->flags)
          : dnnl_batch_normalization_backward_desc_init(&d, x->prop, &x->data, &x->data, x->eps,
                                                        x->flags);
  if (st != dnnl_success) return st;
  return dnnl_primitive_desc_create(pd, &d, NULL, em__dnnl_engine(), x->hint);
}

static const em_dnnl_prim *bn_prim(bn_ctx *x) {
  /* (N, C, 1, 1) with nhwc strides: the bytes of (N, C), and oneDNN's JIT kernel */
  dnnl_memory_desc_init_by_strides(&x->data, 4, (dnnl_dims_t){x->N, x->C, 1, 1}, dnnl_f32,
                                   (dnnl_dims_t){x->C, 1, x->C, x->C});
  x->chan = em__dnnl_md(1, &x->C);
  char key[128];
  snprintf(key, sizeof key, "bnorm f32 nc %lldx%lld flags %u prop %d eps %a", (long long)x->N,
           (long long)x->C, x->flags, (int)x->prop, (double)x->eps);
  return em__dnnl_get(key, build_bn, x);
}

static unsigned bn_flags(bool training, const float *w, const float *b) {
  return (w ? dnnl_use_scale : 0u) | (b ? dnnl_use_shift : 0u) |
         (training ? 0u : dnnl_use_global_stats);
}

/* mean/var are outputs in training, inputs (use_global_stats) in eval. */
static em_status bn_dnnl_forward(int64_t N, int64_t C, bool training, float eps, const float *x,
                                 float *y, float *mean, float *var, const float *w,
                                 const float *b) {
  bn_ctx c = {
      .N = N, .C = C, .flags = bn_flags(training, w, b), .prop = dnnl_forward_training, .eps = eps};
  const em_dnnl_prim *p = bn_prim(&c);
  if (!p) return em_last_status();
  em_dnnl_arg args[6] = {{DNNL_ARG_SRC, &c.data, (void *)x},
                         {DNNL_ARG_DST, &c.data, y},
                         {DNNL_ARG_MEAN, &c.chan, mean},
                         {DNNL_ARG_VARIANCE, &c.chan, var}};
  int n = 4;
  if (w) args[n++] = (em_dnnl_arg){DNNL_ARG_SCALE, &c.chan, (void *)w};
  if (b) args[n++] = (em_dnnl_arg){DNNL_ARG_SHIFT, &c.chan, (void *)b};
  return em__dnnl_exec("batch_norm", p, n, args);
}

/* dx always (oneDNN writes it); dw/db when non-NULL (then both of the enabled ones). */
static em_status bn_dnnl_backward(int64_t N, int64_t C, bool training, float eps, const float *x,
                                  const float *dy, float *dx, const float *mean, const float *var,
                                  const float *w, const float *b, float *dw, float *db) {
  bn_ctx c = {
      .N = N, .C = C, .flags = bn_flags(training, w, b), .prop = dnnl_forward_training, .eps = eps};
  const em_dnnl_prim *fwd = bn_prim(&c);
  if (!fwd) return em_last_status();
  c.hint = fwd->pd;
  c.prop = dw || db ? dnnl_backward : dnnl_backward_data;
  const em_dnnl_prim *p = bn_prim(&c);
  if (!p) return em_last_status();
  em_dnnl_arg args[9] = {{DNNL_ARG_SRC, &c.data, (void *)x},
                         {DNNL_ARG_MEAN, &c.chan, (void *)mean},
                         {DNNL_ARG_VARIANCE, &c.chan, (void *)var},
                         {DNNL_ARG_DIFF_DST, &c.data, (void *)dy},
                         {DNNL_ARG_DIFF_SRC, &c.data, dx}};
  int n = 5;
  if (w) args[n++] = (em_dnnl_arg){DNNL_ARG_SCALE, &c.chan, (void *)w};
  if (b) args[n++] = (em_dnnl_arg){DNNL_ARG_SHIFT, &c.chan, (void *)b}; /* asked for, unused */
  if (dw) args[n++] = (em_dnnl_arg){DNNL_ARG_DIFF_SCALE, &c.chan, dw};
  if (db) args[n++] = (em_dnnl_arg){DNNL_ARG_DIFF_SHIFT, &c.chan, db};
  return em__dnnl_exec("batch_norm backward", p, n, args);
}

/* ---- batch norm, S > 1: plain loops over x (N, C, S) ------------------------------------- */
static void bn_loop_forward(int64_t N, int64_t C, int64_t S, bool training, float eps,
                            const float *x, float *y, float *mean, float *var, const float *w,
                            const float *b) {
  for (int64_t c = 0; c < C; c++) {
    if (training) { /* two passes: the mean, then squared deviations from it */
      double acc = 0, acc2 = 0;
      for (int64_t n = 0; n < N; n++) acc += sum_f(x + (n * C + c) * S, S);
      mean[c] = (float)(acc / (double)(N * S));
      for (int64_t n = 0; n < N; n++) acc2 += sqdev_f(x + (n * C + c) * S, S, mean[c]);
      var[c] = (float)(acc2 / (double)(N * S));
    }
    float a = (w ? w[c] : 1.0f) / sqrtf(var[c] + eps), sh = (b ? b[c] : 0.0f) - mean[c] * a;
    for (int64_t n = 0; n < N; n++) {
      const float *p = x + (n * C + c) * S;
      float *q = y + (n * C + c) * S;
#pragma omp simd
      for (int64_t i = 0; i < S; i++) q[i] = p[i] * a + sh;
    }
  }
}

/* With xh = (x - mean) inv, M = N S:  db = sum dy, dw = sum dy xh,
 *   training: dx = w inv (dy - db / M - xh dw / M);   eval: dx = w inv dy. */
static void bn_loop_backward(int64_t N, int64_t C, int64_t S, bool training, float eps,
                             const float *x, const float *dy, float *dx, const float *mean,
                             const float *var, const float *w, float *dw, float *db) {
  for (int64_t c = 0; c < C; c++) {
    float m = mean[c], inv = 1.0f / sqrtf(var[c] + eps);
    double sg = 0, sgx = 0;
    for (int64_t n = 0; n < N; n++)
      dot_f(dy + (n * C + c) * S, x + (n * C + c) * S, S, m, &sg, &sgx);
    if (db) db[c] = (float)sg;
    if (dw) dw[c] = (float)(sgx * inv);
    if (!dx) continue;
    float k = (w ? w[c] : 1.0f) * inv, M = (float)(N * S);
    float mg = training ? (float)sg / M : 0.0f, mgx = training ? (float)sgx * inv * inv / M : 0.0f;
    for (int64_t n = 0; n < N; n++) {
      const float *p = x + (n * C + c) * S, *g = dy + (n * C + c) * S;
      float *q = dx + (n * C + c) * S;
#pragma omp simd
      for (int64_t i = 0; i < S; i++) q[i] = k * (g[i] - mg - (p[i] - m) * mgx);
    }
  }
}

/* ---- batch norm kernels ------------------------------------------------------------------ */
static void bn_dims(const em_tensor *x, int64_t *N, int64_t *C, int64_t *S) {
  *N = x->shape[0];
  *C = x->shape[1];
  *S = em__shape_numel(x->ndim - 2, x->shape + 2);
}

static const float *data_or_null(const em_tensor *t) { return t ? em_data_f32(t) : NULL; }

em_status em__cpu_batch_norm(const em_tensor *x, const em_tensor *weight, const em_tensor *bias,
                             bool training, float eps, em_tensor *y, em_tensor *mean,
                             em_tensor *var) {
  int64_t N, C, S;
  bn_dims(x, &N, &C, &S);
  const float *pw = data_or_null(weight), *pb = data_or_null(bias);
  if (S == 1 && N * C > 0)
    return bn_dnnl_forward(N, C, training, eps, em_data_f32(x), em_data_f32(y), em_data_f32(mean),
                           em_data_f32(var), pw, pb);
  if (N * C * S > 0)
    bn_loop_forward(N, C, S, training, eps, em_data_f32(x), em_data_f32(y), em_data_f32(mean),
                    em_data_f32(var), pw, pb);
  return EM_OK;
}

/* oneDNN writes dx always, and with dnnl_backward the gradient of every enabled parameter (scale
 * when weight, shift when bias): the ones the caller did not ask for go to a scratch block. */
static em_status bn_dnnl_backward_outputs(int64_t N, int64_t C, bool training, float eps,
                                          const float *x, const float *dy, float *dx,
                                          const float *mean, const float *var, const float *w,
                                          const float *b, float *dw, float *db) {
  bool params = dw || db;
  size_t n_dx = dx ? 0 : em__padded_size((size_t)(N * C) * sizeof(float));
  size_t n_dw = params && w && !dw ? em__padded_size((size_t)C * sizeof(float)) : 0;
  size_t n_db = params && b && !db ? em__padded_size((size_t)C * sizeof(float)) : 0;
  size_t nbytes = n_dx + n_dw + n_db;
  char *scratch = nbytes ? em__cpu_alloc(0, nbytes) : NULL;
  if (nbytes && !scratch)
    return em_set_error(EM_ERR_NOMEM, "batch_norm backward: out of memory (%zu bytes)", nbytes);
  if (n_dx) dx = (float *)scratch;
  if (n_dw) dw = (float *)(scratch + n_dx);
  if (n_db) db = (float *)(scratch + n_dx + n_dw);
  em_status st = bn_dnnl_backward(N, C, training, eps, x, dy, dx, mean, var, w, b, dw, db);
  if (scratch) em__cpu_free(0, scratch, nbytes);
  return st;
}

em_status em__cpu_batch_norm_backward(const em_tensor *x, const em_tensor *dy,
                                      const em_tensor *mean, const em_tensor *var,
                                      const em_tensor *weight, const em_tensor *bias, bool training,
                                      float eps, em_tensor *dx, em_tensor *dw, em_tensor *db) {
  int64_t N, C, S;
  bn_dims(x, &N, &C, &S);
  float *pdx = dx ? em_data_f32(dx) : NULL, *pdw = dw ? em_data_f32(dw) : NULL;
  float *pdb = db ? em_data_f32(db) : NULL;
  if (N * C * S == 0) { /* nothing to sum: zero gradients */
    if (pdx) memset(pdx, 0, (size_t)em_numel(dx) * sizeof(float));
    if (pdw) memset(pdw, 0, (size_t)C * sizeof(float));
    if (pdb) memset(pdb, 0, (size_t)C * sizeof(float));
    return EM_OK;
  }
  const float *px = em_data_f32(x), *pdy = em_data_f32(dy), *pm = em_data_f32(mean);
  const float *pv = em_data_f32(var), *pw = data_or_null(weight), *pb = data_or_null(bias);
  if (S == 1)
    return bn_dnnl_backward_outputs(N, C, training, eps, px, pdy, pdx, pm, pv, pw, pb, pdw, pdb);
  bn_loop_backward(N, C, S, training, eps, px, pdy, pdx, pm, pv, pw, pdw, pdb);
  return EM_OK;
}

em_status em__cpu_batch_norm_update_stats(em_tensor *running_mean, em_tensor *running_var,
                                          const em_tensor *mean, const em_tensor *var,
                                          float momentum, int64_t M) {
  double m = momentum, unbias = (double)M / (double)(M - 1);
  const float *pm = em_data_f32(mean), *pv = em_data_f32(var);
  for (int64_t c = 0, C = em_numel(mean); c < C; c++) {
    if (running_mean) em_set(running_mean, c, (1 - m) * em_get(running_mean, c) + m * pm[c]);
    if (running_var) em_set(running_var, c, (1 - m) * em_get(running_var, c) + m * pv[c] * unbias);
  }
  return EM_OK;
}

/* ---- layer norm: plain loops over rows ------------------------------------------------------ */
/* y (R, D) = (x - mean) rstd w + b per row (w, b (D): ones and zeros when absent); mean/rstd (R)
 * kept when non-NULL. */
static void ln_forward(int64_t R, int64_t D, float eps, const float *x, float *y, float *mean,
                       float *rstd, const float *w, const float *b) {
  for (int64_t r = 0; r < R; r++) {
    const float *p = x + r * D;
    float *q = y + r * D;
    float m = sum_f(p, D) / (float)D;
    float inv = 1.0f / sqrtf(sqdev_f(p, D, m) / (float)D + eps);
    if (mean) {
      mean[r] = m;
      rstd[r] = inv;
    }
#pragma omp simd
    for (int64_t i = 0; i < D; i++) q[i] = (p[i] - m) * inv * w[i] + b[i];
  }
}

/* With xh = (x - mean) rstd and g = dy w:  dx = rstd (g - mean(g) - xh mean(g xh)),
 * dw += dy xh, db += dy (over rows); w (D) is ones when absent; dx may be NULL. */
static void ln_backward(int64_t R, int64_t D, const float *x, const float *dy, float *dx,
                        const float *mean, const float *rstd, const float *w, float *dw,
                        float *db) {
  for (int64_t r = 0; r < R; r++) {
    const float *p = x + r * D, *g = dy + r * D;
    float m = mean[r], inv = rstd[r], sg = 0, sgx = 0;
#pragma omp simd reduction(+ : sg, sgx)
    for (int64_t i = 0; i < D; i++) {
      float xh = (p[i] - m) * inv;
      dw[i] += g[i] * xh;
      db[i] += g[i];
      sg += g[i] * w[i];
      sgx += g[i] * w[i] * xh;
    }
    if (!dx) continue;
    float mg = sg / (float)D, mgx = sgx / (float)D; /* mean(g), mean(g xh) */
    float *q = dx + r * D;
#pragma omp simd
    for (int64_t i = 0; i < D; i++) q[i] = inv * (g[i] * w[i] - mg - (p[i] - m) * inv * mgx);
  }
}

/* ---- layer norm kernels ------------------------------------------------------------------- */
em_status em__cpu_layer_norm(const em_tensor *x, const em_tensor *weight, const em_tensor *bias,
                             float eps, em_tensor *y, em_tensor *mean, em_tensor *rstd) {
  int64_t D = em_numel(weight);
  if (D == 0) { /* empty rows: no statistics */
    if (mean) memset(em_data(mean), 0, (size_t)em_numel(mean) * sizeof(float));
    if (rstd) memset(em_data(rstd), 0, (size_t)em_numel(rstd) * sizeof(float));
    return EM_OK;
  }
  ln_forward(em_numel(x) / D, D, eps, em_data_f32(x), em_data_f32(y),
             mean ? em_data_f32(mean) : NULL, rstd ? em_data_f32(rstd) : NULL, em_data_f32(weight),
             em_data_f32(bias));
  return EM_OK;
}

em_status em__cpu_layer_norm_backward(const em_tensor *x, const em_tensor *dy,
                                      const em_tensor *mean, const em_tensor *rstd,
                                      const em_tensor *weight, em_tensor *dx, em_tensor *dw,
                                      em_tensor *db) {
  int64_t D = em_numel(weight);
  if (D == 0) return EM_OK; /* dx, dw and db are empty */
  memset(em_data(dw), 0, (size_t)D * sizeof(float));
  memset(em_data(db), 0, (size_t)D * sizeof(float));
  ln_backward(em_numel(x) / D, D, em_data_f32(x), em_data_f32(dy), dx ? em_data_f32(dx) : NULL,
              em_data_f32(mean), em_data_f32(rstd), em_data_f32(weight), em_data_f32(dw),
              em_data_f32(db));
  return EM_OK;
}
