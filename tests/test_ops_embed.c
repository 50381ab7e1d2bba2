/* test_ops_embed.c: em_embedding and em_dropout.
 *
 * Embedding: every output row is compared with the weight row its index names; the weight
 * gradient with repeated indices is compared with a float64 scatter-add written here and checked
 * by tu_gradcheck. Dropout: the fraction of zeros over 200k elements is within 5 sigma of p, kept
 * values equal x * (1/(1-p)) bit for bit, a seed reproduces the mask, the rng advances by one draw
 * per element, and the gradient is exactly mask * scale. Every test checks for leaked tensors. */
#include "testutil.h"

#include <math.h>
#include <string.h>

/* ---- embedding --------------------------------------------------------------------------- */
Test(embedding, values_i64_and_i32) {
  TU_BEGIN;
  em_rng r = em_rng_new(1);
  em_tensor *w = tu_rand(&r, EM_SHAPE(5, 3), -1, 1, false);
  const int64_t ix[6] = {4, 0, 4, 2, 2, 1};
  em_tensor *idx = em_from_data(EM_I64, EM_SHAPE(2, 3), ix);
  em_tensor *out = em_embedding(w, idx);
  cr_assert_not_null(out, "%s", em_last_error());
  cr_assert(out->ndim == 3 && out->shape[0] == 2 && out->shape[1] == 3 && out->shape[2] == 3);
  double ref[18];
  for (int p = 0; p < 6; p++)
    for (int j = 0; j < 3; j++) ref[p * 3 + j] = em_get(w, ix[p] * 3 + j);
  tu_assert_close(out, ref, 18, 0, 0, "embedding i64 (2, 3)");
  /* i32 index, given as a non-contiguous view: the transpose of a (3, 2) tensor. */
  const int32_t ix32[6] = {4, 2, 0, 2, 4, 1}; /* transposed: {4, 0, 4}, {2, 2, 1} */
  em_tensor *i32 = em_transpose(em_from_data(EM_I32, EM_SHAPE(3, 2), ix32), 0, 1);
  em_tensor *out32 = em_embedding(w, i32);
  tu_assert_close(out32, ref, 18, 0, 0, "embedding i32 transposed index");
  /* A 0-d index gives one row of shape (D). */
  em_tensor *one = em_embedding(w, em_from_data(EM_I64, 0, NULL, (const int64_t[]){3}));
  cr_assert(one && one->ndim == 1 && one->shape[0] == 3);
  for (int j = 0; j < 3; j++) cr_assert_eq(em_get(one, j), em_get(w, 9 + j));
  /* An empty index gives (0, D). */
  em_tensor *none = em_embedding(w, em_zeros(EM_I64, EM_SHAPE(0)));
  cr_assert(none && none->ndim == 2 && none->shape[0] == 0 && none->shape[1] == 3);
  /* A non-contiguous weight works too. */
  em_tensor *wt = em_transpose(tu_rand(&r, EM_SHAPE(3, 5), -1, 1, false), 0, 1);
  em_tensor *o2 = em_embedding(wt, idx);
  for (int p = 0; p < 6; p++)
    for (int j = 0; j < 3; j++) cr_assert_eq(em_get(o2, p * 3 + j), em_get(wt, ix[p] * 3 + j));
  TU_END;
}

Test(embedding, gradient_repeated_indices) {
  TU_BEGIN;
  em_rng r = em_rng_new(2);
  em_tensor *w = tu_rand(&r, EM_SHAPE(6, 4), -1, 1, true);
  const int64_t ix[7] = {5, 1, 5, 5, 0, 1, 3};
  em_tensor *idx = em_from_data(EM_I64, EM_SHAPE(7), ix);
  em_tensor *g = tu_rand(&r, EM_SHAPE(7, 4), -1, 1, false);
  em_tensor *loss = em_sum(em_mul(em_embedding(w, idx), g), 0, NULL, false);
  cr_assert_eq(em_backward(loss), EM_OK, "%s", em_last_error());
  double ref[24] = {0};
  for (int p = 0; p < 7; p++)
    for (int j = 0; j < 4; j++) ref[ix[p] * 4 + j] += em_get(g, p * 4 + j);
  tu_assert_close(w->grad, ref, 24, 1e-6, 1e-6, "embedding weight gradient");
  for (int j = 0; j < 4; j++) { /* rows 2 and 4 were never looked up */
    cr_assert_eq(em_get(w->grad, 2 * 4 + j), 0.0);
    cr_assert_eq(em_get(w->grad, 4 * 4 + j), 0.0);
  }
  TU_END;
}

static em_tensor *f_embed(em_tensor **in, void *ctx) {
  em_tensor *e = em_embedding(in[0], ctx);
  return em_mul(e, e);
}

Test(embedding, gradcheck) {
  TU_BEGIN;
  em_rng r = em_rng_new(3);
  em_tensor *w = tu_rand(&r, EM_SHAPE(4, 3), -1, 1, true);
  em_tensor *idx = em_from_data(EM_I32, EM_SHAPE(2, 3), (const int32_t[]){3, 3, 0, 1, 3, 0});
  tu_gradcheck(f_embed, 1, &w, idx, 1e-2, 2e-3, "embedding");
  TU_END;
}

Test(embedding, errors) {
  TU_BEGIN;
  em_tensor *w = em_zeros(EM_F32, EM_SHAPE(5, 2));
  em_tensor *bad = em_from_data(EM_I64, EM_SHAPE(2, 2), (const int64_t[]){0, 1, 5, 2});
  tu_assert_error(em_embedding(w, bad), "index 5 at position 2", "weight [5, 2]");
  em_tensor *neg = em_from_data(EM_I32, EM_SHAPE(1), (const int32_t[]){-3});
  tu_assert_error(em_embedding(w, neg), "index -3 at position 0", "[0, 5)");
  tu_assert_error(em_embedding(w, em_zeros(EM_F32, EM_SHAPE(2))), "f32 [2]", "weight [5, 2]");
  tu_assert_error(em_embedding(em_zeros(EM_F32, EM_SHAPE(5)), em_zeros(EM_I64, EM_SHAPE(2))),
                  "weight [5]", "index i64 [2]");
  tu_assert_error(em_embedding(em_zeros(EM_I64, EM_SHAPE(5, 2)), em_zeros(EM_I64, EM_SHAPE(2))),
                  "weight must be f32", "i64 [5, 2]");
  tu_assert_error(em_embedding(w, NULL), "embedding", "NULL");
  TU_END;
}

/* ---- dropout ----------------------------------------------------------------------------- */
#define N_BIG 200000

Test(dropout, zero_fraction_and_exact_scaling) {
  TU_BEGIN;
  em_rng r = em_rng_new(4);
  em_tensor *x = tu_rand(&r, EM_SHAPE(400, N_BIG / 400), 1, 2, false);
  const float ps[] = {0.1f, 0.3f, 0.5f, 0.9f};
  for (int k = 0; k < 4; k++) {
    float p = ps[k], scale = 1.0f / (1.0f - p);
    em_rng dr = em_rng_new(100 + (uint64_t)k);
    em_tensor *y = em_dropout(x, p, true, &dr);
    cr_assert_not_null(y, "%s", em_last_error());
    cr_assert(!em_shares_storage(x, y));
    const float *px = em_data_f32(x), *py = em_data_f32(y);
    int64_t zeros = 0;
    for (int64_t i = 0; i < N_BIG; i++) {
      if (py[i] == 0.0f) {
        zeros++;
      } else {
        float want = px[i] * scale;
        cr_assert(py[i] == want, "p %g: element %lld is %.9g, x * scale is %.9g", p, (long long)i,
                  py[i], want);
      }
    }
    double frac = (double)zeros / N_BIG, sigma = sqrt(p * (1 - p) / N_BIG);
    cr_assert(fabs(frac - p) < 5 * sigma, "p %g: fraction of zeros %.5f", p, frac);
    cr_assert_eq(dr.counter, (uint64_t)N_BIG, "one draw per element");
  }
  TU_END;
}

Test(dropout, seed_reproduces_mask) {
  TU_BEGIN;
  em_rng r = em_rng_new(5);
  em_tensor *x = tu_rand(&r, EM_SHAPE(64, 33), 1, 2, false);
  em_rng a = em_rng_new(77), b = em_rng_new(77);
  em_tensor *y1 = em_dropout(x, 0.4f, true, &a);
  em_tensor *y2 = em_dropout(x, 0.4f, true, &b);
  cr_assert(memcmp(em_data(y1), em_data(y2), sizeof(float) * 64 * 33) == 0, "same seed, same mask");
  /* The mask is u >= p for the i-th draw of the generator. */
  em_rng c = em_rng_new(77);
  for (int64_t i = 0; i < 64 * 33; i++)
    cr_assert_eq(em_get(y1, i) != 0.0, em_rng_uniform(&c) >= 0.4f, "element %lld", (long long)i);
  /* The generator advanced: the next call draws a different mask. */
  em_tensor *y3 = em_dropout(x, 0.4f, true, &a);
  cr_assert(memcmp(em_data(y1), em_data(y3), sizeof(float) * 64 * 33) != 0);
  /* A non-contiguous input is masked in its logical (row-major) order. */
  em_tensor *xt = em_transpose(x, 0, 1);
  em_rng d = em_rng_new(77), e = em_rng_new(77);
  em_tensor *yt = em_dropout(xt, 0.4f, true, &d);
  em_tensor *yc = em_dropout(em_contiguous(xt), 0.4f, true, &e);
  for (int64_t i = 0; i < 64 * 33; i++) cr_assert_eq(em_get(yt, i), em_get(yc, i));
  TU_END;
}

Test(dropout, gradient_is_mask_times_scale) {
  TU_BEGIN;
  em_rng r = em_rng_new(6);
  em_tensor *x = tu_rand(&r, EM_SHAPE(50, 40), 1, 2, true);
  em_tensor *g = tu_rand(&r, EM_SHAPE(50, 40), -1, 1, false);
  em_rng dr = em_rng_new(9);
  float p = 0.25f, scale = 1.0f / (1.0f - p);
  em_tensor *y = em_dropout(x, p, true, &dr);
  cr_assert_eq(em_backward(em_sum(em_mul(y, g), 0, NULL, false)), EM_OK, "%s", em_last_error());
  for (int64_t i = 0; i < 2000; i++) {
    float want = em_get(y, i) != 0.0 ? (float)em_get(g, i) * scale : 0.0f;
    cr_assert_eq((float)em_get(x->grad, i), want, "grad[%lld]", (long long)i);
  }
  TU_END;
}

static em_tensor *f_dropout(em_tensor **in, void *ctx) {
  em_rng r = em_rng_new(31); /* the same mask on every call */
  return em_mul(em_dropout(in[0], 0.5f, true, &r), in[0]);
}

Test(dropout, gradcheck) {
  TU_BEGIN;
  em_rng r = em_rng_new(7);
  em_tensor *x = tu_rand(&r, EM_SHAPE(6, 5), -1, 1, true);
  tu_gradcheck(f_dropout, 1, &x, NULL, 1e-2, 2e-3, "dropout");
  TU_END;
}

Test(dropout, identity_cases_and_p_one) {
  TU_BEGIN;
  em_rng r = em_rng_new(8);
  em_tensor *x = tu_rand(&r, EM_SHAPE(10, 10), 1, 2, true);
  em_rng dr = em_rng_new(1);
  cr_assert_eq(em_dropout(x, 0.5f, false, &dr), x, "eval mode returns the input itself");
  cr_assert_eq(em_dropout(x, 0.0f, true, &dr), x, "p == 0 returns the input itself");
  cr_assert_eq(em_dropout(x, 0.7f, false, NULL), x, "eval mode needs no rng");
  cr_assert_eq(dr.counter, 0, "identity draws nothing");
  em_tensor *z = em_dropout(x, 1.0f, true, &dr);
  cr_assert_not_null(z, "%s", em_last_error());
  for (int64_t i = 0; i < 100; i++) cr_assert_eq(em_get(z, i), 0.0);
  cr_assert_eq(em_backward(em_sum(z, 0, NULL, false)), EM_OK, "%s", em_last_error());
  for (int64_t i = 0; i < 100; i++) cr_assert_eq(em_get(x->grad, i), 0.0);
  TU_END;
}

Test(dropout, errors) {
  TU_BEGIN;
  em_tensor *x = em_zeros(EM_F32, EM_SHAPE(3, 4));
  em_rng r = em_rng_new(1);
  tu_assert_error(em_dropout(x, 1.5f, true, &r), "probability 1.5", "[3, 4]");
  tu_assert_error(em_dropout(x, -0.1f, false, &r), "probability -0.1", "[3, 4]");
  tu_assert_error(em_dropout(x, NAN, true, &r), "probability nan", "[3, 4]");
  tu_assert_error(em_dropout(x, 0.5f, true, NULL), "rng is NULL", "[3, 4]");
  tu_assert_error(em_dropout(em_zeros(EM_I64, EM_SHAPE(2)), 0.5f, true, &r), "dropout", "i64");
  tu_assert_error(em_dropout(NULL, 0.5f, true, &r), "dropout", "NULL");
  cr_assert_eq(r.counter, 0, "failed calls draw nothing");
  TU_END;
}
