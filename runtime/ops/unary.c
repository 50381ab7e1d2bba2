/* ops/unary.c: elementwise unary ops, and em_where (front ends: checks, output, autograd; the
 * kernels are the device table's unary, unary_backward, nonzero_mask and where).
 *
 * Any input shape x (...) -> y (...), computed on a contiguous copy of x. The backward takes the
 * saved x, or y for the ops whose derivative is cheaper from the output (em__unary_uses_output).
 *
 * em_where(cond, a, b) broadcasts all three operands NumPy-style. */
#include "core/kernels.h"

#include <string.h>

typedef struct {
  const char *name;
  em_unop op;
} unary_kind;

bool em__unary_uses_output(em_unop op) {
  switch (op) {
  case EM_UNARY_EXP:
  case EM_UNARY_SQRT:
  case EM_UNARY_RELU:
  case EM_UNARY_TANH:
  case EM_UNARY_SIGMOID: return true;
  default: return false;
  }
}

static em_status unary_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *a = n->inputs[0];
  const em_kernels *k = EM_KERNELS(a, unary_backward, n->op);
  em_tensor *g = k ? em__empty_on(a->device, EM_F32, a->ndim, a->shape) : NULL;
  if (!g) return em_last_status();
  em_status st =
      k->unary_backward((em_unop)n->i[0], (float)n->f[0], (float)n->f[1], n->saved[0], gout, g);
  if (st != EM_OK) return st;
  gin[0] = g;
  return EM_OK;
}

static em_tensor *unary_impl(const unary_kind *u, em_tensor *a, float alpha, float beta) {
  EM_CHECK_INPUT(a, u->name);
  const em_kernels *k = em__check_f32(u->name, a, "input") ? EM_KERNELS(a, unary, u->name) : NULL;
  em_tensor *x = k ? em__contig(a) : NULL;
  em_tensor *y = x ? em__empty_on(a->device, EM_F32, a->ndim, a->shape) : NULL;
  if (!y || k->unary(u->op, alpha, beta, x, y) != EM_OK) return NULL;
  em_node *n = em__record(y, u->name, unary_backward, 1, &a);
  if (n) {
    n->i[0] = u->op;
    n->f[0] = alpha;
    n->f[1] = beta;
    em__save(n, em__unary_uses_output(u->op) ? y : x);
  }
  return y;
}

/* Runs in a private scope so that the contiguous copy of a does not outlive the op. */
static em_tensor *unary(const unary_kind *u, em_tensor *a, float alpha, float beta) {
  em_scope s = em_scope_begin();
  return em__op_end(s, unary_impl(u, a, alpha, beta));
}

static const unary_kind K_EXP = {"exp", EM_UNARY_EXP};
static const unary_kind K_LOG = {"log", EM_UNARY_LOG};
static const unary_kind K_SQRT = {"sqrt", EM_UNARY_SQRT};
static const unary_kind K_POW = {"pow", EM_UNARY_POW};
static const unary_kind K_RELU = {"relu", EM_UNARY_RELU};
static const unary_kind K_GELU = {"gelu", EM_UNARY_GELU};
static const unary_kind K_TANH = {"tanh", EM_UNARY_TANH};
static const unary_kind K_SIGMOID = {"sigmoid", EM_UNARY_SIGMOID};
static const unary_kind K_CLAMP = {"clamp", EM_UNARY_CLAMP};

em_tensor *em_exp(em_tensor *a) { return unary(&K_EXP, a, 0, 0); }
em_tensor *em_log(em_tensor *a) { return unary(&K_LOG, a, 0, 0); }
em_tensor *em_sqrt(em_tensor *a) { return unary(&K_SQRT, a, 0, 0); }
em_tensor *em_pow(em_tensor *a, float exponent) { return unary(&K_POW, a, 1.0f, exponent); }
em_tensor *em_relu(em_tensor *a) { return unary(&K_RELU, a, 0, 0); }
em_tensor *em_gelu(em_tensor *a) { return unary(&K_GELU, a, 0, 0); }
em_tensor *em_tanh(em_tensor *a) { return unary(&K_TANH, a, 0, 0); }
em_tensor *em_sigmoid(em_tensor *a) { return unary(&K_SIGMOID, a, 0, 0); }
/* As torch.clamp: min(max(x, lo), hi), so lo > hi gives hi everywhere. The gradient passes
 * where lo < x <= hi (oneDNN's clip rule; PyTorch also passes it at x == lo). */
em_tensor *em_clamp(em_tensor *a, float lo, float hi) {
  /* clamp(x, hi, hi) is the same function and gradient (zero), and oneDNN's clip refuses lo > hi */
  return unary(&K_CLAMP, a, lo > hi ? hi : lo, hi);
}

/* ---- where -------------------------------------------------------------------------------- */

/* Broadcast shape of the n tensors; false (error naming cond, a and b) if incompatible. */
static bool where_shape(em_tensor *const *t, int *ndim, int64_t *shape) {
  int n = 0;
  for (int k = 0; k < 3; k++)
    if (t[k]->ndim > n) n = t[k]->ndim;
  for (int d = 0; d < n; d++) {
    int64_t s = 1;
    for (int k = 0; k < 3; k++) {
      int dk = d - (n - t[k]->ndim);
      int64_t sk = dk >= 0 ? t[k]->shape[dk] : 1;
      if (sk == 1) continue;
      if (s != 1 && s != sk) {
        char c[EM_SHAPE_STR_LEN], x[EM_SHAPE_STR_LEN], y[EM_SHAPE_STR_LEN];
        em_set_error(EM_ERR_INVALID,
                     "where: shapes cond %s, a %s and b %s cannot be broadcast (dimension %d)",
                     em_shape_str(t[0], c, sizeof c), em_shape_str(t[1], x, sizeof x),
                     em_shape_str(t[2], y, sizeof y), d);
        return false;
      }
      s = sk;
    }
    shape[d] = s;
  }
  *ndim = n;
  return true;
}

/* cond of any dtype -> contiguous u8 0/1 with cond's shape (cond itself when it is one). */
static em_tensor *cond_mask(const em_kernels *k, em_tensor *cond) {
  if (cond->dtype == EM_U8 && em_is_contiguous(cond)) return cond;
  em_tensor *c = em__contig(cond);
  em_tensor *m = c ? em__empty_on(cond->device, EM_U8, cond->ndim, cond->shape) : NULL;
  return m && k->nonzero_mask(c, m) == EM_OK ? m : NULL;
}

static em_status where_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *a = n->inputs[1], *b = n->inputs[2], *m = n->saved[0];
  em_tensor *zero = em_to(em_scalar(0.0f), m->device); /* on the mask's device, as gout */
  if (!zero) return em_last_status();
  if (a->requires_grad) {
    em_tensor *ga = em_where(m, gout, zero);
    gin[1] = ga ? em__sum_to(ga, a->ndim, a->shape) : NULL;
    if (!gin[1]) return em_last_status();
  }
  if (b->requires_grad) {
    em_tensor *gb = em_where(m, zero, gout);
    gin[2] = gb ? em__sum_to(gb, b->ndim, b->shape) : NULL;
    if (!gin[2]) return em_last_status();
  }
  return EM_OK;
}

static em_tensor *where_impl(em_tensor *cond, em_tensor *a, em_tensor *b) {
  EM_CHECK_INPUT(cond, "where");
  EM_CHECK_INPUT(a, "where");
  EM_CHECK_INPUT(b, "where");
  if (!em__check_f32("where", a, "a") || !em__check_f32("where", b, "b")) return NULL;
  if (!em__check_device("where", cond, a, "a") || !em__check_device("where", cond, b, "b"))
    return NULL;
  const em_kernels *k = EM_KERNELS(cond, where, "where");
  em_tensor *ts[3] = {cond, a, b};
  int nd;
  int64_t shape[EM_MAX_DIMS];
  if (!k || !where_shape(ts, &nd, shape)) return NULL;
  em_tensor *m = cond_mask(k, cond);
  em_tensor *out = m ? em__empty_on(cond->device, EM_F32, nd, shape) : NULL;
  if (!out || k->where(m, a, b, out) != EM_OK) return NULL;
  em_node *n = em__record(out, "where", where_backward, 3, ts);
  if (n) em__save(n, m);
  return out;
}

em_tensor *em_where(em_tensor *cond, em_tensor *a, em_tensor *b) {
  em_scope s = em_scope_begin(); /* the u8 mask and copies are op-private */
  return em__op_end(s, where_impl(cond, a, b));
}
