/* ops/mask.c: the causal mask of self-attention (front end: checks, output, autograd; the kernel
 * is the device table's causal_mask).
 *
 * a (..., T, S) -> y (..., T, S): y = a, except y[..., i, j] = value where j > i + (S - T), so
 * that with T queries the last T of S keys, query i sees the keys up to its own position:
 *
 *   T = S = 4, value -inf:    a00  -inf -inf -inf
 *                             a10  a11  -inf -inf
 *                             a20  a21  a22  -inf
 *                             a30  a31  a32  a33
 *
 * (torch: a.masked_fill(torch.ones(T, S).triu(S - T + 1).bool(), value)). Followed by a softmax
 * over the last dim, the masked positions get probability 0. Backward: the gradient passes where
 * a was kept and is 0 where value was written (the same kernel with value 0). */
#include "core/kernels.h"

/* Node: no saved tensors; the output's last two dims give T and S. */
static em_status causal_mask_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *a = n->inputs[0];
  const em_kernels *k = EM_KERNELS(a, causal_mask, n->op);
  em_tensor *g = k ? em__empty_on(a->device, EM_F32, a->ndim, a->shape) : NULL;
  if (!g) return em_last_status();
  em_status st = k->causal_mask(gout, 0.0f, g);
  if (st == EM_OK) gin[0] = g;
  return st;
}

static em_tensor *causal_mask_impl(em_tensor *a, float value) {
  static const char *op = "causal_mask";
  EM_CHECK_INPUT(a, op);
  if (!em__check_f32(op, a, "input")) return NULL;
  if (a->ndim < 2) {
    char s[EM_SHAPE_STR_LEN];
    em_set_error(EM_ERR_INVALID, "%s: input %s needs at least 2 dims (..., T, S)", op,
                 em_shape_str(a, s, sizeof s));
    return NULL;
  }
  const em_kernels *k = EM_KERNELS(a, causal_mask, op);
  em_tensor *x = k ? em__contig(a) : NULL;
  em_tensor *y = x ? em__empty_on(a->device, EM_F32, a->ndim, a->shape) : NULL;
  if (!y || k->causal_mask(x, value, y) != EM_OK) return NULL;
  em__record(y, op, causal_mask_backward, 1, &a);
  return y;
}

/* Runs in a private scope so that a contiguous copy of a does not outlive the op. */
em_tensor *em_causal_mask(em_tensor *a, float value) {
  em_scope s = em_scope_begin();
  return em__op_end(s, causal_mask_impl(a, value));
}
