/* ops/binary.c: add, sub, mul, div with NumPy broadcasting, and the scalar ops (front ends; the
 * kernels are the device table's binary and affine).
 *
 * Broadcasting aligns shapes on the right; a dim of size 1 (or a missing one) repeats:
 *   a (4, 1, 3) + b (5, 1) -> (4, 5, 3)
 * Backward sums the output gradient over the broadcast dims back to each input's shape. */
#include "core/kernels.h"

#include <string.h>

static const char *em_binop_name[] = {"add", "sub", "mul", "div"};

/* Output shape of broadcasting a with b; false (error set) if incompatible. */
static bool broadcast_shape(const char *op, const em_tensor *a, const em_tensor *b, int *ndim,
                            int64_t *shape) {
  int n = a->ndim > b->ndim ? a->ndim : b->ndim;
  for (int d = 0; d < n; d++) {
    int da = d - (n - a->ndim), db = d - (n - b->ndim);
    int64_t sa = da >= 0 ? a->shape[da] : 1, sb = db >= 0 ? b->shape[db] : 1;
    if (sa != sb && sa != 1 && sb != 1) {
      char x[EM_SHAPE_STR_LEN], y[EM_SHAPE_STR_LEN];
      em_set_error(EM_ERR_INVALID,
                   "%s: shapes %s and %s cannot be broadcast (dimension %d: %lld vs %lld)", op,
                   em_shape_str(a, x, sizeof x), em_shape_str(b, y, sizeof y), d, (long long)sa,
                   (long long)sb);
      return false;
    }
    shape[d] = sa == 1 ? sb : sa;
  }
  *ndim = n;
  return true;
}

static em_tensor *binary(em_binop op, em_tensor *a, em_tensor *b);

static em_status binary_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *a = n->inputs[0], *b = n->inputs[1];
  em_tensor *ga = NULL, *gb = NULL;
  switch ((em_binop)n->i[0]) {
  case EM_BINARY_ADD:
    ga = gout;
    gb = gout;
    break;
  case EM_BINARY_SUB:
    ga = gout;
    gb = b->requires_grad ? em_neg(gout) : NULL;
    break;
  case EM_BINARY_MUL:
    if (a->requires_grad) ga = em_mul(gout, n->saved[1]);
    if (b->requires_grad) gb = em_mul(gout, n->saved[0]);
    break;
  case EM_BINARY_DIV: /* d(a/b)/da = 1/b, d(a/b)/db = -a/b^2 */
    if (a->requires_grad) ga = em_div(gout, n->saved[1]);
    if (b->requires_grad)
      gb = em_neg(em_div(em_mul(gout, n->saved[0]), em_mul(n->saved[1], n->saved[1])));
    break;
  }
  if (a->requires_grad) gin[0] = em__sum_to(ga, a->ndim, a->shape);
  if (b->requires_grad) gin[1] = em__sum_to(gb, b->ndim, b->shape);
  if ((a->requires_grad && !gin[0]) || (b->requires_grad && !gin[1])) return em_last_status();
  return EM_OK;
}

static em_tensor *binary(em_binop op, em_tensor *a, em_tensor *b) {
  const char *name = em_binop_name[op];
  EM_CHECK_INPUT(a, name);
  EM_CHECK_INPUT(b, name);
  if (!em__check_f32(name, a, "a") || !em__check_f32(name, b, "b")) return NULL;
  if (!em__check_device(name, a, b, "b")) return NULL;
  const em_kernels *k = EM_KERNELS(a, binary, name);
  int nd;
  int64_t shape[EM_MAX_DIMS];
  if (!k || !broadcast_shape(name, a, b, &nd, shape)) return NULL;
  em_tensor *out = em__empty_on(a->device, EM_F32, nd, shape);
  if (!out || k->binary(op, a, b, out) != EM_OK) return NULL;
  em_tensor *ins[2] = {a, b};
  em_node *n = em__record(out, name, binary_backward, 2, ins);
  if (n) {
    n->i[0] = op;
    if (op == EM_BINARY_MUL || op == EM_BINARY_DIV) {
      em__save(n, a);
      em__save(n, b);
    }
  }
  return out;
}

em_tensor *em_add(em_tensor *a, em_tensor *b) { return binary(EM_BINARY_ADD, a, b); }
em_tensor *em_sub(em_tensor *a, em_tensor *b) { return binary(EM_BINARY_SUB, a, b); }
em_tensor *em_mul(em_tensor *a, em_tensor *b) { return binary(EM_BINARY_MUL, a, b); }
em_tensor *em_div(em_tensor *a, em_tensor *b) { return binary(EM_BINARY_DIV, a, b); }

/* ---- scalar ops: y = a * mul + add ------------------------------------------------------- */
static em_status affine_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  gin[0] = n->f[0] == 1.0 ? gout : em_mul_scalar(gout, (float)n->f[0]);
  return gin[0] ? EM_OK : em_last_status();
}

static em_tensor *affine(const char *name, em_tensor *a, float mul, float add) {
  EM_CHECK_INPUT(a, name);
  const em_kernels *k = em__check_f32(name, a, "input") ? EM_KERNELS(a, affine, name) : NULL;
  if (!k) return NULL;
  em_scope s = em_scope_begin();
  em_tensor *c = em__contig(a);
  em_tensor *out = c ? em__empty_on(a->device, EM_F32, a->ndim, a->shape) : NULL;
  if (!out || k->affine(c, mul, add, out) != EM_OK) return em__op_end(s, NULL);
  em_node *n = em__record(out, name, affine_backward, 1, &a);
  if (n) n->f[0] = mul;
  return em__op_end(s, out);
}

em_tensor *em_add_scalar(em_tensor *a, float s) { return affine("add_scalar", a, 1.0f, s); }
em_tensor *em_mul_scalar(em_tensor *a, float s) { return affine("mul_scalar", a, s, 0.0f); }
em_tensor *em_neg(em_tensor *a) { return affine("neg", a, -1.0f, 0.0f); }
