/* cudautil.h: helpers for the CUDA suites (tests/test_cuda_*.c). Each CUDA kernel is checked
 * against the CPU table: the same op front end runs on CPU inputs and on copies of them on cuda:0,
 * and the results (forward and gradients) are compared within a relative bound. New CUDA memory
 * is poisoned (EMBER_CUDA_POISON=1: NaN), so an output element a kernel leaves unwritten fails.
 * Without a CUDA device every case skips with "no CUDA device". */
#ifndef EMBER_CUDAUTIL_H
#define EMBER_CUDAUTIL_H

#include "testutil.h"

/* Skips the current test unless cuda:0 exists; turns poisoning on. */
#define TU_NEED_CUDA()                                                                             \
  do {                                                                                             \
    if (em_cuda_device_count() == 0) cr_skip_test("no CUDA device");                               \
    setenv("EMBER_CUDA_POISON", "1", 1);                                                           \
  } while (0)

/* t's copy on cuda:0 (scope-owned), a leaf requiring grad when t requires grad. */
em_tensor *tu_cuda(em_tensor *t);
/* t (on any device) back on the CPU, contiguous (scope-owned). */
em_tensor *tu_host(em_tensor *t);
/* cuda_result (on cuda:0) equals cpu_result (on the CPU) elementwise within
 * |a - b| <= atol + rtol * |b| (or equal: infinities), with the same shape and dtype; NaN on one
 * side only fails. what names the comparison in the failure message. */
void tu_assert_same(const em_tensor *cpu_result, em_tensor *cuda_result, double rtol, double atol,
                    const char *what);

#endif
