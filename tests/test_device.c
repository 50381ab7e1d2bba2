/* test_device.c: device discovery. On machines without a GPU (or without a driver) the CUDA
 * runtime reports an error rather than zero devices; Ember must report 0 and carry on, so the
 * same binary runs everywhere. The GPU-only checks skip when no device is present. */
#include "testutil.h"

#include <stdlib.h>

Test(device, count_is_consistent_with_the_build) {
  int n = em_cuda_device_count();
  cr_assert_geq(n, 0);
  if (!em_built_with_cuda()) cr_assert_eq(n, 0, "a build without CUDA sees no CUDA device");
  /* Asking twice gives the same answer (the sticky CUDA error is cleared). */
  cr_assert_eq(em_cuda_device_count(), n);
}

Test(device, cpu_tensors_report_the_cpu) {
  em_scope s = em_scope_begin();
  em_tensor *t = em_zeros(EM_F32, EM_SHAPE(2, 2));
  cr_assert_eq(t->device.kind, EM_CPU);
  cr_assert_eq(t->device.index, 0);
  em_scope_end(s);
}

Test(device, gpu_present_when_built_with_cuda) {
  if (em_cuda_device_count() == 0) cr_skip_test("no CUDA device on this machine");
  cr_assert(em_built_with_cuda());
}
