/* cudautil.c: see cudautil.h. */
#include "cudautil.h"

#include <math.h>

em_tensor *tu_cuda(em_tensor *t) {
  em_tensor *d = em_to(em_detach(t), EM_DEVICE_CUDA(0));
  cr_assert_not_null(d, "to cuda:0: %s", em_last_error());
  if (t->requires_grad) cr_assert_eq(em_set_requires_grad(d, true), EM_OK, "%s", em_last_error());
  return d;
}

em_tensor *tu_host(em_tensor *t) {
  cr_assert_not_null(t, "%s", em_last_error());
  em_tensor *h = em_contiguous(em_to(t, EM_DEVICE_CPU));
  cr_assert_not_null(h, "to cpu: %s", em_last_error());
  return h;
}

void tu_assert_same(const em_tensor *cpu_result, em_tensor *cuda_result, double rtol, double atol,
                    const char *what) {
  cr_assert_not_null(cpu_result, "%s (cpu): %s", what, em_last_error());
  cr_assert_not_null(cuda_result, "%s (cuda): %s", what, em_last_error());
  cr_assert_eq(cuda_result->device.kind, EM_CUDA, "%s: the result is not on the GPU", what);
  em_tensor *h = tu_host(cuda_result);
  cr_assert_eq(h->dtype, cpu_result->dtype, "%s: dtype", what);
  cr_assert_eq(h->ndim, cpu_result->ndim, "%s: ndim", what);
  for (int d = 0; d < h->ndim; d++)
    cr_assert_eq(h->shape[d], cpu_result->shape[d], "%s: shape[%d]", what, d);
  int64_t n = em_numel(h);
  for (int64_t i = 0; i < n; i++) {
    double a = em_get(h, i), b = em_get(cpu_result, i);
    cr_assert(!isnan(a) || isnan(b),
              "%s: element %lld is NaN on the GPU (unwritten?), %g on the CPU", what, (long long)i,
              b);
    cr_assert(a == b || fabs(a - b) <= atol + rtol * fabs(b) || (isnan(a) && isnan(b)),
              "%s: element %lld: cuda %.9g, cpu %.9g", what, (long long)i, a, b);
  }
}
