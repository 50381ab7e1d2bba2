/* test_ops_matmul.c: em_matmul, em_matmul_t (transposes, batches, broadcasting) and em_linear.
 *
 * Forward results are compared with float64 loops written here; gradients with tu_gradcheck
 * (matmul is linear in each input, so central differences are exact up to f32 rounding). */
#include "testutil.h"

#include <math.h>
#include <string.h>

/* Element [i][j] of a (rows, cols) matrix stored row-major, or of its transpose. */
static double at(const em_tensor *t, int64_t base, int64_t i, int64_t j, int64_t cols, bool tr) {
  return tr ? em_get(t, base + j * cols + i) : em_get(t, base + i * cols + j);
}

/* Reference c (batch, M, N) for a (ba, ...) and b (bb, ...) stored contiguous; batch index of an
 * operand with batch 1 is 0 (broadcast). */
static double *ref_matmul(const em_tensor *a, const em_tensor *b, bool ta, bool tb, int64_t batch,
                          int64_t M, int64_t K, int64_t N, int64_t ba, int64_t bb) {
  double *c = calloc((size_t)(batch * M * N) + 1, sizeof *c);
  for (int64_t p = 0; p < batch; p++)
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) {
        double acc = 0;
        int64_t oa = (ba == 1 ? 0 : p) * M * K, ob = (bb == 1 ? 0 : p) * K * N;
        for (int64_t k = 0; k < K; k++)
          acc += at(a, oa, i, k, ta ? M : K, ta) * at(b, ob, k, j, tb ? K : N, tb);
        c[(p * M + i) * N + j] = acc;
      }
  return c;
}

Test(matmul, plain_2d) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(1);
  em_tensor *a = tu_rand(&r, EM_SHAPE(5, 7), -1, 1, false);
  em_tensor *b = tu_rand(&r, EM_SHAPE(7, 3), -1, 1, false);
  em_tensor *c = em_matmul(a, b);
  cr_assert_not_null(c, "%s", em_last_error());
  cr_assert_eq(c->ndim, 2);
  cr_assert_eq(c->shape[0], 5);
  cr_assert_eq(c->shape[1], 3);
  double *ref = ref_matmul(a, b, false, false, 1, 5, 7, 3, 1, 1);
  tu_assert_close(c, ref, 15, 1e-5, 1e-5, "matmul 5x7 @ 7x3");
  free(ref);
  em_scope_end(s);
}

Test(matmul, transposes) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(2);
  int64_t M = 4, K = 6, N = 5;
  for (int f = 0; f < 4; f++) {
    bool ta = f & 1, tb = f & 2;
    em_tensor *a =
        ta ? tu_rand(&r, EM_SHAPE(K, M), -1, 1, false) : tu_rand(&r, EM_SHAPE(M, K), -1, 1, false);
    em_tensor *b =
        tb ? tu_rand(&r, EM_SHAPE(N, K), -1, 1, false) : tu_rand(&r, EM_SHAPE(K, N), -1, 1, false);
    em_tensor *c = em_matmul_t(a, b, ta, tb);
    cr_assert_not_null(c, "%s", em_last_error());
    cr_assert(c->shape[0] == M && c->shape[1] == N);
    double *ref = ref_matmul(a, b, ta, tb, 1, M, K, N, 1, 1);
    tu_assert_close(c, ref, M * N, 1e-5, 1e-5, ta ? (tb ? "a^T b^T" : "a^T b") : "a b^T / a b");
    free(ref);
  }
  em_scope_end(s);
}

Test(matmul, vector_shapes) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(16);
  /* M = 1 and N = 1 with every transpose: single rows and columns */
  int64_t dims[3][3] = {{1, 5, 4}, {3, 5, 1}, {1, 5, 1}};
  for (int d = 0; d < 3; d++)
    for (int f = 0; f < 4; f++) {
      int64_t M = dims[d][0], K = dims[d][1], N = dims[d][2];
      bool ta = f & 1, tb = f & 2;
      em_tensor *a = ta ? tu_rand(&r, EM_SHAPE(K, M), -1, 1, false)
                        : tu_rand(&r, EM_SHAPE(M, K), -1, 1, false);
      em_tensor *b = tb ? tu_rand(&r, EM_SHAPE(N, K), -1, 1, false)
                        : tu_rand(&r, EM_SHAPE(K, N), -1, 1, false);
      double *ref = ref_matmul(a, b, ta, tb, 1, M, K, N, 1, 1);
      tu_assert_close(em_matmul_t(a, b, ta, tb), ref, M * N, 1e-5, 1e-5, "vector shapes");
      free(ref);
    }
  em_scope_end(s);
}

Test(matmul, transposed_and_strided_views) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(3);
  em_tensor *a = tu_rand(&r, EM_SHAPE(6, 4), -1, 1, false);  /* used as a^T (4, 6) */
  em_tensor *b = tu_rand(&r, EM_SHAPE(6, 10), -1, 1, false); /* every other column: (6, 5) */
  em_tensor *at_view = em_transpose(a, 0, 1);
  em_tensor *b_cols = em_slice(b, 1, 0, 10, 2);
  cr_assert_not_null(b_cols, "%s", em_last_error());
  em_tensor *c = em_matmul(at_view, b_cols);
  cr_assert_not_null(c, "%s", em_last_error());
  double ref[4 * 5];
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 5; j++) {
      double acc = 0;
      for (int k = 0; k < 6; k++) acc += em_get(a, k * 4 + i) * em_get(b, k * 10 + 2 * j);
      ref[i * 5 + j] = acc;
    }
  tu_assert_close(c, ref, 20, 1e-5, 1e-5, "transposed view @ strided view");
  /* columns 3..7 of b: row stride 10 > 5 columns (a leading dimension, read in place) */
  em_tensor *b_mid = em_slice(b, 1, 3, 8, 1);
  c = em_matmul(at_view, b_mid);
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 5; j++) {
      double acc = 0;
      for (int k = 0; k < 6; k++) acc += em_get(a, k * 4 + i) * em_get(b, k * 10 + 3 + j);
      ref[i * 5 + j] = acc;
    }
  tu_assert_close(c, ref, 20, 1e-5, 1e-5, "transposed view @ column block");
  em_scope_end(s);
}

Test(matmul, batched_and_broadcast) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(4);
  int64_t B = 3, M = 4, K = 5, N = 2;
  /* (B, M, K) @ (B, K, N) */
  em_tensor *a = tu_rand(&r, EM_SHAPE(B, M, K), -1, 1, false);
  em_tensor *b = tu_rand(&r, EM_SHAPE(B, K, N), -1, 1, false);
  double *ref = ref_matmul(a, b, false, false, B, M, K, N, B, B);
  tu_assert_close(em_matmul(a, b), ref, B * M * N, 1e-5, 1e-5, "batched");
  free(ref);
  /* (B, M, K) @ (K, N): 2-D b against a batched a */
  em_tensor *b2 = tu_rand(&r, EM_SHAPE(K, N), -1, 1, false);
  ref = ref_matmul(a, b2, false, false, B, M, K, N, B, 1);
  em_tensor *c = em_matmul(a, b2);
  cr_assert(c && c->ndim == 3 && c->shape[0] == B && c->shape[1] == M && c->shape[2] == N);
  tu_assert_close(c, ref, B * M * N, 1e-5, 1e-5, "batched a, 2-D b");
  free(ref);
  /* (B, M, K) @ (N, K)^T */
  em_tensor *b2t = tu_rand(&r, EM_SHAPE(N, K), -1, 1, false);
  ref = ref_matmul(a, b2t, false, true, B, M, K, N, B, 1);
  tu_assert_close(em_matmul_t(a, b2t, false, true), ref, B * M * N, 1e-5, 1e-5,
                  "batched a, 2-D b^T");
  free(ref);
  /* (B, K, M)^T @ (K, N): a transposed batch cannot be flattened */
  em_tensor *at3 = tu_rand(&r, EM_SHAPE(B, K, M), -1, 1, false);
  ref = ref_matmul(at3, b2, true, false, B, M, K, N, B, 1);
  tu_assert_close(em_matmul_t(at3, b2, true, false), ref, B * M * N, 1e-5, 1e-5,
                  "batched a^T, 2-D b");
  free(ref);
  /* (M, K) @ (B, K, N): 2-D a against a batched b */
  em_tensor *a2 = tu_rand(&r, EM_SHAPE(M, K), -1, 1, false);
  ref = ref_matmul(a2, b, false, false, B, M, K, N, 1, B);
  tu_assert_close(em_matmul(a2, b), ref, B * M * N, 1e-5, 1e-5, "2-D a, batched b");
  free(ref);
  /* (1, M, K) @ (B, K, N): batch dim of size 1 broadcasts */
  em_tensor *a1 = tu_rand(&r, EM_SHAPE(1, M, K), -1, 1, false);
  ref = ref_matmul(a1, b, false, false, B, M, K, N, 1, B);
  tu_assert_close(em_matmul(a1, b), ref, B * M * N, 1e-5, 1e-5, "batch 1 vs B");
  free(ref);
  em_scope_end(s);
}

Test(matmul, four_dims) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(5);
  /* (2, 3, 4, 5) @ (2, 3, 4, 5)^T -> (2, 3, 4, 4), as attention scores */
  em_tensor *q = tu_rand(&r, EM_SHAPE(2, 3, 4, 5), -1, 1, false);
  em_tensor *k = tu_rand(&r, EM_SHAPE(2, 3, 4, 5), -1, 1, false);
  em_tensor *c = em_matmul_t(q, k, false, true);
  cr_assert(c && c->ndim == 4 && c->shape[2] == 4 && c->shape[3] == 4, "%s", em_last_error());
  double *ref = ref_matmul(q, k, false, true, 6, 4, 5, 4, 6, 6);
  tu_assert_close(c, ref, 6 * 16, 1e-5, 1e-5, "4-D q @ k^T");
  free(ref);
  /* (B, T, H, D) viewed as (B, H, T, D): permuted batch strides, read in place */
  em_tensor *qt = em_transpose(tu_rand(&r, EM_SHAPE(2, 4, 3, 5), -1, 1, false), 1, 2);
  em_tensor *kt = em_transpose(tu_rand(&r, EM_SHAPE(2, 4, 3, 5), -1, 1, false), 1, 2);
  em_tensor *qc = em_contiguous(qt), *kc = em_contiguous(kt);
  ref = ref_matmul(qc, kc, false, true, 6, 4, 5, 4, 6, 6);
  tu_assert_close(em_matmul_t(qt, kt, false, true), ref, 6 * 16, 1e-5, 1e-5,
                  "permuted views q @ k^T");
  free(ref);
  em_scope_end(s);
}

Test(matmul, empty_dims) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(6);
  em_tensor *a = tu_rand(&r, EM_SHAPE(3, 0), -1, 1, false);
  em_tensor *b = tu_rand(&r, EM_SHAPE(0, 4), -1, 1, false);
  em_tensor *c = em_matmul(a, b); /* K = 0: zeros */
  double zeros[12] = {0};
  tu_assert_close(c, zeros, 12, 0, 0, "K = 0");
  em_tensor *e = em_matmul(tu_rand(&r, EM_SHAPE(0, 5), -1, 1, false),
                           tu_rand(&r, EM_SHAPE(5, 4), -1, 1, false));
  cr_assert(e && e->shape[0] == 0 && e->shape[1] == 4 && em_numel(e) == 0, "%s", em_last_error());
  em_scope_end(s);
}

Test(matmul, bad_shapes) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(7);
  em_tensor *a = tu_rand(&r, EM_SHAPE(3, 4), -1, 1, false);
  em_tensor *b = tu_rand(&r, EM_SHAPE(5, 2), -1, 1, false);
  tu_assert_error(em_matmul(a, b), "[3, 4]", "[5, 2]");
  tu_assert_error(em_matmul_t(a, b, true, false), "[3, 4]", "[5, 2]");
  em_tensor *a3 = tu_rand(&r, EM_SHAPE(2, 3, 4), -1, 1, false);
  em_tensor *b3 = tu_rand(&r, EM_SHAPE(3, 4, 2), -1, 1, false);
  tu_assert_error(em_matmul(a3, b3), "[2, 3, 4]", "[3, 4, 2]");
  em_tensor *v = tu_rand(&r, EM_SHAPE(4), -1, 1, false);
  tu_assert_error(em_matmul(a, v), "[3, 4]", "[4]");
  tu_assert_error(em_matmul(NULL, b), "matmul", "NULL");
  em_scope_end(s);
}

/* ---- gradients --------------------------------------------------------------------------- */
typedef struct {
  bool ta, tb;
} mm_flags;

static em_tensor *f_matmul(em_tensor **in, void *ctx) {
  mm_flags *f = ctx;
  return em_matmul_t(in[0], in[1], f->ta, f->tb);
}

Test(matmul, grad_transposes) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(8);
  int64_t M = 3, K = 4, N = 2;
  for (int f = 0; f < 4; f++) {
    mm_flags fl = {f & 1, f & 2};
    em_tensor *a =
        fl.ta ? tu_rand(&r, EM_SHAPE(K, M), -1, 1, true) : tu_rand(&r, EM_SHAPE(M, K), -1, 1, true);
    em_tensor *b =
        fl.tb ? tu_rand(&r, EM_SHAPE(N, K), -1, 1, true) : tu_rand(&r, EM_SHAPE(K, N), -1, 1, true);
    em_tensor *in[2] = {a, b};
    tu_gradcheck(f_matmul, 2, in, &fl, 1e-2, 1e-2, "matmul_t grad");
  }
  em_scope_end(s);
}

Test(matmul, grad_batched_and_broadcast) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(9);
  mm_flags none = {false, false}, tb = {false, true}, ta = {true, false}, both = {true, true};
  em_tensor *x[2] = {tu_rand(&r, EM_SHAPE(2, 3, 4), -1, 1, true),
                     tu_rand(&r, EM_SHAPE(2, 4, 2), -1, 1, true)};
  tu_gradcheck(f_matmul, 2, x, &none, 1e-2, 1e-2, "batched");
  em_tensor *y[2] = {tu_rand(&r, EM_SHAPE(2, 3, 4), -1, 1, true),
                     tu_rand(&r, EM_SHAPE(4, 2), -1, 1, true)};
  tu_gradcheck(f_matmul, 2, y, &none, 1e-2, 1e-2, "batched a, 2-D b");
  em_tensor *y2[2] = {tu_rand(&r, EM_SHAPE(2, 3, 4), -1, 1, true),
                      tu_rand(&r, EM_SHAPE(2, 4), -1, 1, true)};
  tu_gradcheck(f_matmul, 2, y2, &tb, 1e-2, 1e-2, "batched a, 2-D b^T");
  em_tensor *y3[2] = {tu_rand(&r, EM_SHAPE(2, 4, 3), -1, 1, true),
                      tu_rand(&r, EM_SHAPE(2, 4), -1, 1, true)};
  tu_gradcheck(f_matmul, 2, y3, &both, 1e-2, 1e-2, "batched a^T, 2-D b^T");
  em_tensor *z[2] = {tu_rand(&r, EM_SHAPE(4, 3), -1, 1, true),
                     tu_rand(&r, EM_SHAPE(2, 4, 2), -1, 1, true)};
  tu_gradcheck(f_matmul, 2, z, &ta, 1e-2, 1e-2, "2-D a^T, batched b");
  em_tensor *w[2] = {tu_rand(&r, EM_SHAPE(1, 3, 4), -1, 1, true),
                     tu_rand(&r, EM_SHAPE(2, 2, 4), -1, 1, true)};
  tu_gradcheck(f_matmul, 2, w, &tb, 1e-2, 1e-2, "batch 1 vs 2, b^T");
  em_scope_end(s);
}

/* ---- linear ------------------------------------------------------------------------------ */
/* y (R, O) = x (R, I) @ w (O, I)^T + b */
static double *ref_linear(const em_tensor *x, const em_tensor *w, const em_tensor *b, int64_t R,
                          int64_t I, int64_t O) {
  double *y = calloc((size_t)(R * O) + 1, sizeof *y);
  for (int64_t i = 0; i < R; i++)
    for (int64_t o = 0; o < O; o++) {
      double acc = b ? em_get(b, o) : 0;
      for (int64_t k = 0; k < I; k++) acc += em_get(x, i * I + k) * em_get(w, o * I + k);
      y[i * O + o] = acc;
    }
  return y;
}

Test(linear, forward) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(10);
  em_tensor *x = tu_rand(&r, EM_SHAPE(2, 3, 5), -1, 1, false);
  em_tensor *w = tu_rand(&r, EM_SHAPE(4, 5), -1, 1, false);
  em_tensor *b = tu_rand(&r, EM_SHAPE(4), -1, 1, false);
  em_tensor *y = em_linear(x, w, b);
  cr_assert(y && y->ndim == 3 && y->shape[0] == 2 && y->shape[1] == 3 && y->shape[2] == 4, "%s",
            em_last_error());
  double *ref = ref_linear(x, w, b, 6, 5, 4);
  tu_assert_close(y, ref, 24, 1e-5, 1e-5, "linear (2, 3, 5) with bias");
  free(ref);
  ref = ref_linear(x, w, NULL, 6, 5, 4);
  tu_assert_close(em_linear(x, w, NULL), ref, 24, 1e-5, 1e-5, "linear without bias");
  free(ref);
  em_tensor *v = tu_rand(&r, EM_SHAPE(5), -1, 1, false);
  em_tensor *yv = em_linear(v, w, b);
  cr_assert(yv && yv->ndim == 1 && yv->shape[0] == 4);
  ref = ref_linear(v, w, b, 1, 5, 4);
  tu_assert_close(yv, ref, 4, 1e-5, 1e-5, "linear of a vector");
  free(ref);
  em_scope_end(s);
}

Test(linear, mlp_shape) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(11);
  int64_t R = 64, I = 784, O = 1024;
  em_tensor *x = tu_rand(&r, EM_SHAPE(R, I), -1, 1, false);
  em_tensor *w = tu_rand(&r, EM_SHAPE(O, I), -0.05f, 0.05f, false);
  em_tensor *b = tu_rand(&r, EM_SHAPE(O), -1, 1, false);
  double *ref = ref_linear(x, w, b, R, I, O);
  tu_assert_close(em_linear(x, w, b), ref, R * O, 1e-4, 1e-4, "linear 64x784 -> 1024");
  free(ref);
  em_scope_end(s);
}

Test(linear, transposed_input_and_empty) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(12);
  em_tensor *xt = tu_rand(&r, EM_SHAPE(5, 3), -1, 1, false);
  em_tensor *x = em_transpose(xt, 0, 1); /* (3, 5), column-major */
  em_tensor *w = tu_rand(&r, EM_SHAPE(4, 5), -1, 1, false);
  em_tensor *xc = em_contiguous(x);
  double *ref = ref_linear(xc, w, NULL, 3, 5, 4);
  tu_assert_close(em_linear(x, w, NULL), ref, 12, 1e-5, 1e-5, "linear of a transposed x");
  free(ref);
  /* in = 0: the output is the bias */
  em_tensor *b = tu_rand(&r, EM_SHAPE(4), -1, 1, false);
  em_tensor *y = em_linear(tu_rand(&r, EM_SHAPE(3, 0), -1, 1, false),
                           tu_rand(&r, EM_SHAPE(4, 0), -1, 1, false), b);
  double bb[12];
  for (int i = 0; i < 12; i++) bb[i] = em_get(b, i % 4);
  tu_assert_close(y, bb, 12, 0, 0, "linear with in = 0");
  em_scope_end(s);
}

Test(linear, bad_shapes) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(13);
  em_tensor *x = tu_rand(&r, EM_SHAPE(3, 5), -1, 1, false);
  em_tensor *w = tu_rand(&r, EM_SHAPE(4, 6), -1, 1, false);
  tu_assert_error(em_linear(x, w, NULL), "[3, 5]", "[4, 6]");
  em_tensor *w2 = tu_rand(&r, EM_SHAPE(4, 5), -1, 1, false);
  em_tensor *b = tu_rand(&r, EM_SHAPE(3), -1, 1, false);
  tu_assert_error(em_linear(x, w2, b), "[3]", "[4, 5]");
  em_tensor *w3 = tu_rand(&r, EM_SHAPE(4, 5, 1), -1, 1, false);
  tu_assert_error(em_linear(x, w3, NULL), "[3, 5]", "[4, 5, 1]");
  tu_assert_error(em_linear(x, NULL, NULL), "linear", "NULL");
  em_scope_end(s);
}

static em_tensor *f_linear(em_tensor **in, void *ctx) {
  return em_linear(in[0], in[1], ctx ? in[2] : NULL);
}

Test(linear, grad) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(14);
  em_tensor *in[3] = {tu_rand(&r, EM_SHAPE(2, 3, 4), -1, 1, true),
                      tu_rand(&r, EM_SHAPE(5, 4), -1, 1, true),
                      tu_rand(&r, EM_SHAPE(5), -1, 1, true)};
  tu_gradcheck(f_linear, 3, in, (void *)1, 1e-2, 1e-2, "linear grad with bias");
  em_tensor *in2[2] = {tu_rand(&r, EM_SHAPE(3, 4), -1, 1, true),
                       tu_rand(&r, EM_SHAPE(2, 4), -1, 1, true)};
  tu_gradcheck(f_linear, 2, in2, NULL, 1e-2, 1e-2, "linear grad without bias");
  /* only the weight needs a gradient */
  em_tensor *in3[3] = {tu_rand(&r, EM_SHAPE(3, 4), -1, 1, false),
                       tu_rand(&r, EM_SHAPE(2, 4), -1, 1, true),
                       tu_rand(&r, EM_SHAPE(2), -1, 1, false)};
  tu_gradcheck(f_linear, 3, in3, (void *)1, 1e-2, 1e-2, "linear grad of w only");
  em_scope_end(s);
}

Test(linear, no_leaks) {
  int64_t before = em_live_tensors();
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(15);
  em_tensor *x = tu_rand(&r, EM_SHAPE(4, 3), -1, 1, true);
  em_tensor *w = tu_rand(&r, EM_SHAPE(2, 3), -1, 1, true);
  em_tensor *y = em_sum(em_linear(x, w, NULL), 0, NULL, false);
  cr_assert_eq(em_backward(y), EM_OK, "%s", em_last_error());
  /* d sum(x w^T)/dw[o][k] = sum_i x[i][k] */
  for (int o = 0; o < 2; o++)
    for (int k = 0; k < 3; k++) {
      double acc = 0;
      for (int i = 0; i < 4; i++) acc += em_get(x, i * 3 + k);
      cr_assert(fabs(em_get(w->grad, o * 3 + k) - acc) < 1e-5);
    }
  em_scope_end(s);
  cr_assert_eq(em_live_tensors(), before);
}

Test(matmul, no_scope_no_leak) {
  /* outside any scope the caller owns the result; the ops' temporaries must not outlive them */
  int64_t before = em_live_tensors();
  em_rng r = em_rng_new(17);
  em_tensor *a = em_rand_uniform(EM_SHAPE(4, 6), -1, 1, &r);
  em_tensor *b = em_rand_uniform(EM_SHAPE(6, 10), -1, 1, &r);
  em_set_requires_grad(b, true);
  em_tensor *cols = em_slice(b, 1, 0, 10, 2); /* strided: matmul copies it */
  em_tensor *c = em_matmul(a, cols);
  em_tensor *at = em_transpose(b, 0, 1); /* (10, 6): a transposed weight, read in place */
  em_tensor *y = em_linear(a, at, NULL);
  cr_assert(c && y, "%s", em_last_error());
  em_release(c);
  em_release(y);
  em_release(at);
  em_release(cols);
  em_release(b);
  em_release(a);
  cr_assert_eq(em_live_tensors(), before);
}

/* The weight and bias gradients of linear go straight into existing .grad tensors (no temporary):
 * a second backward must add exactly the first one's gradient again, a weight used by two linear
 * nodes must get both contributions, .grad may be a view into a larger flat buffer (what the DDP
 * reducer does), and the grad-ready hook must see the final value. */
static int sink_hook_calls;
static double sink_hook_sum;
static void sink_hook(em_tensor *leaf, void *ctx) {
  sink_hook_calls++;
  sink_hook_sum = 0;
  for (int64_t i = 0; i < em_numel(leaf->grad); i++) sink_hook_sum += em_get(leaf->grad, i);
}

Test(matmul, linear_accumulates_into_existing_grad) {
  em_scope s = em_scope_begin();
  em_rng r = em_rng_new(7);
  em_tensor *x = tu_rand(&r, EM_SHAPE(5, 4), -1, 1, false);
  em_tensor *w = tu_rand(&r, EM_SHAPE(3, 4), -1, 1, true);
  em_tensor *b = tu_rand(&r, EM_SHAPE(3), -1, 1, true);
  /* First pass: no .grad yet (fresh tensors). */
  cr_assert_eq(em_backward(em_sum(em_linear(x, w, b), 0, NULL, false)), EM_OK);
  float w1[12], b1[3];
  memcpy(w1, em_data_f32(w->grad), sizeof w1);
  memcpy(b1, em_data_f32(b->grad), sizeof b1);
  /* Reference: dW[o][i] = sum_r x[r][i]; db[o] = 5. */
  for (int o = 0; o < 3; o++) {
    cr_assert_float_eq(b1[o], 5.0f, 1e-6);
    for (int i = 0; i < 4; i++) {
      double ref = 0;
      for (int rr = 0; rr < 5; rr++) ref += em_get(x, rr * 4 + i);
      cr_assert_float_eq(w1[o * 4 + i], ref, 1e-5);
    }
  }
  /* .grad as views into one flat buffer, pre-filled with w1/b1: the next pass adds into it. */
  em_tensor *flat = em_zeros(EM_F32, EM_SHAPE(32));
  em_tensor *gw = em_reshape(em_narrow(flat, 0, 0, 12), EM_SHAPE(3, 4));
  em_tensor *gb = em_narrow(flat, 0, 16, 3);
  memcpy(em_data_f32(gw), w1, sizeof w1);
  memcpy(em_data_f32(gb), b1, sizeof b1);
  cr_assert_eq(em_set_grad(w, gw), EM_OK);
  cr_assert_eq(em_set_grad(b, gb), EM_OK);
  int id = em_tensor_on_grad_ready(w, sink_hook, NULL);
  /* Shared weight: two linear nodes use w, so it gets two contributions this pass. */
  em_tensor *y = em_add(em_linear(x, w, b), em_linear(x, w, NULL));
  cr_assert_eq(em_backward(em_sum(y, 0, NULL, false)), EM_OK, "%s", em_last_error());
  cr_assert(w->grad == gw && b->grad == gb, ".grad tensors are kept, not replaced");
  double expect_sum = 0;
  for (int i = 0; i < 12; i++) {
    cr_assert_float_eq(em_data_f32(flat)[i], 3 * w1[i], 1e-5, "w grad %d", i);
    expect_sum += 3 * w1[i];
  }
  for (int o = 0; o < 3; o++) cr_assert_float_eq(em_data_f32(flat)[16 + o], 2 * b1[o], 1e-5);
  for (int i = 12; i < 16; i++) cr_assert_eq(em_data_f32(flat)[i], 0.0f, "padding untouched");
  cr_assert_eq(sink_hook_calls, 1, "hook fires once per pass");
  cr_assert_float_eq(sink_hook_sum, expect_sum, 1e-4, "hook sees the final gradient");
  em_tensor_remove_hook(w, id);
  em_scope_end(s);
}
