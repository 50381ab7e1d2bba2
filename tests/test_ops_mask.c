/* test_ops_mask.c: em_causal_mask against a plain loop (square, fewer rows than columns, more rows
 * than columns, 2-D to 4-D, transposed input), its gradient by finite differences and exactly,
 * with a softmax after it as attention uses it, and its errors. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>

/* Is element k of a (..., T, S) tensor masked? Column j > row i + (S - T). */
static bool masked(int64_t k, int64_t T, int64_t S) {
  int64_t i = k / S % T, j = k % S;
  return j > i + (S - T);
}

static void check_forward(em_tensor *x, float value, const char *what) {
  em_tensor *y = em_causal_mask(x, value);
  cr_assert_not_null(y, "%s: %s", what, em_last_error());
  cr_assert_eq(y->ndim, x->ndim);
  for (int d = 0; d < x->ndim; d++) cr_assert_eq(y->shape[d], x->shape[d]);
  int64_t T = x->shape[x->ndim - 2], S = x->shape[x->ndim - 1], n = em_numel(x);
  for (int64_t k = 0; k < n; k++) {
    double want = masked(k, T, S) ? value : em_get(x, k);
    cr_assert(em_get(y, k) == want || (isinf(want) && em_get(y, k) == want), "%s: element %lld",
              what, (long long)k);
  }
}

Test(causal_mask, forward_against_loop) {
  TU_BEGIN;
  em_rng r = em_rng_new(1);
  check_forward(tu_rand(&r, EM_SHAPE(4, 4), -1, 1, false), -INFINITY, "(4, 4)");
  check_forward(tu_rand(&r, EM_SHAPE(2, 3, 5, 5), -1, 1, false), -1e9f, "(2, 3, 5, 5)");
  /* fewer queries than keys: the last T of S keys are the queries */
  check_forward(tu_rand(&r, EM_SHAPE(3, 2, 6), -1, 1, false), -INFINITY, "(3, 2, 6)");
  /* more rows than columns: the first T - S rows see nothing */
  check_forward(tu_rand(&r, EM_SHAPE(5, 3), -1, 1, false), 7, "(5, 3)");
  check_forward(tu_rand(&r, EM_SHAPE(1, 1), -1, 1, false), -INFINITY, "(1, 1)");
  /* the exact picture for T = S = 3 */
  em_tensor *y = em_causal_mask(em_full(EM_F32, EM_SHAPE(3, 3), 1), 0);
  double want[9] = {1, 0, 0, 1, 1, 0, 1, 1, 1};
  tu_assert_close(y, want, 9, 0, 0, "3x3 lower triangle");
  /* a transposed (non-contiguous) input is masked in its logical layout */
  em_tensor *a = tu_rand(&r, EM_SHAPE(2, 4, 6), -1, 1, false);
  check_forward(em_transpose(a, 1, 2), -INFINITY, "transposed (2, 6, 4)");
  /* empty */
  em_tensor *e = em_causal_mask(em_zeros(EM_F32, EM_SHAPE(0, 4, 4)), -INFINITY);
  cr_assert_not_null(e, "%s", em_last_error());
  cr_assert_eq(em_numel(e), 0);
  TU_END;
}

static em_tensor *mask_fn(em_tensor **in, void *ctx) { return em_causal_mask(in[0], -3.0f); }

static em_tensor *masked_softmax_fn(em_tensor **in, void *ctx) {
  return em_softmax(em_causal_mask(in[0], -INFINITY), -1);
}

Test(causal_mask, gradients) {
  TU_BEGIN;
  em_rng r = em_rng_new(2);
  em_tensor *x = tu_rand(&r, EM_SHAPE(2, 4, 4), -1, 1, true);
  tu_gradcheck(mask_fn, 1, &x, NULL, 1e-2, 1e-3, "causal_mask grad");
  em_tensor *w = tu_rand(&r, EM_SHAPE(2, 3, 5), -1, 1, true);
  tu_gradcheck(mask_fn, 1, &w, NULL, 1e-2, 1e-3, "causal_mask grad (3, 5)");
  em_tensor *v = tu_rand(&r, EM_SHAPE(2, 5, 5), -2, 2, true);
  tu_gradcheck(masked_softmax_fn, 1, &v, NULL, 1e-3, 1e-2, "softmax(causal_mask) grad");
  /* exact: the gradient of sum(mask(x) * g) is g where kept and 0 where masked */
  em_tensor *g = tu_rand(&r, EM_SHAPE(2, 4, 4), -1, 1, false);
  em_set_grad(x, NULL);
  cr_assert_eq(em_backward(em_sum(em_mul(em_causal_mask(x, -INFINITY), em_causal_mask(g, 0)), 0,
                                  NULL, false)),
               EM_OK, "%s", em_last_error());
  double want[32];
  for (int k = 0; k < 32; k++) want[k] = masked(k, 4, 4) ? 0 : em_get(g, k);
  tu_assert_close(x->grad, want, 32, 0, 0, "exact gradient");
  /* through a transposed input, the gradient lands in the leaf's own layout */
  em_tensor *a = tu_rand(&r, EM_SHAPE(3, 2), -1, 1, true);
  cr_assert_eq(em_backward(em_sum(em_causal_mask(em_transpose(a, 0, 1), 0), 0, NULL, false)),
               EM_OK);
  double at[6] = {1, 1, 1, 1, 0, 1}; /* a^T (2, 3): row 0 keeps columns 0..1, row 1 all */
  tu_assert_close(a->grad, at, 6, 0, 0, "gradient through a transpose");
  TU_END;
}

/* As attention uses it: every row of softmax(mask(x, -inf)) sums to 1 over the visible keys and
 * is 0 past them, equal to a softmax over the visible part alone. */
Test(causal_mask, then_softmax) {
  TU_BEGIN;
  em_rng r = em_rng_new(3);
  int64_t T = 6;
  em_tensor *x = tu_rand(&r, EM_SHAPE(2, T, T), -3, 3, false);
  em_tensor *p = em_softmax(em_causal_mask(x, -INFINITY), -1);
  cr_assert_not_null(p, "%s", em_last_error());
  double want[72];
  for (int64_t row = 0; row < 2 * T; row++) {
    int64_t i = row % T;
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j <= i; j++) mx = fmax(mx, em_get(x, row * T + j));
    for (int64_t j = 0; j <= i; j++) sum += exp(em_get(x, row * T + j) - mx);
    for (int64_t j = 0; j < T; j++)
      want[row * T + j] = j <= i ? exp(em_get(x, row * T + j) - mx) / sum : 0;
  }
  tu_assert_close(p, want, 72, 1e-5, 1e-7, "softmax over the visible keys");
  TU_END;
}

Test(causal_mask, errors) {
  TU_BEGIN;
  tu_assert_error(em_causal_mask(em_zeros(EM_F32, EM_SHAPE(5)), 0), "causal_mask", "[5]");
  tu_assert_error(em_causal_mask(em_scalar(1), 0), "causal_mask", "2 dims");
  tu_assert_error(em_causal_mask(em_zeros(EM_I64, EM_SHAPE(2, 2)), 0), "causal_mask", "i64");
  tu_assert_error(em_causal_mask(NULL, 0), "causal_mask", NULL);
  /* NULL propagates, keeping the first message */
  em_tensor *bad = em_reshape(em_zeros(EM_F32, EM_SHAPE(2, 3)), EM_SHAPE(4, 2));
  tu_assert_error(em_causal_mask(bad, 0), "reshape", NULL);
  TU_END;
}

/* Outside any scope the caller owns only the result: the contiguous copy of a transposed input
 * must not outlive the op. */
Test(causal_mask, no_temporaries_leak_outside_scopes) {
  int64_t before = em_live_tensors();
  em_rng r = em_rng_new(4);
  em_tensor *x = em_rand_uniform(EM_SHAPE(3, 4), -1, 1, &r);
  em_set_requires_grad(x, true);
  em_tensor *t = em_transpose(x, 0, 1);
  em_tensor *y = em_causal_mask(t, -INFINITY);
  cr_assert_not_null(y, "%s", em_last_error());
  em_release(y);
  em_release(t);
  em_release(x);
  cr_assert_eq(em_live_tensors(), before, "%lld tensors leaked",
               (long long)(em_live_tensors() - before));
}
