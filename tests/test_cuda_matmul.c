/* test_cuda_matmul.c: the CUDA table's matmul (cuBLAS, runtime/cuda/matmul.cu) against the CPU's
 * (oneDNN), through the front ends em_matmul, em_matmul_t and em_linear on random inputs and their
 * cuda:0 copies: odd sizes, transposed operands, column-major and strided (leading dimension)
 * views read where they lie, batches with broadcasting on either side, a batched a against a 2-D
 * b, bias, empty products (K == 0, M == 0); accumulate (c += a @ b) through the slot itself.
 *
 * Gradients: matmul's backward is itself matmul (dA = dC B^T, dB = A^T dC: the transposed cases
 * here), but em_backward also needs the engine's accumulate slot and, for linear, the
 * linear_bias_grad slot, which are other engineers' work: the backward cases run when the CUDA
 * table has them and are skipped (with a message) otherwise.
 *
 * Bounds. cuBLAS and oneDNN add the K products in different orders (blocking, split-K), so they
 * agree to a few ulps of the sum of |a_ik b_kj|: with values in [-1, 1) and K <= 129 that is
 * below 2e-5 absolute, so |cuda - cpu| <= 2e-5 + 1e-5 |cpu|. TF32 (EMBER_CUDA_TF32=1) rounds the
 * operands to 10-bit mantissas (relative error 2^-11 each): the whole product then matches to
 * 1e-3 relative in norm, the bound NVIDIA and PyTorch quote for TF32. */
#include "cudautil.h"

#include "core/kernels.h"

#include <stdio.h>
#include <stdlib.h>

#define RTOL 1e-5
#define ATOL 2e-5

static bool cuda_has_backward_slots(bool linear) {
  const em_kernels *k = em__kernels(EM_DEVICE_CUDA(0));
  return k->accumulate && k->sum_to && k->sum && (!linear || k->linear_bias_grad);
}

/* a @ b (each optionally transposed) on the CPU and on cuda:0, compared; then, when the CUDA
 * table has the engine's slots, the gradients of the leaves a and b for a random seed. */
static void check_leaves(em_rng *r, em_tensor *a, em_tensor *b, bool ta, bool tb,
                         const char *what) {
  em_tensor *ad = tu_cuda(a), *bd = tu_cuda(b);
  em_tensor *y = em_matmul_t(a, b, ta, tb), *yd = em_matmul_t(ad, bd, ta, tb);
  tu_assert_same(y, yd, RTOL, ATOL, what);
  if (!a->requires_grad || !cuda_has_backward_slots(false)) return;
  em_tensor *seed = tu_rand(r, y->ndim, y->shape, -1, 1, false);
  cr_assert_eq(em_backward_ex(y, seed, NULL), EM_OK, "%s", em_last_error());
  cr_assert_eq(em_backward_ex(yd, tu_cuda(seed), NULL), EM_OK, "%s", em_last_error());
  tu_assert_same(a->grad, ad->grad, RTOL, ATOL, what);
  tu_assert_same(b->grad, bd->grad, RTOL, ATOL, what);
}

Test(cuda_matmul, plain_and_transposed_odd_sizes) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(11);
  static const int64_t sizes[][3] = {{1, 1, 1}, {7, 13, 5}, {65, 129, 33}, {3, 1, 9}, {1, 17, 1}};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    int64_t M = sizes[i][0], K = sizes[i][1], N = sizes[i][2];
    for (int t = 0; t < 4; t++) {
      bool ta = t & 1, tb = t & 2;
      em_tensor *a = tu_rand(&r, EM_SHAPE(ta ? K : M, ta ? M : K), -1, 1, true);
      em_tensor *b = tu_rand(&r, EM_SHAPE(tb ? N : K, tb ? K : N), -1, 1, true);
      char what[96];
      snprintf(what, sizeof what, "%lldx%lldx%lld ta=%d tb=%d", (long long)M, (long long)K,
               (long long)N, ta, tb);
      check_leaves(&r, a, b, ta, tb, what);
    }
  }
  TU_END;
}

/* Views that the kernel reads where they lie: a transposed (column-major) a, and a column
 * window of a wider matrix (row-major with leading dimension 11). Built on each device from
 * its own base, so both sides see the same strides. */
Test(cuda_matmul, strided_and_column_major_views) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(12);
  em_tensor *base_a = tu_rand(&r, EM_SHAPE(6, 9), -1, 1, false);  /* a = base_a^T (9, 6) */
  em_tensor *base_b = tu_rand(&r, EM_SHAPE(6, 11), -1, 1, false); /* b = columns 2..8 */
  em_tensor *da = tu_cuda(base_a), *db = tu_cuda(base_b);
  em_tensor *a = em_transpose(base_a, 0, 1), *ad = em_transpose(da, 0, 1);
  em_tensor *b = em_slice(base_b, 1, 2, 9, 1), *bd = em_slice(db, 1, 2, 9, 1);
  cr_assert(!em_is_contiguous(a) && !em_is_contiguous(b) && !em_is_contiguous(bd));
  tu_assert_same(em_matmul(a, b), em_matmul(ad, bd), RTOL, ATOL, "a^T view @ column window");
  /* b's window as the transposed operand: (7, 6)^T */
  em_tensor *c = tu_rand(&r, EM_SHAPE(4, 6), -1, 1, false);
  tu_assert_same(em_matmul_t(c, b, false, false), em_matmul_t(tu_cuda(c), bd, false, false), RTOL,
                 ATOL, "c @ window");
  tu_assert_same(em_matmul_t(b, c, true, true), em_matmul_t(bd, tu_cuda(c), true, true), RTOL, ATOL,
                 "window^T @ c^T");
  TU_END;
}

Test(cuda_matmul, batched_with_broadcast) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(13);
  static const int64_t shapes[][2][4] = {
      {{3, 4, 5, 0}, {3, 5, 6, 0}}, /* plain batch */
      {{1, 4, 5, 0}, {3, 5, 6, 0}}, /* a broadcast */
      {{3, 4, 5, 0}, {1, 5, 6, 0}}, /* b broadcast */
      {{2, 1, 4, 5}, {1, 3, 5, 6}}, /* each broadcast in another dim: no single stride */
      {{2, 3, 7, 5}, {2, 3, 5, 1}}, /* two batch dims that merge */
  };
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    int nd = shapes[i][0][3] ? 4 : 3;
    em_tensor *a = tu_rand(&r, nd, shapes[i][0], -1, 1, true);
    em_tensor *b = tu_rand(&r, nd, shapes[i][1], -1, 1, true);
    char what[32];
    snprintf(what, sizeof what, "batched case %zu", i);
    check_leaves(&r, a, b, false, false, what);
  }
  /* a batched a against a 2-D b (one merged (B*M, K) product), and its transposed form */
  em_tensor *a = tu_rand(&r, EM_SHAPE(3, 4, 5), -1, 1, true);
  em_tensor *b = tu_rand(&r, EM_SHAPE(5, 7), -1, 1, true);
  check_leaves(&r, a, b, false, false, "(3, 4, 5) @ (5, 7)");
  em_tensor *bt = tu_rand(&r, EM_SHAPE(7, 5), -1, 1, true);
  check_leaves(&r, a, bt, false, true, "(3, 4, 5) @ (7, 5)^T");
  /* a permuted batch view (B, T, H, D) -> (B, H, T, D): batch strides that do not merge */
  em_tensor *q = tu_rand(&r, EM_SHAPE(2, 5, 3, 4), -1, 1, false);
  em_tensor *k = tu_rand(&r, EM_SHAPE(2, 5, 3, 4), -1, 1, false);
  int perm[] = {0, 2, 1, 3};
  em_tensor *qd = tu_cuda(q), *kd = tu_cuda(k);
  tu_assert_same(em_matmul_t(em_permute(q, perm), em_permute(k, perm), false, true),
                 em_matmul_t(em_permute(qd, perm), em_permute(kd, perm), false, true), RTOL, ATOL,
                 "permuted q @ k^T");
  TU_END;
}

Test(cuda_matmul, empty_products) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(14);
  /* K == 0: zeros (written: the output starts as NaN poison) */
  em_tensor *a = tu_rand(&r, EM_SHAPE(4, 0), -1, 1, false),
            *b = tu_rand(&r, EM_SHAPE(0, 3), -1, 1, false);
  tu_assert_same(em_matmul(a, b), em_matmul(tu_cuda(a), tu_cuda(b)), 0, 0, "K == 0");
  /* M == 0: nothing to write */
  em_tensor *e = tu_rand(&r, EM_SHAPE(0, 5), -1, 1, false),
            *f = tu_rand(&r, EM_SHAPE(5, 3), -1, 1, false);
  tu_assert_same(em_matmul(e, f), em_matmul(tu_cuda(e), tu_cuda(f)), 0, 0, "M == 0");
  /* linear with in == 0: the bias on every row */
  em_tensor *x = tu_rand(&r, EM_SHAPE(3, 0), -1, 1, false),
            *w = tu_rand(&r, EM_SHAPE(4, 0), -1, 1, false);
  em_tensor *bias = tu_rand(&r, EM_SHAPE(4), -1, 1, false);
  tu_assert_same(em_linear(x, w, bias), em_linear(tu_cuda(x), tu_cuda(w), tu_cuda(bias)), 0, 0,
                 "linear, in == 0");
  TU_END;
}

Test(cuda_matmul, linear_with_bias) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(15);
  static const int64_t xs[][3] = {{5, 17, 0}, {2, 3, 33}, {1, 1, 0}};
  for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
    int nd = xs[i][2] ? 3 : 2;
    int64_t in = xs[i][nd - 1], out = 9;
    em_tensor *x = tu_rand(&r, nd, xs[i], -1, 1, true);
    em_tensor *w = tu_rand(&r, EM_SHAPE(out, in), -1, 1, true);
    em_tensor *b = tu_rand(&r, EM_SHAPE(out), -1, 1, true);
    em_tensor *xd = tu_cuda(x), *wd = tu_cuda(w), *bd = tu_cuda(b);
    em_tensor *y = em_linear(x, w, b), *yd = em_linear(xd, wd, bd);
    tu_assert_same(y, yd, RTOL, ATOL, "linear");
    tu_assert_same(em_linear(x, w, NULL), em_linear(xd, wd, NULL), RTOL, ATOL, "linear, no bias");
    if (!cuda_has_backward_slots(true)) continue;
    em_tensor *seed = tu_rand(&r, y->ndim, y->shape, -1, 1, false);
    cr_assert_eq(em_backward_ex(y, seed, NULL), EM_OK, "%s", em_last_error());
    cr_assert_eq(em_backward_ex(yd, tu_cuda(seed), NULL), EM_OK, "%s", em_last_error());
    tu_assert_same(x->grad, xd->grad, RTOL, ATOL, "linear dx");
    tu_assert_same(w->grad, wd->grad, RTOL, ATOL, "linear dw");
    tu_assert_same(b->grad, bd->grad, RTOL, ATOL, "linear db");
  }
  if (!cuda_has_backward_slots(true))
    cr_log_info("linear backward not compared: the CUDA table lacks accumulate/sum_to/sum/"
                "linear_bias_grad (other engineers' slots)");
  TU_END;
}

/* c += a @ b through the slot (the front ends use accumulate for gradients that go straight
 * into .grad). */
Test(cuda_matmul, accumulate_through_the_slot) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(16);
  em_tensor *a = tu_rand(&r, EM_SHAPE(6, 10), -1, 1, false);
  em_tensor *b = tu_rand(&r, EM_SHAPE(10, 7), -1, 1, false);
  em_tensor *c = tu_rand(&r, EM_SHAPE(6, 7), -1, 1, false);
  em_tensor *ad = tu_cuda(a), *bd = tu_cuda(b), *cd = tu_cuda(c);
  em_matrix ga = {.t = a, .ndim = 2, .dims = {6, 10}, .strides = {10, 1}};
  em_matrix gb = {.t = b, .ndim = 2, .dims = {10, 7}, .strides = {7, 1}};
  em_matrix gad = ga, gbd = gb;
  gad.t = ad;
  gbd.t = bd;
  cr_assert_eq(em__kernels(EM_DEVICE_CPU)->matmul("test", &ga, &gb, NULL, c, true), EM_OK);
  cr_assert_eq(em__kernels(cd->device)->matmul("test", &gad, &gbd, NULL, cd, true), EM_OK, "%s",
               em_last_error());
  tu_assert_same(c, cd, RTOL, ATOL, "c += a @ b");
  TU_END;
}

/* TF32 (EMBER_CUDA_TF32=1, read when the cuBLAS handle is made: Criterion runs each test in a
 * process of its own, so this one gets a fresh handle). Bound: 1e-3 relative in norm. */
Test(cuda_matmul, tf32_within_its_bound) {
  TU_NEED_CUDA();
  setenv("EMBER_CUDA_TF32", "1", 1);
  TU_BEGIN;
  em_rng r = em_rng_new(17);
  em_tensor *a = tu_rand(&r, EM_SHAPE(64, 256), -1, 1, false);
  em_tensor *b = tu_rand(&r, EM_SHAPE(256, 48), -1, 1, false);
  em_tensor *y = em_matmul(a, b), *yd = tu_host(em_matmul(tu_cuda(a), tu_cuda(b)));
  double err = tu_rel_err(em_data_f32(yd), em_data_f32(y), em_numel(y));
  cr_assert(err <= 1e-3, "TF32 matmul: relative error %g > 1e-3", err);
  TU_END;
}
