/* test_cuda_memory.c: the CUDA table's memory kernels (fill, strided copies) against the CPU's,
 * on cuda:0; every case skips without a CUDA device. */
#include "cudautil.h"

#include "core/kernels.h"

Test(cuda_memory, fill_every_dtype) {
  TU_NEED_CUDA();
  TU_BEGIN;
  static const em_dtype dts[] = {EM_F32, EM_F16, EM_BF16, EM_I64, EM_I32, EM_U8};
  for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
    em_tensor *cpu = em_full(dts[k], EM_SHAPE(3, 333), 5.0);
    /* em_full on the GPU: em_empty there (poisoned), then the fill kernel. */
    em_tensor *gpu = em_full(dts[k], EM_SHAPE(3, 333), 0.0);
    gpu = gpu ? em_to(gpu, EM_DEVICE_CUDA(0)) : NULL;
    cr_assert_not_null(gpu, "%s", em_last_error());
    cr_assert_eq(em__kernels(gpu->device)->fill(gpu, 5.0), EM_OK, "%s", em_last_error());
    tu_assert_same(cpu, gpu, 0, 0, em_dtype_name(dts[k]));
  }
  TU_END;
}

Test(cuda_memory, strided_copies_match_the_cpu) {
  TU_NEED_CUDA();
  TU_BEGIN;
  em_rng r = em_rng_new(7);
  em_tensor *x = tu_rand(&r, EM_SHAPE(5, 7, 9), -1, 1, false);
  em_tensor *xd = tu_cuda(x);
  int perm[] = {2, 0, 1};
  /* em_contiguous of a permuted view runs copy_view with a strided source. */
  tu_assert_same(em_contiguous(em_permute(x, perm)), em_contiguous(em_permute(xd, perm)), 0, 0,
                 "contiguous(permute)");
  tu_assert_same(em_contiguous(em_slice(x, 2, 1, 8, 3)), em_contiguous(em_slice(xd, 2, 1, 8, 3)),
                 0, 0, "contiguous(slice step 3)");
  /* Every element size (8, 2 and 1 bytes here) moves bit for bit too. */
  static const em_dtype dts[] = {EM_I64, EM_BF16, EM_U8};
  for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
    em_tensor *b = em_empty(dts[k], EM_SHAPE(4, 6));
    for (int64_t i = 0; i < 24; i++) em_set(b, i, (double)(i * 7 % 24));
    em_tensor *bd = tu_cuda(b);
    tu_assert_same(em_contiguous(em_transpose(b, 0, 1)), em_contiguous(em_transpose(bd, 0, 1)), 0,
                   0, em_dtype_name(dts[k]));
  }
  /* A strided destination: concat along dim 1 copies each part into a column block of out. */
  em_tensor *p[2] = {tu_rand(&r, EM_SHAPE(5, 3), -1, 1, false),
                     tu_rand(&r, EM_SHAPE(5, 4), -1, 1, false)};
  em_tensor *pd[2] = {tu_cuda(p[0]), tu_cuda(p[1])};
  tu_assert_same(em_concat(2, p, 1), em_concat(2, pd, 1), 0, 0, "concat along dim 1");
  TU_END;
}
