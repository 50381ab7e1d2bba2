/* ops/softmax.c: softmax and log_softmax over any dim (front ends: checks, outputs, autograd; the
 * kernels are the device table's softmax and softmax_backward).
 *
 * x (...) -> y (...), normalised along dim, computed on a contiguous copy of x. Backward reads
 * the saved output y: dx = y * (dy - sum(dy * y)) for softmax, dy - exp(y) * sum(dy) for
 * log_softmax (sums along dim). */
#include "core/kernels.h"

/* Node: saved {y}; i[0] = log_softmax, i[1] = dim (normalised). */
static em_status softmax_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *a = n->inputs[0];
  const em_kernels *k = EM_KERNELS(a, softmax_backward, n->op);
  em_tensor *g = k ? em__empty_on(a->device, EM_F32, a->ndim, a->shape) : NULL;
  if (!g) return em_last_status();
  em_status st = k->softmax_backward(n->i[0], n->saved[0], gout, (int)n->i[1], g);
  if (st != EM_OK) return st;
  gin[0] = g;
  return EM_OK;
}

static em_tensor *softmax_impl(bool log, em_tensor *a, int dim) {
  const char *op = log ? "log_softmax" : "softmax";
  EM_CHECK_INPUT(a, op);
  const em_kernels *k = em__check_f32(op, a, "input") ? EM_KERNELS(a, softmax, op) : NULL;
  if (!k) return NULL;
  int nd = a->ndim ? a->ndim : 1; /* a 0-d tensor accepts dim 0 / -1, as PyTorch */
  int d = dim < 0 ? dim + nd : dim;
  if (d < 0 || d >= nd) {
    char s[EM_SHAPE_STR_LEN];
    em_set_error(EM_ERR_INVALID, "%s: dim %d out of range for input %s (%d dimensions)", op, dim,
                 em_shape_str(a, s, sizeof s), a->ndim);
    return NULL;
  }
  em_tensor *x = em__contig(a);
  em_tensor *y = x ? em__empty_on(a->device, EM_F32, a->ndim, a->shape) : NULL;
  if (!y || k->softmax(log, x, d, y) != EM_OK) return NULL;
  em_node *n = em__record(y, op, softmax_backward, 1, &a);
  if (n) {
    n->i[0] = log;
    n->i[1] = d;
    em__save(n, y);
  }
  return y;
}

/* Runs in a private scope so that a contiguous copy of a does not outlive the op. */
static em_tensor *softmax(bool log, em_tensor *a, int dim) {
  em_scope s = em_scope_begin();
  return em__op_end(s, softmax_impl(log, a, dim));
}

em_tensor *em_softmax(em_tensor *a, int dim) { return softmax(false, a, dim); }
em_tensor *em_log_softmax(em_tensor *a, int dim) { return softmax(true, a, dim); }
