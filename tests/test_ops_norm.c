/* test_ops_norm.c: em_batch_norm (training with the running-statistics update, eval) and
 * em_layer_norm against float64 loops, gradients by finite differences, and the shape checks. */
#include "testutil.h"

#include <math.h>

/* Batch norm reference over x (N, C, S) flattened; fills mean/var (biased) per channel. */
static double *ref_bn(const em_tensor *x, const em_tensor *w, const em_tensor *b,
                      const double *use_mean, const double *use_var, double eps, double *mean,
                      double *var) {
  int64_t N = x->shape[0], C = x->shape[1], S = em_numel(x) / (N * C);
  double *y = calloc((size_t)em_numel(x) + 1, sizeof *y);
  for (int64_t c = 0; c < C; c++) {
    double m = 0, v = 0;
    for (int64_t n = 0; n < N; n++)
      for (int64_t s = 0; s < S; s++) m += em_get(x, (n * C + c) * S + s);
    m /= (double)(N * S);
    for (int64_t n = 0; n < N; n++)
      for (int64_t s = 0; s < S; s++) {
        double d = em_get(x, (n * C + c) * S + s) - m;
        v += d * d;
      }
    v /= (double)(N * S);
    if (mean) mean[c] = m;
    if (var) var[c] = v;
    double um = use_mean ? use_mean[c] : m, uv = use_var ? use_var[c] : v;
    double scale = w ? em_get(w, c) : 1, shift = b ? em_get(b, c) : 0;
    for (int64_t n = 0; n < N; n++)
      for (int64_t s = 0; s < S; s++) {
        int64_t i = (n * C + c) * S + s;
        y[i] = (em_get(x, i) - um) / sqrt(uv + eps) * scale + shift;
      }
  }
  return y;
}

Test(batch_norm, training_forward_and_running_stats) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(1);
  int64_t N = 3, C = 4, M = N * 3 * 2;
  em_tensor *x = tu_rand(&r, EM_SHAPE(N, C, 3, 2), -2, 3, false);
  em_tensor *w = tu_rand(&r, EM_SHAPE(C), 0.5f, 1.5f, false);
  em_tensor *b = tu_rand(&r, EM_SHAPE(C), -1, 1, false);
  em_tensor *rm = tu_rand(&r, EM_SHAPE(C), -1, 1, false);
  em_tensor *rv = tu_rand(&r, EM_SHAPE(C), 0.5f, 2, false);
  double rm0[4], rv0[4], mean[4], var[4];
  for (int c = 0; c < C; c++) {
    rm0[c] = em_get(rm, c);
    rv0[c] = em_get(rv, c);
  }
  em_tensor *y = em_batch_norm(x, w, b, rm, rv, true, 0.1f, 1e-5f);
  double *ref = ref_bn(x, w, b, NULL, NULL, 1e-5, mean, var);
  tu_assert_close(y, ref, em_numel(x), 1e-4, 1e-5, "batch norm training (N, C, H, W)");
  free(ref);
  double erm[4], erv[4];
  for (int c = 0; c < C; c++) {
    erm[c] = 0.9 * rm0[c] + 0.1 * mean[c];
    erv[c] = 0.9 * rv0[c] + 0.1 * var[c] * (double)M / (double)(M - 1); /* unbiased */
  }
  tu_assert_close(rm, erm, C, 1e-5, 1e-6, "running_mean after one step");
  tu_assert_close(rv, erv, C, 1e-5, 1e-6, "running_var after one step (unbiased)");
  /* a second step with other data keeps averaging */
  em_tensor *x2 = tu_rand(&r, EM_SHAPE(N, C, 3, 2), -1, 1, false);
  em_batch_norm(x2, w, b, rm, rv, true, 0.1f, 1e-5f);
  ref = ref_bn(x2, w, b, NULL, NULL, 1e-5, mean, var);
  free(ref);
  for (int c = 0; c < C; c++) {
    erm[c] = 0.9 * erm[c] + 0.1 * mean[c];
    erv[c] = 0.9 * erv[c] + 0.1 * var[c] * (double)M / (double)(M - 1);
  }
  tu_assert_close(rm, erm, C, 1e-5, 1e-6, "running_mean after two steps");
  tu_assert_close(rv, erv, C, 1e-5, 1e-6, "running_var after two steps");
  em_scope_end(s);
}

Test(batch_norm, running_stats_2d) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(10);
  int64_t N = 6, C = 5;
  em_tensor *x = tu_rand(&r, EM_SHAPE(N, C), -2, 3, false);
  em_tensor *w = tu_rand(&r, EM_SHAPE(C), 0.5f, 1.5f, false);
  em_tensor *b = tu_rand(&r, EM_SHAPE(C), -1, 1, false);
  em_tensor *rm = em_zeros(EM_F32, EM_SHAPE(C)), *rv = em_full(EM_F32, EM_SHAPE(C), 1.0);
  double mean[5], var[5], erm[5], erv[5];
  em_tensor *y = em_batch_norm(x, w, b, rm, rv, true, 0.3f, 1e-5f);
  double *ref = ref_bn(x, w, b, NULL, NULL, 1e-5, mean, var);
  tu_assert_close(y, ref, N * C, 1e-4, 1e-5, "batch norm training (N, C)");
  free(ref);
  for (int c = 0; c < C; c++) {
    erm[c] = 0.3 * mean[c];
    erv[c] = 0.7 + 0.3 * var[c] * (double)N / (double)(N - 1);
  }
  tu_assert_close(rm, erm, C, 1e-5, 1e-6, "running_mean (N, C)");
  tu_assert_close(rv, erv, C, 1e-5, 1e-6, "running_var (N, C), unbiased");
  em_scope_end(s);
}

Test(batch_norm, shapes_2d_3d_no_affine) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(2);
  em_tensor *x2 = tu_rand(&r, EM_SHAPE(5, 3), -1, 1, false);
  double *ref = ref_bn(x2, NULL, NULL, NULL, NULL, 1e-3, NULL, NULL);
  tu_assert_close(em_batch_norm(x2, NULL, NULL, NULL, NULL, true, 0.1f, 1e-3f), ref, 15, 1e-4, 1e-5,
                  "(N, C) without weight, bias, running stats");
  free(ref);
  em_tensor *x3 = tu_rand(&r, EM_SHAPE(2, 3, 4), -1, 1, false);
  em_tensor *w = tu_rand(&r, EM_SHAPE(3), 0.5f, 1.5f, false);
  ref = ref_bn(x3, w, NULL, NULL, NULL, 1e-5, NULL, NULL);
  tu_assert_close(em_batch_norm(x3, w, NULL, NULL, NULL, true, 0.1f, 1e-5f), ref, 24, 1e-4, 1e-5,
                  "(N, C, L) with weight only");
  free(ref);
  em_tensor *b = tu_rand(&r, EM_SHAPE(3), -1, 1, false);
  ref = ref_bn(x3, NULL, b, NULL, NULL, 1e-5, NULL, NULL);
  tu_assert_close(em_batch_norm(x3, NULL, b, NULL, NULL, true, 0.1f, 1e-5f), ref, 24, 1e-4, 1e-5,
                  "(N, C, L) with bias only");
  free(ref);
  em_scope_end(s);
}

Test(batch_norm, eval_uses_running_stats) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(3);
  em_tensor *x = tu_rand(&r, EM_SHAPE(2, 3, 2, 2), -1, 1, false);
  em_tensor *w = tu_rand(&r, EM_SHAPE(3), 0.5f, 1.5f, false);
  em_tensor *b = tu_rand(&r, EM_SHAPE(3), -1, 1, false);
  em_tensor *rm = tu_rand(&r, EM_SHAPE(3), -1, 1, false);
  em_tensor *rv = tu_rand(&r, EM_SHAPE(3), 0.5f, 2, false);
  double um[3], uv[3];
  for (int c = 0; c < 3; c++) {
    um[c] = em_get(rm, c);
    uv[c] = em_get(rv, c);
  }
  double *ref = ref_bn(x, w, b, um, uv, 1e-5, NULL, NULL);
  tu_assert_close(em_batch_norm(x, w, b, rm, rv, false, 0.1f, 1e-5f), ref, 24, 1e-4, 1e-5,
                  "batch norm eval");
  tu_assert_close(rm, um, 3, 0, 0, "running_mean unchanged in eval");
  tu_assert_close(rv, uv, 3, 0, 0, "running_var unchanged in eval");
  /* a single sample is fine in eval */
  em_tensor *x1 = tu_rand(&r, EM_SHAPE(1, 3), -1, 1, false);
  free(ref);
  ref = ref_bn(x1, w, b, um, uv, 1e-5, NULL, NULL);
  tu_assert_close(em_batch_norm(x1, w, b, rm, rv, false, 0.1f, 1e-5f), ref, 3, 1e-4, 1e-5,
                  "batch norm eval of one sample");
  free(ref);
  em_scope_end(s);
}

Test(batch_norm, bad_shapes) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(4);
  em_tensor *x = tu_rand(&r, EM_SHAPE(2, 3, 4, 4), -1, 1, false);
  em_tensor *w4 = tu_rand(&r, EM_SHAPE(4), -1, 1, false);
  tu_assert_error(em_batch_norm(x, w4, NULL, NULL, NULL, true, 0.1f, 1e-5f), "[4]", "[2, 3, 4, 4]");
  em_tensor *rm = tu_rand(&r, EM_SHAPE(3, 1), -1, 1, false);
  tu_assert_error(em_batch_norm(x, NULL, NULL, rm, NULL, true, 0.1f, 1e-5f), "running_mean",
                  "[3, 1]");
  tu_assert_error(em_batch_norm(x, NULL, NULL, NULL, NULL, false, 0.1f, 1e-5f), "eval",
                  "[2, 3, 4, 4]");
  em_tensor *one = tu_rand(&r, EM_SHAPE(1, 3), -1, 1, false);
  tu_assert_error(em_batch_norm(one, NULL, NULL, NULL, NULL, true, 0.1f, 1e-5f),
                  "more than 1 value", "[1, 3]");
  em_tensor *v = tu_rand(&r, EM_SHAPE(3), -1, 1, false);
  tu_assert_error(em_batch_norm(v, NULL, NULL, NULL, NULL, true, 0.1f, 1e-5f), "batch_norm", "[3]");
  tu_assert_error(em_batch_norm(NULL, NULL, NULL, NULL, NULL, true, 0.1f, 1e-5f), "batch_norm",
                  "NULL");
  em_scope_end(s);
}

/* ---- batch norm gradients ------------------------------------------------------------------ */
typedef struct {
  bool training;
  em_tensor *rm, *rv;
  int n_in; /* 1: x only, 3: x, weight, bias */
} bn_ctx;

static em_tensor *f_bn(em_tensor **in, void *vctx) {
  bn_ctx *c = vctx;
  return em_batch_norm(in[0], c->n_in > 1 ? in[1] : NULL, c->n_in > 1 ? in[2] : NULL, c->rm, c->rv,
                       c->training, 0.1f, 1e-5f);
}

Test(batch_norm, grad_training) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(5);
  bn_ctx c = {.training = true, .n_in = 3};
  em_tensor *in[3] = {tu_rand(&r, EM_SHAPE(3, 2, 2, 2), -1, 1, true),
                      tu_rand(&r, EM_SHAPE(2), 0.5f, 1.5f, true),
                      tu_rand(&r, EM_SHAPE(2), -1, 1, true)};
  tu_gradcheck(f_bn, 3, in, &c, 1e-3, 1e-2, "batch norm training grad (N, C, H, W)");
  em_tensor *in2[3] = {tu_rand(&r, EM_SHAPE(4, 3), -1, 1, true),
                       tu_rand(&r, EM_SHAPE(3), 0.5f, 1.5f, true),
                       tu_rand(&r, EM_SHAPE(3), -1, 1, false)};
  tu_gradcheck(f_bn, 3, in2, &c, 1e-3, 1e-2, "batch norm training grad (N, C), frozen bias");
  bn_ctx plain = {.training = true, .n_in = 1};
  em_tensor *x = tu_rand(&r, EM_SHAPE(2, 2, 3), -1, 1, true);
  tu_gradcheck(f_bn, 1, &x, &plain, 1e-3, 1e-2, "batch norm training grad, no affine");
  em_scope_end(s);
}

Test(batch_norm, grad_eval) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(6);
  bn_ctx c = {.training = false,
              .n_in = 3,
              .rm = tu_rand(&r, EM_SHAPE(2), -1, 1, false),
              .rv = tu_rand(&r, EM_SHAPE(2), 0.5f, 2, false)};
  em_tensor *in[3] = {tu_rand(&r, EM_SHAPE(2, 2, 2, 2), -1, 1, true),
                      tu_rand(&r, EM_SHAPE(2), 0.5f, 1.5f, true),
                      tu_rand(&r, EM_SHAPE(2), -1, 1, true)};
  tu_gradcheck(f_bn, 3, in, &c, 1e-3, 1e-2, "batch norm eval grad");
  /* only the weight needs a gradient */
  em_tensor *in2[3] = {tu_rand(&r, EM_SHAPE(2, 2, 2, 2), -1, 1, false),
                       tu_rand(&r, EM_SHAPE(2), 0.5f, 1.5f, true),
                       tu_rand(&r, EM_SHAPE(2), -1, 1, false)};
  tu_gradcheck(f_bn, 3, in2, &c, 1e-3, 1e-2, "batch norm eval grad of weight only");
  /* (N, C): the oneDNN kernel, eval and training, with only the bias learning */
  em_tensor *in3[3] = {tu_rand(&r, EM_SHAPE(3, 2), -1, 1, true),
                       tu_rand(&r, EM_SHAPE(2), 0.5f, 1.5f, true),
                       tu_rand(&r, EM_SHAPE(2), -1, 1, true)};
  tu_gradcheck(f_bn, 3, in3, &c, 1e-3, 1e-2, "batch norm eval grad (N, C)");
  bn_ctx t = {.training = true, .n_in = 3};
  em_tensor *in4[3] = {tu_rand(&r, EM_SHAPE(4, 3), -1, 1, true),
                       tu_rand(&r, EM_SHAPE(3), 0.5f, 1.5f, false),
                       tu_rand(&r, EM_SHAPE(3), -1, 1, true)};
  tu_gradcheck(f_bn, 3, in4, &t, 1e-3, 1e-2, "batch norm training grad (N, C), frozen weight");
  em_scope_end(s);
}

/* ---- layer norm ------------------------------------------------------------------------------ */
/* Rows of D values; weight/bias (D) or NULL. */
static double *ref_ln(const em_tensor *x, int64_t D, const em_tensor *w, const em_tensor *b,
                      double eps) {
  int64_t R = em_numel(x) / D;
  double *y = calloc((size_t)em_numel(x) + 1, sizeof *y);
  for (int64_t r = 0; r < R; r++) {
    double m = 0, v = 0;
    for (int64_t k = 0; k < D; k++) m += em_get(x, r * D + k);
    m /= (double)D;
    for (int64_t k = 0; k < D; k++) v += pow(em_get(x, r * D + k) - m, 2);
    v /= (double)D;
    for (int64_t k = 0; k < D; k++)
      y[r * D + k] = (em_get(x, r * D + k) - m) / sqrt(v + eps) * (w ? em_get(w, k) : 1) +
                     (b ? em_get(b, k) : 0);
  }
  return y;
}

Test(layer_norm, forward) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(7);
  em_tensor *x = tu_rand(&r, EM_SHAPE(2, 3, 5), -2, 2, false);
  em_tensor *w = tu_rand(&r, EM_SHAPE(5), 0.5f, 1.5f, false);
  em_tensor *b = tu_rand(&r, EM_SHAPE(5), -1, 1, false);
  double *ref = ref_ln(x, 5, w, b, 1e-5);
  tu_assert_close(em_layer_norm(x, 1, w, b, 1e-5f), ref, 30, 1e-4, 1e-5, "last dim, affine");
  free(ref);
  ref = ref_ln(x, 5, NULL, NULL, 1e-5);
  tu_assert_close(em_layer_norm(x, 1, NULL, NULL, 1e-5f), ref, 30, 1e-4, 1e-5,
                  "last dim, no affine");
  free(ref);
  em_tensor *w2 = tu_rand(&r, EM_SHAPE(3, 5), 0.5f, 1.5f, false);
  em_tensor *b2 = tu_rand(&r, EM_SHAPE(3, 5), -1, 1, false);
  ref = ref_ln(x, 15, w2, b2, 1e-5);
  tu_assert_close(em_layer_norm(x, 2, w2, b2, 1e-5f), ref, 30, 1e-4, 1e-5, "last two dims");
  free(ref);
  ref = ref_ln(x, 30, NULL, NULL, 1e-3);
  tu_assert_close(em_layer_norm(x, 3, NULL, NULL, 1e-3f), ref, 30, 1e-4, 1e-5, "all dims");
  free(ref);
  /* under no_grad: the inference primitive */
  bool prev = em_no_grad_begin();
  ref = ref_ln(x, 5, w, NULL, 1e-5);
  tu_assert_close(em_layer_norm(x, 1, w, NULL, 1e-5f), ref, 30, 1e-4, 1e-5, "weight only");
  free(ref);
  em_no_grad_end(prev);
  em_scope_end(s);
}

Test(layer_norm, bad_shapes) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(8);
  em_tensor *x = tu_rand(&r, EM_SHAPE(2, 3, 5), -1, 1, false);
  em_tensor *w = tu_rand(&r, EM_SHAPE(3), -1, 1, false);
  tu_assert_error(em_layer_norm(x, 1, w, NULL, 1e-5f), "[3]", "[2, 3, 5]");
  em_tensor *w2 = tu_rand(&r, EM_SHAPE(5, 3), -1, 1, false);
  tu_assert_error(em_layer_norm(x, 2, NULL, w2, 1e-5f), "[5, 3]", "[2, 3, 5]");
  tu_assert_error(em_layer_norm(x, 0, NULL, NULL, 1e-5f), "last 0 dims", "[2, 3, 5]");
  tu_assert_error(em_layer_norm(x, 4, NULL, NULL, 1e-5f), "last 4 dims", "[2, 3, 5]");
  tu_assert_error(em_layer_norm(NULL, 1, NULL, NULL, 1e-5f), "layer_norm", "NULL");
  em_scope_end(s);
}

typedef struct {
  int n_dims;
  bool affine;
} ln_ctx;

static em_tensor *f_ln(em_tensor **in, void *vctx) {
  ln_ctx *c = vctx;
  return em_layer_norm(in[0], c->n_dims, c->affine ? in[1] : NULL, c->affine ? in[2] : NULL, 1e-5f);
}

Test(layer_norm, grad) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(9);
  ln_ctx one = {1, true}, two = {2, true}, plain = {1, false};
  em_tensor *in[3] = {tu_rand(&r, EM_SHAPE(3, 4), -1, 1, true),
                      tu_rand(&r, EM_SHAPE(4), 0.5f, 1.5f, true),
                      tu_rand(&r, EM_SHAPE(4), -1, 1, true)};
  tu_gradcheck(f_ln, 3, in, &one, 1e-3, 1e-2, "layer norm grad, last dim");
  em_tensor *in2[3] = {tu_rand(&r, EM_SHAPE(2, 2, 3), -1, 1, true),
                       tu_rand(&r, EM_SHAPE(2, 3), 0.5f, 1.5f, true),
                       tu_rand(&r, EM_SHAPE(2, 3), -1, 1, false)};
  tu_gradcheck(f_ln, 3, in2, &two, 1e-3, 1e-2, "layer norm grad, last two dims, frozen bias");
  em_tensor *x = tu_rand(&r, EM_SHAPE(3, 5), -1, 1, true);
  tu_gradcheck(f_ln, 1, &x, &plain, 1e-3, 1e-2, "layer norm grad, no affine");
  em_scope_end(s);
}

Test(norm, no_scope_no_leak) {
  int64_t before = em_live_tensors();
  em_rng r = em_rng_new(11);
  em_tensor *x = em_rand_uniform(EM_SHAPE(3, 4, 2, 2), -1, 1, &r);
  em_tensor *w = em_rand_uniform(EM_SHAPE(4), -1, 1, &r);
  em_set_requires_grad(w, true);
  em_tensor *rm = em_zeros(EM_F32, EM_SHAPE(4)), *rv = em_full(EM_F32, EM_SHAPE(4), 1.0);
  em_tensor *y1 = em_batch_norm(x, w, NULL, rm, rv, true, 0.1f, 1e-5f);
  em_tensor *y2 = em_batch_norm(x, w, NULL, rm, rv, false, 0.1f, 1e-5f);
  em_tensor *y3 = em_layer_norm(x, 2, NULL, NULL, 1e-5f);
  cr_assert(y1 && y2 && y3, "%s", em_last_error());
  em_tensor *all[] = {y1, y2, y3, rm, rv, w, x};
  for (int k = 0; k < 7; k++) em_release(all[k]);
  cr_assert_eq(em_live_tensors(), before);
}
