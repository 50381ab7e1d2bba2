/* test_ops_unary.c: the oneDNN eltwise ops (exp, log, sqrt, pow, relu, gelu, tanh, sigmoid,
 * clamp) against float64 libm loops, their gradients by finite differences, non-contiguous,
 * 0-d and empty inputs; em_where with three-way broadcasting, its gradient and its errors. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const char *name;
  double (*ref)(double x, double p0, double p1);
  float lo, hi; /* input range: away from kinks and outside the domain */
  float p0, p1;
} unary_case;

static double r_exp(double x, double p, double q) { return exp(x); }
static double r_log(double x, double p, double q) { return log(x); }
static double r_sqrt(double x, double p, double q) { return sqrt(x); }
static double r_pow(double x, double p, double q) { return pow(x, p); }
static double r_relu(double x, double p, double q) { return x > 0 ? x : 0; }
static double r_gelu(double x, double p, double q) { return 0.5 * x * (1 + erf(x / sqrt(2.0))); }
static double r_tanh(double x, double p, double q) { return tanh(x); }
static double r_sigmoid(double x, double p, double q) { return 1 / (1 + exp(-x)); }
static double r_clamp(double x, double p, double q) { return fmin(fmax(x, p), q); }

static em_tensor *apply(const unary_case *c, em_tensor *x) {
  if (!strcmp(c->name, "exp")) return em_exp(x);
  if (!strcmp(c->name, "log")) return em_log(x);
  if (!strcmp(c->name, "sqrt")) return em_sqrt(x);
  if (!strcmp(c->name, "pow")) return em_pow(x, c->p0);
  if (!strcmp(c->name, "relu")) return em_relu(x);
  if (!strcmp(c->name, "gelu")) return em_gelu(x);
  if (!strcmp(c->name, "tanh")) return em_tanh(x);
  if (!strcmp(c->name, "sigmoid")) return em_sigmoid(x);
  return em_clamp(x, c->p0, c->p1);
}

static em_tensor *unary_fn(em_tensor **in, void *ctx) { return apply(ctx, in[0]); }

static const unary_case cases[] = {
    {"exp", r_exp, -3, 3, 0, 0},         {"log", r_log, 0.2f, 4, 0, 0},
    {"sqrt", r_sqrt, 0.2f, 4, 0, 0},     {"pow", r_pow, 0.2f, 3, 2, 0},
    {"pow", r_pow, 0.2f, 3, 0.5f, 0},    {"pow", r_pow, 0.2f, 3, -1.5f, 0},
    {"pow", r_pow, -2, 2, 3, 0}, /* integer exponent: negative bases are fine */
    {"pow", r_pow, -2, 2, 2, 0},         {"relu", r_relu, -2, 2, 0, 0},
    {"gelu", r_gelu, -4, 4, 0, 0},       {"tanh", r_tanh, -3, 3, 0, 0},
    {"sigmoid", r_sigmoid, -6, 6, 0, 0}, {"clamp", r_clamp, -2, 2, -0.5f, 1.0f},
    {"clamp", r_clamp, -2, 2, 1.0f, -0.5f}, /* lo > hi: hi everywhere, as torch.clamp */
};
#define NCASES ((int)(sizeof cases / sizeof *cases))

/* Move values within 0.05 of a kink away from it, so finite differences do not straddle it. */
static void avoid_kinks(em_tensor *x, const unary_case *c) {
  float kinks[2] = {0, 0};
  int nk = 0;
  if (!strcmp(c->name, "relu")) kinks[nk++] = 0;
  if (!strcmp(c->name, "clamp")) {
    kinks[nk++] = c->p0;
    kinks[nk++] = c->p1;
  }
  for (int64_t i = 0, n = em_numel(x); i < n; i++)
    for (int k = 0; k < nk; k++) {
      double v = em_get(x, i);
      if (fabs(v - kinks[k]) < 0.05) em_set(x, i, kinks[k] + (v < kinks[k] ? -0.1 : 0.1));
    }
}

static void check_forward(const unary_case *c, em_tensor *x, const char *what) {
  em_tensor *y = apply(c, x);
  cr_assert_not_null(y, "%s %s: %s", c->name, what, em_last_error());
  cr_assert_eq(y->ndim, x->ndim);
  for (int d = 0; d < x->ndim; d++) cr_assert_eq(y->shape[d], x->shape[d]);
  int64_t n = em_numel(x);
  double *ref = malloc((size_t)(n ? n : 1) * sizeof *ref);
  for (int64_t i = 0; i < n; i++) ref[i] = c->ref(em_get(x, i), c->p0, c->p1);
  char buf[64];
  snprintf(buf, sizeof buf, "%s(p=%g) %s", c->name, c->p0, what);
  /* oneDNN's log is accurate to ~4e-6 absolute (measured), not to 1 ulp like libm's */
  tu_assert_close(y, ref, n, 2e-5, strcmp(c->name, "log") ? 1e-6 : 1e-5, buf);
  free(ref);
}

Test(unary, forward_against_float64) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(7);
  for (int k = 0; k < NCASES; k++) {
    const unary_case *c = &cases[k];
    /* small, vector-length tails, and large enough for oneDNN's threaded/unrolled paths */
    check_forward(c, tu_rand(&r, EM_SHAPE(3, 4), c->lo, c->hi, false), "(3, 4)");
    check_forward(c, tu_rand(&r, EM_SHAPE(37), c->lo, c->hi, false), "(37)");
    check_forward(c, tu_rand(&r, EM_SHAPE(8, 1000), c->lo, c->hi, false), "(8, 1000)");
  }
  em_scope_end(s);
}

Test(unary, gradients) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(8);
  for (int k = 0; k < NCASES; k++) {
    const unary_case *c = &cases[k];
    em_tensor *x = tu_rand(&r, EM_SHAPE(2, 3, 4), c->lo, c->hi, true);
    avoid_kinks(x, c);
    char buf[64];
    snprintf(buf, sizeof buf, "%s(p=%g) grad", c->name, c->p0);
    tu_gradcheck(unary_fn, 1, &x, (void *)c, 1e-3, 1e-2, buf);
  }
  em_scope_end(s);
}

Test(unary, non_contiguous_zero_dim_and_empty) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(9);
  for (int k = 0; k < NCASES; k++) {
    const unary_case *c = &cases[k];
    em_tensor *x = tu_rand(&r, EM_SHAPE(5, 7), c->lo, c->hi, true);
    avoid_kinks(x, c);
    em_tensor *t = em_transpose(x, 0, 1);
    cr_assert_not_null(t, "%s", em_last_error());
    check_forward(c, t, "transposed");
    em_tensor *z = em_scalar(c->lo + 0.37f * (c->hi - c->lo));
    check_forward(c, z, "0-d");
    cr_assert_eq(apply(c, z)->ndim, 0);
    em_tensor *e = apply(c, em_zeros(EM_F32, EM_SHAPE(0, 3)));
    cr_assert_not_null(e, "%s", em_last_error());
    cr_assert_eq(em_numel(e), 0);
  }
  /* gradient through a transposed input reaches the leaf in its own layout */
  em_tensor *x = tu_rand(&r, EM_SHAPE(3, 5), -2, 2, true);
  em_tensor *y = em_tanh(em_transpose(x, 0, 1));
  cr_assert_eq(em_backward(em_sum(y, 0, NULL, false)), EM_OK, "%s", em_last_error());
  double ref[15];
  for (int i = 0; i < 15; i++) ref[i] = 1 - pow(tanh(em_get(x, i)), 2);
  tu_assert_close(x->grad, ref, 15, 1e-4, 1e-5, "tanh grad through transpose");
  em_scope_end(s);
}

Test(unary, errors) {
  em_scope s = em_scope_begin();
  tu_assert_error(em_relu(NULL), "relu", NULL);
  tu_assert_error(em_exp(em_zeros(EM_I64, EM_SHAPE(2, 3))), "exp", "[2, 3]");
  /* NULL propagates and keeps the first message */
  em_tensor *bad = em_sum(em_zeros(EM_F32, EM_SHAPE(2)), 1, (int[]){4}, false);
  tu_assert_error(em_gelu(em_sigmoid(bad)), "sum", NULL);
  em_scope_end(s);
}

/* ---- where ---------------------------------------------------------------------------------- */
static double bget(const em_tensor *t, int nd, const int64_t *shape, const int64_t *idx) {
  int64_t flat = 0;
  for (int d = 0; d < t->ndim; d++) {
    int od = d + nd - t->ndim;
    flat = flat * t->shape[d] + (t->shape[d] == 1 ? 0 : idx[od]);
  }
  return em_get(t, flat);
}

static void check_where(em_tensor *c, em_tensor *a, em_tensor *b, int nd, const int64_t *shape) {
  em_tensor *y = em_where(c, a, b);
  cr_assert_not_null(y, "%s", em_last_error());
  cr_assert_eq(y->ndim, nd);
  int64_t n = 1, idx[EM_MAX_DIMS] = {0};
  for (int d = 0; d < nd; d++) {
    cr_assert_eq(y->shape[d], shape[d]);
    n *= shape[d];
  }
  double ref[512];
  for (int64_t k = 0; k < n; k++) {
    ref[k] = bget(c, nd, shape, idx) != 0 ? bget(a, nd, shape, idx) : bget(b, nd, shape, idx);
    for (int d = nd - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  tu_assert_close(y, ref, n, 0, 0, "where");
}

static em_tensor *where_fn(em_tensor **in, void *ctx) { return em_where(in[0], in[1], in[2]); }

Test(where, broadcasting_and_cond_dtypes) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(10);
  em_tensor *c = em_empty(EM_U8, EM_SHAPE(4, 1, 3));
  for (int i = 0; i < 12; i++) em_set(c, i, (i * 7) % 3 != 0);
  em_tensor *a = tu_rand(&r, EM_SHAPE(5, 1), -1, 1, true);
  em_tensor *b = tu_rand(&r, EM_SHAPE(3), -1, 1, true);
  check_where(c, a, b, 3, (int64_t[]){4, 5, 3});
  check_where(c, em_scalar(2), b, 3, (int64_t[]){4, 1, 3});
  /* same shapes: the contiguous fast path */
  em_tensor *x = tu_rand(&r, EM_SHAPE(6, 7), -1, 1, false);
  em_tensor *z = tu_rand(&r, EM_SHAPE(6, 7), -1, 1, false);
  check_where(em_rand_uniform(EM_SHAPE(6, 7), -1, 1, &r), x, z, 2, (int64_t[]){6, 7});
  /* cond as f32 / i64 / i32 (nonzero = true), and non-contiguous */
  em_tensor *cf = em_from_data(EM_F32, EM_SHAPE(2, 3), (float[]){0, -0.5f, 0, 3, 0, 1});
  em_tensor *ci = em_from_data(EM_I64, EM_SHAPE(2, 3), (int64_t[]){0, 4, 0, -1, 0, 1});
  em_tensor *c32 = em_from_data(EM_I32, EM_SHAPE(3), (int32_t[]){1, 0, 1});
  em_tensor *a2 = tu_rand(&r, EM_SHAPE(2, 3), -1, 1, false);
  check_where(cf, a2, em_scalar(9), 2, (int64_t[]){2, 3});
  check_where(ci, a2, em_scalar(9), 2, (int64_t[]){2, 3});
  check_where(c32, a2, em_scalar(9), 2, (int64_t[]){2, 3});
  em_tensor *ct = em_from_data(EM_U8, EM_SHAPE(3, 2), (uint8_t[]){1, 0, 0, 1, 1, 1});
  em_tensor *at = tu_rand(&r, EM_SHAPE(3, 2), -1, 1, false);
  check_where(em_transpose(ct, 0, 1), em_transpose(at, 0, 1), em_scalar(9), 2, (int64_t[]){2, 3});
  em_scope_end(s);
}

Test(where, gradient_through_broadcasting) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(11);
  em_tensor *c = em_empty(EM_U8, EM_SHAPE(4, 1, 3));
  for (int i = 0; i < 12; i++) em_set(c, i, i % 2);
  em_tensor *in[3] = {c, tu_rand(&r, EM_SHAPE(5, 1), -1, 1, true),
                      tu_rand(&r, EM_SHAPE(3), -1, 1, true)};
  tu_gradcheck(where_fn, 3, in, NULL, 1e-2, 1e-2, "where grad");
  /* exact: d sum(where)/da counts the true positions each a element is broadcast to */
  em_set_grad(in[1], NULL);
  em_set_grad(in[2], NULL);
  cr_assert_eq(em_backward(em_sum(em_where(c, in[1], in[2]), 0, NULL, false)), EM_OK);
  double ga[5] = {6, 6, 6, 6, 6}, gb[3]; /* cond (4, 1, 3) holds 6 ones */
  for (int j = 0; j < 3; j++) {
    int ones = 0;
    for (int i = 0; i < 4; i++) ones += (i * 3 + j) % 2;
    gb[j] = 5.0 * (4 - ones);
  }
  tu_assert_close(in[1]->grad, ga, 5, 0, 0, "where grad a");
  tu_assert_close(in[2]->grad, gb, 3, 0, 0, "where grad b");
  em_scope_end(s);
}

Test(where, errors) {
  em_scope s = em_scope_begin();
  em_tensor *c = em_zeros(EM_U8, EM_SHAPE(4, 1, 3));
  em_tensor *a = em_zeros(EM_F32, EM_SHAPE(5, 2));
  em_tensor *b = em_zeros(EM_F32, EM_SHAPE(3));
  em_tensor *y = em_where(c, a, b);
  tu_assert_error(y, "[4, 1, 3]", "[5, 2]");
  y = em_where(c, a, b);
  tu_assert_error(y, "where", "[3]");
  tu_assert_error(em_where(c, em_zeros(EM_I64, EM_SHAPE(3)), b), "where", "i64");
  tu_assert_error(em_where(NULL, a, b), "where", NULL);
  em_scope_end(s);
}

/* Outside any scope the caller owns only the result: contiguous copies and the where mask must
 * not outlive the op. */
Test(unary, no_temporaries_leak_outside_scopes) {
  int64_t before = em_live_tensors();
  em_rng r = em_rng_new(12);
  em_tensor *x = em_rand_uniform(EM_SHAPE(4, 6), 0.5f, 1, &r);
  em_set_requires_grad(x, true);
  em_tensor *t = em_transpose(x, 0, 1);
  em_tensor *c = em_from_data(EM_F32, EM_SHAPE(6, 1), (float[]){1, 0, 1, 0, 2, 0});
  em_tensor *outs[4] = {em_log(t), em_gelu(t), em_clamp(t, 0.6f, 0.9f), em_where(c, t, x)};
  for (int k = 0; k < 3; k++) {
    cr_assert_not_null(outs[k], "%s", em_last_error());
    em_release(outs[k]);
  }
  cr_assert_null(outs[3]); /* (6, 1), (6, 4), (4, 6) do not broadcast */
  em_clear_error();
  em_tensor *w = em_where(c, t, t);
  cr_assert_not_null(w, "%s", em_last_error());
  em_release(w);
  em_release(c);
  em_release(t);
  em_release(x);
  cr_assert_eq(em_live_tensors(), before, "%lld tensors leaked",
               (long long)(em_live_tensors() - before));
}
