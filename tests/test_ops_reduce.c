/* test_ops_reduce.c: em_sum, em_mean, em_max, em_argmax against float64 loops, their gradients
 * by finite differences, shape edge cases (0-d, size-1 dims, non-contiguous, empty dims), and
 * the errors for bad dims. */
#include "testutil.h"

#include <math.h>
#include <string.h>

/* float64 sum of x (contiguous, shape) over the dims in mask -> ref (kept dims, row-major). */
static void ref_sum(const em_tensor *x, uint32_t mask, double *ref, int64_t nref) {
  for (int64_t i = 0; i < nref; i++) ref[i] = 0;
  int64_t n = em_numel(x), idx[EM_MAX_DIMS] = {0};
  for (int64_t k = 0; k < n; k++) {
    int64_t o = 0;
    for (int d = 0; d < x->ndim; d++)
      if (!(mask & (1u << d))) o = o * x->shape[d] + idx[d];
    ref[o] += em_get(x, k);
    for (int d = x->ndim - 1; d >= 0; d--) {
      if (++idx[d] < x->shape[d]) break;
      idx[d] = 0;
    }
  }
}

typedef struct {
  int n;
  int dims[4];
  bool keepdim, mean;
} red_case;

static em_tensor *red_fn(em_tensor **in, void *ctx) {
  red_case *c = ctx;
  return c->mean ? em_mean(in[0], c->n, c->dims, c->keepdim)
                 : em_sum(in[0], c->n, c->dims, c->keepdim);
}

/* Checks forward (values and shape) and, for small inputs, the gradient. */
static void check_reduce(em_tensor *x, red_case c, int out_ndim, const int64_t *out_shape) {
  uint32_t mask = 0;
  int64_t count = 1;
  for (int k = 0; k < c.n; k++) mask |= 1u << (c.dims[k] < 0 ? c.dims[k] + x->ndim : c.dims[k]);
  if (c.n == 0) mask = (1u << x->ndim) - 1;
  for (int d = 0; d < x->ndim; d++)
    if (mask & (1u << d)) count *= x->shape[d];
  em_tensor *y = red_fn(&x, &c);
  cr_assert_not_null(y, "%s", em_last_error());
  cr_assert_eq(y->ndim, out_ndim, "ndim %d, expected %d", y->ndim, out_ndim);
  for (int d = 0; d < out_ndim; d++) cr_assert_eq(y->shape[d], out_shape[d], "dim %d", d);
  int64_t n = em_numel(y);
  double ref[4096];
  cr_assert(n <= 4096);
  ref_sum(x, mask, ref, n);
  if (c.mean)
    for (int64_t i = 0; i < n; i++) ref[i] /= (double)count;
  tu_assert_close(y, ref, n, 1e-5, 1e-5, c.mean ? "mean" : "sum");
  if (em_numel(x) <= 150 && x->requires_grad)
    tu_gradcheck(red_fn, 1, &x, &c, 1e-2, 1e-2, c.mean ? "mean grad" : "sum grad");
}

Test(reduce, sum_mean_dims_and_keepdim) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(1);
  em_tensor *x = tu_rand(&r, EM_SHAPE(3, 4, 5), -1, 1, true);
  check_reduce(x, (red_case){0, {0}, false, false}, 0, NULL);
  check_reduce(x, (red_case){0, {0}, true, false}, 3, (int64_t[]){1, 1, 1});
  check_reduce(x, (red_case){1, {0}, false, false}, 2, (int64_t[]){4, 5});   /* leading */
  check_reduce(x, (red_case){1, {-1}, false, false}, 2, (int64_t[]){3, 4});  /* trailing */
  check_reduce(x, (red_case){1, {1}, true, false}, 3, (int64_t[]){3, 1, 5}); /* middle */
  check_reduce(x, (red_case){2, {0, 2}, false, false}, 1, (int64_t[]){4});   /* two groups */
  check_reduce(x, (red_case){2, {2, 0}, true, true}, 3, (int64_t[]){1, 4, 1});
  check_reduce(x, (red_case){2, {1, 2}, false, true}, 1, (int64_t[]){3});
  check_reduce(x, (red_case){0, {0}, false, true}, 0, NULL);
  em_scope_end(s);
}

Test(reduce, bias_gradient_case_and_size_one_dims) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(2);
  /* (N, C) over dim 0: the bias gradient of a linear layer; large enough for several lanes. */
  em_tensor *g = tu_rand(&r, EM_SHAPE(64, 37), -1, 1, false);
  check_reduce(g, (red_case){1, {0}, false, false}, 1, (int64_t[]){37});
  check_reduce(g, (red_case){1, {1}, false, true}, 1, (int64_t[]){64});
  /* size-1 dims, reduced or kept */
  em_tensor *x = tu_rand(&r, EM_SHAPE(3, 1, 5, 1), -1, 1, true);
  check_reduce(x, (red_case){1, {1}, false, false}, 3, (int64_t[]){3, 5, 1});
  check_reduce(x, (red_case){2, {1, 3}, true, false}, 4, (int64_t[]){3, 1, 5, 1});
  check_reduce(x, (red_case){2, {0, 3}, false, true}, 2, (int64_t[]){1, 5});
  /* reducing one of two equal-flag neighbours merges into one group */
  em_tensor *z = tu_rand(&r, EM_SHAPE(2, 3, 4, 2, 3), -1, 1, true);
  check_reduce(z, (red_case){3, {0, 2, 3}, false, false}, 2, (int64_t[]){3, 3});
  check_reduce(z, (red_case){2, {1, 4}, true, true}, 5, (int64_t[]){2, 1, 4, 2, 1});
  em_scope_end(s);
}

Test(reduce, zero_dim_and_empty) {
  em_scope s = em_scope_begin();
  em_tensor *a = em_scalar(2.5f);
  em_tensor *y = em_sum(a, 0, NULL, false);
  cr_assert_eq(y->ndim, 0);
  cr_assert_float_eq(em_get(y, 0), 2.5, 1e-7);
  y = em_mean(a, 1, (int[]){-1}, true);
  cr_assert_eq(y->ndim, 0);
  cr_assert_float_eq(em_get(y, 0), 2.5, 1e-7);
  em_tensor *m = em_max(a, 0, false);
  cr_assert_eq(m->ndim, 0);
  cr_assert_eq(em_get(m, 0), 2.5);
  cr_assert_eq(em_get(em_argmax(a, -1, true), 0), 0.0);
  /* reducing an empty dim: sum 0, mean NaN, as PyTorch */
  em_tensor *e = em_zeros(EM_F32, EM_SHAPE(0, 3));
  y = em_sum(e, 1, (int[]){0}, false);
  cr_assert_eq(y->shape[0], 3);
  for (int i = 0; i < 3; i++) cr_assert_eq(em_get(y, i), 0.0);
  y = em_mean(e, 1, (int[]){0}, false);
  cr_assert(isnan(em_get(y, 1)));
  y = em_sum(e, 1, (int[]){1}, false); /* (0) */
  cr_assert_eq(y->ndim, 1);
  cr_assert_eq(y->shape[0], 0);
  em_scope_end(s);
}

Test(reduce, non_contiguous_input) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(3);
  em_tensor *x = tu_rand(&r, EM_SHAPE(4, 6), -1, 1, true);
  em_tensor *t = em_transpose(x, 0, 1); /* (6, 4), strides (1, 6) */
  cr_assert_not_null(t, "%s", em_last_error());
  em_tensor *y = em_sum(t, 1, (int[]){1}, false);
  double ref[6];
  for (int i = 0; i < 6; i++) {
    ref[i] = 0;
    for (int j = 0; j < 4; j++) ref[i] += em_get(x, j * 6 + i);
  }
  tu_assert_close(y, ref, 6, 1e-6, 1e-6, "sum of transposed");
  em_scope_end(s);
}

Test(reduce, long_sum_is_accurate) {
  em_scope s = em_scope_begin();
  int64_t n = 1 << 20;
  em_tensor *x = em_full(EM_F32, 1, &n, 0.1);
  em_tensor *y = em_sum(x, 0, NULL, false);
  double ref = (double)0.1f * (double)n; /* naive float accumulation is off by ~1e-3 here */
  tu_assert_close(y, &ref, 1, 1e-6, 0, "sum of 2^20 x 0.1");
  em_scope_end(s);
}

static em_tensor *max_fn(em_tensor **in, void *ctx) {
  int *d = ctx;
  return em_max(in[0], d[0], d[1]);
}

Test(reduce, max_and_argmax) {
  em_scope s = em_scope_begin();
  /* distinct values (a permutation) so the finite differences never cross a tie */
  em_tensor *x = em_empty(EM_F32, EM_SHAPE(3, 4, 5));
  for (int i = 0; i < 60; i++) em_set(x, i, 0.1 * ((i * 37) % 60) - 3.0);
  em_set_requires_grad(x, true);
  for (int dim = -3; dim < 3; dim++) {
    int d = dim < 0 ? dim + 3 : dim;
    int64_t O = 1, R = x->shape[d], K = 1;
    for (int k = 0; k < d; k++) O *= x->shape[k];
    for (int k = d + 1; k < 3; k++) K *= x->shape[k];
    double rv[60], ri[60];
    for (int64_t o = 0; o < O; o++)
      for (int64_t k = 0; k < K; k++) {
        double best = -INFINITY;
        int64_t bi = -1;
        for (int64_t q = 0; q < R; q++) {
          double v = em_get(x, (o * R + q) * K + k);
          if (v > best) best = v, bi = q;
        }
        rv[o * K + k] = best;
        ri[o * K + k] = (double)bi;
      }
    em_tensor *v = em_max(x, dim, false), *i = em_argmax(x, dim, true);
    tu_assert_close(v, rv, O * K, 0, 0, "max values");
    tu_assert_close(i, ri, O * K, 0, 0, "argmax");
    cr_assert_eq(i->dtype, EM_I64);
    cr_assert_eq(i->ndim, 3);
    cr_assert_eq(i->shape[d], 1);
    cr_assert_eq(v->ndim, 2);
    cr_assert(!i->requires_grad);
    int ctx[2] = {dim, dim == 1};
    tu_gradcheck(max_fn, 1, &x, ctx, 1e-3, 1e-2, "max grad");
  }
  em_scope_end(s);
}

Test(reduce, max_ties_first_and_nan) {
  em_scope s = em_scope_begin();
  em_tensor *x = em_from_data(EM_F32, EM_SHAPE(2, 4), (float[]){1, 5, 5, 2, 3, NAN, 7, NAN});
  em_set_requires_grad(x, true);
  em_tensor *i = em_argmax(x, 1, false);
  cr_assert_eq(em_get(i, 0), 1.0); /* first of the tied maxima */
  cr_assert_eq(em_get(i, 1), 1.0); /* NaN wins, as in PyTorch */
  em_tensor *v = em_max(x, 1, false);
  cr_assert(isnan(em_get(v, 1)));
  /* gradient goes to the first maximum only */
  em_tensor *v0 = em_max(x, 1, false);
  em_tensor *w = em_from_data(EM_F32, EM_SHAPE(2), (float[]){1, 0});
  cr_assert_eq(em_backward(em_sum(em_mul(v0, w), 0, NULL, false)), EM_OK, "%s", em_last_error());
  double ref[8] = {0, 1, 0, 0, 0, 0, 0, 0};
  tu_assert_close(x->grad, ref, 8, 0, 0, "max grad with ties");
  em_scope_end(s);
}

Test(reduce, errors) {
  em_scope s = em_scope_begin();
  em_tensor *x = em_zeros(EM_F32, EM_SHAPE(2, 3));
  tu_assert_error(em_sum(x, 1, (int[]){2}, false), "sum", "[2, 3]");
  tu_assert_error(em_mean(x, 1, (int[]){-3}, false), "mean", "[2, 3]");
  tu_assert_error(em_sum(x, 2, (int[]){1, -1}, false), "twice", "[2, 3]");
  tu_assert_error(em_max(x, 5, false), "max", "[2, 3]");
  tu_assert_error(em_argmax(em_zeros(EM_F32, EM_SHAPE(2, 0)), 1, false), "argmax", "[2, 0]");
  tu_assert_error(em_sum(em_zeros(EM_I64, EM_SHAPE(2)), 0, NULL, false), "sum", "i64");
  tu_assert_error(em_sum(NULL, 0, NULL, false), "sum", NULL);
  em_scope_end(s);
}

/* Outside any scope the caller owns only the result: the op's temporaries (contiguous copy of a
 * transposed input, argmax scratch, saved indices) must go with it. */
Test(reduce, no_temporaries_leak_outside_scopes) {
  int64_t before = em_live_tensors();
  em_rng r = em_rng_new(5);
  em_tensor *x = em_rand_uniform(EM_SHAPE(4, 6), -1, 1, &r);
  em_set_requires_grad(x, true);
  em_tensor *t = em_transpose(x, 0, 1);
  em_tensor *outs[4] = {em_sum(t, 1, (int[]){1}, false), em_mean(t, 0, NULL, true),
                        em_max(t, 0, false), em_argmax(t, 1, false)};
  for (int k = 0; k < 4; k++) {
    cr_assert_not_null(outs[k], "%s", em_last_error());
    em_release(outs[k]);
  }
  em_release(t);
  em_release(x);
  cr_assert_eq(em_live_tensors(), before, "%lld tensors leaked",
               (long long)(em_live_tensors() - before));
}
