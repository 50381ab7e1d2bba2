/* test_ops_binary.c: add, sub, mul, div with NumPy broadcasting and the scalar ops (add_scalar,
 * mul_scalar, neg): forward against float64 loops, gradients by finite differences through
 * broadcast dims, and the error for incompatible shapes. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

typedef enum { ADD, SUB, MUL, DIV } op_t;
static const char *op_name[] = {"add", "sub", "mul", "div"};

static em_tensor *run(op_t op, em_tensor *a, em_tensor *b) {
  switch (op) {
  case ADD: return em_add(a, b);
  case SUB: return em_sub(a, b);
  case MUL: return em_mul(a, b);
  default: return em_div(a, b);
  }
}

static double ref_op(op_t op, double x, double y) {
  switch (op) {
  case ADD: return (float)x + (float)y;
  case SUB: return (float)x - (float)y;
  case MUL: return (float)x * (float)y;
  default: return (float)x / (float)y;
  }
}

/* Element of t at output index idx (nd dims), with broadcasting. */
static double bget(const em_tensor *t, int nd, const int64_t *idx) {
  int64_t flat = 0;
  for (int d = 0; d < t->ndim; d++) {
    int od = d + nd - t->ndim;
    flat = flat * t->shape[d] + (t->shape[d] == 1 ? 0 : idx[od]);
  }
  return em_get(t, flat);
}

static void check_op(op_t op, em_tensor *a, em_tensor *b, int nd, const int64_t *shape) {
  em_tensor *y = run(op, a, b);
  cr_assert_not_null(y, "%s: %s", op_name[op], em_last_error());
  cr_assert_eq(y->ndim, nd, "%s: ndim %d, expected %d", op_name[op], y->ndim, nd);
  int64_t n = 1, idx[EM_MAX_DIMS] = {0};
  for (int d = 0; d < nd; d++) {
    cr_assert_eq(y->shape[d], shape[d], "%s: dim %d", op_name[op], d);
    n *= shape[d];
  }
  double *ref = malloc((size_t)(n ? n : 1) * sizeof *ref);
  for (int64_t k = 0; k < n; k++) {
    ref[k] = ref_op(op, bget(a, nd, idx), bget(b, nd, idx));
    for (int d = nd - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  tu_assert_close(y, ref, n, 1e-6, 1e-7, op_name[op]);
  free(ref);
}

Test(binary, same_shape_fast_path) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(31);
  em_tensor *a = tu_rand(&r, EM_SHAPE(7, 13), -2, 2, false);
  em_tensor *b = tu_rand(&r, EM_SHAPE(7, 13), 0.5f, 2, false);
  for (int op = 0; op < 4; op++) check_op((op_t)op, a, b, 2, (int64_t[]){7, 13});
  em_scope_end(s);
}

Test(binary, broadcasting) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(32);
  em_tensor *a = tu_rand(&r, EM_SHAPE(4, 1, 3), -2, 2, false);
  em_tensor *b = tu_rand(&r, EM_SHAPE(5, 1), 0.5f, 2, false);
  em_tensor *row = tu_rand(&r, EM_SHAPE(3), 0.5f, 2, false);
  em_tensor *m = tu_rand(&r, EM_SHAPE(2, 3), -2, 2, false);
  em_tensor *one = tu_rand(&r, EM_SHAPE(1), 0.5f, 2, false);
  em_tensor *sc = em_scalar(1.75f);
  for (int op = 0; op < 4; op++) {
    check_op((op_t)op, a, b, 3, (int64_t[]){4, 5, 3});
    check_op((op_t)op, b, a, 3, (int64_t[]){4, 5, 3});
    check_op((op_t)op, m, row, 2, (int64_t[]){2, 3});
    check_op((op_t)op, row, m, 2, (int64_t[]){2, 3});
    check_op((op_t)op, m, sc, 2, (int64_t[]){2, 3});
    check_op((op_t)op, sc, m, 2, (int64_t[]){2, 3});
    check_op((op_t)op, m, one, 2, (int64_t[]){2, 3});
    check_op((op_t)op, sc, sc, 0, NULL);
    check_op((op_t)op, em_zeros(EM_F32, EM_SHAPE(0, 3)), row, 2, (int64_t[]){0, 3});
  }
  em_scope_end(s);
}

Test(binary, non_contiguous_operands) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(33);
  em_tensor *a = tu_rand(&r, EM_SHAPE(3, 5), -2, 2, false);
  em_tensor *b = tu_rand(&r, EM_SHAPE(5, 3), 0.5f, 2, false);
  em_tensor *at = em_transpose(a, 0, 1); /* (5, 3), strides (1, 5) */
  cr_assert_not_null(at, "%s", em_last_error());
  for (int op = 0; op < 4; op++) {
    check_op((op_t)op, at, b, 2, (int64_t[]){5, 3});
    check_op((op_t)op, b, at, 2, (int64_t[]){5, 3});
  }
  em_scope_end(s);
}

Test(binary, scalar_ops) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(34);
  em_tensor *a = tu_rand(&r, EM_SHAPE(4, 6), -2, 2, true);
  double add[24], mul[24], neg[24];
  for (int i = 0; i < 24; i++) {
    float v = (float)em_get(a, i);
    add[i] = v + 0.25f;
    mul[i] = v * -3.5f;
    neg[i] = -v;
  }
  tu_assert_close(em_add_scalar(a, 0.25f), add, 24, 0, 0, "add_scalar");
  tu_assert_close(em_mul_scalar(a, -3.5f), mul, 24, 0, 0, "mul_scalar");
  tu_assert_close(em_neg(a), neg, 24, 0, 0, "neg");
  /* d/da sum(neg(a) * 2 + 1) = -2 */
  em_tensor *l = em_sum(em_add_scalar(em_mul_scalar(em_neg(a), 2), 1), 0, NULL, false);
  cr_assert_eq(em_backward(l), EM_OK, "%s", em_last_error());
  for (int i = 0; i < 24; i++) cr_assert_eq(em_get(a->grad, i), -2.0);
  em_scope_end(s);
}

typedef struct {
  op_t op;
} bin_case;

static em_tensor *bin_fn(em_tensor **in, void *ctx) {
  return run(((bin_case *)ctx)->op, in[0], in[1]);
}

Test(binary, gradients_through_broadcasting) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(35);
  const int64_t shapes[][2][3] = {
      {{4, 1, 3}, {5, 1, 0}}, /* (4, 1, 3) op (5, 1) */
      {{2, 3, 0}, {3, 0, 0}}, /* (2, 3) op (3) */
      {{3, 0, 0}, {2, 3, 0}}, /* (3) op (2, 3) */
      {{2, 3, 0}, {2, 3, 0}}, /* same shape */
  };
  const int nds[][2] = {{3, 2}, {2, 1}, {1, 2}, {2, 2}};
  for (int k = 0; k < 4; k++)
    for (int op = 0; op < 4; op++) {
      em_tensor *in[2] = {tu_rand(&r, nds[k][0], shapes[k][0], -2, 2, true),
                          tu_rand(&r, nds[k][1], shapes[k][1], 0.5f, 2, true)};
      bin_case c = {(op_t)op};
      char what[32];
      snprintf(what, sizeof what, "%s grad case %d", op_name[op], k);
      tu_gradcheck(bin_fn, 2, in, &c, 1e-3, 1e-2, what);
    }
  /* a scalar (0-d) operand gets the summed gradient */
  em_tensor *in[2] = {tu_rand(&r, EM_SHAPE(2, 3), -2, 2, true), em_scalar(1.5f)};
  em_set_requires_grad(in[1], true);
  bin_case c = {MUL};
  tu_gradcheck(bin_fn, 2, in, &c, 1e-3, 1e-2, "mul grad with 0-d");
  /* the same tensor on both sides: d(x*x)/dx = 2x */
  em_tensor *x = tu_rand(&r, EM_SHAPE(5), -2, 2, true);
  cr_assert_eq(em_backward(em_sum(em_mul(x, x), 0, NULL, false)), EM_OK);
  for (int i = 0; i < 5; i++) cr_assert_float_eq(em_get(x->grad, i), 2 * em_get(x, i), 1e-6);
  em_scope_end(s);
}

Test(binary, errors) {
  em_scope s = em_scope_begin();
  em_tensor *a = em_zeros(EM_F32, EM_SHAPE(4, 2, 3));
  em_tensor *b = em_zeros(EM_F32, EM_SHAPE(5, 1));
  tu_assert_error(em_add(a, b), "[4, 2, 3]", "[5, 1]");
  tu_assert_error(em_mul(em_zeros(EM_F32, EM_SHAPE(3)), em_zeros(EM_F32, EM_SHAPE(4))), "[3]",
                  "[4]");
  tu_assert_error(em_div(a, em_zeros(EM_I64, EM_SHAPE(3))), "div", "i64");
  tu_assert_error(em_sub(NULL, b), "sub", NULL);
  tu_assert_error(em_neg(NULL), "neg", NULL);
  /* the first error is kept through a chain */
  tu_assert_error(em_mul_scalar(em_add(em_add(a, b), a), 2), "add", "[5, 1]");
  em_scope_end(s);
}
