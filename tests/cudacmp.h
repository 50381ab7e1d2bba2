/* cudacmp.h: the comparison that the CUDA op suites (test_cuda_elementwise.c, test_cuda_reduce.c,
 * test_cuda_index.c) run for each case: one op expression on CPU inputs and on their cuda:0
 * copies, forward values and then every input gradient. Header-only (static) so that it adds no
 * source to the test build. */
#ifndef EMBER_CUDACMP_H
#define EMBER_CUDACMP_H

#include "cudautil.h"

#include <stdio.h>

/* Runs f (testutil.h's tu_fn) on the n CPU inputs and on copies of them on cuda:0 and compares
 * the outputs within |gpu - cpu| <= atol + rtol |cpu|. When the output requires grad, runs
 * backward on both from the same random seed gradient and compares the gradient of every input
 * that requires grad within grtol, gatol. The inputs must be fresh leaves (no .grad yet). */
static inline void tu_cuda_check(tu_fn f, int n, em_tensor **cpu, void *ctx, double rtol,
                                 double atol, double grtol, double gatol, const char *what) {
  em_tensor *gpu[8];
  cr_assert(n <= 8);
  for (int i = 0; i < n; i++) gpu[i] = tu_cuda(cpu[i]);
  em_tensor *yc = f(cpu, ctx), *yg = f(gpu, ctx);
  char msg[160];
  snprintf(msg, sizeof msg, "%s: forward", what);
  tu_assert_same(yc, yg, rtol, atol, msg);
  if (!yc->requires_grad) return;
  em_rng r = em_rng_new(99);
  em_tensor *seed = tu_rand(&r, yc->ndim, yc->shape, -1, 1, false);
  cr_assert_eq(em_backward_ex(yc, seed, NULL), EM_OK, "%s: cpu backward: %s", what,
               em_last_error());
  cr_assert_eq(em_backward_ex(yg, tu_cuda(seed), NULL), EM_OK, "%s: cuda backward: %s", what,
               em_last_error());
  for (int i = 0; i < n; i++) {
    if (!cpu[i]->requires_grad) continue;
    snprintf(msg, sizeof msg, "%s: gradient of input %d", what, i);
    cr_assert_not_null(cpu[i]->grad, "%s: none on the cpu", msg);
    cr_assert_not_null(gpu[i]->grad, "%s: none on cuda", msg);
    tu_assert_same(cpu[i]->grad, gpu[i]->grad, grtol, gatol, msg);
  }
}

#endif
