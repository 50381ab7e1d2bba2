/* cpu/optim.c: the CPU's optimizer updates: one loop per parameter over flat float arrays,
 * torch.optim's exact update order (see em_optim.h), vectorised with `omp simd` and compiled for
 * AVX-512, AVX2 and baseline x86-64 (picked at load time). */
#include "cpu/cpu.h"

#include <math.h>

/* torch's _single_tensor_sgd for one parameter. The flags are compile-time constants at every
 * call (see sgd_kernel), so each variant is a branch-free loop that GCC vectorises at -O2. */
static inline __attribute__((always_inline)) void
sgd_loop(int64_t n, float *restrict p, const float *restrict g, float *restrict buf, float nlr,
         float wd, float mom, float keep, const bool use_wd, const bool use_buf, const bool first,
         const bool nesterov) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) {
    float pi = p[i], gi = g[i];
    float d = use_wd ? gi + wd * pi : gi;
    if (use_buf) {
      float b = first ? d : buf[i] * mom + keep * d;
      buf[i] = b;
      d = nesterov ? d + mom * b : b;
    }
    p[i] = pi + nlr * d;
  }
}

/* buf NULL without momentum; first: the parameter's first step (buf = d). */
EM_SIMD_CLONES static void sgd_kernel(int64_t n, float *restrict p, const float *restrict g,
                                      float *restrict buf, float lr, float wd, float mom,
                                      float damp, bool first, bool nesterov) {
  const float nlr = -lr, keep = 1.0f - damp;
#define SGD_LOOP(W, B, F, N) sgd_loop(n, p, g, buf, nlr, wd, mom, keep, W, B, F, N)
  if (!buf) {
    if (wd != 0)
      SGD_LOOP(true, false, false, false);
    else
      SGD_LOOP(false, false, false, false);
    return;
  }
  switch ((wd != 0) << 2 | first << 1 | nesterov) {
  case 0: SGD_LOOP(false, true, false, false); break;
  case 1: SGD_LOOP(false, true, false, true); break;
  case 2: SGD_LOOP(false, true, true, false); break;
  case 3: SGD_LOOP(false, true, true, true); break;
  case 4: SGD_LOOP(true, true, false, false); break;
  case 5: SGD_LOOP(true, true, false, true); break;
  case 6: SGD_LOOP(true, true, true, false); break;
  default: SGD_LOOP(true, true, true, true); break;
  }
#undef SGD_LOOP
}

/* torch's _single_tensor_adam / _single_tensor_adamw for one parameter. l2: Adam's weight decay
 * (added to the gradient); decay: AdamW's factor 1 - lr * weight_decay (1 for Adam). The loop
 * vectorises where libm's errno is off (-fno-math-errno): sqrtf is otherwise a guarded call. */
static inline __attribute__((always_inline)) void
adam_loop(int64_t n, float *restrict p, const float *restrict g, float *restrict m,
          float *restrict v, float b1, float b2, float l2, float decay, float neg_step_size,
          float bc2_sqrt, float eps, const bool use_l2) {
  const float c1 = 1.0f - b1, c2 = 1.0f - b2;
#pragma omp simd
  for (int64_t i = 0; i < n; i++) {
    float pi = p[i] * decay, gi = g[i];
    if (use_l2) gi = gi + l2 * pi;
    float mi = m[i] * b1 + c1 * gi;
    float vi = v[i] * b2 + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi + neg_step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
  }
}

EM_SIMD_CLONES static void adam_kernel(int64_t n, float *restrict p, const float *restrict g,
                                       float *restrict m, float *restrict v, float b1, float b2,
                                       float l2, float decay, float neg_step_size, float bc2_sqrt,
                                       float eps) {
  if (l2 != 0)
    adam_loop(n, p, g, m, v, b1, b2, l2, decay, neg_step_size, bc2_sqrt, eps, true);
  else
    adam_loop(n, p, g, m, v, b1, b2, l2, decay, neg_step_size, bc2_sqrt, eps, false);
}

em_status em__cpu_sgd_update(int64_t n, float *p, const float *g, float *buf, float lr, float wd,
                             float mom, float damp, bool first, bool nesterov) {
  sgd_kernel(n, p, g, buf, lr, wd, mom, damp, first, nesterov);
  return EM_OK;
}

em_status em__cpu_adam_update(int64_t n, float *p, const float *g, float *m, float *v, float b1,
                              float b2, float l2, float decay, float neg_step_size, float bc2_sqrt,
                              float eps) {
  adam_kernel(n, p, g, m, v, b1, b2, l2, decay, neg_step_size, bc2_sqrt, eps);
  return EM_OK;
}
