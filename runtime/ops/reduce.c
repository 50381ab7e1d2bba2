/* ops/reduce.c: sum and mean over a list of dims, max and argmax over one dim (front ends: dims,
 * output shapes, autograd; the kernels are the device table's sum, max and their backwards).
 *
 *   sum/mean  x (..) over dims -> y (kept dims; reduced ones dropped, or of size 1 with keepdim)
 *   max       x (..) over dim  -> values (f32), argmax the first index (i64) of the maximum
 *
 * The input is made contiguous first. Backward of sum/mean broadcasts the output gradient back
 * over the reduced dims (times 1/count for the mean); backward of max sends it to the first
 * maximal element. */
#include "core/kernels.h"

#include <math.h>

/* ---- dims --------------------------------------------------------------------------------- */

/* Bit d of *mask set for every dim to reduce. n == 0 means all dims. false (error set) on a dim
 * out of range or listed twice. */
static bool reduce_mask(const char *op, const em_tensor *a, int n, const int *dims,
                        uint32_t *mask) {
  char s[EM_SHAPE_STR_LEN];
  *mask = 0;
  if (n < 0 || (n > 0 && !dims)) {
    em_set_error(EM_ERR_INVALID, "%s: bad dim list (n = %d%s) for input %s", op, n,
                 dims ? "" : ", dims NULL", em_shape_str(a, s, sizeof s));
    return false;
  }
  if (n == 0) {
    *mask = a->ndim ? (uint32_t)((1u << a->ndim) - 1) : 0;
    return true;
  }
  int nd = a->ndim ? a->ndim : 1; /* a 0-d tensor accepts dim 0 / -1, as PyTorch */
  for (int k = 0; k < n; k++) {
    int d = dims[k] < 0 ? dims[k] + nd : dims[k];
    if (d < 0 || d >= nd) {
      em_set_error(EM_ERR_INVALID, "%s: dim %d out of range for input %s (%d dimensions)", op,
                   dims[k], em_shape_str(a, s, sizeof s), a->ndim);
      return false;
    }
    if (*mask & (1u << d)) {
      em_set_error(EM_ERR_INVALID, "%s: dim %d listed twice for input %s", op, dims[k],
                   em_shape_str(a, s, sizeof s));
      return false;
    }
    *mask |= 1u << d;
  }
  if (a->ndim == 0) *mask = 0;
  return true;
}

/* Output shape of reducing a over mask. */
static int reduced_shape(const em_tensor *a, uint32_t mask, bool keepdim, int64_t *shape) {
  int nd = 0;
  for (int d = 0; d < a->ndim; d++) {
    if (!(mask & (1u << d)))
      shape[nd++] = a->shape[d];
    else if (keepdim)
      shape[nd++] = 1;
  }
  return nd;
}

/* ---- sum / mean ----------------------------------------------------------------------------- */
/* n->i[0] = mask, n->f[0] = scale. */
static em_status sum_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *a = n->inputs[0];
  const em_kernels *k = EM_KERNELS(a, sum_backward, n->op);
  em_tensor *g = k ? em__empty_on(a->device, EM_F32, a->ndim, a->shape) : NULL;
  if (!g) return em_last_status();
  em_status st = k->sum_backward(gout, (uint32_t)n->i[0], n->f[0], g);
  if (st == EM_OK) gin[0] = g;
  return st;
}

static em_tensor *reduce_sum_impl(const char *op, em_tensor *a, int n, const int *dims,
                                  bool keepdim, bool mean) {
  EM_CHECK_INPUT(a, op);
  const em_kernels *k = em__check_f32(op, a, "input") ? EM_KERNELS(a, sum, op) : NULL;
  uint32_t mask;
  if (!k || !reduce_mask(op, a, n, dims, &mask)) return NULL;
  int64_t shape[EM_MAX_DIMS], count = 1;
  int nd = reduced_shape(a, mask, keepdim, shape);
  for (int d = 0; d < a->ndim; d++)
    if (mask & (1u << d)) count *= a->shape[d];
  double scale = mean ? 1.0 / (double)count : 1.0;
  if (mean && count == 0) scale = NAN;
  em_tensor *c = em__contig(a);
  em_tensor *out = c ? em__empty_on(a->device, EM_F32, nd, shape) : NULL;
  if (!out || k->sum(c, mask, scale, out) != EM_OK) return NULL;
  em_node *node = em__record(out, op, sum_backward, 1, &a);
  if (node) {
    node->i[0] = mask;
    node->f[0] = scale;
  }
  return out;
}

/* Runs in a private scope so that a contiguous copy of a does not outlive the op. */
static em_tensor *reduce_sum(const char *op, em_tensor *a, int n, const int *dims, bool keepdim,
                             bool mean) {
  em_scope s = em_scope_begin();
  return em__op_end(s, reduce_sum_impl(op, a, n, dims, keepdim, mean));
}

em_tensor *em_sum(em_tensor *a, int n, const int *dims, bool keepdim) {
  return reduce_sum("sum", a, n, dims, keepdim, false);
}

em_tensor *em_mean(em_tensor *a, int n, const int *dims, bool keepdim) {
  return reduce_sum("mean", a, n, dims, keepdim, true);
}

/* ---- max / argmax over one dim ------------------------------------------------------------ */

/* n->i[0..2] = O, R, K: the input seen as (O, R, K) around dim; saved[0] = the indices. */
static em_status max_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *a = n->inputs[0];
  const em_kernels *k = EM_KERNELS(a, max_backward, n->op);
  em_tensor *g = k ? em__empty_on(a->device, EM_F32, a->ndim, a->shape) : NULL;
  if (!g) return em_last_status();
  em_status st = k->max_backward(n->saved[0], gout, n->i[0], n->i[1], n->i[2], g);
  if (st == EM_OK) gin[0] = g;
  return st;
}

static em_tensor *reduce_max_impl(const char *op, em_tensor *a, int dim, bool keepdim, bool arg) {
  EM_CHECK_INPUT(a, op);
  const em_kernels *k = em__check_f32(op, a, "input") ? EM_KERNELS(a, max, op) : NULL;
  uint32_t mask;
  if (!k || !reduce_mask(op, a, 1, &dim, &mask)) return NULL;
  int d = a->ndim ? (dim < 0 ? dim + a->ndim : dim) : -1;
  int64_t O = 1, R = 1, K = 1;
  for (int j = 0; j < a->ndim; j++) {
    if (j < d)
      O *= a->shape[j];
    else if (j == d)
      R = a->shape[j];
    else
      K *= a->shape[j];
  }
  if (R == 0) {
    char s[EM_SHAPE_STR_LEN];
    em_set_error(EM_ERR_INVALID, "%s: dim %d of input %s is empty (no maximum)", op, dim,
                 em_shape_str(a, s, sizeof s));
    return NULL;
  }
  int64_t shape[EM_MAX_DIMS];
  int nd = reduced_shape(a, mask, keepdim, shape);
  em_tensor *c = em__contig(a);
  em_tensor *idx = c ? em__empty_on(a->device, EM_I64, nd, shape) : NULL;
  em_tensor *vals = idx ? em__empty_on(a->device, EM_F32, nd, shape) : NULL; /* argmax: scratch */
  if (!vals || k->max(c, O, R, K, vals, idx) != EM_OK) return NULL;
  if (arg) return idx;
  em_node *n = em__record(vals, op, max_backward, 1, &a);
  if (n) {
    n->i[0] = O;
    n->i[1] = R;
    n->i[2] = K;
    em__save(n, idx);
  }
  return vals;
}

/* Private scope: the contiguous copy and the scratch (values for argmax, indices for max). */
static em_tensor *reduce_max(const char *op, em_tensor *a, int dim, bool keepdim, bool arg) {
  em_scope s = em_scope_begin();
  return em__op_end(s, reduce_max_impl(op, a, dim, keepdim, arg));
}

em_tensor *em_max(em_tensor *a, int dim, bool keepdim) {
  return reduce_max("max", a, dim, keepdim, false);
}

em_tensor *em_argmax(em_tensor *a, int dim, bool keepdim) {
  return reduce_max("argmax", a, dim, keepdim, true);
}
