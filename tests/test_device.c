/* test_device.c: device discovery. On machines without a GPU (or without a driver) the CUDA
 * runtime reports an error rather than zero devices; Ember must report 0 and carry on, so the
 * same binary runs everywhere. The GPU-only checks skip when no device is present. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

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

/* ---- em_to and em_module_to ------------------------------------------------------------------ */
Test(device, to_the_same_device_is_the_tensor_itself) {
  TU_BEGIN;
  em_tensor *t = tu_ramp(EM_SHAPE(2, 3), 1.0, 0.0);
  cr_assert_eq(em_to(t, EM_DEVICE_CPU), t, "em_to(t, cpu) on a CPU tensor returns t");
  tu_assert_error(em_to(NULL, EM_DEVICE_CPU), "to: input is NULL", NULL);
  tu_assert_error(em_to(t, (em_device){EM_CPU, 1}), "no device index 1", "cpu");
  TU_END;
}

Test(device, to_a_missing_gpu_names_the_device) {
  if (em_cuda_device_count() > 0) cr_skip_test("a CUDA device is present");
  TU_BEGIN;
  em_tensor *t = tu_ramp(EM_SHAPE(4), 1.0, 0.0);
  tu_assert_error(em_to(t, EM_DEVICE_CUDA(0)), "to: no device cuda:0",
                  em_built_with_cuda() ? "0 CUDA devices present" : "this build has no CUDA");
  tu_assert_error(em_to(t, EM_DEVICE_CUDA(3)), "no device cuda:3", NULL);
  TU_END;
}

Test(device, module_to_a_missing_gpu_changes_nothing) {
  if (em_cuda_device_count() > 0) cr_skip_test("a CUDA device is present");
  TU_BEGIN;
  em_module *m = em_linear_new(3, 2, true);
  em_params p = em_parameters(m);
  cr_assert_eq(p.n, 2);
  float before = (float)em_get(p.t[0], 0);
  void *data = em_data(p.t[0]);
  cr_assert_eq(em_module_to(m, EM_DEVICE_CUDA(0)), EM_ERR_UNSUPPORTED);
  cr_assert(strstr(em_last_error(), "module_to: no device cuda:0"), "%s", em_last_error());
  em_clear_error();
  cr_assert_eq(p.t[0]->device.kind, EM_CPU);
  cr_assert_eq(em_data(p.t[0]), data, "the parameter did not move");
  cr_assert_eq(em_module_to(m, EM_DEVICE_CPU), EM_OK, "%s", em_last_error());
  cr_assert_eq(em_data(p.t[0]), data, "moving to the device it is on copies nothing");
  cr_assert_eq((float)em_get(p.t[0], 0), before);
  em_module_free(m);
  TU_END;
}

/* On a GPU: a round trip through the device gives the same bits, the module's parameters keep
 * their em_tensor pointers and their arena layout, and an op without a CUDA kernel says so. */
Test(device, to_cuda_and_back_on_a_gpu) {
  if (em_cuda_device_count() == 0) cr_skip_test("no CUDA device on this machine");
  TU_BEGIN;
  em_tensor *t = tu_ramp(EM_SHAPE(3, 5), 2.0, 0.5);
  em_tensor *tt = em_transpose(t, 0, 1); /* strided: em_to makes it contiguous */
  em_tensor *g = em_to(tt, EM_DEVICE_CUDA(0));
  cr_assert_not_null(g, "%s", em_last_error());
  cr_assert_eq(g->device.kind, EM_CUDA);
  tu_assert_error(em_relu(g), "relu: not supported on cuda:0", NULL);
  em_tensor *back = em_to(g, EM_DEVICE_CPU);
  cr_assert_not_null(back, "%s", em_last_error());
  for (int64_t i = 0; i < 5; i++)
    for (int64_t j = 0; j < 3; j++)
      cr_assert_eq(em_get(back, i * 3 + j), em_get(t, j * 5 + i));
  em_module *m = em_linear_new(3, 2, true);
  em_params p = em_parameters(m);
  em_tensor *w = p.t[0];
  float w0 = (float)em_get(w, 0);
  cr_assert_eq(em_module_to(m, EM_DEVICE_CUDA(0)), EM_OK, "%s", em_last_error());
  cr_assert_eq(w->device.kind, EM_CUDA);
  cr_assert_eq(em_module_to(m, EM_DEVICE_CPU), EM_OK, "%s", em_last_error());
  cr_assert_eq((float)em_get(w, 0), w0);
  em_module_free(m);
  TU_END;
}

/* An op given tensors on two devices names both (a CPU tensor posing as cuda:0 is enough: the
 * device check comes before any kernel runs). */
Test(device, mixed_devices_are_named) {
  TU_BEGIN;
  em_tensor *a = tu_ramp(EM_SHAPE(2), 1.0, 0.0), *b = tu_ramp(EM_SHAPE(2), 1.0, 1.0);
  b->device = EM_DEVICE_CUDA(0);
  tu_assert_error(em_add(a, b), "add: b is on cuda:0 but the input is on cpu", NULL);
  /* Without a GPU, cuda:0 has no kernels: the op names itself and the missing device. (With one,
   * cuda:0's kernels would run on this CPU memory: not asked.) */
  if (em_cuda_device_count() == 0) tu_assert_error(em_relu(b), "relu: no device cuda:0", NULL);
  b->device = EM_DEVICE_CPU;
  TU_END;
}
