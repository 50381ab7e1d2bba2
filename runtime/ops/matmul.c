/* ops/matmul.c: matmul (plain, transposed, batched) and linear (front ends: checks, operand
 * geometry, outputs, autograd; the kernels are the device table's matmul and linear_bias_grad).
 *
 * Operands reach the kernel as em_matrix geometries (core/kernels.h): dims and element strides over
 * the tensor's own data, so a transposed operand is the same memory with its last two strides
 * swapped: no copy. A matrix is used as it lies when one of its last two strides is 1 (row-major
 * or column-major, any leading dimension and batch strides); anything else (a strided column
 * slice, a broadcast view) is copied to contiguous first.
 *
 *   matmul_t:  a (..., M, K) or a^T, b (..., K, N) or b^T -> (..., M, N), batch dims broadcast
 *   linear:    x (R, in) @ w^T (in, out) + bias (1, out) -> (R, out), R = product of x's
 *              leading dims; w (out, in) seen through strides (1, in) as (in, out)
 *
 * Backward, with A = op(a), B = op(b), C = A @ B:
 *   dA = dC @ B^T,  dB = A^T @ dC   (transposes folded into the flags, summed over broadcast
 *                                   batch dims; a batched a against a 2-D b is flattened so that
 *                                   dB is one (K, B*M) @ (B*M, N) product)
 *   linear: dx = dy @ w, dw = dy^T @ x, db = column sums of dy; dw and db go straight into the
 *           parameters' .grad when they can (em__grad_sink). */
#include "core/kernels.h"

#include <string.h>

static void geom_swap_last(em_matrix *g) {
  int r = g->ndim - 2, c = g->ndim - 1;
  int64_t t = g->dims[r];
  g->dims[r] = g->dims[c];
  g->dims[c] = t;
  t = g->strides[r];
  g->strides[r] = g->strides[c];
  g->strides[c] = t;
}

/* Can a kernel read t as it lies (the em_matrix contract)? One of the last two dims must have
 * unit stride and the other a leading dimension at least as large; batch strides are free (a
 * permuted attention view such as (B, T, H, D) -> (B, H, T, D) runs on the fast kernels). Zero or
 * negative strides are copied. */
static bool matrix_layout_ok(const em_tensor *t) {
  if (em_is_contiguous(t)) return true;
  if (t->ndim < 2) return false;
  for (int d = 0; d < t->ndim; d++)
    if (t->shape[d] > 1 && t->strides[d] <= 0) return false;
  int r = t->ndim - 2, c = t->ndim - 1;
  if (t->shape[c] <= 1 || t->strides[c] == 1)
    return t->shape[r] <= 1 || t->strides[r] >= t->shape[c];
  if (t->shape[r] <= 1 || t->strides[r] == 1) return t->strides[c] >= t->shape[r];
  return false;
}

/* Geometry of t (usable layout, ndim >= 2) padded with leading 1s to nd dims, transposed if
 * trans. */
static em_matrix geom_of(const em_tensor *t, bool trans, int nd) {
  em_matrix g = {.t = t, .ndim = nd};
  int lead = nd - t->ndim;
  int64_t outer = 1; /* any stride works for a dim of size 1: the whole extent */
  for (int d = 0; d < t->ndim; d++)
    if (t->shape[d] > 1 && t->strides[d] * t->shape[d] > outer) outer = t->strides[d] * t->shape[d];
  for (int d = 0; d < lead; d++) {
    g.dims[d] = 1;
    g.strides[d] = outer;
  }
  for (int d = 0; d < t->ndim; d++) {
    g.dims[lead + d] = t->shape[d];
    /* a view may give a dim of size 1 any stride; kernels want positive ones */
    g.strides[lead + d] = t->shape[d] == 1 && t->strides[d] <= 0 ? outer : t->strides[d];
  }
  if (trans) geom_swap_last(&g);
  return g;
}

/* Try to see g (batch..., M, K) as one (prod, K) matrix, in place: true when the batch dims and M
 * merge (g is unchanged otherwise). */
static bool geom_flatten(em_matrix *g) {
  int nd = g->ndim;
  int64_t rows = g->dims[nd - 2], rs = g->strides[nd - 2];
  for (int d = nd - 3; d >= 0; d--) {
    if (g->dims[d] == 1) continue;
    if (g->strides[d] != rs * rows && rows != 1) return false;
    if (rows == 1) rs = g->strides[d];
    rows *= g->dims[d];
  }
  int64_t cols = g->dims[nd - 1], cs = g->strides[nd - 1];
  *g = (em_matrix){.t = g->t, .ndim = 2, .dims = {rows, cols}, .strides = {rs, cs}};
  return true;
}

/* ---- matmul ------------------------------------------------------------------------------ */
static em_status matmul_backward(em_node *n, em_tensor *gout, em_tensor **gin);

static em_tensor *matmul_impl(em_tensor *a, em_tensor *b, bool trans_a, bool trans_b) {
  static const char *op = "matmul";
  EM_CHECK_INPUT(a, op);
  EM_CHECK_INPUT(b, op);
  if (!em__check_f32(op, a, "a") || !em__check_f32(op, b, "b")) return NULL;
  if (!em__check_device(op, a, b, "b")) return NULL;
  const em_kernels *k = EM_KERNELS(a, matmul, op);
  if (!k) return NULL;
  char sa[EM_SHAPE_STR_LEN], sb[EM_SHAPE_STR_LEN];
  if (a->ndim < 2 || b->ndim < 2) {
    em_set_error(EM_ERR_INVALID, "matmul: a %s and b %s must both have at least 2 dims",
                 em_shape_str(a, sa, sizeof sa), em_shape_str(b, sb, sizeof sb));
    return NULL;
  }
  int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
  int64_t ka = a->shape[a->ndim - (trans_a ? 2 : 1)], kb = b->shape[b->ndim - (trans_b ? 1 : 2)];
  if (ka != kb) {
    em_set_error(EM_ERR_INVALID,
                 "matmul: a %s%s and b %s%s: inner dimensions differ (%lld vs %lld)",
                 em_shape_str(a, sa, sizeof sa), trans_a ? " (transposed)" : "",
                 em_shape_str(b, sb, sizeof sb), trans_b ? " (transposed)" : "", (long long)ka,
                 (long long)kb);
    return NULL;
  }
  em_tensor *ca = matrix_layout_ok(a) ? a : em__contig(a);
  em_tensor *cb = matrix_layout_ok(b) ? b : em__contig(b);
  if (!ca || !cb) return NULL;
  em_matrix ga = geom_of(ca, trans_a, nd), gb = geom_of(cb, trans_b, nd);
  int64_t shape[EM_MAX_DIMS];
  for (int d = 0; d < nd - 2; d++) {
    int64_t x = ga.dims[d], y = gb.dims[d];
    if (x != y && x != 1 && y != 1) {
      em_set_error(EM_ERR_INVALID,
                   "matmul: batch dimensions of a %s and b %s cannot be broadcast (%lld vs %lld)",
                   em_shape_str(a, sa, sizeof sa), em_shape_str(b, sb, sizeof sb), (long long)x,
                   (long long)y);
      return NULL;
    }
    shape[d] = x == 1 ? y : x;
  }
  shape[nd - 2] = ga.dims[nd - 2];
  shape[nd - 1] = gb.dims[nd - 1];
  em_tensor *out = em__empty_on(a->device, EM_F32, nd, shape);
  if (!out) return NULL;
  /* A batched a against a 2-D b: one (B*M, K) @ (K, N) product when a's rows merge. */
  if (b->ndim == 2 && nd > 2 && geom_flatten(&ga)) gb = geom_of(cb, trans_b, 2);
  if (k->matmul(op, &ga, &gb, NULL, out, false) != EM_OK) return NULL;
  em_tensor *ins[2] = {a, b};
  em_node *n = em__record(out, op, matmul_backward, 2, ins);
  if (n) {
    n->i[0] = trans_a;
    n->i[1] = trans_b;
    em__save(n, a);
    em__save(n, b);
  }
  return out;
}

/* The public ops run in a private scope: contiguous copies end with the op. */
em_tensor *em_matmul_t(em_tensor *a, em_tensor *b, bool trans_a, bool trans_b) {
  em_scope s = em_scope_begin();
  return em__op_end(s, matmul_impl(a, b, trans_a, trans_b));
}

em_tensor *em_matmul(em_tensor *a, em_tensor *b) { return em_matmul_t(a, b, false, false); }

/* dB for a batched a (..., M, K) (not transposed) against a 2-D b: a^T (K, B*M) @ g (B*M, N),
 * transposed to (N, K) when b was. *out stays NULL (with EM_OK) when a's rows do not merge. */
static em_status matmul_db_flat(em_tensor *a, em_tensor *g, bool trans_b, em_tensor **out) {
  static const char *op = "matmul backward";
  *out = NULL;
  if (!matrix_layout_ok(a)) return EM_OK;
  em_matrix fa = geom_of(a, false, a->ndim);
  if (!geom_flatten(&fa)) return EM_OK;
  const em_kernels *k = EM_KERNELS(a, matmul, op);
  if (!k) return em_last_status();
  int64_t K = fa.dims[1], N = g->shape[g->ndim - 1], R = fa.dims[0];
  em_matrix fg = {.t = g, .ndim = 2, .dims = {R, N}, .strides = {N, 1}};
  em_tensor *d = em__empty_on(a->device, EM_F32, EM_SHAPE(trans_b ? N : K, trans_b ? K : N));
  if (!d) return em_last_status();
  em_status st;
  if (!trans_b) { /* (K, R) @ (R, N) */
    geom_swap_last(&fa);
    st = k->matmul(op, &fa, &fg, NULL, d, false);
  } else { /* (N, R) @ (R, K) */
    geom_swap_last(&fg);
    st = k->matmul(op, &fg, &fa, NULL, d, false);
  }
  if (st == EM_OK) *out = d;
  return st;
}

static em_status matmul_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  em_tensor *a = n->saved[0], *b = n->saved[1];
  bool ta = n->i[0], tb = n->i[1];
  if (n->inputs[0]->requires_grad) {
    /* dA = dC @ B^T; for trans_a, dA^T = B @ dC^T */
    em_tensor *g = ta ? em_matmul_t(b, gout, tb, true) : em_matmul_t(gout, b, false, !tb);
    gin[0] = g ? em__sum_to(g, a->ndim, a->shape) : NULL;
    if (!gin[0]) return em_last_status();
  }
  if (n->inputs[1]->requires_grad) {
    em_tensor *g = NULL;
    if (b->ndim == 2 && a->ndim > 2 && !ta) {
      em_status st = matmul_db_flat(a, gout, tb, &g);
      if (st != EM_OK) return st;
    }
    /* dB = A^T @ dC; for trans_b, dB^T = dC^T @ A */
    if (!g) g = tb ? em_matmul_t(gout, a, true, ta) : em_matmul_t(a, gout, !ta, false);
    gin[1] = g ? em__sum_to(g, b->ndim, b->shape) : NULL;
    if (!gin[1]) return em_last_status();
  }
  return EM_OK;
}

/* ---- linear ------------------------------------------------------------------------------ */
/* x as an (R, in) matrix: its own strides when x is 2-D with a usable layout or contiguous. */
static bool linear_x_geom(const em_tensor *x, em_matrix *g) {
  int64_t in = x->shape[x->ndim - 1];
  if (em_is_contiguous(x)) {
    int64_t R = in ? em_numel(x) / in : em__shape_numel(x->ndim - 1, x->shape);
    *g = (em_matrix){.t = x, .ndim = 2, .dims = {R, in}, .strides = {in, 1}};
    return true;
  }
  if (x->ndim == 2 && matrix_layout_ok(x)) {
    *g = geom_of(x, false, 2);
    return true;
  }
  return false;
}

static em_status linear_backward(em_node *n, em_tensor *gout, em_tensor **gin);

static em_tensor *linear_impl(em_tensor *x, em_tensor *w, em_tensor *bias) {
  static const char *op = "linear";
  EM_CHECK_INPUT(x, op);
  EM_CHECK_INPUT(w, op);
  if (!em__check_layer_inputs(op, x, w, bias)) return NULL;
  const em_kernels *k = EM_KERNELS(x, matmul, op);
  if (!k) return NULL;
  char sx[EM_SHAPE_STR_LEN], sw[EM_SHAPE_STR_LEN], sb[EM_SHAPE_STR_LEN];
  if (x->ndim < 1 || w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[1]) {
    em_set_error(EM_ERR_INVALID,
                 "linear: x %s and weight %s do not fit: need x (..., in) and weight (out, in)",
                 em_shape_str(x, sx, sizeof sx), em_shape_str(w, sw, sizeof sw));
    return NULL;
  }
  int64_t out_f = w->shape[0];
  if (bias && (bias->ndim != 1 || bias->shape[0] != out_f)) {
    em_set_error(EM_ERR_INVALID, "linear: bias %s does not match weight %s (need [%lld])",
                 em_shape_str(bias, sb, sizeof sb), em_shape_str(w, sw, sizeof sw),
                 (long long)out_f);
    return NULL;
  }
  em_matrix gx;
  em_tensor *cx = x;
  if (!linear_x_geom(x, &gx)) {
    cx = em__contig(x);
    if (!cx || !linear_x_geom(cx, &gx)) return NULL;
  }
  em_tensor *cw = matrix_layout_ok(w) ? w : em__contig(w);
  em_tensor *cbias = bias ? em__contig(bias) : NULL;
  if (!cw || (bias && !cbias)) return NULL;
  em_matrix gw = geom_of(cw, true, 2); /* (in, out) */
  int64_t shape[EM_MAX_DIMS];
  memcpy(shape, x->shape, sizeof shape);
  shape[x->ndim - 1] = out_f;
  em_tensor *out = em__empty_on(x->device, EM_F32, x->ndim, shape);
  if (!out || k->matmul(op, &gx, &gw, cbias, out, false) != EM_OK) return NULL;
  em_tensor *ins[3] = {x, w, bias};
  em_node *n = em__record(out, op, linear_backward, bias ? 3 : 2, ins);
  if (n) {
    em__save(n, cx);
    em__save(n, cw);
  }
  return out;
}

em_tensor *em_linear(em_tensor *x, em_tensor *w, em_tensor *bias) {
  em_scope s = em_scope_begin();
  return em__op_end(s, linear_impl(x, w, bias));
}

static em_status linear_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  static const char *op = "linear backward";
  em_tensor *x = n->saved[0], *w = n->saved[1];
  const em_kernels *k = EM_KERNELS(x, matmul, op);
  if (!k) return em_last_status();
  int64_t out_f = w->shape[0];
  em_matrix gx;
  linear_x_geom(x, &gx); /* saved x has a usable layout (checked in forward) */
  em_matrix gg = {.t = gout, .ndim = 2, .dims = {gx.dims[0], out_f}, .strides = {out_f, 1}};
  if (n->inputs[0]->requires_grad) { /* dx (R, in) = dy (R, out) @ w (out, in) */
    em_tensor *dx = em__empty_on(x->device, EM_F32, n->inputs[0]->ndim, n->inputs[0]->shape);
    if (!dx) return em_last_status();
    em_matrix gw = geom_of(w, false, 2);
    em_status st = k->matmul(op, &gg, &gw, NULL, dx, false);
    if (st != EM_OK) return st;
    gin[0] = dx;
  }
  /* Weight and bias gradients go straight into the parameters' .grad when they exist (the
   * usual training step): no temporary, no extra pass to add it in. */
  if (n->inputs[1]->requires_grad) { /* dw (out, in) = dy^T (out, R) @ x (R, in) */
    em_tensor *sink = em__grad_sink(n, 1);
    em_tensor *dw = sink ? sink : em__empty_on(w->device, EM_F32, 2, w->shape);
    if (!dw) return em_last_status();
    em_matrix gt = gg;
    geom_swap_last(&gt);
    em_status st = k->matmul(op, &gt, &gx, NULL, dw, sink != NULL);
    if (st != EM_OK) return st;
    if (!sink) gin[1] = dw;
  }
  if (n->n_in == 3 && n->inputs[2]->requires_grad) { /* db (out) = sum over rows of dy */
    em_tensor *sink = em__grad_sink(n, 2);
    em_tensor *db = sink ? sink : em__empty_on(gout->device, EM_F32, 1, &out_f);
    if (!db) return em_last_status();
    em_status st = k->linear_bias_grad(gout, db, sink != NULL);
    if (st != EM_OK) return st;
    if (!sink) gin[2] = db;
  }
  return EM_OK;
}
