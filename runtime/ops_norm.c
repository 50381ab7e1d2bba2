/* ops_norm.c: batch normalisation and layer normalisation on oneDNN's normalisation primitives,
 * forward (training and inference) and backward.
 *
 *   batch norm:  x (N, C, ...) seen as (N, C, S, 1); statistics per channel (C) over N * S
 *                values; weight = scale (C), bias = shift (C). With S = 1 ((N, C) inputs) the
 *                descriptor says nhwc (same bytes), which runs oneDNN's JIT kernel.
 *   layer norm:  x (..., D1..Dn) seen as (R, D), D = D1 * ... * Dn; statistics per row (R);
 *                weight/bias (D1..Dn) = scale/shift (D)
 *   y = (x - mean) / sqrt(var + eps) * scale + shift      (var biased, as PyTorch normalises)
 *
 * Batch norm in training also updates running_mean/var in place as PyTorch does:
 *   running = (1 - momentum) running + momentum stat,  stat = mean, or var * M / (M - 1)
 * (the unbiased variance, M = N * S). In eval it normalises with the running statistics
 * (dnnl_use_global_stats), and backward treats them as constants.
 *
 * The node keeps x, the statistics used and the weight; backward rebuilds the forward primitive
 * (cached) as the hint of the backward one. The primitive flags use_scale/use_shift follow which
 * of weight/bias were given; backward asks for dscale/dshift (dnnl_backward) only when one of
 * them needs a gradient, else for dx alone (dnnl_backward_data). */
#include "em_internal.h"

#include <stdio.h>
#include <string.h>

typedef enum { NORM_BATCH = 0, NORM_LAYER = 1 } norm_kind;

/* Everything that identifies a primitive. */
typedef struct {
  norm_kind kind;
  int64_t dims[4]; /* batch: (N, C, S, 1); layer: (R, D) */
  int nd;
  unsigned flags;
  dnnl_prop_kind_t prop;
  float eps;
} norm_desc;

typedef struct {
  const norm_desc *d;
  dnnl_memory_desc_t data, stat, chan; /* x, mean/var, scale/shift */
  const_dnnl_primitive_desc_t hint;
} norm_ctx;

static dnnl_status_t build_norm(void *vctx, dnnl_primitive_desc_t *pd) {
  norm_ctx *x = vctx;
  const norm_desc *d = x->d;
  bool fwd = d->prop == dnnl_forward_training || d->prop == dnnl_forward_inference;
  dnnl_status_t st;
  union {
    dnnl_batch_normalization_desc_t bn;
    dnnl_layer_normalization_desc_t ln;
  } u;
  if (d->kind == NORM_BATCH)
    st = fwd ? dnnl_batch_normalization_forward_desc_init(&u.bn, d->prop, &x->data, d->eps,
                                                          d->flags)
             : dnnl_batch_normalization_backward_desc_init(&u.bn, d->prop, &x->data, &x->data,
                                                           d->eps, d->flags);
  else
    st = fwd ? dnnl_layer_normalization_forward_desc_init(&u.ln, d->prop, &x->data, &x->stat,
                                                          d->eps, d->flags)
             : dnnl_layer_normalization_backward_desc_init(&u.ln, d->prop, &x->data, &x->data,
                                                           &x->stat, d->eps, d->flags);
  if (st != dnnl_success) return st;
  return dnnl_primitive_desc_create(pd, &u, NULL, em__dnnl_engine(), x->hint);
}

/* The primitive for d (hint: the forward pd for a backward one); fills x's descriptors. */
static const em_dnnl_prim *norm_prim(const norm_desc *d, const_dnnl_primitive_desc_t hint,
                                     norm_ctx *x) {
  int64_t n_stat = d->kind == NORM_BATCH ? d->dims[1] : d->dims[0];
  *x = (norm_ctx){.d = d, .data = em__dnnl_md(d->nd, d->dims), .stat = em__dnnl_md(1, &n_stat),
                  .chan = em__dnnl_md(1, &d->dims[1]), .hint = hint};
  if (d->kind == NORM_BATCH && d->dims[2] == 1) {
    /* (N, C, 1, 1): the same bytes as nhwc, which has oneDNN's JIT kernel (nchw has none) */
    int64_t C = d->dims[1];
    dnnl_memory_desc_init_by_strides(&x->data, 4, (dnnl_dims_t){d->dims[0], C, 1, 1}, dnnl_f32,
                                     (dnnl_dims_t){C, 1, C, C});
  }
  char key[160];
  snprintf(key, sizeof key, "%s f32 %lldx%lldx%lldx%lld/%d flags %u prop %d eps %a",
           d->kind == NORM_BATCH ? "bnorm" : "lnorm", (long long)d->dims[0],
           (long long)d->dims[1], (long long)d->dims[2], (long long)d->dims[3], d->nd, d->flags,
           (int)d->prop, (double)d->eps);
  return em__dnnl_get(key, build_norm, x);
}

/* Node layout shared by both ops: inputs {x, weight, bias} (weight/bias may be NULL), saved
 * {x, mean, var, weight?, bias?}, i[0..7] = norm_desc fields of the forward primitive, i[8], i[9]
 * = where weight and bias are in saved[] (-1: none), f[0] = eps. */
static void norm_record(em_node *n, const norm_desc *d, em_tensor *x, em_tensor *mean,
                        em_tensor *var, em_tensor *w, em_tensor *b) {
  em__save(n, x);
  em__save(n, mean);
  em__save(n, var);
  n->i[8] = w ? n->n_saved : -1;
  em__save(n, w);
  n->i[9] = b ? n->n_saved : -1;
  em__save(n, b);
  n->i[0] = d->kind;
  for (int k = 0; k < 4; k++) n->i[1 + k] = d->dims[k];
  n->i[5] = d->nd;
  n->i[6] = d->flags;
  n->i[7] = d->prop;
  n->f[0] = d->eps;
}

static norm_desc norm_unpack(const em_node *n) {
  norm_desc d = {.kind = (norm_kind)n->i[0], .nd = (int)n->i[5], .flags = (unsigned)n->i[6],
                 .prop = (dnnl_prop_kind_t)n->i[7], .eps = (float)n->f[0]};
  for (int k = 0; k < 4; k++) d.dims[k] = n->i[1 + k];
  return d;
}

/* y = norm(x) with the given statistics (inputs with use_global_stats, else outputs). */
static em_status norm_forward(const char *op, const norm_desc *d, em_tensor *x, em_tensor *y,
                              em_tensor *mean, em_tensor *var, em_tensor *w, em_tensor *b) {
  norm_ctx c;
  const em_dnnl_prim *p = norm_prim(d, NULL, &c);
  if (!p) return em_last_status();
  em_dnnl_arg args[6] = {{DNNL_ARG_SRC, &c.data, em_data(x)}, {DNNL_ARG_DST, &c.data, em_data(y)}};
  int n = 2;
  if (mean) {
    args[n++] = (em_dnnl_arg){DNNL_ARG_MEAN, &c.stat, em_data(mean)};
    args[n++] = (em_dnnl_arg){DNNL_ARG_VARIANCE, &c.stat, em_data(var)};
  }
  if (w) args[n++] = (em_dnnl_arg){DNNL_ARG_SCALE, &c.chan, em_data(w)};
  if (b) args[n++] = (em_dnnl_arg){DNNL_ARG_SHIFT, &c.chan, em_data(b)};
  return em__dnnl_exec(op, p, n, args);
}

static em_status norm_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  norm_desc fd = norm_unpack(n);
  em_tensor *x = n->saved[0], *mean = n->saved[1], *var = n->saved[2];
  em_tensor *w = n->i[8] >= 0 ? n->saved[n->i[8]] : NULL;
  em_tensor *b = n->i[9] >= 0 ? n->saved[n->i[9]] : NULL;
  em_tensor *in_w = n->inputs[1], *in_b = n->inputs[2];
  bool need_w = in_w && in_w->requires_grad, need_b = in_b && in_b->requires_grad;
  int64_t n_chan = fd.dims[1];
  if (em_numel(x) == 0) { /* nothing was normalised: zero gradients */
    if (n->inputs[0]->requires_grad) gin[0] = em_zeros(EM_F32, x->ndim, x->shape);
    if (need_w) gin[1] = em_zeros(EM_F32, in_w->ndim, in_w->shape);
    if (need_b) gin[2] = em_zeros(EM_F32, in_b->ndim, in_b->shape);
    bool ok = (!n->inputs[0]->requires_grad || gin[0]) && (!need_w || gin[1]) &&
              (!need_b || gin[2]);
    return ok ? EM_OK : em_last_status();
  }
  norm_ctx c;
  const em_dnnl_prim *fwd = norm_prim(&fd, NULL, &c);
  if (!fwd) return em_last_status();
  norm_desc bd = fd;
  bd.prop = need_w || need_b ? dnnl_backward : dnnl_backward_data;
  const em_dnnl_prim *p = norm_prim(&bd, fwd->pd, &c);
  if (!p) return em_last_status();
  /* oneDNN always writes dx, and with dnnl_backward every enabled dscale/dshift */
  bool want_dw = bd.prop == dnnl_backward && (fd.flags & dnnl_use_scale);
  bool want_db = bd.prop == dnnl_backward && (fd.flags & dnnl_use_shift);
  em_tensor *dx = em_empty(EM_F32, n->inputs[0]->ndim, n->inputs[0]->shape);
  em_tensor *dw = want_dw ? em_empty(EM_F32, EM_SHAPE(n_chan)) : NULL;
  em_tensor *db = want_db ? em_empty(EM_F32, EM_SHAPE(n_chan)) : NULL;
  if (!dx || (want_dw && !dw) || (want_db && !db)) return em_last_status();
  em_dnnl_arg args[9] = {{DNNL_ARG_SRC, &c.data, em_data(x)},
                         {DNNL_ARG_MEAN, &c.stat, em_data(mean)},
                         {DNNL_ARG_VARIANCE, &c.stat, em_data(var)},
                         {DNNL_ARG_DIFF_DST, &c.data, em_data(gout)},
                         {DNNL_ARG_DIFF_SRC, &c.data, em_data(dx)}};
  int na = 5;
  if (w) args[na++] = (em_dnnl_arg){DNNL_ARG_SCALE, &c.chan, em_data(w)};
  if (b) args[na++] = (em_dnnl_arg){DNNL_ARG_SHIFT, &c.chan, em_data(b)}; /* asked for, unused */
  if (dw) args[na++] = (em_dnnl_arg){DNNL_ARG_DIFF_SCALE, &c.chan, em_data(dw)};
  if (db) args[na++] = (em_dnnl_arg){DNNL_ARG_DIFF_SHIFT, &c.chan, em_data(db)};
  em_status st = em__dnnl_exec(n->op, p, na, args);
  if (st != EM_OK) return st;
  if (n->inputs[0]->requires_grad) gin[0] = dx;
  /* weight/bias have their own shapes (layer norm: the normalised dims): same bytes as (C) */
  int64_t cs[EM_MAX_DIMS];
  if (need_w) {
    em__contig_strides(in_w->ndim, in_w->shape, cs);
    gin[1] = em__view(dw, in_w->ndim, in_w->shape, cs, 0);
  }
  if (need_b) {
    em__contig_strides(in_b->ndim, in_b->shape, cs);
    gin[2] = em__view(db, in_b->ndim, in_b->shape, cs, 0);
  }
  if ((need_w && !gin[1]) || (need_b && !gin[2])) return em_last_status();
  return EM_OK;
}

/* A contiguous private copy of t (statistics kept for backward must not change under it). */
static em_tensor *copy_of(em_tensor *t) {
  em_tensor *c = em_empty(EM_F32, t->ndim, t->shape);
  if (!c) return NULL;
  for (int64_t i = 0, n = em_numel(t); i < n; i++) em_data_f32(c)[i] = (float)em_get(t, i);
  return c;
}

/* ---- batch norm ------------------------------------------------------------------------- */
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

em_tensor *em_batch_norm(em_tensor *x, em_tensor *weight, em_tensor *bias, em_tensor *running_mean,
                         em_tensor *running_var, bool training, float momentum, float eps) {
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
  em_tensor *ins[3] = {x, weight, bias};
  bool grad = em_grad_enabled() && (x->requires_grad || (weight && weight->requires_grad) ||
                                    (bias && bias->requires_grad));
  norm_desc d = {.kind = NORM_BATCH, .nd = 4, .dims = {N, C, S, 1},
                 .flags = (weight ? dnnl_use_scale : 0u) | (bias ? dnnl_use_shift : 0u) |
                          (training ? 0u : dnnl_use_global_stats),
                 .prop = training || grad ? dnnl_forward_training : dnnl_forward_inference,
                 .eps = eps};
  em_tensor *cx = em__contig(x), *cw = weight ? em__contig(weight) : NULL;
  em_tensor *cb = bias ? em__contig(bias) : NULL;
  em_tensor *out = em_empty(EM_F32, x->ndim, x->shape);
  em_tensor *mean = training ? em_empty(EM_F32, EM_SHAPE(C)) : copy_of(running_mean);
  em_tensor *var = training ? em_empty(EM_F32, EM_SHAPE(C)) : copy_of(running_var);
  if (!cx || (weight && !cw) || (bias && !cb) || !out || !mean || !var) return NULL;
  /* mean/var: outputs in training, inputs (use_global_stats) in eval */
  if (em_numel(x) > 0 && norm_forward(op, &d, cx, out, mean, var, cw, cb) != EM_OK) return NULL;
  if (training) { /* running statistics, in place, with the unbiased variance */
    double m = momentum, unbias = (double)(N * S) / (double)(N * S - 1);
    for (int64_t c = 0; c < C; c++) {
      if (running_mean)
        em_set(running_mean, c, (1 - m) * em_get(running_mean, c) + m * em_data_f32(mean)[c]);
      if (running_var)
        em_set(running_var, c,
               (1 - m) * em_get(running_var, c) + m * em_data_f32(var)[c] * unbias);
    }
  }
  em_node *n = em__record(out, op, norm_backward, 3, ins);
  if (n) norm_record(n, &d, cx, mean, var, cw, cb);
  return out;
}

/* ---- layer norm ------------------------------------------------------------------------- */
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

em_tensor *em_layer_norm(em_tensor *x, int n_dims, em_tensor *weight, em_tensor *bias, float eps) {
  static const char *op = "layer_norm";
  EM_CHECK_INPUT(x, op);
  if (!em__check_f32(op, x, "x") || !em__check_cpu(op, x)) return NULL;
  char sx[EM_SHAPE_STR_LEN];
  if (n_dims < 1 || n_dims > x->ndim) {
    em_set_error(EM_ERR_INVALID, "%s: cannot normalise over the last %d dims of x %s", op,
                 n_dims, em_shape_str(x, sx, sizeof sx));
    return NULL;
  }
  if (!check_ln_param(weight, "weight", x, n_dims) || !check_ln_param(bias, "bias", x, n_dims))
    return NULL;
  int64_t D = em__shape_numel(n_dims, x->shape + x->ndim - n_dims);
  int64_t R = em__shape_numel(x->ndim - n_dims, x->shape);
  em_tensor *ins[3] = {x, weight, bias};
  bool grad = em_grad_enabled() && (x->requires_grad || (weight && weight->requires_grad) ||
                                    (bias && bias->requires_grad));
  norm_desc d = {.kind = NORM_LAYER, .nd = 2, .dims = {R, D, 1, 1},
                 .flags = (weight ? dnnl_use_scale : 0u) | (bias ? dnnl_use_shift : 0u),
                 .prop = grad ? dnnl_forward_training : dnnl_forward_inference, .eps = eps};
  em_tensor *cx = em__contig(x), *cw = weight ? em__contig(weight) : NULL;
  em_tensor *cb = bias ? em__contig(bias) : NULL;
  em_tensor *out = em_empty(EM_F32, x->ndim, x->shape);
  em_tensor *mean = grad ? em_empty(EM_F32, EM_SHAPE(R)) : NULL;
  em_tensor *var = grad ? em_empty(EM_F32, EM_SHAPE(R)) : NULL;
  if (!cx || (weight && !cw) || (bias && !cb) || !out || (grad && (!mean || !var))) return NULL;
  if (R > 0 && D > 0 && norm_forward(op, &d, cx, out, mean, var, cw, cb) != EM_OK) return NULL;
  em_node *n = em__record(out, op, norm_backward, 3, ins);
  if (n) norm_record(n, &d, cx, mean, var, cw, cb);
  return out;
}
