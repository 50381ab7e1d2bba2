/* ops/loss.c: cross-entropy (fused log_softmax + nll), nll_loss and mse_loss (front ends: checks,
 * outputs, autograd; the kernels are the device table's cross_entropy, nll, mse and their
 * backwards).
 *
 *   cross_entropy  logits x (N, C), labels y (N) i64 or i32:  l_i = logsumexp(x_i) - x_i,y_i
 *   nll_loss       log-probabilities (N, C), labels (N):      l_i = -logp_i,y_i
 *   mse_loss       a, b of one shape:                         l_i = (a_i - b_i)^2
 *
 * Rows whose label is ignore_index give 0 and no gradient. The losses are reduced to their mean
 * (over the rows not ignored, as PyTorch), their sum, or kept per row. cross_entropy saves x and
 * lse_i = logsumexp(x_i) (N): backward recomputes softmax from them, so no (N, C) probability
 * buffer is kept between forward and backward. */
#include "core/kernels.h"

/* Check x (N, C) f32 and labels (N) i64/i32 on x's device; every label in [0, C) or ignore. Sets
 * *count to the number of labels not ignored and *lab to contiguous labels. */
static bool check_labels(const char *op, em_tensor *x, em_tensor *labels, int64_t ignore,
                         em_tensor **lab, int64_t *count) {
  char a[EM_SHAPE_STR_LEN], b[EM_SHAPE_STR_LEN];
  if (!em__check_f32(op, x, "input") || !em__check_device(op, x, labels, "labels")) return false;
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
  const em_kernels *k = EM_KERNELS(labels, check_index, op);
  *lab = k ? em__contig(labels) : NULL;
  int64_t bad, value;
  if (!*lab || k->check_index(*lab, x->shape[1], &ignore, NULL, count, &bad, &value) != EM_OK)
    return false;
  if (bad >= 0) {
    em_set_error(
        EM_ERR_INVALID, "%s: label %lld at row %lld is out of range for %lld classes (input %s)",
        op, (long long)value, (long long)bad, (long long)x->shape[1], em_shape_str(x, a, sizeof a));
    return false;
  }
  return true;
}

static bool check_reduction(const char *op, em_reduction red) {
  if (red == EM_REDUCE_MEAN || red == EM_REDUCE_SUM || red == EM_REDUCE_NONE) return true;
  em_set_error(EM_ERR_INVALID, "%s: unknown reduction %d", op, (int)red);
  return false;
}

/* The loss: one per row or element (shape) for EM_REDUCE_NONE, else a scalar. */
static em_tensor *loss_out(em_device dev, em_reduction red, int ndim, const int64_t *shape) {
  return red == EM_REDUCE_NONE ? em__empty_on(dev, EM_F32, ndim, shape)
                               : em__empty_on(dev, EM_F32, 0, NULL);
}

static double reduce_scale(em_reduction red, int64_t count) {
  return red == EM_REDUCE_MEAN ? 1.0 / (double)count : 1.0;
}

/* ---- cross entropy -------------------------------------------------------------------------- */
/* n->i[0..2] = reduction, ignore_index, count; saved: x, labels, lse. */
static em_status ce_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *x = n->saved[0], *lab = n->saved[1], *lse = n->saved[2];
  em_reduction red = (em_reduction)n->i[0];
  const em_kernels *k = EM_KERNELS(x, cross_entropy_backward, n->op);
  em_tensor *g = k ? em__empty_on(x->device, EM_F32, 2, x->shape) : NULL;
  if (!g) return em_last_status();
  em_status st =
      k->cross_entropy_backward(x, lab, lse, n->i[1], gout, red, reduce_scale(red, n->i[2]), g);
  if (st == EM_OK) gin[0] = g;
  return st;
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
  const em_kernels *k = EM_KERNELS(logits, cross_entropy, op);
  int64_t N = logits->shape[0];
  em_tensor *x = k ? em__contig(logits) : NULL;
  em_tensor *lse = x ? em__empty_on(x->device, EM_F32, 1, &N) : NULL;
  em_tensor *out = lse ? loss_out(x->device, red, 1, &N) : NULL;
  if (!out || k->cross_entropy(x, lab, ignore_index, red, count, lse, out) != EM_OK) return NULL;
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

/* The public ops run in a private scope: contiguous copies and buffers that are not saved for
 * backward end with the op. */
em_tensor *em_cross_entropy_ex(em_tensor *logits, em_tensor *labels, em_reduction red,
                               int64_t ignore_index) {
  em_scope s = em_scope_begin();
  return em__op_end(s, cross_entropy_impl(logits, labels, red, ignore_index));
}

em_tensor *em_cross_entropy(em_tensor *logits, em_tensor *labels) {
  return em_cross_entropy_ex(logits, labels, EM_REDUCE_MEAN, EM_IGNORE_INDEX_DEFAULT);
}

/* ---- nll ---------------------------------------------------------------------------------- */
/* n->i[0..2] = reduction, ignore_index, count; saved: labels. */
static em_status nll_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *a = n->inputs[0];
  em_reduction red = (em_reduction)n->i[0];
  const em_kernels *k = EM_KERNELS(a, nll_backward, n->op);
  em_tensor *g = k ? em__empty_on(a->device, EM_F32, 2, a->shape) : NULL;
  if (!g) return em_last_status();
  em_status st = k->nll_backward(n->saved[0], n->i[1], gout, red, reduce_scale(red, n->i[2]), g);
  if (st == EM_OK) gin[0] = g;
  return st;
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
  const em_kernels *k = EM_KERNELS(logp, nll, op);
  em_tensor *out = k ? loss_out(logp->device, red, 1, logp->shape) : NULL;
  if (!out || k->nll(logp, lab, ignore_index, red, count, out) != EM_OK) return NULL;
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
/* n->i[0] = reduction; saved: contiguous a and b. */
static em_status mse_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *a = n->saved[0], *b = n->saved[1];
  em_reduction red = (em_reduction)n->i[0];
  const em_kernels *k = EM_KERNELS(a, mse_backward, n->op);
  em_tensor *ga = k ? em__empty_on(a->device, EM_F32, a->ndim, a->shape) : NULL;
  if (!ga) return em_last_status();
  em_status st = k->mse_backward(a, b, gout, red, reduce_scale(red, em_numel(a)), ga);
  if (st != EM_OK) return st;
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
      !em__check_f32(op, b, "target") || !em__check_device(op, a, b, "target"))
    return NULL;
  if (!em__same_shape(a, b)) {
    char x[EM_SHAPE_STR_LEN], y[EM_SHAPE_STR_LEN];
    em_set_error(EM_ERR_INVALID, "%s: input %s and target %s must have the same shape", op,
                 em_shape_str(a, x, sizeof x), em_shape_str(b, y, sizeof y));
    return NULL;
  }
  const em_kernels *k = EM_KERNELS(a, mse, op);
  em_tensor *ca = k ? em__contig(a) : NULL, *cb = ca ? em__contig(b) : NULL;
  em_tensor *out = cb ? loss_out(a->device, red, a->ndim, a->shape) : NULL;
  if (!out || k->mse(ca, cb, red, out) != EM_OK) return NULL;
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
