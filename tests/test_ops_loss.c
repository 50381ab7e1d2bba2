/* test_ops_loss.c: softmax and log_softmax over every dim, cross_entropy (reductions,
 * ignore_index, i64/i32 labels, values from PyTorch), nll_loss and mse_loss: forward against
 * float64 loops, gradients by finite differences, and the errors for bad labels and shapes. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>

/* ---- softmax -------------------------------------------------------------------------------- */

/* float64 (log_)softmax of x (contiguous) over dim d. */
static void ref_softmax(const em_tensor *x, int d, bool logp, double *ref) {
  int64_t O = 1, R = x->shape[d], K = 1;
  for (int k = 0; k < d; k++) O *= x->shape[k];
  for (int k = d + 1; k < x->ndim; k++) K *= x->shape[k];
  for (int64_t o = 0; o < O; o++)
    for (int64_t k = 0; k < K; k++) {
      double m = -INFINITY, s = 0;
      for (int64_t r = 0; r < R; r++) m = fmax(m, em_get(x, (o * R + r) * K + k));
      for (int64_t r = 0; r < R; r++) s += exp(em_get(x, (o * R + r) * K + k) - m);
      for (int64_t r = 0; r < R; r++) {
        double v = em_get(x, (o * R + r) * K + k) - m - log(s);
        ref[(o * R + r) * K + k] = logp ? v : exp(v);
      }
    }
}

typedef struct {
  int dim;
  bool logp;
} sm_case;

static em_tensor *sm_fn(em_tensor **in, void *ctx) {
  sm_case *c = ctx;
  return c->logp ? em_log_softmax(in[0], c->dim) : em_softmax(in[0], c->dim);
}

Test(softmax, every_dim_forward_and_grad) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(21);
  em_tensor *x = tu_rand(&r, EM_SHAPE(3, 4, 5), -3, 3, true);
  double ref[60];
  for (int logp = 0; logp < 2; logp++)
    for (int dim = -3; dim < 3; dim++) {
      sm_case c = {dim, logp};
      ref_softmax(x, dim < 0 ? dim + 3 : dim, logp, ref);
      /* oneDNN's log is accurate to ~4e-6 absolute: log_softmax inherits it */
      tu_assert_close(sm_fn(&x, &c), ref, 60, 1e-5, logp ? 1e-5 : 1e-6,
                      logp ? "log_softmax" : "softmax");
      tu_gradcheck(sm_fn, 1, &x, &c, 1e-2, 1e-2, logp ? "log_softmax grad" : "softmax grad");
    }
  em_scope_end(s);
}

Test(softmax, wide_rows_large_values_non_contiguous) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(22);
  /* large logits: a naive exp would overflow */
  em_tensor *x = tu_rand(&r, EM_SHAPE(3, 1001), 80, 120, false);
  double *ref = malloc(3003 * sizeof *ref);
  ref_softmax(x, 1, false, ref);
  tu_assert_close(em_softmax(x, -1), ref, 3003, 1e-4, 1e-7, "softmax wide");
  ref_softmax(x, 1, true, ref);
  tu_assert_close(em_log_softmax(x, 1), ref, 3003, 1e-5, 1e-4, "log_softmax wide");
  free(ref);
  /* transposed input: softmax over dim 0 of the (5, 4) view = over dim 1 of the (4, 5) data */
  em_tensor *a = tu_rand(&r, EM_SHAPE(4, 5), -2, 2, false);
  em_tensor *t = em_transpose(a, 0, 1);
  double ra[20], rt[20];
  ref_softmax(a, 1, false, ra);
  for (int i = 0; i < 5; i++)
    for (int j = 0; j < 4; j++) rt[i * 4 + j] = ra[j * 5 + i];
  tu_assert_close(em_softmax(t, 0), rt, 20, 1e-5, 1e-6, "softmax transposed");
  /* size-1 softmax dim is all ones; 0-d input */
  em_tensor *one = em_softmax(tu_rand(&r, EM_SHAPE(3, 1), -2, 2, false), 1);
  for (int i = 0; i < 3; i++) cr_assert_float_eq(em_get(one, i), 1.0, 1e-6);
  cr_assert_float_eq(em_get(em_log_softmax(em_scalar(4), 0), 0), 0.0, 1e-5);
  em_scope_end(s);
}

Test(softmax, errors) {
  em_scope s = em_scope_begin();
  tu_assert_error(em_softmax(em_zeros(EM_F32, EM_SHAPE(2, 3)), 2), "softmax", "[2, 3]");
  tu_assert_error(em_log_softmax(em_zeros(EM_F32, EM_SHAPE(2, 3)), -3), "log_softmax", "[2, 3]");
  tu_assert_error(em_softmax(NULL, 0), "softmax", NULL);
  em_scope_end(s);
}

/* ---- cross entropy ------------------------------------------------------------------------ */

/* Reference values from PyTorch 1.13 (Debian python3-torch), computed in float64:
 *   x = torch.tensor([[1.5, -0.25, 0.75, 2.0], [0.1, 0.2, -3.0, 0.4], [-1.0, 4.0, 2.5, 0.0]],
 *                    dtype=torch.float64, requires_grad=True)
 *   F.cross_entropy(x, torch.tensor([3, 0, 2]))          (mean; .backward() for the grad)
 *   F.cross_entropy(x, y, reduction='none' / 'sum')
 *   F.cross_entropy(x, torch.tensor([3, -100, 2]))       (ignore_index -100; and its grad) */
static const float CE_X[12] = {1.5f,  -0.25f, 0.75f, 2.0f, 0.1f, 0.2f,
                               -3.0f, 0.4f,   -1.0f, 4.0f, 2.5f, 0.0f};
static const double CE_MEAN = 1.2222797417703684, CE_SUM = 3.6668392253111053;
static const double CE_NONE[3] = {0.692364214689494, 1.2527855191111605, 1.7216894915104506};
static const double CE_GRAD[12] = {
    0.10116762307992179,   0.017580296812106273, 0.047788201363264976, -0.16653612125529305,
    -0.23809738574871708,  0.10525199962589461,  0.004290303477881642, 0.1285550826449408,
    0.0017994004009112146, 0.2670546979896762,   -0.2737453758025063,  0.004891277411918875};
static const double CE_IGN_MEAN = 1.2070268530999724;
static const double CE_IGN_GRAD[12] = {0.1517514346198827,
                                       0.026370445218159413,
                                       0.07168230204489746,
                                       -0.24980418188293957,
                                       0,
                                       0,
                                       0,
                                       0,
                                       0.002699100601366822,
                                       0.40058204698451433,
                                       -0.4106180637037595,
                                       0.007336916117878314};

Test(cross_entropy, pytorch_values) {
  em_scope s = em_scope_begin();
  em_tensor *x = em_from_data(EM_F32, EM_SHAPE(3, 4), CE_X);
  em_set_requires_grad(x, true);
  em_tensor *y64 = em_from_data(EM_I64, EM_SHAPE(3), (int64_t[]){3, 0, 2});
  em_tensor *y32 = em_from_data(EM_I32, EM_SHAPE(3), (int32_t[]){3, 0, 2});
  em_tensor *l = em_cross_entropy(x, y64);
  cr_assert_eq(l->ndim, 0);
  tu_assert_close(l, &CE_MEAN, 1, 1e-6, 0, "ce mean");
  cr_assert_eq(em_backward(l), EM_OK, "%s", em_last_error());
  tu_assert_close(x->grad, CE_GRAD, 12, 1e-5, 1e-7, "ce mean grad");
  tu_assert_close(em_cross_entropy(x, y32), &CE_MEAN, 1, 1e-6, 0, "ce mean i32");
  tu_assert_close(em_cross_entropy_ex(x, y32, EM_REDUCE_SUM, -100), &CE_SUM, 1, 1e-6, 0, "sum");
  em_tensor *none = em_cross_entropy_ex(x, y64, EM_REDUCE_NONE, -100);
  cr_assert_eq(none->ndim, 1);
  tu_assert_close(none, CE_NONE, 3, 1e-6, 0, "ce none");
  em_set_grad(x, NULL);
  em_tensor *yi = em_from_data(EM_I64, EM_SHAPE(3), (int64_t[]){3, -100, 2});
  l = em_cross_entropy(x, yi);
  tu_assert_close(l, &CE_IGN_MEAN, 1, 1e-6, 0, "ce ignore mean");
  cr_assert_eq(em_backward(l), EM_OK, "%s", em_last_error());
  tu_assert_close(x->grad, CE_IGN_GRAD, 12, 1e-5, 1e-7, "ce ignore grad");
  /* all labels ignored: mean is 0/0 = NaN, as PyTorch */
  em_tensor *all = em_from_data(EM_I64, EM_SHAPE(3), (int64_t[]){-100, -100, -100});
  cr_assert(isnan(em_get(em_cross_entropy(x, all), 0)));
  em_scope_end(s);
}

/* float64 per-row cross entropy; 0 on ignored rows. */
static void ref_ce(const em_tensor *x, const em_tensor *y, int64_t ignore, double *l) {
  int64_t N = x->shape[0], C = x->shape[1];
  for (int64_t i = 0; i < N; i++) {
    int64_t t = (int64_t)em_get(y, i);
    if (t == ignore) {
      l[i] = 0;
      continue;
    }
    double m = -INFINITY, s = 0;
    for (int64_t j = 0; j < C; j++) m = fmax(m, em_get(x, i * C + j));
    for (int64_t j = 0; j < C; j++) s += exp(em_get(x, i * C + j) - m);
    l[i] = m + log(s) - em_get(x, i * C + t);
  }
}

typedef struct {
  em_tensor *labels;
  em_reduction red;
  int64_t ignore;
  bool nll; /* nll_loss(log_softmax(x)) instead of the fused op */
} ce_case;

static em_tensor *ce_fn(em_tensor **in, void *ctx) {
  ce_case *c = ctx;
  if (c->nll) return em_nll_loss(em_log_softmax(in[0], 1), c->labels, c->red, c->ignore);
  return em_cross_entropy_ex(in[0], c->labels, c->red, c->ignore);
}

Test(cross_entropy, random_against_float64_and_grad) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(23);
  int64_t N = 16, C = 37; /* C not a multiple of the vector width */
  em_tensor *x = tu_rand(&r, EM_SHAPE(16, 37), -4, 4, true);
  em_tensor *y = em_empty(EM_I64, 1, &N);
  for (int i = 0; i < N; i++) em_set(y, i, i % 5 == 2 ? 7 : (i * 11) % C);
  double l[16], sum = 0;
  ref_ce(x, y, 7, l); /* label 7 used as ignore_index */
  int count = 0;
  for (int i = 0; i < N; i++) {
    sum += l[i];
    count += (int64_t)em_get(y, i) != 7;
  }
  double mean = sum / count;
  for (int nll = 0; nll < 2; nll++) {
    ce_case c = {y, EM_REDUCE_NONE, 7, nll};
    tu_assert_close(ce_fn(&x, &c), l, N, 1e-5, 1e-5, nll ? "nll none" : "ce none");
    c.red = EM_REDUCE_SUM;
    tu_assert_close(ce_fn(&x, &c), &sum, 1, 1e-5, 0, nll ? "nll sum" : "ce sum");
    c.red = EM_REDUCE_MEAN;
    tu_assert_close(ce_fn(&x, &c), &mean, 1, 1e-5, 0, nll ? "nll mean" : "ce mean");
  }
  /* large logits stay finite */
  em_tensor *big = tu_rand(&r, EM_SHAPE(4, 9), 200, 300, false);
  em_tensor *yb = em_from_data(EM_I32, EM_SHAPE(4), (int32_t[]){0, 8, 3, 5});
  double lb[4];
  ref_ce(big, yb, -100, lb);
  tu_assert_close(em_cross_entropy_ex(big, yb, EM_REDUCE_NONE, -100), lb, 4, 1e-4, 1e-3, "big");
  /* wide rows: several 1024-term chunks of the lane sums, plus a tail */
  em_tensor *wide = tu_rand(&r, EM_SHAPE(3, 2500), -6, 6, true);
  em_tensor *yw = em_from_data(EM_I64, EM_SHAPE(3), (int64_t[]){2499, 0, 1234});
  double lw[3];
  ref_ce(wide, yw, -100, lw);
  tu_assert_close(em_cross_entropy_ex(wide, yw, EM_REDUCE_NONE, -100), lw, 3, 1e-5, 1e-5, "wide");
  cr_assert_eq(em_backward(em_cross_entropy_ex(wide, yw, EM_REDUCE_SUM, -100)), EM_OK);
  for (int i = 0; i < 3; i++) {
    double lse = lw[i] + em_get(wide, i * 2500 + (int64_t)em_get(yw, i)), gsum = 0;
    for (int j = 0; j < 2500; j++) {
      double p = exp(em_get(wide, i * 2500 + j) - lse) - (j == em_get(yw, i));
      cr_assert(fabs(em_get(wide->grad, i * 2500 + j) - p) < 1e-6, "wide grad [%d, %d]", i, j);
      gsum += em_get(wide->grad, i * 2500 + j);
    }
    cr_assert(fabs(gsum) < 1e-5, "row %d of the gradient sums to %g", i, gsum);
  }
  /* gradients: small case for speed */
  em_tensor *xs = tu_rand(&r, EM_SHAPE(5, 6), -2, 2, true);
  em_tensor *ys = em_from_data(EM_I64, EM_SHAPE(5), (int64_t[]){1, 5, -1, 0, 3});
  for (int nll = 0; nll < 2; nll++)
    for (int red = 0; red < 3; red++) {
      ce_case c = {ys, (em_reduction)red, -1, nll};
      tu_gradcheck(ce_fn, 1, &xs, &c, 1e-2, 1e-2, nll ? "nll grad" : "ce grad");
    }
  em_scope_end(s);
}

Test(cross_entropy, errors) {
  em_scope s = em_scope_begin();
  em_tensor *x = em_zeros(EM_F32, EM_SHAPE(3, 4));
  em_tensor *y = em_from_data(EM_I64, EM_SHAPE(3), (int64_t[]){0, 4, 1});
  tu_assert_error(em_cross_entropy(x, y), "label 4 at row 1", "4 classes");
  y = em_from_data(EM_I32, EM_SHAPE(3), (int32_t[]){0, 1, -2});
  tu_assert_error(em_cross_entropy(x, y), "label -2 at row 2", "[3, 4]");
  tu_assert_error(em_nll_loss(x, y, EM_REDUCE_MEAN, -100), "nll_loss", "label -2 at row 2");
  em_tensor *y2 = em_zeros(EM_I64, EM_SHAPE(2));
  tu_assert_error(em_cross_entropy(x, y2), "[3, 4]", "[2]");
  em_tensor *x3 = em_zeros(EM_F32, EM_SHAPE(3, 4, 2));
  tu_assert_error(em_cross_entropy(x3, em_zeros(EM_I64, EM_SHAPE(3))), "[3, 4, 2]", "[3]");
  tu_assert_error(em_cross_entropy(x, em_zeros(EM_F32, EM_SHAPE(3))), "labels", "f32");
  tu_assert_error(em_cross_entropy_ex(x, em_zeros(EM_I64, EM_SHAPE(3)), 7, -100), "reduction",
                  NULL);
  tu_assert_error(em_cross_entropy(NULL, y), "cross_entropy", NULL);
  em_scope_end(s);
}

/* ---- mse ---------------------------------------------------------------------------------- */
typedef struct {
  em_reduction red;
} mse_case;

static em_tensor *mse_fn(em_tensor **in, void *ctx) {
  return em_mse_loss(in[0], in[1], ((mse_case *)ctx)->red);
}

Test(mse_loss, forward_grad_errors) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(24);
  em_tensor *in[2] = {tu_rand(&r, EM_SHAPE(3, 7), -2, 2, true),
                      tu_rand(&r, EM_SHAPE(3, 7), -2, 2, true)};
  double none[21], sum = 0;
  for (int i = 0; i < 21; i++) {
    double d = em_get(in[0], i) - em_get(in[1], i);
    none[i] = d * d;
    sum += d * d;
  }
  double mean = sum / 21;
  mse_case c[3] = {{EM_REDUCE_MEAN}, {EM_REDUCE_SUM}, {EM_REDUCE_NONE}};
  tu_assert_close(mse_fn(in, &c[0]), &mean, 1, 1e-6, 0, "mse mean");
  tu_assert_close(mse_fn(in, &c[1]), &sum, 1, 1e-6, 0, "mse sum");
  tu_assert_close(mse_fn(in, &c[2]), none, 21, 1e-6, 1e-7, "mse none");
  for (int k = 0; k < 3; k++) tu_gradcheck(mse_fn, 2, in, &c[k], 1e-2, 1e-2, "mse grad");
  /* non-contiguous input against a contiguous target */
  em_tensor *t = em_transpose(in[0], 0, 1);
  em_tensor *b = tu_rand(&r, EM_SHAPE(7, 3), -2, 2, false);
  double ref = 0;
  for (int i = 0; i < 7; i++)
    for (int j = 0; j < 3; j++) {
      double d = em_get(in[0], j * 7 + i) - em_get(b, i * 3 + j);
      ref += d * d;
    }
  tu_assert_close(em_mse_loss(t, b, EM_REDUCE_SUM), &ref, 1, 1e-6, 0, "mse transposed");
  tu_assert_error(em_mse_loss(in[0], b, EM_REDUCE_MEAN), "[3, 7]", "[7, 3]");
  tu_assert_error(em_mse_loss(in[0], NULL, EM_REDUCE_MEAN), "mse_loss", NULL);
  em_scope_end(s);
}

/* Outside any scope the caller owns only the result: contiguous copies, label copies and the
 * per-row buffers of the losses must not outlive the op (nor the graph once it is released). */
Test(cross_entropy, no_temporaries_leak_outside_scopes) {
  int64_t before = em_live_tensors();
  em_rng r = em_rng_new(25);
  em_tensor *x = em_rand_uniform(EM_SHAPE(5, 3), -1, 1, &r);
  em_set_requires_grad(x, true);
  em_tensor *t = em_transpose(x, 0, 1); /* (3, 5), not contiguous */
  em_tensor *y = em_from_data(EM_I32, EM_SHAPE(3), (int32_t[]){4, 0, 2});
  em_tensor *b = em_zeros(EM_F32, EM_SHAPE(3, 5));
  em_tensor *outs[5] = {em_cross_entropy(t, y), em_nll_loss(t, y, EM_REDUCE_SUM, -100),
                        em_mse_loss(t, b, EM_REDUCE_MEAN), em_softmax(t, 0), em_log_softmax(t, 1)};
  for (int k = 0; k < 5; k++) {
    cr_assert_not_null(outs[k], "%s", em_last_error());
    em_release(outs[k]);
  }
  em_tensor *l = em_cross_entropy(t, y);
  cr_assert_eq(em_backward(l), EM_OK, "%s", em_last_error());
  em_release(l);
  em_release(b);
  em_release(y);
  em_release(t);
  em_release(x);
  cr_assert_eq(em_live_tensors(), before, "%lld tensors leaked",
               (long long)(em_live_tensors() - before));
}
