/* ops/norm.c: batch normalisation and layer normalisation, forward (training and eval) and
 * backward (front ends: checks, outputs, autograd; the kernels are the device table's batch_norm
 * and layer_norm slots).
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
 * treats them as constants. */
#include "core/kernels.h"

#include <string.h>

/* Gradients of weight/bias come out as (C) or (D); give them the parameter's own shape. */
static em_tensor *as_shape_of(em_tensor *g, const em_tensor *param) {
  int64_t cs[EM_MAX_DIMS];
  em__contig_strides(param->ndim, param->shape, cs);
  return em__view(g, param->ndim, param->shape, cs, g->offset);
}

/* A contiguous private copy of t (statistics kept for backward must not change under it). */
static em_tensor *copy_of(const char *op, em_tensor *t) {
  const em_kernels *k = EM_KERNELS(t, copy_view, op);
  em_tensor *c = k ? em__empty_on(t->device, EM_F32, t->ndim, t->shape) : NULL;
  return c && k->copy_view(c, t) == EM_OK ? c : NULL;
}

/* ---- batch norm --------------------------------------------------------------------------- */
/* Node: inputs {x, weight, bias} (weight/bias may be NULL); saved {x, mean, var, weight?,
 * bias?}; i[0] = training, i[1], i[2] = index of weight, bias in saved[] (-1: none); f[0] = eps. */
static em_status bn_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *x = n->saved[0], *in_w = n->inputs[1], *in_b = n->inputs[2];
  em_tensor *w = n->i[1] >= 0 ? n->saved[n->i[1]] : NULL;
  em_tensor *b = n->i[2] >= 0 ? n->saved[n->i[2]] : NULL;
  bool need_x = n->inputs[0]->requires_grad, need_w = in_w && in_w->requires_grad;
  bool need_b = in_b && in_b->requires_grad;
  const em_kernels *k = EM_KERNELS(x, batch_norm_backward, n->op);
  if (!k) return em_last_status();
  int64_t C = x->shape[1];
  em_tensor *dx = need_x ? em__empty_on(x->device, EM_F32, x->ndim, x->shape) : NULL;
  em_tensor *dw = need_w ? em__empty_on(x->device, EM_F32, 1, &C) : NULL;
  em_tensor *db = need_b ? em__empty_on(x->device, EM_F32, 1, &C) : NULL;
  if ((need_x && !dx) || (need_w && !dw) || (need_b && !db)) return em_last_status();
  em_status st = k->batch_norm_backward(x, gout, n->saved[1], n->saved[2], w, b, n->i[0],
                                        (float)n->f[0], dx, dw, db);
  if (st != EM_OK) return st;
  if (need_x) gin[0] = dx;
  if (need_w && !(gin[1] = as_shape_of(dw, in_w))) return em_last_status();
  if (need_b && !(gin[2] = as_shape_of(db, in_b))) return em_last_status();
  return EM_OK;
}

static bool check_chan(const char *op, const em_tensor *t, const char *what, const em_tensor *x,
                       int64_t C) {
  if (!t) return true;
  if (!em__check_f32(op, t, what) || !em__check_device(op, x, t, what)) return false;
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
  const em_kernels *k = em__check_f32(op, x, "x") ? EM_KERNELS(x, batch_norm, op) : NULL;
  if (!k) return NULL;
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
  em_tensor *out = em__empty_on(x->device, EM_F32, x->ndim, x->shape);
  em_tensor *mean = training ? em__empty_on(x->device, EM_F32, 1, &C) : copy_of(op, running_mean);
  em_tensor *var = training ? em__empty_on(x->device, EM_F32, 1, &C) : copy_of(op, running_var);
  if (!cx || (weight && !cw) || (bias && !cb) || !out || !mean || !var) return NULL;
  if (k->batch_norm(cx, cw, cb, training, eps, out, mean, var) != EM_OK) return NULL;
  if (training &&
      k->batch_norm_update_stats(running_mean, running_var, mean, var, momentum, N * S) != EM_OK)
    return NULL;
  em_tensor *ins[3] = {x, weight, bias};
  em_node *n = em__record(out, op, bn_backward, 3, ins);
  if (n) {
    int64_t v[3] = {training, cw ? 3 : -1, cb ? (cw ? 4 : 3) : -1};
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

/* ---- layer norm --------------------------------------------------------------------------- */
/* (D) filled with v on x's device: the weight or bias a layer norm without one uses. */
static em_tensor *filled(const char *op, const em_tensor *x, int64_t D, float v) {
  const em_kernels *k = EM_KERNELS(x, fill, op);
  em_tensor *t = k ? em__empty_on(x->device, EM_F32, 1, &D) : NULL;
  return t && k->fill(t, v) == EM_OK ? t : NULL;
}

/* Node: inputs {x, weight, bias}; saved {x, mean, rstd, weight?}; i[0] = D. */
static em_status layer_norm_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  int64_t D = n->i[0];
  em_tensor *x = n->saved[0], *in_w = n->inputs[1], *in_b = n->inputs[2];
  em_tensor *w = n->n_saved > 3 ? n->saved[3] : NULL;
  bool need_x = n->inputs[0]->requires_grad, need_w = in_w && in_w->requires_grad;
  bool need_b = in_b && in_b->requires_grad;
  const em_kernels *k = EM_KERNELS(x, layer_norm_backward, n->op);
  if (!k) return em_last_status();
  em_tensor *dx = need_x ? em__empty_on(x->device, EM_F32, x->ndim, x->shape) : NULL;
  /* dw, db (D) are cheap: always computed, handed back when asked for */
  em_tensor *dw = em__empty_on(x->device, EM_F32, 1, &D);
  em_tensor *db = em__empty_on(x->device, EM_F32, 1, &D);
  if (!w) w = filled(n->op, x, D, 1.0f);
  if ((need_x && !dx) || !dw || !db || !w) return em_last_status();
  em_status st = k->layer_norm_backward(x, gout, n->saved[1], n->saved[2], w, dx, dw, db);
  if (st != EM_OK) return st;
  if (need_x) gin[0] = dx;
  if (need_w && !(gin[1] = as_shape_of(dw, in_w))) return em_last_status();
  if (need_b && !(gin[2] = as_shape_of(db, in_b))) return em_last_status();
  return EM_OK;
}

/* weight/bias must have the shape of x's last n dims. */
static bool check_ln_param(const em_tensor *t, const char *what, const em_tensor *x, int n) {
  static const char *op = "layer_norm";
  if (!t) return true;
  if (!em__check_f32(op, t, what) || !em__check_device(op, x, t, what)) return false;
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
  const em_kernels *k = em__check_f32(op, x, "x") ? EM_KERNELS(x, layer_norm, op) : NULL;
  if (!k) return NULL;
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
  em_tensor *uw = weight ? cw : filled(op, x, D, 1.0f), *ub = bias ? cb : filled(op, x, D, 0.0f);
  em_tensor *out = em__empty_on(x->device, EM_F32, x->ndim, x->shape);
  em_tensor *mean = grad ? em__empty_on(x->device, EM_F32, 1, &R) : NULL;
  em_tensor *rstd = grad ? em__empty_on(x->device, EM_F32, 1, &R) : NULL;
  if (!cx || !uw || !ub || !out || (grad && (!mean || !rstd))) return NULL;
  if (k->layer_norm(cx, uw, ub, eps, out, mean, rstd) != EM_OK) return NULL;
  em_tensor *ins[3] = {x, weight, bias};
  em_node *n = em__record(out, op, layer_norm_backward, 3, ins);
  if (n) {
    n->i[0] = D;
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
