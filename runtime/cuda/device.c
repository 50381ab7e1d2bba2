/* device.c (CUDA): device discovery through the CUDA runtime. Without a driver,
 * cudaGetDeviceCount returns an error (cudaErrorInsufficientDriver) rather than zero: every error
 * means "no device", so the same binary runs on machines with and without GPUs. */
#include "em_internal.h"

#include <cuda_runtime_api.h>

int em_cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError(); /* clear the sticky error */
    return 0;
  }
  return n;
}

bool em_built_with_cuda(void) { return true; }

void *em__host_alloc_pinned(size_t nbytes) {
  if (em_cuda_device_count() == 0) return NULL;
  void *p = NULL;
  if (cudaHostAlloc(&p, nbytes, cudaHostAllocDefault) != cudaSuccess) {
    (void)cudaGetLastError();
    return NULL;
  }
  return p;
}

void em__host_free_pinned(void *p) {
  if (p) cudaFreeHost(p);
}
