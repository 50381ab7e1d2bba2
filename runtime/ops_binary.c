/* ops_binary.c: add, sub, mul, div with NumPy broadcasting, and the scalar ops.
 *
 * Broadcasting aligns shapes on the right; a dim of size 1 (or a missing one) repeats:
 *   a (4, 1, 3) + b (5, 1) -> (4, 5, 3)
 * Backward sums the output gradient over the broadcast dims back to each input's shape. */
#include "em_internal.h"

#include <string.h>

typedef enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV } binop;
static const char *binop_name[] = {"add", "sub", "mul", "div"};

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

/* Strides of t seen in an n-dim broadcast output: 0 on broadcast dims. */
static void broadcast_strides(const em_tensor *t, int n, int64_t *st) {
  for (int d = 0; d < n; d++) {
    int dt = d - (n - t->ndim);
    st[d] = (dt < 0 || t->shape[dt] == 1) ? 0 : t->strides[dt];
  }
}

static inline float apply(binop op, float x, float y) {
  switch (op) {
  case OP_ADD: return x + y;
  case OP_SUB: return x - y;
  case OP_MUL: return x * y;
  default: return x / y;
  }
}

EM_SIMD_CLONES static void binary_kernel(binop op, const em_tensor *a, const em_tensor *b,
                                         em_tensor *out) {
  const float *pa = em_data_f32(a), *pb = em_data_f32(b);
  float *po = em_data_f32(out);
  int64_t n = em_numel(out);
  if (em__same_shape(a, b) && em_is_contiguous(a) && em_is_contiguous(b)) {
    switch (op) {
    case OP_ADD:
      for (int64_t i = 0; i < n; i++) po[i] = pa[i] + pb[i];
      break;
    case OP_SUB:
      for (int64_t i = 0; i < n; i++) po[i] = pa[i] - pb[i];
      break;
    case OP_MUL:
      for (int64_t i = 0; i < n; i++) po[i] = pa[i] * pb[i];
      break;
    case OP_DIV:
      for (int64_t i = 0; i < n; i++) po[i] = pa[i] / pb[i];
      break;
    }
    return;
  }
  int nd = out->ndim;
  int64_t sa[EM_MAX_DIMS], sb[EM_MAX_DIMS];
  broadcast_strides(a, nd, sa);
  broadcast_strides(b, nd, sb);
  if (nd == 0) {
    po[0] = apply(op, pa[0], pb[0]);
    return;
  }
  /* Innermost dim as a tight loop, the outer dims with an index counter. */
  int64_t inner = out->shape[nd - 1], ia = sa[nd - 1], ib = sb[nd - 1];
  int64_t idx[EM_MAX_DIMS] = {0}, oa = 0, ob = 0;
  for (int64_t k = 0; k < n; k += inner) {
    float *o = po + k;
    const float *xa = pa + oa, *xb = pb + ob;
    for (int64_t i = 0; i < inner; i++) o[i] = apply(op, xa[i * ia], xb[i * ib]);
    for (int d = nd - 2; d >= 0; d--) {
      oa += sa[d];
      ob += sb[d];
      if (++idx[d] < out->shape[d]) break;
      oa -= sa[d] * out->shape[d];
      ob -= sb[d] * out->shape[d];
      idx[d] = 0;
    }
  }
}

static em_tensor *binary(binop op, em_tensor *a, em_tensor *b);

static em_status binary_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *a = n->inputs[0], *b = n->inputs[1];
  em_tensor *ga = NULL, *gb = NULL;
  switch ((binop)n->i[0]) {
  case OP_ADD:
    ga = gout;
    gb = gout;
    break;
  case OP_SUB:
    ga = gout;
    gb = b->requires_grad ? em_neg(gout) : NULL;
    break;
  case OP_MUL:
    if (a->requires_grad) ga = em_mul(gout, n->saved[1]);
    if (b->requires_grad) gb = em_mul(gout, n->saved[0]);
    break;
  case OP_DIV: /* d(a/b)/da = 1/b, d(a/b)/db = -a/b^2 */
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

static em_tensor *binary(binop op, em_tensor *a, em_tensor *b) {
  const char *name = binop_name[op];
  EM_CHECK_INPUT(a, name);
  EM_CHECK_INPUT(b, name);
  if (!em__check_f32(name, a, "a") || !em__check_f32(name, b, "b")) return NULL;
  if (!em__check_cpu(name, a) || !em__check_cpu(name, b)) return NULL;
  int nd;
  int64_t shape[EM_MAX_DIMS];
  if (!broadcast_shape(name, a, b, &nd, shape)) return NULL;
  em_tensor *out = em_empty(EM_F32, nd, shape);
  if (!out) return NULL;
  binary_kernel(op, a, b, out);
  em_tensor *ins[2] = {a, b};
  em_node *n = em__record(out, name, binary_backward, 2, ins);
  if (n) {
    n->i[0] = op;
    if (op == OP_MUL || op == OP_DIV) {
      em__save(n, a);
      em__save(n, b);
    }
  }
  return out;
}

em_tensor *em_add(em_tensor *a, em_tensor *b) { return binary(OP_ADD, a, b); }
em_tensor *em_sub(em_tensor *a, em_tensor *b) { return binary(OP_SUB, a, b); }
em_tensor *em_mul(em_tensor *a, em_tensor *b) { return binary(OP_MUL, a, b); }
em_tensor *em_div(em_tensor *a, em_tensor *b) { return binary(OP_DIV, a, b); }

/* ---- scalar ops: y = a * mul + add ------------------------------------------------------- */
static em_status affine_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  gin[0] = n->f[0] == 1.0 ? gout : em_mul_scalar(gout, (float)n->f[0]);
  return gin[0] ? EM_OK : em_last_status();
}

static em_tensor *affine(const char *name, em_tensor *a, float mul, float add) {
  EM_CHECK_INPUT(a, name);
  if (!em__check_f32(name, a, "input") || !em__check_cpu(name, a)) return NULL;
  em_scope s = em_scope_begin();
  em_tensor *c = em__contig(a);
  em_tensor *out = c ? em_empty(EM_F32, a->ndim, a->shape) : NULL;
  if (!out) return em__op_end(s, NULL);
  const float *x = em_data_f32(c);
  float *y = em_data_f32(out);
  for (int64_t i = 0, n = em_numel(out); i < n; i++) y[i] = x[i] * mul + add;
  em_node *n = em__record(out, name, affine_backward, 1, &a);
  if (n) n->f[0] = mul;
  return em__op_end(s, out);
}

em_tensor *em_add_scalar(em_tensor *a, float s) { return affine("add_scalar", a, 1.0f, s); }
em_tensor *em_mul_scalar(em_tensor *a, float s) { return affine("mul_scalar", a, s, 0.0f); }
em_tensor *em_neg(em_tensor *a) { return affine("neg", a, -1.0f, 0.0f); }
