/* ops_norm.c: batch normalisation and layer normalisation, forward (training and eval) and
 * backward.
 *
 *   batch norm:  x (N, C, ...) seen as (N, C, S); statistics per channel (C) over M = N * S
 *                values; weight = scale (C), bias = shift (C)
 *   layer norm:  x (..., D1..Dn) seen as (R, D), D = D1 * ... * Dn; statistics per row (R);
 *                weight/bias (D1..Dn) = scale/shift (D)
 *   y = (x - mean) / sqrt(var + eps) * scale + shift      (var biased, as PyTorch normalises)
 *
 * Batch norm in training also updates running_mean/var in place as PyTorch does:
 *   running = (1 - momentum) running + momentum stat,  stat = mean, or var * M / (M - 1)
 * (the unbiased variance). In eval it normalises with the running statistics, and backward
 * treats them as constants.
 *
 * Kernels. oneDNN 2.6 has a JIT batch normalisation for channels-last data only; on nchw it runs
 * a generic kernel that was 2x slower than the plain loops below (64x32x26x26, one thread: 5.4
 * against 2.9 ms forward + backward). So:
 *   - S = 1 ((N, C) inputs, after a linear layer): oneDNN, the data described as (N, C, 1, 1)
 *     with nhwc strides (the same bytes), which selects its JIT kernel;
 *   - S > 1 (images, nchw): plain loops over each channel's N contiguous runs of S values.
 * Layer norm is plain loops over rows (oneDNN's simple_layer_normalization was 1.8x slower). */
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

/* Gradients of weight/bias come out as (C) or (D); give them the parameter's own shape. */
static em_tensor *as_shape_of(em_tensor *g, const em_tensor *param) {
  int64_t cs[EM_MAX_DIMS];
  em__contig_strides(param->ndim, param->shape, cs);
  return em__view(g, param->ndim, param->shape, cs, g->offset);
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

/* ---- batch norm op ------------------------------------------------------------------------ */
/* Node: inputs {x, weight, bias} (weight/bias may be NULL); saved {x, mean, var, weight?,
 * bias?}; i[0..2] = N, C, S, i[3] = training, i[4], i[5] = index of weight, bias in saved[]
 * (-1: none); f[0] = eps. */
static em_status bn_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  int64_t N = n->i[0], C = n->i[1], S = n->i[2];
  bool training = n->i[3];
  float eps = (float)n->f[0];
  em_tensor *x = n->saved[0], *in_w = n->inputs[1], *in_b = n->inputs[2];
  em_tensor *w = n->i[4] >= 0 ? n->saved[n->i[4]] : NULL;
  em_tensor *b = n->i[5] >= 0 ? n->saved[n->i[5]] : NULL;
  bool need_x = n->inputs[0]->requires_grad, need_w = in_w && in_w->requires_grad;
  bool need_b = in_b && in_b->requires_grad;
  /* oneDNN writes dx always, and with dnnl_backward both enabled parameter gradients */
  bool dnnl = S == 1 && N * C > 0;
  bool want_dw = need_w || (dnnl && need_b && w), want_db = need_b || (dnnl && need_w && b);
  em_tensor *dx = need_x || dnnl ? em_empty(EM_F32, x->ndim, x->shape) : NULL;
  em_tensor *dw = want_dw ? em_zeros(EM_F32, EM_SHAPE(C)) : NULL;
  em_tensor *db = want_db ? em_zeros(EM_F32, EM_SHAPE(C)) : NULL;
  if (((need_x || dnnl) && !dx) || (want_dw && !dw) || (want_db && !db)) return em_last_status();
  const float *px = em_data_f32(x), *pm = em_data_f32(n->saved[1]), *pv = em_data_f32(n->saved[2]);
  const float *pw = w ? em_data_f32(w) : NULL, *pb = b ? em_data_f32(b) : NULL;
  float *pdx = dx ? em_data_f32(dx) : NULL, *pdw = dw ? em_data_f32(dw) : NULL;
  float *pdb = db ? em_data_f32(db) : NULL;
  if (dnnl) {
    em_status st =
        bn_dnnl_backward(N, C, training, eps, px, em_data_f32(gout), pdx, pm, pv, pw, pb, pdw, pdb);
    if (st != EM_OK) return st;
  } else if (N * C * S > 0) {
    bn_loop_backward(N, C, S, training, eps, px, em_data_f32(gout), pdx, pm, pv, pw, pdw, pdb);
  } else if (dx) {
    memset(pdx, 0, (size_t)em_numel(dx) * sizeof(float));
  }
  if (need_x) gin[0] = dx;
  if (need_w && !(gin[1] = as_shape_of(dw, in_w))) return em_last_status();
  if (need_b && !(gin[2] = as_shape_of(db, in_b))) return em_last_status();
  return EM_OK;
}

/* A contiguous private copy of t (statistics kept for backward must not change under it). */
static em_tensor *copy_of(em_tensor *t) {
  em_tensor *c = em_empty(EM_F32, t->ndim, t->shape);
  if (!c) return NULL;
  for (int64_t i = 0, n = em_numel(t); i < n; i++) em_data_f32(c)[i] = (float)em_get(t, i);
  return c;
}

static bool check_chan(const char *op, const em_tensor *t, const char *what, const em_tensor *x,
                       int64_t C) {
  if (!t) return true;
  if (!em__check_f32(op, t, what) || !em__check_cpu(op, t)) return false;
  if (t->ndim == 1 && t->shape[0] == C) return true;
  char st[EM_SHAPE_STR_LEN], sx[EM_SHAPE_STR_LEN];
  em_set_error(EM_ERR_INVALID, "%s: %s %s does not match x %s (need [%lld])", op, what,
               em_shape_str(t, st, sizeof st), em_shape_str(x, sx, sizeof sx), (long long)C);
  return false;
}

static em_tensor *batch_norm_impl(em_tensor *x, em_tensor *weight, em_tensor *bias,
                                  em_tensor *running_mean, em_tensor *running_var, bool training,
                                  float momentum, float eps) {
  static const char *op = "batch_norm";
  EM_CHECK_INPUT(x, op);
  if (!em__check_f32(op, x, "x") || !em__check_cpu(op, x)) return NULL;
  char sx[EM_SHAPE_STR_LEN];
  if (x->ndim < 2) {
    em_set_error(EM_ERR_INVALID, "%s: x %s must be (N, C, ...)", op,
                 em_shape_str(x, sx, sizeof sx));
    return NULL;
  }
  int64_t N = x->shape[0], C = x->shape[1], S = em__shape_numel(x->ndim - 2, x->shape + 2);
  if (!check_chan(op, weight, "weight", x, C) || !check_chan(op, bias, "bias", x, C) ||
      !check_chan(op, running_mean, "running_mean", x, C) ||
      !check_chan(op, running_var, "running_var", x, C))
    return NULL;
  if (!training && (!running_mean || !running_var)) {
    em_set_error(EM_ERR_INVALID, "%s: x %s: eval mode needs running_mean and running_var", op,
                 em_shape_str(x, sx, sizeof sx));
    return NULL;
  }
  if (training && N * S <= 1) {
    em_set_error(EM_ERR_INVALID,
                 "%s: x %s: training needs more than 1 value per channel (got %lld)", op,
                 em_shape_str(x, sx, sizeof sx), (long long)(N * S));
    return NULL;
  }
  em_tensor *cx = em__contig(x), *cw = weight ? em__contig(weight) : NULL;
  em_tensor *cb = bias ? em__contig(bias) : NULL;
  em_tensor *out = em_empty(EM_F32, x->ndim, x->shape);
  em_tensor *mean = training ? em_zeros(EM_F32, EM_SHAPE(C)) : copy_of(running_mean);
  em_tensor *var = training ? em_zeros(EM_F32, EM_SHAPE(C)) : copy_of(running_var);
  if (!cx || (weight && !cw) || (bias && !cb) || !out || !mean || !var) return NULL;
  const float *pw = cw ? em_data_f32(cw) : NULL, *pb = cb ? em_data_f32(cb) : NULL;
  if (S == 1 && N * C > 0) {
    if (bn_dnnl_forward(N, C, training, eps, em_data_f32(cx), em_data_f32(out), em_data_f32(mean),
                        em_data_f32(var), pw, pb) != EM_OK)
      return NULL;
  } else if (N * C * S > 0) {
    bn_loop_forward(N, C, S, training, eps, em_data_f32(cx), em_data_f32(out), em_data_f32(mean),
                    em_data_f32(var), pw, pb);
  }
  if (training) { /* running statistics, in place, with the unbiased variance */
    double m = momentum, unbias = (double)(N * S) / (double)(N * S - 1);
    for (int64_t c = 0; c < C; c++) {
      if (running_mean)
        em_set(running_mean, c, (1 - m) * em_get(running_mean, c) + m * em_data_f32(mean)[c]);
      if (running_var)
        em_set(running_var, c, (1 - m) * em_get(running_var, c) + m * em_data_f32(var)[c] * unbias);
    }
  }
  em_tensor *ins[3] = {x, weight, bias};
  em_node *n = em__record(out, op, bn_backward, 3, ins);
  if (n) {
    int64_t v[6] = {N, C, S, training, cw ? 3 : -1, cb ? (cw ? 4 : 3) : -1};
    memcpy(n->i, v, sizeof v);
    n->f[0] = eps;
    em__save(n, cx);
    em__save(n, mean);
    em__save(n, var);
    em__save(n, cw);
    em__save(n, cb);
  }
  return out;
}

/* The public ops run in a private scope: contiguous copies and statistics that are not saved
 * for backward end with the op. */
em_tensor *em_batch_norm(em_tensor *x, em_tensor *weight, em_tensor *bias, em_tensor *running_mean,
                         em_tensor *running_var, bool training, float momentum, float eps) {
  em_scope s = em_scope_begin();
  return em__op_end(
      s, batch_norm_impl(x, weight, bias, running_mean, running_var, training, momentum, eps));
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

/* (D) filled with v: the weight or bias a layer norm without one uses. */
static em_tensor *filled(int64_t D, float v) { return em_full(EM_F32, EM_SHAPE(D), v); }

/* Node: inputs {x, weight, bias}; saved {x, mean, rstd, weight?}; i[0], i[1] = R, D. */
static em_status layer_norm_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  int64_t R = n->i[0], D = n->i[1];
  em_tensor *x = n->saved[0], *in_w = n->inputs[1], *in_b = n->inputs[2];
  em_tensor *w = n->n_saved > 3 ? n->saved[3] : NULL;
  bool need_x = n->inputs[0]->requires_grad, need_w = in_w && in_w->requires_grad;
  bool need_b = in_b && in_b->requires_grad;
  em_tensor *dx = need_x ? em_empty(EM_F32, x->ndim, x->shape) : NULL;
  /* dw, db (D) are cheap: always computed, handed back when asked for */
  em_tensor *dw = em_zeros(EM_F32, EM_SHAPE(D)), *db = em_zeros(EM_F32, EM_SHAPE(D));
  if (!w) w = filled(D, 1.0f);
  if ((need_x && !dx) || !dw || !db || !w) return em_last_status();
  ln_backward(R, D, em_data_f32(x), em_data_f32(gout), dx ? em_data_f32(dx) : NULL,
              em_data_f32(n->saved[1]), em_data_f32(n->saved[2]), em_data_f32(w), em_data_f32(dw),
              em_data_f32(db));
  if (need_x) gin[0] = dx;
  if (need_w && !(gin[1] = as_shape_of(dw, in_w))) return em_last_status();
  if (need_b && !(gin[2] = as_shape_of(db, in_b))) return em_last_status();
  return EM_OK;
}

/* weight/bias must have the shape of x's last n dims. */
static bool check_ln_param(const em_tensor *t, const char *what, const em_tensor *x, int n) {
  static const char *op = "layer_norm";
  if (!t) return true;
  if (!em__check_f32(op, t, what) || !em__check_cpu(op, t)) return false;
  bool ok = t->ndim == n;
  for (int k = 0; ok && k < n; k++) ok = t->shape[k] == x->shape[x->ndim - n + k];
  if (ok) return true;
  char st[EM_SHAPE_STR_LEN], sx[EM_SHAPE_STR_LEN];
  em_set_error(EM_ERR_INVALID, "%s: %s %s does not match the last %d dims of x %s", op, what,
               em_shape_str(t, st, sizeof st), n, em_shape_str(x, sx, sizeof sx));
  return false;
}

static em_tensor *layer_norm_impl(em_tensor *x, int n_dims, em_tensor *weight, em_tensor *bias,
                                  float eps) {
  static const char *op = "layer_norm";
  EM_CHECK_INPUT(x, op);
  if (!em__check_f32(op, x, "x") || !em__check_cpu(op, x)) return NULL;
  char sx[EM_SHAPE_STR_LEN];
  if (n_dims < 1 || n_dims > x->ndim) {
    em_set_error(EM_ERR_INVALID, "%s: cannot normalise over the last %d dims of x %s", op, n_dims,
                 em_shape_str(x, sx, sizeof sx));
    return NULL;
  }
  if (!check_ln_param(weight, "weight", x, n_dims) || !check_ln_param(bias, "bias", x, n_dims))
    return NULL;
  int64_t D = em__shape_numel(n_dims, x->shape + x->ndim - n_dims);
  int64_t R = em__shape_numel(x->ndim - n_dims, x->shape);
  bool grad = em_grad_enabled() && (x->requires_grad || (weight && weight->requires_grad) ||
                                    (bias && bias->requires_grad));
  em_tensor *cx = em__contig(x), *cw = weight ? em__contig(weight) : NULL;
  em_tensor *cb = bias ? em__contig(bias) : NULL;
  em_tensor *uw = weight ? cw : filled(D, 1.0f), *ub = bias ? cb : filled(D, 0.0f);
  em_tensor *out = em_empty(EM_F32, x->ndim, x->shape);
  em_tensor *mean = grad ? em_zeros(EM_F32, EM_SHAPE(R)) : NULL;
  em_tensor *rstd = grad ? em_zeros(EM_F32, EM_SHAPE(R)) : NULL;
  if (!cx || !uw || !ub || !out || (grad && (!mean || !rstd))) return NULL;
  if (D > 0)
    ln_forward(R, D, eps, em_data_f32(cx), em_data_f32(out), mean ? em_data_f32(mean) : NULL,
               rstd ? em_data_f32(rstd) : NULL, em_data_f32(uw), em_data_f32(ub));
  em_tensor *ins[3] = {x, weight, bias};
  em_node *n = em__record(out, op, layer_norm_backward, 3, ins);
  if (n) {
    n->i[0] = R;
    n->i[1] = D;
    em__save(n, cx);
    em__save(n, mean);
    em__save(n, rstd);
    em__save(n, cw);
  }
  return out;
}

em_tensor *em_layer_norm(em_tensor *x, int n_dims, em_tensor *weight, em_tensor *bias, float eps) {
  em_scope s = em_scope_begin();
  return em__op_end(s, layer_norm_impl(x, n_dims, weight, bias, eps));
}
